"""Bytes on the wire per value, and what each codec costs in precision, through the real all-reduce.

N peer processes on 127.0.0.1 (real DHTs, our PseudoGradientAverager and GroupAverage) average R
rounds of seeded pseudo-gradients (`--params` values in 4 tensors, token weights 3:2:1:...) with
each codec in turn. For the codecs, bytes are counted as serialized by our runner
(node/allreduce.py WireReport: every message this peer sent, parts and returned averages, and
received); `none` runs hivemind's stock runner on float64 fixed point, whose bytes are not
counted (8 per value plus framing). Printed per codec: bytes per value sent and received, the
ratio against synchronous fp32 all-reduce's 4 bytes a value and against `none`'s 8, the error of
one round's result and of the sum of all rounds against the exact token-weighted mean, seconds per
round, and whether every peer's results were bitwise equal in every round.

Usage: python bench/wire.py [--params 4_000_000] [--peers 3] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch

CODECS = ("none", "float16", "blockwise8", "blockwise4", "blockwise2")
TOKENS_PER_ROUND = 1000


def shapes(params: int) -> list[int]:
    quarter = params // 4
    return [quarter, quarter, quarter, params - 3 * quarter]


def deltas(params: int, seed: int, round_number: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 7919 + round_number)
    return [torch.randn(n, generator=g) * 1e-3 for n in shapes(params)]


def peer(me: int, args, codec: str, maddrs_q: mp.Queue, barrier, out: mp.Queue) -> None:
    from gpt5os.coordinator.run_spec import preset_spec
    from gpt5os.node.diloco import tensors_sha256
    from gpt5os.node.group_average import GroupAverage, GroupAverageConfig, Settled
    from gpt5os.node.swarm import PseudoGradientAverager, start_dht, visible_maddrs

    torch.set_num_threads(1)
    spec = preset_spec("tiny", run_id="wire")
    spec.compression, spec.matchmaking_time_s = codec, 2.0
    initial = [] if me == 0 else maddrs_q.get(timeout=120)
    dht = start_dht(initial, "/ip4/127.0.0.1/tcp/0")
    if me == 0:
        for _ in range(args.peers - 1):
            maddrs_q.put(visible_maddrs(dht))
    averager = PseudoGradientAverager(
        None, dht, prefix="bench_wire", spec=spec, numels=shapes(args.params)
    )
    averaging = GroupAverage(
        averager,
        dht,
        prefix="bench_wire",
        config=GroupAverageConfig(
            node_id=f"p{me}", tokens_per_round=TOKENS_PER_ROUND, matchmaking_time_s=2.0
        ),
        exact=averager.exact,
    )
    rows = []
    try:
        barrier.wait(timeout=300)
        for r in range(args.rounds):
            t0 = time.perf_counter()
            result = averaging.run(
                r, deltas(args.params, me, r), 100 * (args.peers - me), cancel=lambda: False
            )
            seconds = time.perf_counter() - t0
            if not isinstance(result, Settled):
                rows.append({"round": r, "outcome": type(result).__name__})
                continue
            rows.append(
                {
                    "round": r,
                    "outcome": "Settled",
                    "seconds": seconds,
                    "digest": tensors_sha256(result.averaged),
                    "wire": result.wire,
                    "averaged": [a.clone() for a in result.averaged] if me == 0 else None,
                }
            )
            barrier.wait(timeout=300)
        out.put((me, rows))
        barrier.wait(timeout=300)
    finally:
        averager.shutdown()
        dht.shutdown()


def exact_mean(args, r: int) -> list[torch.Tensor]:
    weights = [100 * (args.peers - p) for p in range(args.peers)]
    total = sum(weights)
    per_peer = [deltas(args.params, p, r) for p in range(args.peers)]
    return [
        sum(w / total * d[i].double() for w, d in zip(weights, per_peer, strict=True))
        for i in range(4)
    ]


def rel_err(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    diff = sum(float((a - b).pow(2).sum()) for a, b in zip(got, want, strict=True))
    return (diff / sum(float(b.pow(2).sum()) for b in want)) ** 0.5


def run_codec(args, codec: str) -> dict:
    ctx = mp.get_context("fork")  # hivemind forks its own children
    maddrs_q, out, barrier = ctx.Queue(), ctx.Queue(), ctx.Barrier(args.peers)
    procs = [
        ctx.Process(target=peer, args=(me, args, codec, maddrs_q, barrier, out))
        for me in range(args.peers)
    ]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=600) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    rows0 = results[0]
    identical = all(
        all(a.get("digest") == b.get("digest") for a, b in zip(rows0, results[p], strict=True))
        for p in results
    ) and all(row["outcome"] == "Settled" for rows in results.values() for row in rows)
    round_err, sum_got, sum_want = [], None, None
    for row in rows0:
        if row.get("averaged") is None:
            continue
        got = [a.double() for a in row["averaged"]]
        want = exact_mean(args, row["round"])
        round_err.append(rel_err(got, want))
        sum_got = got if sum_got is None else [x + y for x, y in zip(sum_got, got, strict=True)]
        sum_want = (
            want if sum_want is None else [x + y for x, y in zip(sum_want, want, strict=True)]
        )
    sum_err = rel_err(sum_got, sum_want)
    wires = [row["wire"] for rows in results.values() for row in rows if row.get("wire")]
    sent = sum(w["sent_bytes"] for w in wires)
    sent_values = sum(w["sent_values"] for w in wires)
    received = sum(w["received_bytes"] for w in wires)
    received_values = sum(w["received_values"] for w in wires)
    return {
        "codec": codec,
        "sent_bytes_per_value": sent / sent_values if sent_values else None,
        "received_bytes_per_value": received / received_values if received_values else None,
        "sent_bytes_per_peer_round": sent / max(1, len(wires)) if wires else None,
        "round_rel_err": max(round_err),
        "sum_rel_err": sum_err,
        "seconds_per_round": sorted(r["seconds"] for r in rows0 if "seconds" in r)[len(rows0) // 2],
        "identical": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=int, default=4_000_000)
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run_codec(args, codec) for codec in args.codecs.split(",")]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.peers} peers, {args.params:,} values, {args.rounds} rounds each")
    print(
        "codec       sent B/v  recv B/v  vs fp32  vs none  round err  sum err  s/round  identical"
    )
    for r in rows:
        bpv = r["sent_bytes_per_value"] or 8.0  # none: float64, not counted
        counted = r["sent_bytes_per_value"] is not None
        print(
            f"{r['codec']:<11} {bpv:8.4f}{'' if counted else '*'} "
            f"{(r['received_bytes_per_value'] or 8.0):8.4f}  {4.0 / bpv:6.2f}x  {8.0 / bpv:6.2f}x  "
            f"{r['round_rel_err']:9.2e}  {r['sum_rel_err']:7.2e}  {r['seconds_per_round']:7.2f}  "
            f"{r['identical']}"
        )
    print("* none: hivemind's stock runner, 8 bytes a value (float64) plus framing, not counted")


if __name__ == "__main__":
    main()
