"""The coordinator's TLS certificate: made by `gpt5os-coordinator init --tls`, named by its SHA-256.

A run directory's certificate and key live in `tls/` (the key 0600). A volunteer pins the
certificate by its fingerprint (`gpt5os-node join --coordinator-fingerprint FP`): the SHA-256 of
its DER bytes, written as 32 colon-separated hex pairs like `openssl x509 -fingerprint -sha256`.
Fingerprints are accepted with or without colons, in either case, with an optional `sha256:`.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

TLS_DIR = "tls"
CERT_FILE = "coordinator.crt"
KEY_FILE = "coordinator.key"
CERT_NAME = "gpt5os-coordinator"  # a DNS name every self-signed certificate carries (pinning)
VALID_DAYS = 3650


class TlsError(ValueError):
    """A certificate, key or fingerprint is missing or malformed; the message says which."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    @classmethod
    def of_run(cls, run_dir: Path) -> TlsFiles:
        d = Path(run_dir) / TLS_DIR
        return cls(d / CERT_FILE, d / KEY_FILE)

    def exists(self) -> bool:
        return self.cert.is_file() and self.key.is_file()

    def read(self) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM); refuses a key that others can read."""
        try:
            mode = self.key.stat().st_mode & 0o077
            if mode:
                raise TlsError(
                    f"TLS key {self.key} can be read by others (mode {oct(mode)}): "
                    f"run `chmod 600 {self.key}`"
                )
            return self.cert.read_bytes(), self.key.read_bytes()
        except OSError as e:
            raise TlsError(f"cannot read the TLS certificate or key: {e}") from None


def fingerprint(cert: bytes) -> str:
    """SHA-256 of a certificate (PEM or DER bytes) as `AB:CD:...`."""
    if cert.lstrip().startswith(b"-----BEGIN"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = x509.load_pem_x509_certificate(cert).public_bytes(Encoding.DER)
    digest = hashlib.sha256(cert).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def normalize_fingerprint(text: str) -> str:
    """`AB:CD:...` from any spelling of a SHA-256 fingerprint; TlsError when it is not one."""
    raw = text.strip()
    if raw.lower().startswith("sha256:"):
        raw = raw[len("sha256:") :]
    hexdigits = raw.replace(":", "").replace(" ", "").upper()
    if len(hexdigits) != 64 or any(c not in "0123456789ABCDEF" for c in hexdigits):
        raise TlsError(
            f"{text!r} is not a SHA-256 certificate fingerprint (64 hex digits, colons optional; "
            "`gpt5os-coordinator serve` prints it)"
        )
    return ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2))


def cert_name(cert_pem: bytes) -> str:
    """A DNS name the certificate is valid for (what a pinned channel tells gRPC to expect)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return CERT_NAME if CERT_NAME in names else names[0]
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else CERT_NAME


def make_self_signed(run_dir: Path, hosts: list[str] | None = None) -> TlsFiles:
    """Write a fresh self-signed certificate (ECDSA P-256) and its key (0600) into `run_dir/tls`.

    The certificate names `gpt5os-coordinator`, `localhost`, this machine's host name, 127.0.0.1
    and ::1, plus `hosts` (names or IP addresses the coordinator is reached at).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    files = TlsFiles.of_run(run_dir)
    if files.exists():
        raise TlsError(f"{files.cert} already exists: remove {files.cert.parent} to make a new one")
    key = ec.generate_private_key(ec.SECP256R1())
    dns = [CERT_NAME, "localhost", socket.gethostname()]
    ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for host in hosts or []:
        try:
            ips.append(ipaddress.ip_address(host))
        except ValueError:
            dns.append(host)
    san = [x509.DNSName(n) for n in dict.fromkeys(dns)] + [
        x509.IPAddress(ip) for ip in dict.fromkeys(ips)
    ]
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, CERT_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    files.cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files
