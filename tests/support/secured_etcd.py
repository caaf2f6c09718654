"""A secured etcd for the cluster tests and benchmarks: TLS, client certificates required, auth on
with a least-privilege role, and the oracle's flags that reach it.

    member = secured_etcd(tmp_path / "etcd", pki)            # started: https, --client-cert-auth
    member.client_url                                         # https://127.0.0.1:<port>
    args = oracle_etcd_args(pki)                              # --etcd-ca and the ``oracle``
                                                              # certificate (its CN the user)
    args = oracle_etcd_args(pki, password_file=path)          # user ``oracle`` with a password

The role (:data:`~tests.support.etcd_process.ORACLE_ROLE`) grants readwrite on the default cluster's
prefix only (``/hlc-oracle/hlc-oracle/``); the user ``oracle`` logs in by its certificate's CN
(``oracle.pem``) or with :data:`ORACLE_PASSWORD`. The fixture itself is ``root`` (``root.pem``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hlc_oracle.cluster.node import key_prefix

from tests.support.etcd_process import EtcdMember, EtcdTls
from tests.support.pki import make_pki

ORACLE_PASSWORD = "oracle-password"
#: The prefix the ``oracle`` user may read and write: the default cluster's.
GRANTED_PREFIX = key_prefix("hlc-oracle")


def etcd_tls(pki: dict[str, Path]) -> EtcdTls:
    return EtcdTls(
        ca=pki["ca.pem"],
        server_cert=pki["server.pem"],
        server_key=pki["server-key.pem"],
        client_cert=pki["root.pem"],
        client_key=pki["root-key.pem"],
    )


def secured_etcd(
    directory: Path,
    pki: dict[str, Path],
    extra_args: tuple[str, ...] = (),
    *,
    auth: bool = True,
    prefix: str = GRANTED_PREFIX,
) -> EtcdMember:
    """A started member with TLS and client certificates required; with ``auth``, etcd's auth on
    and the ``oracle`` user's role limited to ``prefix``. The caller closes it."""
    member = EtcdMember(directory, tls=etcd_tls(pki), extra_args=extra_args).start()
    try:
        if auth:
            member.enable_auth(prefix, oracle_password=ORACLE_PASSWORD)
    except BaseException:
        member.close()
        raise
    return member


@contextlib.contextmanager
def secured_etcd_with_pki(
    directory: Path, extra_args: tuple[str, ...] = (), prefix: str = GRANTED_PREFIX
) -> Iterator[tuple[EtcdMember, dict[str, Path]]]:
    """Certificates made under ``directory`` and a :func:`secured_etcd` on them, stopped at the
    end (for benchmarks and tests without the ``pki`` fixture)."""
    pki = make_pki(directory / "pki")
    member = secured_etcd(directory / "etcd", pki, extra_args, prefix=prefix)
    try:
        yield member, pki
    finally:
        member.close()


def oracle_etcd_args(
    pki: dict[str, Path],
    *,
    certificate: str = "oracle",
    password_file: Path | None = None,
) -> tuple[str, ...]:
    """``hlc-oracle serve`` flags that reach a :func:`secured_etcd` over TLS with the client
    certificate ``<certificate>.pem``, logging in as ``oracle`` with the password in
    ``password_file`` when given (else as the certificate's CN)."""
    args = [
        "--etcd-ca", str(pki["ca.pem"]),
        "--etcd-cert", str(pki[f"{certificate}.pem"]),
        "--etcd-key", str(pki[f"{certificate}-key.pem"]),
    ]  # fmt: skip
    if password_file is not None:
        args += ["--etcd-user", "oracle", "--etcd-password-file", str(password_file)]
    return tuple(args)
