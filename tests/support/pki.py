"""Test certificates, made with ``cryptography``: a CA, a server certificate for 127.0.0.1, client
certificates good and bad (expired, from another CA), server certificates near or past their
expiry, and etcd's users by CN (``oracle``, ``root``), written as PEM files. Each leaf's CN is its
name.

    files = make_pki(tmp_path)   # {"ca.pem": Path, "server.pem": ..., "server-key.pem": ...}
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    ca: bool,
    valid_for: datetime.timedelta = datetime.timedelta(days=1),
) -> x509.Certificate:
    """Valid from 10 days ago until ``valid_for`` from now (negative: expired); a leaf is for
    localhost and 127.0.0.1."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


#: Leaf certificates: name -> (issued by the other CA?, valid for).
LEAVES = {
    "server": (False, datetime.timedelta(days=365)),
    "client": (False, datetime.timedelta(days=365)),
    "expired-client": (False, datetime.timedelta(days=-1)),
    "other-ca-client": (True, datetime.timedelta(days=365)),
    "expiring-server": (False, datetime.timedelta(days=10)),
    "expired-server": (False, datetime.timedelta(days=-2)),
    # etcd's users, named by the certificate's CN under --client-cert-auth.
    "oracle": (False, datetime.timedelta(days=365)),
    "root": (False, datetime.timedelta(days=365)),
}


def make_pki(directory: Path) -> dict[str, Path]:
    """``ca.pem`` and ``other-ca.pem``, and ``<name>.pem`` with ``<name>-key.pem`` for every name
    of :data:`LEAVES`; returns the paths by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        files[name] = directory / name
        files[name].write_bytes(data)

    authorities = {}
    for name in ("ca", "other-ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(name, key, None, None, ca=True, valid_for=datetime.timedelta(days=400))
        authorities[name] = (cert, key)
        write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    for name, (other_ca, valid_for) in LEAVES.items():
        issuer, issuer_key = authorities["other-ca" if other_ca else "ca"]
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(name, key, issuer, issuer_key, ca=False, valid_for=valid_for)
        write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        write(
            f"{name}-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return files
