"""What a volunteer chooses when they run `gpt5os-node join` (everything else comes from the run spec)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

DEFAULT_COORDINATOR = "127.0.0.1:50051"


def default_home() -> Path:
    """GPT5OS_HOME when set, else the user's data dir: the node key and the shard cache live here."""
    env = os.environ.get("GPT5OS_HOME")
    return Path(env) if env else Path(platformdirs.user_data_dir("gpt5os"))


@dataclass(kw_only=True)
class NodeConfig:
    coordinator: str = DEFAULT_COORDINATOR
    home: Path
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    max_rounds: int | None = None  # leave after this many outer rounds
    min_peers: int = (
        1  # wait until this many peers (self included) are in the swarm before training
    )
    dht_listen: str | None = (
        None  # hivemind host multiaddr; derived from the coordinator's host by default
    )
    threads: int | None = None  # torch CPU threads
    display_name: str = ""
    invite: str = ""  # invite token for a first Join of an invite-only run
    log_every_steps: int = 0  # 0: log only outer rounds
    coordinator_fingerprint: str | None = None  # pin the coordinator's TLS certificate
    tls: bool = False  # TLS to a coordinator whose certificate the system CAs trust
    client_mode: bool = False  # hivemind client mode through relays without probing (behind NAT)
    announce_host: str | None = None  # a port-forwarded public host to announce to the swarm
    # sequences per forward/backward; the run's batch is accumulated from them (None: all at once)
    micro_batch: int | None = None
    # average each round in the background while the next round's first steps train
    overlap: bool = False
    stats_file: Path | None = None  # write LoopStats here as JSON when leaving (bench/swarm.py)

    @property
    def cache_dir(self) -> Path:
        return self.home / "shards"

    def resolved_dht_listen(self) -> str:
        """Listen on loopback when the coordinator is local (tests, the demo), else on all interfaces."""
        if self.dht_listen:
            return self.dht_listen
        host = self.coordinator.rsplit(":", 1)[0].strip("[]")
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        return "/ip4/127.0.0.1/tcp/0" if loopback else "/ip4/0.0.0.0/tcp/0"
