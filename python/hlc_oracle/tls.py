"""PEM files for TLS, read and checked before gRPC sees them, and what a certificate says.

gRPC's C core aborts the whole process on a client certificate without its key, and reports a
server certificate or key that is not PEM only as "Failed to bind to address". Reading and checking
the files here first turns both into errors that name the file: ``OSError`` when it cannot be read,
:class:`PemError` (a ``ValueError``) when it holds no usable PEM block of the expected kind.
"""

from __future__ import annotations

import binascii
import datetime
import re
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


class PemError(ValueError):
    """A TLS file (or bytes) is not PEM, or holds no block of the kind it is used for."""


def _label_fits(label: str, kind: Literal["certificate", "private key"]) -> bool:
    if kind == "certificate":
        return label in ("CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CERTIFICATE")
    return label.endswith("PRIVATE KEY")


def check_pem(data: bytes, kind: Literal["certificate", "private key"], what: str) -> None:
    """Raises :class:`PemError` unless ``data`` holds at least one PEM block of ``kind`` and every
    such block decodes (base64 of a DER sequence). ``what`` names the source in the message."""
    blocks = [
        (match.group(1).decode("ascii"), match.group(2))
        for match in _BLOCK.finditer(data)
        if _label_fits(match.group(1).decode("ascii"), kind)
    ]
    if not blocks:
        expected = "CERTIFICATE" if kind == "certificate" else "PRIVATE KEY"
        raise PemError(f"{what} is not a PEM {kind}: no '-----BEGIN {expected}-----' block")
    for label, body in blocks:
        try:
            der = binascii.a2b_base64(b"".join(body.split()), strict_mode=True)
        except binascii.Error as err:
            raise PemError(f"{what}: the {label} block is not valid base64: {err}") from err
        if not der.startswith(b"\x30"):
            raise PemError(f"{what}: the {label} block does not hold a DER {kind}")


def read_pem(
    source: Path | str | bytes, kind: Literal["certificate", "private key"], role: str
) -> bytes:
    """The bytes of ``source`` (a path, or PEM bytes as they are), checked to hold a ``kind``.

    ``role`` says what the file is for ("CA bundle", "client certificate", ...) in messages.
    Raises ``OSError`` naming the file when it cannot be read, :class:`PemError` when it is not
    a PEM ``kind``.
    """
    if isinstance(source, bytes):
        check_pem(source, kind, f"the {role} (bytes)")
        return source
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise type(err)(err.errno, f"cannot read the {role} {path}: {err.strerror}") from err
    check_pem(data, kind, f"the {role} {path}")
    return data


def certificate_not_after(pem: bytes) -> datetime.datetime:
    """When the first certificate in ``pem`` (the leaf of a chain) stops being valid, in UTC.
    Raises :class:`PemError` when it does not parse as an X.509 certificate."""
    try:
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc
    except ValueError as err:
        raise PemError(f"not an X.509 certificate: {err}") from err


def check_not_expired(pem: bytes, what: str, now: datetime.datetime | None = None) -> None:
    """Raises :class:`PemError` naming ``what`` when the first certificate in ``pem`` has expired
    or is not valid yet."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as err:
        raise PemError(f"{what} is not an X.509 certificate: {err}") from err
    now = now or datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc <= now:
        raise PemError(f"{what} expired at {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    if certificate.not_valid_before_utc > now:
        raise PemError(
            f"{what} is not valid until {certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )


def check_key_pair(certificate_pem: bytes, key_pem: bytes, what: str) -> None:
    """Raises :class:`PemError` unless the private key in ``key_pem`` belongs to the first
    certificate in ``certificate_pem`` (gRPC would only fail the handshake, without saying why).
    ``what`` names the pair ("the etcd client certificate a.pem and key b.pem")."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as err:
        # TypeError: an encrypted key (gRPC cannot take a passphrase either).
        raise PemError(f"{what}: cannot be loaded: {err}") from err
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != certificate.public_key().public_bytes(
        encoding, public
    ):
        raise PemError(f"{what}: the key does not match the certificate (another pair's key?)")


def certificate_common_name(pem: bytes) -> str | None:
    """The CN of the first certificate in ``pem`` (what etcd takes as the user name under
    ``--client-cert-auth``), or ``None`` when it has none or does not parse."""
    try:
        names = x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME
        )
    except ValueError:
        return None
    return str(names[0].value) if names else None
