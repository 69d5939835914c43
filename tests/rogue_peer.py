"""A hostile peer for e2e tests: joins the run like a node, then serves a tampered θ_global while
its DHT claim forges the certified (round, digest). An honest joiner must try it (its claim
matches), reject what it serves, and adopt the certified state from another source.

Usage: python rogue_peer.py --coordinator HOST:PORT --home DIR
Prints "rogue ready" once it serves; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

import torch
from gpt5os.node.claims import RoundClaim
from gpt5os.node.coordinator_client import CoordinatorClient
from gpt5os.node.identity import load_or_create_identity
from gpt5os.node.swarm import SwarmPeer
from gpt5os.node.trainer import build_training_state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--home", type=Path, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    client = CoordinatorClient(args.coordinator, load_or_create_identity(args.home))
    session = client.join("cpu")
    certified = session.join.certified
    model, outer = build_training_state(session.spec, torch.device("cpu"))
    with torch.no_grad():
        for g in outer.global_params:
            g.add_(0.01)  # the tampered model
    outer.round = int(certified.round)
    outer.swarm_tokens = int(certified.tokens)
    peer = SwarmPeer.start(
        outer,
        session.spec,
        initial_peers=list(session.join.initial_peers),
        listen="/ip4/127.0.0.1/tcp/0",
        prefix=session.join.dht_prefix,
        node_id=session.node_id,
    )
    try:
        forged = RoundClaim(int(certified.round), certified.params_sha256, 99, session.node_id)
        peer.claims.publish(forged)
        peer.averager.state_sharing_priority = 1e9
        peer.averager.allow_state_sharing = True
        print("rogue ready", flush=True)
        while not stop.wait(5.0):
            peer.claims.publish(forged)
    finally:
        peer.close()
        client.close()


if __name__ == "__main__":
    main()
