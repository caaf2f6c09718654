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
