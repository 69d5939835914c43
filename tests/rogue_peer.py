"""A hostile peer for e2e tests.

Default: joins the run like a node, then serves a tampered θ_global while its DHT claim forges
the certified (round, digest). An honest joiner must try it (its claim matches), reject what it
serves, and adopt the certified state from another source.
Usage: python rogue_peer.py --coordinator HOST:PORT --home DIR
Prints "rogue ready" once it serves; runs until SIGTERM.

`--stranger SECONDS`: a peer the coordinator gave no swarm token (it Joins without a swarm key,
so it learns the DHT prefix and the volunteers' addresses, as anyone can). It carries a token it
signed itself and trusts every answer, then for SECONDS tries to read and write the swarm's DHT
records, to advertise itself as a state source, and to enter averaging groups by calling every
volunteer's rpc_join_group directly. It prints one `stranger <what> <result>` line per attempt
kind (JSON) and `stranger done`.

`--ignore-ban -- JOIN_OPTIONS...`: a real `gpt5os-node join` (random tokens instead of leased
shards, no validation) that averages like any node until the coordinator bans it, then ignores
the ban: every refusal is "retry later", its DHT and averager keep running and its trainer
keeps entering rounds. Once its last swarm token has expired it also knocks on every bootstrap
peer's rpc_join_group with that token, again and again. Prints `rogue peer <peer id> node
<node id>`, `rogue banned: ignoring it`, `rogue token expired: knocking` and, every few seconds,
`rogue knocks <codes as JSON>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
import time
from functools import partial
from pathlib import Path

import hivemind
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpt5os.common.swarm_auth import SwarmAuthorizer, SwarmKey
from gpt5os.common.swarm_token import TokenIssuer
from gpt5os.node.claims import RoundClaim
from gpt5os.node.coordinator_client import CoordinatorClient
from gpt5os.node.group_average import group_bits
from gpt5os.node.identity import load_or_create_identity
from gpt5os.node.swarm import PseudoGradientAverager, SwarmPeer, swarm_prefix
from gpt5os.node.swarm_access import SwarmAccess
from gpt5os.node.trainer import build_training_state, parameter_numels
from hivemind.averaging.allreduce import AveragingMode
from hivemind.p2p import PeerID
from hivemind.proto import averaging_pb2
from hivemind.utils import MPFuture, get_dht_time
from hivemind.utils.multiaddr import Multiaddr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--stranger", type=float, default=None)
    parser.add_argument("--ignore-ban", action="store_true")
    args, join_options = parser.parse_known_args()
    if args.ignore_ban:
        ignore_ban(args.coordinator, args.home, [a for a in join_options if a != "--"])
        return
    if join_options:
        parser.error(f"unrecognized arguments: {' '.join(join_options)}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.stranger is not None:
        stranger(args.coordinator, args.home, args.stranger)
        return

    client = CoordinatorClient(args.coordinator, load_or_create_identity(args.home))
    key = SwarmKey()  # admitted: it holds a swarm token, and misbehaves anyway
    session = client.join("cpu", swarm_public_key=key.public_key)
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
        access=SwarmAccess.from_response(key, session.join),
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


# -- the stranger ---------------------------------------------------------------------------------


class Forger(SwarmAuthorizer):
    """Signs its requests with a token of its own making and believes every peer's."""

    def is_token_valid(self, access_token) -> bool:
        return True


async def knock(self, peers: list[bytes], gather: dict, seconds: float, future) -> None:
    """Call rpc_join_group on every peer, again and again; the first answer's code each (runs in
    the averager's process: send it through `_outer_pipe`)."""
    codes: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for peer in peers:
            request = averaging_pb2.JoinRequest(
                schema_hash=self._matchmaking.schema_hash,
                expiration=get_dht_time() + 5,
                gather=self.serializer.dumps(
                    [
                        self.bandwidth or 1.0,
                        AveragingMode.NODE.value,
                        self.serializer.dumps(gather),
                    ]
                ),
                group_key=self._matchmaking.group_key_manager.current_key,
            )
            try:
                # the handler's name is the *nodes'* class name (hivemind's get_stub names
                # the protocol after the class it is called on)
                stub = PseudoGradientAverager.get_stub(
                    self._p2p, PeerID(peer), namespace=self.prefix
                )
                stream = await stub.rpc_join_group(request)
                message = await asyncio.wait_for(anext(stream), 5)
                name = averaging_pb2.MessageCode.Name(message.code)
            except Exception as e:
                name = type(e).__name__
            codes[name] = codes.get(name, 0) + 1
        await asyncio.sleep(0.2)
    future.set_result(codes)


class StrangerAverager(PseudoGradientAverager):
    _attack = knock


async def _store_remote(key: str, subkey: bytes, value: object, _dht, node) -> bool:
    return await node.store(key, value, get_dht_time() + 300, subkey=subkey, exclude_self=True)


def stranger(coordinator: str, home: Path, seconds: float) -> None:
    client = CoordinatorClient(coordinator, load_or_create_identity(home))
    session = client.join("cpu")  # no swarm key: no token
    assert not session.join.HasField("swarm_token")
    spec, join = session.spec, session.join
    client.close()  # before hivemind forks: a fork beside gRPC's threads can crash the child
    prefix = swarm_prefix(join.dht_prefix, spec.run_id)
    key = SwarmKey()
    fake = TokenIssuer(Ed25519PrivateKey.generate())
    forged = fake.issue(session.node_id, key.public_key)
    dht = hivemind.DHT(
        initial_peers=list(join.initial_peers),
        start=True,
        ensure_bootstrap_success=False,
        authorizer=Forger(key, fake.public_key, issuer=fake),
        **key.dht_kwargs(),
    )
    averager = StrangerAverager(
        None, dht, prefix=f"{prefix}_diloco", spec=spec, numels=parameter_numels(spec)
    )
    averager.set_group_bits(group_bits(int(join.outer_round)))
    print(f"stranger peer {dht.peer_id}", flush=True)
    keys = [f"{prefix}_claims", f"{prefix}_members", f"{prefix}_diloco.all_averagers"]
    found = {k: dht.get(k, latest=True) for k in keys}
    print("stranger read " + json.dumps({k: v is not None for k, v in found.items()}), flush=True)
    claims_key, sources_key = f"{prefix}_claims", f"{prefix}_diloco.all_averagers"
    forged_claim = {"round": 10**6, "digest": "0" * 64, "group_size": 9, "node_id": "x"}
    wrote = {  # stored by any peer but itself (its own storage takes anything)
        "claim": dht.run_coroutine(
            partial(_store_remote, claims_key, dht.peer_id.to_bytes(), forged_claim)
        ),
        "state_source": dht.run_coroutine(
            partial(_store_remote, sources_key, dht.peer_id.to_bytes(), 1e9)
        ),
    }
    print("stranger wrote " + json.dumps(wrote), flush=True)
    peers = [PeerID.from_base58(str(Multiaddr(m)["p2p"])).to_bytes() for m in join.initial_peers]
    gather = {
        "node_id": session.node_id,
        "tokens": 10**9,
        "round": int(join.outer_round),
        "nonce": "ab" * 8,
        "swarm_token": forged.SerializeToString(),
    }
    future = MPFuture()
    averager._outer_pipe.send(("_attack", [peers, gather, seconds], dict(future=future)))
    codes = future.result(timeout=seconds + 60)
    print("stranger joins " + json.dumps(codes), flush=True)
    print("stranger done", flush=True)
    averager.shutdown()
    dht.shutdown()
    key.close()


# -- the banned node that carries on ----------------------------------------------------------


def ignore_ban(coordinator: str, home: Path, join_options: list[str]) -> None:
    import numpy as np
    from gpt5os.common.swarm_token import expires_at
    from gpt5os.node import cli, coordinator_client, shard_feed, swarm, validation
    from gpt5os.node.coordinator_client import CoordinatorError

    banned = threading.Event()
    translate = coordinator_client.CoordinatorClient._translate

    def shrug(self, method, error):  # a refusal for good becomes "try again later"
        hook, self.on_banned = self.on_banned, None  # the node's hook would stop it
        try:
            err = translate(self, method, error)
        finally:
            self.on_banned = hook
        if isinstance(err, coordinator_client.Banned):
            self.banned = None
            if not banned.is_set():
                print("rogue banned: ignoring it", flush=True)
                banned.set()
            err = CoordinatorError(str(err))
            err.code = None  # type: ignore[attr-defined]
        return err

    def random_batches(self):
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            tokens = torch.from_numpy(rng.integers(0, 256, (self.batch_size, self.seq_len + 1)))
            yield shard_feed.Batch(tokens[:, :-1].clone(), tokens[:, 1:].clone(), "random")

    start = swarm.SwarmPeer.start.__func__

    def start_and_knock(cls, *args, **kwargs):
        peer = start(cls, *args, **kwargs)
        print(f"rogue peer {peer.dht.peer_id} node {kwargs['node_id']}", flush=True)
        peers = [
            PeerID.from_base58(str(Multiaddr(m)["p2p"])).to_bytes() for m in kwargs["initial_peers"]
        ]
        threading.Thread(
            target=_knock_after_expiry,
            args=(peer, kwargs["node_id"], peers, banned, expires_at),
            daemon=True,
        ).start()
        return peer

    coordinator_client.CoordinatorClient._translate = shrug
    shard_feed.ShardFeed._prefetch_loop = lambda self: None  # leases nothing
    shard_feed.ShardFeed.batches = random_batches
    validation.Validator.loss = lambda self, model, device: None
    swarm.SwarmPeer.start = classmethod(start_and_knock)
    swarm.PseudoGradientAverager._knock = knock
    cli.main(["join", "--coordinator", coordinator, "--home", str(home), *join_options])


def _knock_after_expiry(peer, node_id: str, peers, banned, expires_at) -> None:
    banned.wait()
    while time.time() < expires_at(peer.access.token) + 0.2:
        time.sleep(0.1)
    print("rogue token expired: knocking", flush=True)
    while True:
        gather = {
            "node_id": node_id,
            "tokens": 10**6,
            "round": 0,
            "nonce": "cd" * 8,
            "swarm_token": peer.access.token_bytes(),
        }
        future = MPFuture()
        peer.averager._outer_pipe.send(("_knock", [peers, gather, 5.0], dict(future=future)))
        print("rogue knocks " + json.dumps(future.result(timeout=120)), flush=True)


if __name__ == "__main__":
    main()
