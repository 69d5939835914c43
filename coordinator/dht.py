"""The coordinator's hivemind DHT bootstrap peer: the first address every node dials.

hivemind.DHT forks a child process: start it from the main thread before any gRPC server or
channel exists in this process and before signal handlers are installed, so the child neither
inherits gRPC's threads nor a SIGTERM handler that would make it ignore terminate().

hivemind (and torch with it) is imported only here and only when the server starts a DHT, so
the scheduler, the store and `gpt5os-coordinator status` stay light.
"""

from __future__ import annotations

from typing import Any


class BootstrapPeer:
    """A DHT peer that stores nothing of its own; it exists so joiners can find each other.
    With an `issuer` (the coordinator's token maker) it admits only peers holding the
    coordinator's swarm tokens, and makes its own (common/swarm_auth.py)."""

    def __init__(self, host: str, issuer: Any = None) -> None:
        self.host = host
        self.issuer = issuer
        self.dht: Any = None
        self.maddrs: list[str] = []

    def start(self) -> list[str]:
        # heavy, lazy on purpose; its process and p2p daemon die with the coordinator
        from gpt5os.common.hivemind_children import LinkedDHT  # noqa: PLC0415

        listen = "0.0.0.0" if self.host in ("", "0.0.0.0", "::") else self.host
        kwargs: dict[str, Any] = {}
        if self.issuer is not None:
            from gpt5os.common.swarm_auth import SwarmAuthorizer, SwarmKey  # noqa: PLC0415

            key = SwarmKey()
            kwargs["authorizer"] = SwarmAuthorizer(key, self.issuer.public_key, issuer=self.issuer)
        self.dht = LinkedDHT(start=True, host_maddrs=[f"/ip4/{listen}/tcp/0"], **kwargs)
        self.maddrs = [str(m) for m in self.dht.get_visible_maddrs()]
        return self.maddrs

    def stop(self) -> None:
        """Shut the DHT process down; kill it if it does not go within hivemind's grace period
        (its terminate() is a SIGTERM the child may have inherited a handler for)."""
        if self.dht is not None:
            self.dht.shutdown()
            if self.dht.is_alive():
                self.dht.kill()
                self.dht.join(5)
            self.dht = None
