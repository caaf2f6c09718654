"""Telling a failed TLS handshake from an unreachable oracle, and naming its likely cause.

gRPC reports both the same way: the call fails with ``UNAVAILABLE`` ("Socket closed", or no
answer before the deadline while the channel keeps reconnecting). A server that refuses a client
certificate does so after the client's side of the TLS 1.3 handshake has completed, and closes
the connection without an alert, so even gRPC's own details cannot tell. So when a call finally
fails as unreachable, the client looks for itself (:func:`diagnose`): it opens a TCP connection to
the target (refused or silent: the server is unreachable, nothing more to say), and redoes the
handshake with Python's ``ssl`` and the same PEM material (:class:`TlsMaterial`, which
:func:`~hlc_oracle.client.channel_credentials` keeps on the credentials it returns). Then:

- a plaintext channel, and the port completes a TLS handshake: plaintext to a TLS port;
- a TLS channel, and the port does not speak TLS: TLS to a plaintext port;
- the server's certificate fails the client's check: expired, from a CA outside the bundle, or not
  naming the host;
- the handshake completes but the server closes the connection at once instead of sending its
  HTTP/2 settings: it refused the client's certificate, or its absence. The client reads its own
  certificate to say which: none given, expired (or not valid yet), or issued by a CA the server
  does not trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import socket
import ssl
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from hlc_oracle.addresses import split_host_port

#: The client's first bytes on an HTTP/2 connection (RFC 9113 §3.4) and an empty SETTINGS frame:
#: a server that accepted the handshake answers with its own SETTINGS.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes a TLS channel was made from: CA bundle (``None``: the system's), and the
    client key and certificate chain for mutual TLS."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None


# The material of the credentials channel_credentials() made, without keeping them alive.
_MATERIAL: weakref.WeakKeyDictionary[Any, TlsMaterial] = weakref.WeakKeyDictionary()


def remember_material(credentials: Any, material: TlsMaterial) -> None:
    """Keeps ``material`` as the PEM bytes ``credentials`` (a ``grpc.ChannelCredentials``) hold."""
    _MATERIAL[credentials] = material


def material_of(credentials: Any) -> TlsMaterial | None:
    """The material of ``credentials`` made by ``channel_credentials``; ``None`` for others."""
    try:
        return _MATERIAL.get(credentials)
    except TypeError:  # None (a plaintext channel), or an object without weak references
        return None


@dataclass(frozen=True)
class Remedies:
    """The settings each cause names, in the words of the program that connects: the client's
    flags by default; a clustered node's link to etcd names its own (``cluster.etcd_*``)."""

    #: Where the CA bundle is given.
    ca: str = "--tls-ca; channel_credentials(ca) in code"
    #: The CA bundle's setting, named when it does not hold the server's CA.
    bundle: str = "--tls-ca"
    #: How to connect without TLS.
    plaintext: str = "connect without --tls-ca"
    #: Where the client certificate and key are given.
    client_certificate: str = "--tls-cert and --tls-key"
    #: The server's setting that names the CAs it trusts for client certificates.
    server_client_ca: str = "the server's tls.client_ca_file"


CLIENT_REMEDIES = Remedies()


@dataclass(frozen=True)
class HandshakeFailure:
    """What :func:`diagnose` found: ``cause``, one sentence naming the likely cause."""

    cause: str


async def diagnose(
    target: str,
    material: TlsMaterial | None,
    tls: bool,
    timeout: float = 2.0,
    remedies: Remedies = CLIENT_REMEDIES,
) -> HandshakeFailure | None:
    """The handshake failure behind an unreachable ``target``, or ``None`` when the cause is not
    TLS (nothing listens, or the handshake works). ``tls`` says whether the channel used TLS;
    ``material`` is what it used, when known. Blocking work runs in a thread."""
    return await asyncio.to_thread(diagnose_blocking, target, material, tls, timeout, remedies)


def diagnose_blocking(
    target: str,
    material: TlsMaterial | None,
    tls: bool,
    timeout: float = 2.0,
    remedies: Remedies = CLIENT_REMEDIES,
) -> HandshakeFailure | None:
    """:func:`diagnose`, in the calling thread."""
    address = split_host_port(target)
    if address is None:
        return None
    try:
        if not tls:
            return _plaintext_to_tls(address, timeout, remedies)
        return _tls_handshake(address, material, timeout, remedies)
    except OSError:
        return None  # unreachable (refused, reset, silent): not a TLS matter


def _connect(address: tuple[str, int], timeout: float) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def _plaintext_to_tls(
    address: tuple[str, int], timeout: float, remedies: Remedies
) -> HandshakeFailure | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with _connect(address, timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=address[0]):
                pass
        except (ssl.SSLError, OSError):
            return None  # it does not speak TLS either: not a TLS matter
    return HandshakeFailure(
        "the server speaks TLS and this client connected in plaintext: give the CA bundle "
        f"({remedies.ca})"
    )


def _tls_handshake(
    address: tuple[str, int], material: TlsMaterial | None, timeout: float, remedies: Remedies
) -> HandshakeFailure | None:
    with _client_context(material) as context, _connect(address, timeout) as raw:
        try:
            secure = context.wrap_socket(raw, server_hostname=address[0])
        except ssl.SSLCertVerificationError as err:
            return HandshakeFailure(_server_certificate_cause(err, address[0], remedies))
        except ssl.SSLError as err:
            return HandshakeFailure(_protocol_cause(err, remedies))
        except OSError:
            # Closed or reset in the middle of the handshake: what a plaintext port does.
            return HandshakeFailure(_plaintext_port(remedies))
        with secure:
            if _server_answers(secure):
                return None
    return HandshakeFailure(_client_certificate_cause(material, remedies))


def _plaintext_port(remedies: Remedies) -> str:
    return (
        f"the server does not speak TLS (a plaintext port?): {remedies.plaintext}, or check the "
        "port"
    )


@contextlib.contextmanager
def _client_context(material: TlsMaterial | None) -> Iterator[ssl.SSLContext]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(["h2"])
    if material is None:
        # The channel's material is unknown: only the server's reaction to the client can be seen.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        yield context
        return
    if material.root_certificates is None:
        context.load_default_certs()
    else:
        context.load_verify_locations(cadata=material.root_certificates.decode("ascii"))
    if material.private_key is None or material.certificate_chain is None:
        yield context
        return
    # ssl takes a client certificate and key from files only.
    with tempfile.TemporaryDirectory(prefix="hlc-oracle-tls-") as directory:
        chain = Path(directory) / "chain.pem"
        key = Path(directory) / "key.pem"
        for path, data in ((chain, material.certificate_chain), (key, material.private_key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        context.load_cert_chain(chain, key)
        yield context


def _server_answers(secure: ssl.SSLSocket) -> bool:
    """Whether the server, after the handshake, answers the HTTP/2 preface (it accepted us)."""
    try:
        secure.sendall(HTTP2_PREFACE)
        return bool(secure.recv(9))
    except (ssl.SSLError, OSError):
        return False


def _server_certificate_cause(
    err: ssl.SSLCertVerificationError, host: str, remedies: Remedies
) -> str:
    reason = err.verify_message or str(err)
    if "expired" in reason:
        return f"the server's certificate has expired ({reason})"
    if "not yet valid" in reason:
        return f"the server's certificate is not valid yet ({reason})"
    if "mismatch" in reason or "match" in reason:
        return f"the server's certificate does not name {host} ({reason})"
    return (
        "the server's certificate is not signed by a CA in this client's bundle "
        f"({remedies.bundle}): a certificate from another CA? ({reason})"
    )


def _protocol_cause(err: ssl.SSLError, remedies: Remedies) -> str:
    reason = err.reason or ""
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNEXPECTED_EOF_WHILE_READING"):
        return _plaintext_port(remedies)
    return f"the TLS handshake failed: {err}"


def _client_certificate_cause(material: TlsMaterial | None, remedies: Remedies) -> str:
    refused = "the server closed the connection right after the TLS handshake"
    if material is None:
        return f"{refused}: it refused this client's certificate, or its lack of one (mutual TLS)"
    if material.certificate_chain is None:
        return (
            f"{refused}: it requires a client certificate (mutual TLS): give "
            f"{remedies.client_certificate}"
        )
    try:
        leaf = x509.load_pem_x509_certificate(material.certificate_chain)
    except ValueError:
        return f"{refused}: it refused this client's certificate"
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        return (
            f"{refused}: this client's certificate expired at "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if leaf.not_valid_before_utc > now:
        return (
            f"{refused}: this client's certificate is not valid until "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    return (
        f"{refused}: it does not trust this client's certificate, issued by "
        f"{leaf.issuer.rfc4514_string()}: a certificate from another CA than "
        f"{remedies.server_client_ca}?"
    )
