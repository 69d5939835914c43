"""Can others reach this node's hivemind peer? It decides how the node joins the swarm.

Before the DHT starts, the node listens on the port its hivemind peer will use, with a tiny
server that greets every connection with a random nonce, and asks the coordinator to connect
back (ProbeReachability; coordinator/reachability.py). If the coordinator reads the nonce, the
port is open from outside: the node runs as a full DHT and averaging peer. If not (NAT,
firewall), it runs in hivemind's client mode through relays: it still averages (it sends its
parts to the group's reachable members and receives the result) but serves nothing.

`--client-mode` skips the probe; `--announce-host` announces a port-forwarded public address.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from dataclasses import dataclass, field

import grpc

from .coordinator_client import CoordinatorClient, CoordinatorError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkMode:
    """How the node's hivemind peer runs: its listen address, what it announces, client mode."""

    listen: str  # hivemind host multiaddr, with a fixed port once probed
    client_mode: bool
    reason: str
    announce: list[str] = field(default_factory=list)  # announce_maddrs (port-forwarded hosts)

    def describe(self) -> str:
        if self.client_mode:
            return (
                f"hivemind runs in client mode through relays ({self.reason}): this node averages "
                "but serves no DHT or averaging requests"
            )
        where = f", announcing {' '.join(self.announce)}" if self.announce else ""
        return f"hivemind runs as a full peer on {self.listen}{where} ({self.reason})"


def split_listen(listen: str) -> tuple[str, str, int]:
    """`/ip4/1.2.3.4/tcp/5` -> ("ip4", "1.2.3.4", 5); ValueError for anything else."""
    parts = listen.strip("/").split("/")
    if len(parts) != 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp":
        raise ValueError(f"--dht-listen {listen!r} is not /ip4/HOST/tcp/PORT or /ip6/HOST/tcp/PORT")
    return parts[0], parts[1], int(parts[3])


class Greeter:
    """Listens on (host, port) and sends `nonce` to every connection, in a daemon thread."""

    def __init__(self, family: str, host: str, port: int, nonce: bytes) -> None:
        self.nonce = nonce
        self.sock = socket.socket(socket.AF_INET6 if family == "ip6" else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="reachability", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(2.0)
                    conn.sendall(self.nonce)
                    conn.recv(1)  # the prober closes first: TIME_WAIT stays on its side, and
                except OSError:  # hivemind can bind this port at once
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def network_mode(
    client: CoordinatorClient,
    listen: str,
    *,
    client_mode: bool = False,
    announce_host: str | None = None,
) -> NetworkMode:
    """Probe (unless `client_mode` forces it) and say how hivemind should run."""
    family, host, port = split_listen(listen)
    if client_mode:
        return NetworkMode(listen, True, "--client-mode")
    nonce = secrets.token_hex(16).encode()
    try:
        greeter = Greeter(family, host, port, nonce)
    except OSError as e:
        raise CoordinatorError(f"cannot listen on {listen} for the swarm: {e.strerror}") from None
    fixed = f"/{family}/{host}/tcp/{greeter.port}"
    announce = []
    if announce_host:
        announce = [f"/{_family_of(announce_host)}/{announce_host}/tcp/{greeter.port}"]
    try:
        reply = client.probe_reachability(greeter.port)
    except CoordinatorError as e:
        if getattr(e, "code", None) == grpc.StatusCode.UNIMPLEMENTED:  # an older coordinator
            return NetworkMode(fixed, False, "the coordinator cannot probe: assuming reachable",
                               announce)  # fmt: skip
        raise
    finally:
        greeter.close()
    if reply.reachable and reply.greeting == nonce:
        return NetworkMode(fixed, False, f"the coordinator reached {reply.address}", announce)
    why = reply.error or f"{reply.address} answered with someone else's greeting"
    return NetworkMode(fixed, True, f"not reachable from outside: {why}")


def _family_of(host: str | None) -> str:
    import ipaddress

    try:
        return "ip6" if ipaddress.ip_address(host or "").version == 6 else "ip4"
    except ValueError:
        return "dns4"
