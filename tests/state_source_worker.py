"""One peer of tests/test_swarm_state_sources.py: a real DHT and our real PseudoGradientAverager.

Roles: `admitted` serves its state with a valid swarm token; `stranger` serves it with none;
`copied` serves it with another peer's valid token (tokens travel in the clear); `fetch` is an
admitted peer that connects to each server named in --sources and downloads its state, writing
{name: "adopted" | "refused"} to --out. Servers write {"peer", "maddrs"} to --out and serve until
SIGTERM. Tokens are made with the coordinator key in --coordinator-key, as the coordinator would.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from functools import partial
from pathlib import Path

import torch
from cryptography.hazmat.primitives import serialization
from gpt5os.common.swarm_auth import SwarmKey
from gpt5os.common.swarm_token import TokenIssuer
from gpt5os.coordinator.run_spec import preset_spec
from gpt5os.node.diloco import OuterState
from gpt5os.node.swarm import PseudoGradientAverager, start_dht, visible_maddrs
from gpt5os.node.swarm_access import SwarmAccess
from gpt5os.proto import pb
from hivemind.p2p import PeerID
from hivemind.utils.multiaddr import Multiaddr


async def _connect(peer: str, maddrs: list[str], _dht, node) -> None:
    # without the /p2p/ part: hivemind encodes an RSA peer id there as a CID, which p2pd cannot
    # parse ("length greater than remaining number of bytes in buffer"); the id goes separately
    addrs = [Multiaddr(m).decapsulate(Multiaddr(f"/p2p/{peer}")) for m in maddrs]
    await node.p2p._client.connect(PeerID.from_base58(peer), addrs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["admitted", "stranger", "copied", "fetch"])
    parser.add_argument("--coordinator-key", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sources", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    coordinator_key = serialization.load_pem_private_key(
        args.coordinator_key.read_bytes(), password=None
    )
    issuer = TokenIssuer(coordinator_key)
    key = SwarmKey()
    access = None
    if args.role in ("admitted", "fetch"):
        access = SwarmAccess(key, issuer.public_key, issuer.issue(args.role, key.public_key))
    elif args.role == "copied":
        other = SwarmKey()  # somebody else's key: its valid token, copied
        access = SwarmAccess(key, issuer.public_key, issuer.issue("admitted", other.public_key))
        other.close()
    torch.manual_seed(0)
    outer = OuterState(
        torch.nn.Linear(8, 8), pb.OuterOptimizerSpec(lr=0.7, momentum=0.9, nesterov=True)
    )
    spec = preset_spec("tiny", run_id="worker")
    spec.compression, spec.matchmaking_time_s = "none", 2.0
    dht = start_dht([], "/ip4/127.0.0.1/tcp/0", access)
    averager = PseudoGradientAverager(outer, dht, prefix="test_diloco", spec=spec, access=access)
    try:
        if args.role != "fetch":
            averager.allow_state_sharing = True
            info = {"peer": str(dht.peer_id), "maddrs": visible_maddrs(dht)}
            args.out.write_text(json.dumps(info))
            stop.wait(300)
            return
        results = {}
        for name, source in json.loads(args.sources.read_text()).items():
            dht.run_coroutine(partial(_connect, source["peer"], source["maddrs"]))
            peer = PeerID.from_base58(source["peer"]).to_bytes()
            loaded = averager.download_state(peer, timeout=10.0)
            results[name] = "adopted" if loaded is not None else "refused"
        # a source refused again for the same reason: refused every time, logged once
        stranger = PeerID.from_base58(json.loads(args.sources.read_text())["stranger"]["peer"])
        again = [averager.download_state(stranger.to_bytes(), timeout=10.0) for _ in range(3)]
        results["stranger_again"] = ["adopted" if a is not None else "refused" for a in again]
        args.out.write_text(json.dumps(results))
    finally:
        averager.shutdown()
        dht.shutdown()
        key.close()


if __name__ == "__main__":
    main()
