"""gRPC channels to the coordinator, plaintext or TLS, for the node, `status`, the dashboard, the keeper.

Three ways to talk to a coordinator:

- plaintext (the default): before the channel is made, a short TLS probe checks that the
  coordinator does not speak TLS, so a client that forgot the option gets one clear line
  instead of a stream of "connection reset";
- TLS, pinned (`--coordinator-fingerprint FP`): the probe reads the coordinator's certificate,
  refuses it unless its SHA-256 equals FP, and the channel then trusts that one certificate
  alone (so a second connection to a different server fails the handshake);
- TLS with the system's certificate authorities (`--tls`): for a certificate a CA signed
  (gRPC's own root store, or the file named by GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).

`open_channel` raises ChannelError with a line a person can act on; callers turn it into their
own error type.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any

import grpc

from .tls import TlsError, cert_name, fingerprint, normalize_fingerprint

PROBE_TIMEOUT_S = 5.0


class ChannelError(RuntimeError):
    """The channel cannot be trusted or the coordinator speaks another protocol."""


@dataclass(frozen=True)
class Security:
    """How to reach a coordinator: `fingerprint` pins its certificate; `tls` trusts the system CAs."""

    fingerprint: str | None = None
    tls: bool = False

    @classmethod
    def from_options(cls, fingerprint: str | None, tls: bool = False) -> Security:
        """From CLI options; ChannelError for a malformed fingerprint."""
        if fingerprint:
            try:
                return cls(normalize_fingerprint(fingerprint), True)
            except TlsError as e:
                raise ChannelError(str(e)) from None
        return cls(None, tls)

    def args(self) -> list[str]:
        """The same options for a child process's command line."""
        if self.fingerprint:
            return ["--coordinator-fingerprint", self.fingerprint]
        return ["--tls"] if self.tls else []


PLAINTEXT = Security()
UNREACHABLE = object()


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> bytes | None | object:
    """The DER certificate a TLS server at `address` presents, None when it does not speak TLS,
    UNREACHABLE when nothing answers. Verifies nothing: the caller decides what to trust."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except (OSError, ValueError):
        return UNREACHABLE
    with sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=host or None) as tls_sock:
                return tls_sock.getpeercert(binary_form=True)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return None  # a plaintext HTTP/2 server answers a ClientHello with garbage or a close
        except OSError:
            return UNREACHABLE


def _der_to_pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode()


def credentials(
    address: str, security: Security, *, timeout: float = PROBE_TIMEOUT_S
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """(credentials or None for plaintext, extra channel options) after checking the coordinator."""
    if security.fingerprint:
        found = probe(address, timeout)
        if found is UNREACHABLE:
            raise ChannelError(
                f"cannot reach the coordinator at {address} to check its certificate: "
                "check the address and that it is running"
            )
        if found is None:
            raise ChannelError(
                f"the coordinator at {address} does not speak TLS, but --coordinator-fingerprint "
                "was given: refusing to talk to it in clear text (check the address)"
            )
        got = fingerprint(found)  # type: ignore[arg-type]
        if got != security.fingerprint:
            raise ChannelError(
                f"the coordinator at {address} presents a certificate with fingerprint {got}, "
                f"not the pinned {security.fingerprint}: refusing to connect (someone may be "
                "intercepting the connection; ask the run's operator for the right fingerprint)"
            )
        pem = _der_to_pem(found)  # type: ignore[arg-type]
        creds = grpc.ssl_channel_credentials(root_certificates=pem)
        return creds, [("grpc.ssl_target_name_override", cert_name(pem))]
    if security.tls:
        return grpc.ssl_channel_credentials(), []
    found = probe(address, timeout)
    if isinstance(found, bytes):
        raise ChannelError(
            f"the coordinator at {address} uses TLS: pass --coordinator-fingerprint with the "
            "fingerprint `gpt5os-coordinator serve` printed (ask the run's operator), or --tls "
            "when its certificate is signed by an authority this machine trusts"
        )
    return None, []


def open_channel(
    address: str,
    security: Security = PLAINTEXT,
    *,
    options: list[tuple[str, Any]] | None = None,
    aio: bool = False,
    timeout: float = PROBE_TIMEOUT_S,
) -> Any:
    """A grpc (or grpc.aio with `aio`) channel to `address`, secured as `security` says.

    Probes the coordinator first (blocking, up to `timeout` seconds): call it off the event loop
    (asyncio.to_thread) where that matters. ChannelError when the coordinator cannot be trusted.
    """
    creds, extra = credentials(address, security, timeout=timeout)
    opts = [*(options or []), *extra]
    mod = grpc.aio if aio else grpc
    if creds is None:
        return mod.insecure_channel(address, options=opts)
    return mod.secure_channel(address, creds, options=opts)
