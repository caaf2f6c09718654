"""Clustered mode against a secured etcd (TLS, client certificates required, auth on, a role with
readwrite on the cluster's prefix only): election, failover and commits work, the user comes from
the certificate's CN or from a password whose token is asked for again when it expires, a foreign
prefix is refused, and every misconfiguration ends the node at once with one line naming the cause
(exit 1), or naming the file (exit 2). Real etcd (:mod:`tests.support.secured_etcd`),
certificates made by the test (:mod:`tests.support.pki`)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hlc_oracle import Committed, Transaction
from hlc_oracle.cluster.etcd import EtcdAuthError, EtcdClient, EtcdPermissionError
from hlc_oracle.cluster.etcd_security import EtcdSecurity
from hlc_oracle.config import ClusterSection

from tests.support.commands import CLI
from tests.support.etcd_process import ORACLE_ROLE, EtcdMember
from tests.support.oracle_cluster import OracleCluster, leader_client
from tests.support.secured_etcd import (
    GRANTED_PREFIX,
    ORACLE_PASSWORD,
    oracle_etcd_args,
    secured_etcd,
    secured_etcd_with_pki,
)

#: etcd's auth token lives this long after its last use, here (5 minutes by default).
TOKEN_TTL_S = 1
#: A node that cannot start exits within its start-up wait (3 s with a 1 s lease) and some.
START_BOUND_S = 20.0


@pytest.fixture(scope="module")
def etcd_tls(
    pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdMember]:
    """TLS, client certificates, auth with the least-privilege role, and short-lived tokens."""
    member = secured_etcd(
        tmp_path_factory.mktemp("etcd-tls") / "etcd",
        pki,
        extra_args=("--auth-token-ttl", str(TOKEN_TTL_S)),
    )
    try:
        yield member
    finally:
        member.close()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "etcd-password"
    path.write_text(ORACLE_PASSWORD + "\n")
    path.chmod(0o600)
    return path


def security(member: EtcdMember, **settings: object) -> EtcdSecurity:
    cluster = ClusterSection(etcd_endpoints=(member.client_url,), **settings)  # type: ignore[arg-type]
    cluster.validate()
    return EtcdSecurity.from_config(cluster)


def test_election_failover_and_commits_with_the_certificate_user(
    etcd_tls: EtcdMember, pki: dict[str, Path], tmp_path: Path
) -> None:
    """Two nodes whose etcd user is their certificate's CN: one leads and commits; kill -9, the
    other takes over, and timestamps and commits go on, above everything before."""
    with OracleCluster(
        tmp_path, etcd_tls.client_url, size=2, lease_ttl_s=1, extra_args=oracle_etcd_args(pki)
    ) as cluster:
        leader = cluster.wait_for_leader()
        with leader_client(cluster.targets) as client:
            before = client.get_timestamps(3)
            start = client.get_timestamp()
            assert isinstance(client.commit(Transaction(1, start, [], [b"a"])), Committed)
            leader_id = client.status().node_id
            leader.kill()
            successor = cluster.wait_for_leader(other_than=leader_id)
            after = client.get_timestamps(3)
            assert after.first > before.last
            start = client.get_timestamp()
            assert isinstance(client.commit(Transaction(2, start, [], [b"b"])), Committed)
        joined = next(line for line in successor.log_text().splitlines() if "joined" in line)
        assert '"etcd_tls": true' in joined and '"etcd_user": "oracle"' in joined


def test_a_password_user_gets_a_new_token_when_the_old_one_expires(
    etcd_tls: EtcdMember, pki: dict[str, Path], password_file: Path, tmp_path: Path
) -> None:
    """Tokens expire (a short TTL here), and etcd forgets every token when its auth is turned
    off and on again, as an operator may; when the leader dies the follower campaigns with a
    fresh token and leads. The certificate (CN ``client``) is no etcd user: the password's token
    is what etcd goes by."""
    args = oracle_etcd_args(pki, certificate="client", password_file=password_file)
    with OracleCluster(tmp_path, etcd_tls.client_url, size=2, extra_args=args) as cluster:
        leader = cluster.wait_for_leader()
        status = cluster.statuses()
        leader_id = next(node for node, s in status.items() if s.role == "leader")
        time.sleep(3 * TOKEN_TTL_S)  # an idle node's token expires meanwhile
        etcd_tls.as_root("auth", "disable")
        etcd_tls.etcdctl("auth", "enable")  # no token is valid any more
        leader.kill()
        successor = cluster.wait_for_leader(other_than=leader_id)
        with leader_client([successor.target]) as client:
            assert len(client.get_timestamps(2)) == 2
        assert "new etcd auth token (the last one expired)" in successor.log_text()


def test_the_client_asks_for_a_new_token_once_etcd_forgets_the_old_one(
    etcd_tls: EtcdMember, pki: dict[str, Path], password_file: Path
) -> None:
    async def scenario() -> tuple[int, int]:
        client = EtcdClient(
            [etcd_tls.client_url],
            timeout_s=5.0,
            security=security(
                etcd_tls,
                etcd_ca=pki["ca.pem"],
                etcd_cert=pki["client.pem"],
                etcd_key=pki["client-key.pem"],
                etcd_user="oracle",
                etcd_password_file=password_file,
            ),
        )
        try:
            await client.put(GRANTED_PREFIX.encode() + b"token", b"1")
            first = client.authentications
            await asyncio.sleep(3 * TOKEN_TTL_S)
            await client.put(GRANTED_PREFIX.encode() + b"token", b"2")
            return first, client.authentications
        finally:
            await client.close()

    assert asyncio.run(scenario()) == (1, 2)


def test_a_foreign_prefix_is_refused_naming_the_key(
    etcd_tls: EtcdMember, pki: dict[str, Path]
) -> None:
    async def scenario() -> None:
        client = EtcdClient(
            [etcd_tls.client_url],
            security=security(
                etcd_tls,
                etcd_ca=pki["ca.pem"],
                etcd_cert=pki["oracle.pem"],
                etcd_key=pki["oracle-key.pem"],
            ),
        )
        try:
            await client.put(GRANTED_PREFIX.encode() + b"mine", b"1")
            with pytest.raises(EtcdPermissionError, match="put of /hlc-oracle/other/key refused"):
                await client.put(b"/hlc-oracle/other/key", b"1")
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_wrong_password_is_an_auth_error(
    etcd_tls: EtcdMember, pki: dict[str, Path], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")

    async def scenario() -> None:
        client = EtcdClient(
            [etcd_tls.client_url],
            security=security(
                etcd_tls,
                etcd_ca=pki["ca.pem"],
                etcd_cert=pki["client.pem"],
                etcd_key=pki["client-key.pem"],
                etcd_user="oracle",
                etcd_password_file=wrong,
            ),
        )
        try:
            with pytest.raises(EtcdAuthError, match="invalid user ID or password"):
                await client.grant(5)
        finally:
            await client.close()

    asyncio.run(scenario())


def serve_once(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--log-format", "text",
         "--set", "cluster.lease_ttl_s=1", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def the_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line ``hlc-oracle serve`` ends with on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("hlc-oracle serve:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# Each: the flags beside the endpoint (by name from the pki), and what the line must say.
REFUSALS = {
    "no client certificate where etcd demands one": (
        ("--etcd-ca", "ca.pem"),
        "it requires a client certificate (mutual TLS): give --etcd-cert and --etcd-key",
    ),
    "a CA that does not match etcd's certificate": (
        ("--etcd-ca", "other-ca.pem", "--etcd-cert", "oracle.pem", "--etcd-key", "oracle-key.pem"),
        "the server's certificate is not signed by a CA in this client's bundle "
        "(cluster.etcd_ca)",
    ),
    "a client certificate etcd does not trust": (
        (
            "--etcd-ca", "ca.pem",
            "--etcd-cert", "other-ca-client.pem", "--etcd-key", "other-ca-client-key.pem",
        ),
        "it does not trust this client's certificate, issued by CN=other-ca",
    ),
    "a plaintext endpoint on a TLS port": (
        (),
        "the server speaks TLS and this client connected in plaintext",
    ),
    "a certificate whose CN is no etcd user": (
        ("--etcd-ca", "ca.pem", "--etcd-cert", "client.pem", "--etcd-key", "client-key.pem"),
        "permission denied: txn of /hlc-oracle/hlc-oracle/members/1 refused to user 'client' "
        "(the client certificate's CN)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_start_exits_1_naming_the_cause(
    etcd_tls: EtcdMember, pki: dict[str, Path], tmp_path: Path, case: str
) -> None:
    flags, cause = REFUSALS[case]
    args = [str(pki[flag]) if flag in pki else flag for flag in flags]
    endpoint = etcd_tls.endpoint if case.startswith("a plaintext") else etcd_tls.client_url
    started = time.monotonic()
    result = serve_once(tmp_path / "data", "--etcd-endpoints", endpoint, "--node-id", "1", *args)
    assert result.returncode == 1, result.stderr
    assert cause in the_line(result)
    assert time.monotonic() - started < START_BOUND_S


def test_a_role_without_the_cluster_prefix_exits_1_naming_the_key(
    etcd_tls: EtcdMember, pki: dict[str, Path], tmp_path: Path
) -> None:
    """The role grants ``/hlc-oracle/hlc-oracle/`` only: a cluster named ``other`` is refused on
    its first write, and the node stops instead of retrying."""
    result = serve_once(
        tmp_path / "data", "--etcd-endpoints", etcd_tls.client_url, "--cluster-name", "other",
        "--node-id", "3", *oracle_etcd_args(pki),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    line = the_line(result)
    assert "permission denied" in line and "/hlc-oracle/other/members/3" in line
    assert "user 'oracle' (the client certificate's CN)" in line


def test_a_permission_revoked_while_leading_stops_the_node(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """An operator revokes the role's readwrite while the node leads: its next window save is
    refused, and it exits 1 naming the key instead of retrying (its own etcd: the module's stays
    granted)."""
    with (
        secured_etcd_with_pki(tmp_path / "secured") as (member, own_pki),
        OracleCluster(
            tmp_path, member.client_url, size=1, lease_ttl_s=3, extra_args=oracle_etcd_args(own_pki)
        ) as cluster,
    ):
        node = cluster.wait_for_leader()
        member.as_root("role", "revoke-permission", ORACLE_ROLE, GRANTED_PREFIX, "--prefix=true")
        assert node.process is not None
        assert node.process.wait(timeout=30) == 1
        stopped = [line for line in node.log_text().splitlines() if "stopped:" in line]
        assert len(stopped) == 1, node.log_text()
        assert "permission denied" in stopped[0]
        assert f"of {GRANTED_PREFIX}" in stopped[0]  # the key it was refused on


def test_tls_to_a_plaintext_port_exits_1_naming_the_cause(
    etcd: EtcdMember, pki: dict[str, Path], tmp_path: Path
) -> None:
    result = serve_once(
        tmp_path / "data", "--etcd-endpoints", f"https://{etcd.endpoint}",
        "--etcd-ca", str(pki["ca.pem"]),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "the server does not speak TLS (a plaintext port?)" in the_line(result)


def test_a_wrong_password_exits_1(
    etcd_tls: EtcdMember, pki: dict[str, Path], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    result = serve_once(
        tmp_path / "data", "--etcd-endpoints", etcd_tls.client_url,
        *oracle_etcd_args(pki, certificate="client", password_file=wrong),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "authentication failed, invalid user ID or password" in the_line(result)


def bad_files(pki: dict[str, Path], tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    empty = tmp_path / "empty-password"
    empty.write_text("\n")
    good = ["--etcd-cert", str(pki["oracle.pem"]), "--etcd-key", str(pki["oracle-key.pem"])]
    return {
        "missing CA": (
            ["--etcd-ca", str(tmp_path / "nope.pem"), *good],
            f"cannot read the etcd CA bundle (cluster.etcd_ca) {tmp_path / 'nope.pem'}",
        ),
        "CA not PEM": (
            ["--etcd-ca", str(not_pem), *good],
            f"the etcd CA bundle (cluster.etcd_ca) {not_pem} is not a PEM certificate",
        ),
        "expired certificate": (
            [
                "--etcd-ca", str(pki["ca.pem"]),
                "--etcd-cert", str(pki["expired-client.pem"]),
                "--etcd-key", str(pki["expired-client-key.pem"]),
            ],
            f"the etcd client certificate (cluster.etcd_cert) {pki['expired-client.pem']} "
            "expired at",
        ),
        "key of another certificate": (
            [
                "--etcd-ca", str(pki["ca.pem"]),
                "--etcd-cert", str(pki["oracle.pem"]),
                "--etcd-key", str(pki["client-key.pem"]),
            ],
            f"the etcd client key {pki['client-key.pem']} (cluster.etcd_key) and certificate "
            f"{pki['oracle.pem']}: the key does not match the certificate",
        ),
        "empty password file": (
            ["--etcd-ca", str(pki["ca.pem"]), *good,
             "--etcd-user", "oracle", "--etcd-password-file", str(empty)],
            f"the etcd password file (cluster.etcd_password_file) {empty} is empty",
        ),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        "missing CA",
        "CA not PEM",
        "expired certificate",
        "key of another certificate",
        "empty password file",
    ],
)
def test_a_bad_file_exits_2_naming_it(pki: dict[str, Path], tmp_path: Path, case: str) -> None:
    """Checked before etcd is dialled: nothing listens at the endpoint."""
    args, message = bad_files(pki, tmp_path)[case]
    result = serve_once(tmp_path / "data", "--etcd-endpoints", "https://127.0.0.1:9", *args)
    assert result.returncode == 2, result.stderr
    assert message in the_line(result)
