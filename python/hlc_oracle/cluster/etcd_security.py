"""How a clustered node reaches a secured etcd: TLS, a client certificate, and etcd's own auth.

What the operator gives (``cluster.etcd_ca``, ``etcd_cert``, ``etcd_key``, ``etcd_user``,
``etcd_password_file``) is read and checked once, at start-up, into an :class:`EtcdSecurity`:

- every file readable, every certificate PEM and not expired, the client key the certificate's own
  (:mod:`hlc_oracle.tls`); otherwise :class:`EtcdSecurityFileError` names the file, and
  ``hlc-oracle serve`` exits 2;
- the password is the password file's first line, kept out of ``repr`` and logs.

etcd's auth then takes the user one of two ways. With ``--client-cert-auth`` and no token, etcd
takes the user from the client certificate's CN. With a user and password, the client asks
etcd for a token (``Authenticate``) and sends it with every call; the token expires (etcd's
``--auth-token-ttl``, 5 minutes by default, counted from its last use) and is asked for again
(:class:`~hlc_oracle.cluster.etcd.EtcdClient`).

gRPC reports every failed handshake as an unreachable endpoint, so when etcd cannot be reached at
start-up :func:`diagnose_endpoints` redoes the handshake with Python's ``ssl``
(:mod:`hlc_oracle.client.handshake`) and names the cause: no client certificate where etcd
demands one, a CA that does not match, plaintext to a TLS port or TLS to a plaintext one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from hlc_oracle.addresses import split_scheme
from hlc_oracle.client.handshake import Remedies, TlsMaterial, diagnose_blocking
from hlc_oracle.config import ClusterSection
from hlc_oracle.tls import (
    PemError,
    certificate_common_name,
    check_key_pair,
    check_not_expired,
    read_pem,
)

#: The causes a failed handshake with etcd names, in the words of the node's settings.
ETCD_REMEDIES = Remedies(
    ca="--etcd-ca, cluster.etcd_ca",
    bundle="cluster.etcd_ca",
    plaintext="write http:// endpoints and give neither --etcd-ca nor --etcd-cert",
    client_certificate="--etcd-cert and --etcd-key (cluster.etcd_cert, cluster.etcd_key)",
    server_client_ca="etcd's --trusted-ca-file",
)


class EtcdSecurityFileError(ValueError):
    """A CA, certificate, key or password file for etcd cannot be used; the message names it."""


@dataclass(frozen=True)
class EtcdSecurity:
    """The link to etcd: plaintext (the default), or TLS with ``material``; and the auth user,
    when the node authenticates with a password."""

    tls: bool = False
    material: TlsMaterial | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The client certificate's CN: etcd's user when there is no password.
    certificate_user: str | None = None

    @classmethod
    def from_config(cls, cluster: ClusterSection) -> EtcdSecurity:
        """Reads and checks the files ``cluster`` names; :class:`EtcdSecurityFileError`."""
        material = None
        certificate_user = None
        if cluster.etcd_tls:
            ca = _read(cluster.etcd_ca, "certificate", "etcd CA bundle (cluster.etcd_ca)")
            cert = _read(
                cluster.etcd_cert, "certificate", "etcd client certificate (cluster.etcd_cert)"
            )
            key = _read(cluster.etcd_key, "private key", "etcd client key (cluster.etcd_key)")
            try:
                if cert is not None and key is not None:
                    check_not_expired(
                        cert, f"the etcd client certificate (cluster.etcd_cert) {cluster.etcd_cert}"
                    )
                    check_key_pair(
                        cert,
                        key,
                        f"the etcd client key {cluster.etcd_key} (cluster.etcd_key) and "
                        f"certificate {cluster.etcd_cert}",
                    )
                    certificate_user = certificate_common_name(cert)
            except PemError as err:
                raise EtcdSecurityFileError(str(err)) from err
            material = TlsMaterial(ca, key, cert)
        password = None
        if cluster.etcd_password_file is not None:
            password = read_password(cluster.etcd_password_file)
        return cls(
            tls=cluster.etcd_tls,
            material=material,
            user=cluster.etcd_user,
            password=password,
            certificate_user=certificate_user,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for the channel; ``None``: plaintext."""
        if not self.tls:
            return None
        material = self.material or TlsMaterial()
        return grpc.ssl_channel_credentials(
            material.root_certificates, material.private_key, material.certificate_chain
        )

    def who(self) -> str:
        """The user etcd sees, for messages: ``user 'oracle' (password)``, ``user 'oracle' (the
        client certificate's CN)``, or ``no user (etcd's auth must be off)``."""
        if self.user is not None:
            return f"user {self.user!r} (password from cluster.etcd_password_file)"
        if self.certificate_user is not None:
            return f"user {self.certificate_user!r} (the client certificate's CN)"
        return "no user (neither a client certificate nor cluster.etcd_user)"

    @property
    def password_in_clear(self) -> bool:
        """A password sent over plaintext: anyone on the path can read it (and the token)."""
        return self.password is not None and not self.tls

    def describe(self) -> dict[str, Any]:
        """Log fields: how the node reaches etcd (never the password)."""
        return {
            "etcd_tls": self.tls,
            "etcd_client_certificate": self.material is not None
            and self.material.certificate_chain is not None,
            "etcd_user": self.user or self.certificate_user,
        }


def _read(path: Path | None, kind: Any, role: str) -> bytes | None:
    if path is None:
        return None
    try:
        return read_pem(path, kind, role)
    except OSError as err:
        raise EtcdSecurityFileError(err.strerror or str(err)) from err
    except PemError as err:
        raise EtcdSecurityFileError(str(err)) from err


def read_password(path: Path) -> str:
    """The first line of ``path`` (a trailing newline or CR removed);
    :class:`EtcdSecurityFileError` naming the file when it cannot be read or the line is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise EtcdSecurityFileError(
            f"cannot read the etcd password file (cluster.etcd_password_file) {path}: {reason}"
        ) from err
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise EtcdSecurityFileError(
            f"the etcd password file (cluster.etcd_password_file) {path} is empty: its first "
            "line is the password"
        )
    return password


async def diagnose_endpoints(
    endpoints: Sequence[str], security: EtcdSecurity, timeout_s: float = 2.0
) -> str | None:
    """The TLS cause that keeps etcd unreachable (``etcd at host:port: <cause>``), looking at
    each endpoint in turn, or ``None`` when none is a TLS matter (nothing listens there, or the
    handshake works)."""
    for endpoint in endpoints:
        _, address = split_scheme(endpoint)
        failure = await asyncio.to_thread(
            diagnose_blocking,
            address,
            security.material if security.tls else None,
            security.tls,
            timeout_s,
            ETCD_REMEDIES,
        )
        if failure is not None:
            return f"etcd at {address}: {failure.cause}"
    return None
