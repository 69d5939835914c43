"""One peer of tests/test_node_group_average.py: a real DHT, our real PseudoGradientAverager and
GroupAverage, averaging a deterministic pseudo-gradient with the other worker processes.

`--lose-part` injects the failure hivemind produces under load: in this peer's first all-reduce,
one part of the averaged result never arrives, and hivemind keeps the local values for it (what
TensorPartContainer.register_failed_reducer does when a reducer's stream breaks).

`--rounds N` averages N rounds (round r's pseudo-gradient seeded by the peer's seed and r) and
applies each result as an outer step, reporting every round's result digest, θ_global's digest
and the error of the summed results against the summed exact token-weighted means.
`--attack` makes this peer hostile past our sender's guard: `x1e6` (its Δ times a million),
`signflip` (−Δ) or `nan` (a NaN scale in its blockwise8 messages, which no honest codec writes),
or `tokens1e9` (it claims 1e9 tokens, in its gather data and as its all-reduce weight; the
group string lists what the others must count it for: claim_bound(TOKENS_PER_ROUND)).

Writes its outcome as JSON to --out and then waits (bounded) until every worker wrote its own,
so no peer leaves the DHT while another still needs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from gpt5os.coordinator.run_spec import preset_spec
from gpt5os.node import fixed_point
from gpt5os.node.diloco import OuterState, tensors_sha256
from gpt5os.node.group_average import GroupAverage, GroupAverageConfig, Settled
from gpt5os.node.swarm import PseudoGradientAverager, start_dht, visible_maddrs
from gpt5os.proto import pb
from hivemind.averaging import partition

TOKENS_PER_ROUND = 1024  # the spec's round_tokens: 2 inner steps of tiny's 4 x 128 tokens


def model() -> torch.nn.Module:
    """~200k parameters: several of hivemind's 64k-value parts, so a lost part is a slice."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256),
                               torch.nn.Linear(256, 256))  # fmt: skip


def deltas(seed: int, round_number: int = 0) -> list[torch.Tensor]:
    """Large enough (sums above 2**24 quanta) that a float32 accumulator would not be exact."""
    g = torch.Generator().manual_seed(seed + 1_000_003 * round_number)
    return [torch.randn(p.shape, generator=g) * 2e-2 for p in model().parameters()]


def expected_mean(group: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The exact token-weighted mean the group must agree on, computed like fixed_point does."""
    total = None
    for seed, tokens in group:
        encoded = []
        for d in deltas(seed):
            buf = torch.empty(d.numel(), dtype=torch.float64)
            fixed_point.encode(d, tokens / TOKENS_PER_ROUND, buf)
            encoded.append(buf)
        total = encoded if total is None else [a + b for a, b in zip(total, encoded, strict=True)]
    weight = sum(t for _, t in group) / TOKENS_PER_ROUND
    return [t / weight for t in total]


def weighted_mean(group: list[tuple[int, int]], round_number: int = 0) -> list[torch.Tensor]:
    """The token-weighted mean in float64: what lossy codecs approximate."""
    total = sum(t for _, t in group)
    per_seed = [[d.double() * (t / total) for d in deltas(s, round_number)] for s, t in group]
    return [sum(parts).flatten() for parts in zip(*per_seed, strict=True)]


def lose_first_results_part() -> None:
    """In this process's (and so its averager's) first all-reduce, drop one received part."""
    original = partition.TensorPartContainer.register_processed_part
    state = {"containers": 0, "dropped": False}
    original_init = partition.TensorPartContainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        state["containers"] += 1
        self._gpt5os_sabotage = state["containers"] == 1

    def register(self, peer_index, part_index, part):
        if self._gpt5os_sabotage and part_index == 1 and not state["dropped"]:
            state["dropped"] = True
            self.failed_size += part.numel()
            part = torch.zeros_like(part)  # a zero delta: the peer keeps its local values
        return original(self, peer_index, part_index, part)

    partition.TensorPartContainer.__init__ = init
    partition.TensorPartContainer.register_processed_part = register


def nan_scales() -> None:
    """Every blockwise8 part this process sends gets a NaN scale in its first block (its replies
    as a reducer, stochastically rounded, stay honest: this is a hostile sender)."""
    from gpt5os.node.codec import Blockwise8

    original = Blockwise8.encode_bytes

    def encode(self, x, generator=None):
        data = bytearray(original(self, x, generator))
        if generator is None:
            data[0:2] = (0x7FC0).to_bytes(2, "little")  # bfloat16 NaN
        return bytes(data)

    Blockwise8.encode_bytes = encode


def _wait_for_files(paths: list[Path], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(p.exists() for p in paths):
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--me", type=int, required=True)
    parser.add_argument("--group", required=True, help="seed:tokens,seed:tokens,...")
    parser.add_argument("--peers", default="")
    parser.add_argument("--maddrs-file", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lose-part", action="store_true")
    parser.add_argument("--no-barrier", action="store_true", help="start averaging at once")
    parser.add_argument("--compression", default="none")
    parser.add_argument("--rounds", type=int, default=0, help="several rounds with outer steps")
    parser.add_argument("--attack", choices=["x1e6", "signflip", "nan", "tokens1e9"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    group = [tuple(int(x) for x in item.split(":")) for item in args.group.split(",")]
    seed, tokens = group[args.me]
    if args.lose_part:
        lose_first_results_part()
    if args.attack == "nan":
        nan_scales()  # before the averager's process is forked: it is the one that sends

    exact = args.compression == "none"
    spec = preset_spec("tiny", run_id="worker")
    spec.compression, spec.matchmaking_time_s = args.compression, 2.0
    spec.inner_steps = 2
    assert spec.round_tokens == TOKENS_PER_ROUND, spec.round_tokens
    outer = OuterState(model(), pb.OuterOptimizerSpec(lr=0.7, momentum=0.9, nesterov=True))
    dht = start_dht([p for p in args.peers.split(",") if p], "/ip4/127.0.0.1/tcp/0")
    if args.maddrs_file:
        args.maddrs_file.write_text(",".join(visible_maddrs(dht)))
    averager = PseudoGradientAverager(outer, dht, prefix="test_diloco", spec=spec)
    averaging = GroupAverage(
        averager,
        dht,
        prefix="test_diloco",
        config=GroupAverageConfig(
            node_id=f"node-{args.me}", tokens_per_round=TOKENS_PER_ROUND, matchmaking_time_s=2.0
        ),
        exact=exact,
    )
    try:
        # a barrier: matchmaking must not form a smaller group before the last worker started
        args.out.with_name(f"ready-{args.me}").touch()
        if not args.no_barrier:
            _wait_for_files([args.out.with_name(f"ready-{i}") for i in range(len(group))])
        if args.rounds:
            report = _rounds(args, averaging, outer, group, seed, tokens)
            args.out.write_text(json.dumps(report))
            _wait_for_files([args.out.with_name(f"result-{i}.json") for i in range(len(group))])
            return
        mine = deltas(seed)
        if args.attack:
            averaging.guard.min_samples = 10**9  # a hostile peer skips our sender's guard
        if args.attack == "x1e6":
            mine = [d * 1e6 for d in mine]
        elif args.attack == "signflip":
            mine = [-d for d in mine]
        elif args.attack == "tokens1e9":
            tokens = 10**9
            GroupAverage._claim = lambda self, round_number, tokens: tokens  # no own bound
        result = averaging.run(0, mine, tokens, cancel=lambda: False)
        want = expected_mean(group) if exact else weighted_mean(group)
        settled = isinstance(result, Settled)
        got = result.averaged if settled else []
        report = {
            "outcome": type(result).__name__,
            "attempts": getattr(result, "attempts", 1),
            "complete": settled,
            "group_tokens": result.group_tokens if settled else None,
            "node_ids": sorted(result.node_ids) if settled else [],
            "digest": tensors_sha256(got) if got else None,
            "exact": bool(got) and all(torch.equal(a, b) for a, b in zip(got, want, strict=True)),
            "rel_err": max(
                ((a.double() - b.double()).norm() / b.double().norm()).item()
                for a, b in zip(got, want, strict=True)
            )
            if got
            else None,
            "distance": (
                sum((a.double() - b.double()).pow(2).sum() for a, b in zip(got, want, strict=True))
                ** 0.5
            ).item()
            if got
            else None,
            "clean_norm": sum(b.double().pow(2).sum() for b in want).item() ** 0.5,
            "max_delta_norm": max(
                sum(d.double().pow(2).sum() for d in deltas(s)).item() ** 0.5 for s, _ in group
            ),
            "wire": getattr(result, "wire", None),
        }
        args.out.write_text(json.dumps(report))
        _wait_for_files([args.out.with_name(f"result-{i}.json") for i in range(len(group))])
    finally:
        averager.shutdown()
        dht.shutdown()


def _rounds(args, averaging, outer, group, seed, tokens) -> dict:
    """--rounds: average and apply `args.rounds` rounds; compare with the exact means."""
    digests, sums_got, sums_want, per_round_err, wire = [], None, None, [], []
    for r in range(args.rounds):
        result = averaging.run(r, deltas(seed, r), tokens, cancel=lambda: False)
        if not isinstance(result, Settled):
            return {"outcome": type(result).__name__, "round": r}
        got = [a.double().flatten() for a in result.averaged]
        want = weighted_mean(group, r)
        per_round_err.append(
            max(((a - b).norm() / b.norm()).item() for a, b in zip(got, want, strict=True))
        )
        sums_got = got if sums_got is None else [x + y for x, y in zip(sums_got, got, strict=True)]
        sums_want = (
            want if sums_want is None else [x + y for x, y in zip(sums_want, want, strict=True)]
        )
        digests.append(tensors_sha256(result.averaged))
        wire.append(result.wire)
        outer.apply_outer_step(result.averaged, tokens=result.group_tokens, group_size=len(group))
    return {
        "outcome": "Settled",
        "digests": digests,
        "theta_digest": outer.digest(),
        "max_round_rel_err": max(per_round_err),
        "sum_rel_err": max(
            ((a - b).norm() / b.norm()).item() for a, b in zip(sums_got, sums_want, strict=True)
        ),
        "error_feedback_norm": averaging.feedback.norm() if averaging.feedback else 0.0,
        "wire": wire,
    }


if __name__ == "__main__":
    main()
