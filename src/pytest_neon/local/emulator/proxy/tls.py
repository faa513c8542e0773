"""The proxy's TLS: a self-signed certificate made when it starts (an EC P-256 key, with
``cryptography`` when installed, else the ``openssl`` binary), never written anywhere but
a private temporary directory removed at once. No certificate: no TLS."""

from __future__ import annotations

import datetime
import hashlib
import logging
import shutil
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pytest_neon.emulator")

#: what to install for TLS on the endpoints' listeners
TLS_EXTRA = "pip install 'pytest-neon[emulator]'"
_NAMES = ("localhost", "127.0.0.1", "::1")
_DAYS = 365


@dataclass(frozen=True)
class ServerTls:
    """A server-side TLS context and what SCRAM-SHA-256-PLUS binds to."""

    context: ssl.SSLContext
    #: ``tls-server-end-point``: the SHA-256 of the certificate (it is signed with SHA-256)
    end_point: bytes
    certificate_pem: str


def _with_cryptography(directory: Path) -> bool:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return False
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pytest-neon emulator")])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in _NAMES[1:]]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return True


def _with_openssl(directory: Path) -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        return False
    alt = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
    proc = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-sha256",
            "-nodes",
            "-days",
            str(_DAYS),
            "-subj",
            "/CN=pytest-neon emulator",
            "-addext",
            alt,
            "-keyout",
            str(directory / "key.pem"),
            "-out",
            str(directory / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        log.debug("openssl could not make a certificate: %s", proc.stderr.strip())
        return False
    return True


def make_server_tls() -> ServerTls | None:
    """A new certificate and its server context, or ``None`` when neither ``cryptography``
    nor ``openssl`` is at hand."""
    with tempfile.TemporaryDirectory(prefix="pytest-neon-tls-") as name:  # mode 0700
        directory = Path(name)
        if not (_with_cryptography(directory) or _with_openssl(directory)):
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["postgresql"])
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        pem = (directory / "cert.pem").read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    return ServerTls(context, hashlib.sha256(der).digest(), pem)


_cached: list[ServerTls | None] = []
_cache_lock = threading.Lock()


def server_tls() -> ServerTls | None:
    """This process's certificate (made by the first emulator that asks), or ``None``."""
    with _cache_lock:
        if not _cached:
            _cached.append(make_server_tls())
        return _cached[0]
