"""The coordinator's side of a node's reachability check (ProbeReachability).

A node behind NAT cannot serve hivemind's DHT or averaging to others; it finds out before it
starts its peer by asking the coordinator to connect back to it. The coordinator connects only to
the IP address the request came from (so it cannot be used to scan anyone else), on the port the
node names, and reads the greeting the node's temporary listener sends (its nonce): a port that
some other program answers is not mistaken for the node's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress

GREETING_BYTES = 32
PROBE_TIMEOUT_S = 3.0


def caller_host(peer: str) -> str | None:
    """The IP address in a gRPC peer string (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`), else None."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host


async def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> tuple[bytes, str]:
    """(greeting, "") when HOST:PORT accepted a connection and sent up to GREETING_BYTES, else
    (b"", why)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as e:
        return b"", f"no connection to {host}:{port} ({type(e).__name__}: {e})".strip()
    greeting = b""
    try:
        while len(greeting) < GREETING_BYTES:
            chunk = await asyncio.wait_for(reader.read(GREETING_BYTES - len(greeting)), timeout)
            if not chunk:
                break
            greeting += chunk
    except (OSError, TimeoutError) as e:
        if not greeting:
            return b"", f"{host}:{port} accepted but sent nothing ({type(e).__name__})"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return greeting, ""
