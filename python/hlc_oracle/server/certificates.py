"""The server's TLS files: read and checked before binding, and their expiry date watched.

gRPC reports a file that is not PEM, or a key of another certificate, only as "Failed to bind to
address" or a failed handshake, without naming it, so the files are read and checked here first
(:func:`~hlc_oracle.tls.read_pem`, :func:`~hlc_oracle.tls.check_key_pair`). And a certificate that
has expired makes every client's handshake fail with nothing on the server's side to say why, so
start-up warns ahead of time (:func:`warn_if_expiring`).
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import grpc

from hlc_oracle.config import TlsSection
from hlc_oracle.tls import PemError, certificate_not_after, check_key_pair, read_pem

log = logging.getLogger("hlc_oracle.server")

#: A server certificate that expires sooner than this is warned about at start-up.
CERTIFICATE_WARNING_DAYS = 30


def server_credentials(tls: TlsSection) -> Any:
    """gRPC server credentials from ``tls`` (``None`` when TLS is off); ``OSError`` or
    :class:`~hlc_oracle.tls.PemError` naming the file that cannot be used."""
    if tls.cert_file is None or tls.key_file is None:
        return None
    cert = read_pem(tls.cert_file, "certificate", "TLS certificate (tls.cert_file)")
    key = read_pem(tls.key_file, "private key", "TLS key (tls.key_file)")
    check_key_pair(cert, key, f"the TLS key {tls.key_file} and certificate {tls.cert_file}")
    ca = (
        read_pem(tls.client_ca_file, "certificate", "client CA (tls.client_ca_file)")
        if tls.client_ca_file
        else None
    )
    warn_if_expiring(cert, tls.cert_file)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def warn_if_expiring(cert: bytes, path: Path, now: datetime.datetime | None = None) -> None:
    """Logs a warning when the server certificate expires within
    :data:`CERTIFICATE_WARNING_DAYS`, an error when it has expired: clients will refuse the
    handshake then, and nothing else would say why."""
    try:
        not_after = certificate_not_after(cert)
    except PemError as err:
        log.warning(
            "cannot read the TLS certificate's expiry date",
            extra={"fields": {"cert_file": str(path), "error": str(err)}},
        )
        return
    days_left = (not_after - (now or datetime.datetime.now(datetime.UTC))).total_seconds() / 86400
    fields = {"cert_file": str(path), "not_after": not_after.isoformat(), "days_left": days_left}
    if days_left <= 0:
        log.error(
            f"the TLS certificate {path} has expired: clients will refuse the handshake",
            extra={"fields": fields},
        )
    elif days_left <= CERTIFICATE_WARNING_DAYS:
        log.warning(
            f"the TLS certificate {path} expires in {days_left:.1f} days: renew it",
            extra={"fields": fields},
        )
