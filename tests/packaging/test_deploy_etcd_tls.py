"""The secured etcd of deploy/, run for real: certificates from deploy/etcd-pki.sh, Debian's etcd
with the compose file's TLS settings, etcd's auth turned on by deploy/etcd-auth.sh with the
compose etcd-auth service's environment, and the oracle's etcd client built from the compose
node's configuration. The oracle may do everything it needs under its prefix (leases, txns,
watch, compaction, status, alarms) and nothing outside it, and etcd's healthcheck passes."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from hlc_oracle.cluster.etcd import EtcdClient, EtcdPermissionError
from hlc_oracle.cluster.etcd_security import EtcdSecurity
from hlc_oracle.config import load

from tests.support.etcd_process import EtcdMember, EtcdTls
from tests.support.repository import DEPLOY, compose, host_files


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["sh", str(DEPLOY / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def on_host(service: dict[str, object], container_path: str, pki: Path) -> Path:
    """The file of ``pki`` that compose mounts at ``container_path`` in ``service``."""
    source = host_files(service)[container_path]  # type: ignore[arg-type]
    assert source.startswith("./etcd-pki/")
    return pki / source.removeprefix("./etcd-pki/")


def test_the_deploy_pki_and_auth_script_give_the_oracle_its_prefix_only(tmp_path: Path) -> None:
    pki = tmp_path / "etcd-pki"
    run_script("etcd-pki.sh", str(pki))
    services = compose()["services"]
    etcd_service = services["etcd-1"]
    env = etcd_service["environment"]
    assert env["ETCD_CLIENT_CERT_AUTH"] == "true"
    auth = services["etcd-auth"]
    tls = EtcdTls(
        ca=on_host(etcd_service, env["ETCD_TRUSTED_CA_FILE"], pki),
        server_cert=on_host(etcd_service, env["ETCD_CERT_FILE"], pki),
        server_key=on_host(etcd_service, env["ETCD_KEY_FILE"], pki),
        client_cert=on_host(auth, auth["environment"]["ETCDCTL_CERT"], pki),
        client_key=on_host(auth, auth["environment"]["ETCDCTL_KEY"], pki),
    )
    with EtcdMember(tmp_path / "etcd", tls=tls) as member:
        auth_env = {
            **auth["environment"],
            "ETCDCTL_API": "3",
            "ETCDCTL_ENDPOINTS": member.client_url,
            **{
                name: str(on_host(auth, auth["environment"][name], pki))
                for name in ("ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY")
            },
        }
        assert "may read and write /hlc-oracle/compose/" in run_script("etcd-auth.sh", env=auth_env)
        run_script("etcd-auth.sh", env=auth_env)  # again: nothing changes, no error
        # etcd's own healthcheck, with auth on (its certificate's CN is no user).
        check = etcd_service["healthcheck"]["test"][1:]
        for path in ("ETCD_TRUSTED_CA_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
            check = [
                a.replace(env[path], str(on_host(etcd_service, env[path], pki))) for a in check
            ]
        check = [a.replace("https://127.0.0.1:2379", member.client_url) for a in check]
        health = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
        assert health.returncode == 0, health.stderr

        node = services["hlc-oracle-1"]
        node_env = {
            key: value for key, value in node["environment"].items() if key.startswith("HLC_")
        }
        for name in ("HLC_ORACLE_CLUSTER_ETCD_CA", "HLC_ORACLE_CLUSTER_ETCD_CERT"):
            node_env[name] = str(on_host(node, node_env[name], pki))
        node_env["HLC_ORACLE_CLUSTER_ETCD_KEY"] = str(
            on_host(node, node_env["HLC_ORACLE_CLUSTER_ETCD_KEY"], pki)
        )
        # 127.0.0.1 instead of the members' names: the certificate names both.
        node_env["HLC_ORACLE_CLUSTER_ETCD_ENDPOINTS"] = member.client_url
        config = load(DEPLOY / "oracle.example.toml", environ=node_env)
        prefix = f"/hlc-oracle/{config.cluster.name}/".encode()
        security = EtcdSecurity.from_config(config.cluster)
        assert security.certificate_user == "oracle"

        async def scenario() -> None:
            client = EtcdClient(config.cluster.etcd_endpoints, timeout_s=5, security=security)
            try:
                lease, _ = await client.grant(5)
                revision = await client.put(prefix + b"key", b"1")
                await client.txn([], [], [])
                watch = client.watch(prefix + b"key", revision)
                assert (await anext(watch)).kv.value == b"1"
                await watch.aclose()
                await client.compact(revision)
                assert (await client.db_size()).revision >= revision
                assert not await client.nospace_alarm()
                await client.revoke(lease)
                with pytest.raises(EtcdPermissionError, match="/hlc-oracle/other/key"):
                    await client.put(b"/hlc-oracle/other/key", b"1")
                with pytest.raises(EtcdPermissionError, match="watch of /hlc-oracle/other/key"):
                    async for _ in client.watch(b"/hlc-oracle/other/key", 1):
                        pass
            finally:
                await client.close()

        asyncio.run(scenario())
