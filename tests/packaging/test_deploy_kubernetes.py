"""deploy/kustomization.yaml and deploy/kubernetes/ are checked by parsing (no cluster here): the
manifests are well formed, and what they say about ports, user, config, data, the etcd cluster and
leader-only readiness matches the config loader, the container image, the example config and the
gRPC service names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from hlc_oracle.config import OracleConfig, load

from tests.support.repository import DEPLOY

PROTO = DEPLOY.parent / "python" / "hlc_oracle" / "proto" / "oracle.proto"


def kustomization() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return document


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource of the kustomization by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization()["resources"]:
        for document in yaml.safe_load_all((DEPLOY / resource).read_text()):
            assert document["apiVersion"] and document["metadata"]["name"]
            key = (document["kind"], document["metadata"]["name"])
            assert key not in found, key
            found[key] = document
    return found


def oracle_set() -> dict[str, Any]:
    return manifests()[("StatefulSet", "hlc-oracle")]


def etcd_set() -> dict[str, Any]:
    return manifests()[("StatefulSet", "etcd")]


def only_container(stateful_set: dict[str, Any]) -> dict[str, Any]:
    (container,) = stateful_set["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def env_file(path: Path) -> dict[str, str]:
    """A kustomize ``envs`` file: KEY=VALUE lines, # comments."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def generated_env(name: str) -> dict[str, str]:
    (generator,) = [g for g in kustomization()["configMapGenerator"] if g["name"] == name]
    merged: dict[str, str] = {}
    for path in generator["envs"]:
        merged.update(env_file(DEPLOY / path))
    return merged


def pod_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as Kubernetes gives it to pod ``pod_name``: ConfigMaps from
    ``envFrom``, then ``env`` with field references resolved and ``$(VAR)`` expanded."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(generated_env(source["configMapRef"]["name"]))
    fields = {
        "metadata.name": pod_name,
        "metadata.labels['apps.kubernetes.io/pod-index']": pod_name.rpartition("-")[2],
    }
    for item in container["env"]:
        if "valueFrom" in item:
            value = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = re.sub(r"\$\((\w+)\)", lambda match: env[match[1]], item["value"])
        env[item["name"]] = value
    return env


def oracle_config(pod_name: str) -> OracleConfig:
    env = {
        key: value
        for key, value in pod_env(only_container(oracle_set()), pod_name).items()
        if key.startswith("HLC_ORACLE_")
    }
    return load(DEPLOY / "oracle.example.toml", environ=env)


def test_every_resource_and_generated_file_exists() -> None:
    assert set(manifests()) == {
        ("Namespace", "hlc-oracle"),
        ("Service", "etcd"),
        ("StatefulSet", "etcd"),
        ("Service", "hlc-oracle"),
        ("Service", "hlc-oracle-peers"),
        ("StatefulSet", "hlc-oracle"),
        ("Job", "etcd-auth"),
    }
    for generator in kustomization()["configMapGenerator"]:
        for entry in generator.get("files", []):
            assert (DEPLOY / entry.partition("=")[2]).is_file()
        for path in generator.get("envs", []):
            assert env_file(DEPLOY / path)


def test_three_replicas_started_together_and_updated_by_hand() -> None:
    spec = oracle_set()["spec"]
    assert spec["replicas"] == 3
    # Followers never become ready: OrderedReady would never start the third pod, and a rolling
    # update would stall on the first follower.
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "OnDelete"


def test_every_pod_is_a_clustered_node_with_its_own_id_and_address() -> None:
    replicas = oracle_set()["spec"]["replicas"]
    peers = manifests()[("Service", oracle_set()["spec"]["serviceName"])]
    configs = [oracle_config(f"hlc-oracle-{ordinal}") for ordinal in range(replicas)]
    assert len({config.clock.node_id for config in configs}) == replicas
    for ordinal, config in enumerate(configs):
        assert config.cluster.clustered
        assert config.cluster.etcd_endpoints == configs[0].cluster.etcd_endpoints
        assert config.cluster.name == configs[0].cluster.name
        # The address followers redirect to is the pod's stable name under the headless service
        # that publishes pods before they are ready (followers never are).
        host, _, port = config.advertise_address.rpartition(":")
        assert host == f"hlc-oracle-{ordinal}.{peers['metadata']['name']}"
        assert int(port) == int(config.server.listen.rpartition(":")[2])
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True


def test_etcd_endpoints_are_the_members_of_the_etcd_set() -> None:
    etcd = etcd_set()
    service = etcd["spec"]["serviceName"]
    members = {
        f"https://etcd-{ordinal}.{service}:2379" for ordinal in range(etcd["spec"]["replicas"])
    }
    assert set(oracle_config("hlc-oracle-0").cluster.etcd_endpoints) == members
    env = pod_env(only_container(etcd), "etcd-1")
    assert env["ETCD_NAME"] == "etcd-1"
    assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"https://etcd-1.{service}:2379"
    initial = dict(entry.split("=", 1) for entry in env["ETCD_INITIAL_CLUSTER"].split(","))
    assert initial == {
        f"etcd-{ordinal}": f"https://etcd-{ordinal}.{service}:2380"
        for ordinal in range(etcd["spec"]["replicas"])
    }
    assert initial["etcd-1"] == env["ETCD_INITIAL_ADVERTISE_PEER_URLS"]
    assert etcd["spec"]["podManagementPolicy"] == "Parallel"
    assert manifests()[("Service", service)]["spec"]["publishNotReadyAddresses"] is True


def test_etcd_carries_the_settings_the_oracle_needs() -> None:
    env = pod_env(only_container(etcd_set()), "etcd-0")
    assert int(env["ETCD_QUOTA_BACKEND_BYTES"]) == 8 * 2**30
    assert env["ETCD_AUTO_COMPACTION_MODE"] == "periodic"
    assert env["ETCD_AUTO_COMPACTION_RETENTION"] == "5m"
    # etcd grants no lease below 1.5 x its election timeout: the oracle's lease must be above.
    lease_ttl_ms = oracle_config("hlc-oracle-0").cluster.lease_ttl_s * 1000
    assert lease_ttl_ms >= 1.5 * int(env["ETCD_ELECTION_TIMEOUT"])
    assert int(env["ETCD_HEARTBEAT_INTERVAL"]) * 5 <= int(env["ETCD_ELECTION_TIMEOUT"])
    assert only_container(etcd_set())["image"].endswith(":v3.4.23")


def test_container_ports_match_the_config_the_pod_runs_with() -> None:
    config = oracle_config("hlc-oracle-0")
    ports = {port["name"]: port["containerPort"] for port in only_container(oracle_set())["ports"]}
    assert config.server.listen == "0.0.0.0:50051"
    assert ports["grpc"] == int(config.server.listen.rpartition(":")[2])
    assert ports["metrics"] == config.metrics.port
    assert config.metrics.host == "0.0.0.0"
    for name in ("hlc-oracle", "hlc-oracle-peers"):
        service_ports = {p["name"]: p for p in manifests()[("Service", name)]["spec"]["ports"]}
        assert service_ports["grpc"]["port"] == ports["grpc"]
    peers_ports = {p["name"] for p in manifests()[("Service", "hlc-oracle-peers")]["spec"]["ports"]}
    assert "metrics" in peers_ports


def test_ready_only_on_the_leader_and_clients_sent_to_ready_pods() -> None:
    container = only_container(oracle_set())
    readiness = container["readinessProbe"]["grpc"]
    assert readiness["port"] == 50051
    # The timestamp service's health: NOT_SERVING on followers (and on a node the skew guard
    # stopped), SERVING on the leader.
    package = re.search(r"^package ([\w.]+);", PROTO.read_text(), re.MULTILINE)
    assert package is not None
    service_name = readiness["service"]
    assert service_name == f"{package[1]}.TimestampOracle"
    assert re.search(rf"^service {service_name.rpartition('.')[2]} {{", PROTO.read_text(), re.M)
    # A follower must not be restarted for not leading: liveness is TCP only.
    assert "tcpSocket" in container["livenessProbe"]
    clients = manifests()[("Service", "hlc-oracle")]["spec"]
    assert not clients.get("publishNotReadyAddresses", False)
    labels = oracle_set()["spec"]["template"]["metadata"]["labels"]
    assert clients["selector"].items() <= labels.items()


def test_runs_as_the_image_user_with_data_and_config_mounted() -> None:
    pod = oracle_set()["spec"]["template"]["spec"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"--uid {pod['securityContext']['runAsUser']}" in dockerfile
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = only_container(oracle_set())
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    config = oracle_config("hlc-oracle-0")
    assert Path(mounts["data"]) == config.server.data_dir
    assert container["args"][-1] == f"{mounts['config']}/oracle.toml"
    claims = oracle_set()["spec"]["volumeClaimTemplates"]
    assert [claim["metadata"]["name"] for claim in claims] == ["data"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > config.server.shutdown_grace_s


def secret_files(secret_name: str) -> dict[str, Path]:
    """The files a generated Secret holds, by key (their base names), as paths under deploy/."""
    (generator,) = [g for g in kustomization()["secretGenerator"] if g["name"] == secret_name]
    return {Path(entry).name: DEPLOY / entry for entry in generator["files"]}


def mounted_secret(pod: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """The name of the Secret the container mounts at ``path``."""
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["defaultMode"] == 0o440  # the pod's group (fsGroup) only
    name: str = volume["secret"]["secretName"]
    return name


def test_etcd_runs_tls_with_client_certificates_from_its_secret() -> None:
    pod = etcd_set()["spec"]["template"]["spec"]
    container = only_container(etcd_set())
    env = pod_env(container, "etcd-0")
    files = secret_files(mounted_secret(pod, container, "/etc/etcd/pki"))
    for side in ("", "PEER_"):
        assert env[f"ETCD_{side}CLIENT_CERT_AUTH"] == "true"
        for setting in ("CERT_FILE", "KEY_FILE", "TRUSTED_CA_FILE"):
            path = Path(env[f"ETCD_{side}{setting}"])
            assert path.parent == Path("/etc/etcd/pki") and path.name in files
    for name in ("ETCD_LISTEN_CLIENT_URLS", "ETCD_LISTEN_PEER_URLS", "ETCD_ADVERTISE_CLIENT_URLS"):
        assert env[name].startswith("https://")
    # The probes' port stays plain: /health only.
    assert env["ETCD_LISTEN_METRICS_URLS"].startswith("http://")
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"


def test_the_oracle_reaches_etcd_with_its_own_certificate_only() -> None:
    pod = oracle_set()["spec"]["template"]["spec"]
    container = only_container(oracle_set())
    config = oracle_config("hlc-oracle-0").cluster
    assert config.etcd_tls and config.etcd_user is None  # the user is the certificate's CN
    mount = "/etc/hlc-oracle/etcd"
    files = secret_files(mounted_secret(pod, container, mount))
    assert set(files) == {"ca.pem", "oracle.pem", "oracle-key.pem"}  # no root key, no server key
    for path in (config.etcd_ca, config.etcd_cert, config.etcd_key):
        assert path is not None and path.parent == Path(mount) and path.name in files


def test_the_auth_job_runs_the_auth_script_as_root_on_the_oracle_cluster_name() -> None:
    job = manifests()[("Job", "etcd-auth")]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    name_source = env["HLC_ORACLE_CLUSTER_NAME"]["valueFrom"]["configMapKeyRef"]
    assert name_source == {"name": "hlc-oracle-cluster", "key": "HLC_ORACLE_CLUSTER_NAME"}
    assert "HLC_ORACLE_CLUSTER_NAME" in generated_env("hlc-oracle-cluster")
    endpoints = env["ETCDCTL_ENDPOINTS"]["value"].split(",")
    assert set(endpoints) == set(oracle_config("hlc-oracle-0").cluster.etcd_endpoints)
    files = secret_files(mounted_secret(pod, container, "/etc/etcd/pki"))
    for name in ("ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY"):
        assert Path(env[name]["value"]).name in files
    assert Path(env["ETCDCTL_CERT"]["value"]).name == "root.pem"
    assert pod["restartPolicy"] == "OnFailure"
    dockerfile = (DEPLOY / "etcd-auth.Dockerfile").read_text()
    assert "COPY deploy/etcd-auth.sh" in dockerfile
    assert container["image"] in {image["name"] for image in kustomization()["images"]}


def test_the_secrets_hold_what_the_pki_script_makes(tmp_path: Path) -> None:
    """Every file a Secret is generated from is one that deploy/etcd-pki.sh writes."""
    subprocess.run(
        ["sh", str(DEPLOY / "etcd-pki.sh"), str(tmp_path / "etcd-pki")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    made = {path.name for path in (tmp_path / "etcd-pki").iterdir()}
    for generator in kustomization()["secretGenerator"]:
        for entry in generator["files"]:
            assert entry.startswith("etcd-pki/") and Path(entry).name in made, entry
