"""TLS credentials for the client's channel, from PEM files or bytes.

:func:`channel_credentials` checks the files before gRPC's C core sees them, and keeps their
bytes beside the credentials, so that a failed handshake can be diagnosed
(:mod:`hlc_oracle.client.handshake`).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from hlc_oracle.client.handshake import TlsMaterial, remember_material
from hlc_oracle.tls import read_pem


def channel_credentials(
    root_certificates: Path | bytes | None,
    private_key: Path | bytes | None = None,
    certificate_chain: Path | bytes | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files or bytes (key and chain for mutual TLS).

    ``root_certificates`` None trusts the system's CAs. ``private_key`` and ``certificate_chain``
    go together (gRPC's C core would abort the process on one without the other): ``ValueError``
    when only one is given, ``OSError`` naming the file when one cannot be read,
    :class:`~hlc_oracle.tls.PemError` (a ``ValueError``) naming it when it is not PEM.
    """
    if (private_key is None) != (certificate_chain is None):
        missing = "certificate_chain" if certificate_chain is None else "private_key"
        raise ValueError(
            f"mutual TLS needs private_key and certificate_chain: {missing} is missing"
        )
    material = TlsMaterial(
        read_pem(root_certificates, "certificate", "CA bundle")
        if root_certificates is not None
        else None,
        read_pem(private_key, "private key", "client key") if private_key is not None else None,
        read_pem(certificate_chain, "certificate", "client certificate")
        if certificate_chain is not None
        else None,
    )
    credentials = grpc.ssl_channel_credentials(
        material.root_certificates, material.private_key, material.certificate_chain
    )
    remember_material(credentials, material)
    return credentials
