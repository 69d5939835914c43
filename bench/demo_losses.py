"""Mean training loss vs validation loss over the first rounds of the embedded demo run.

Starts what `make demo` starts (a coordinator serving the embedded run: tiny RWKV-7 on the
standard library; N nodes), without the dashboard, lets the nodes train `--rounds` outer rounds,
then prints each round's mean training loss and validation loss from the coordinator's store.
A training loss far below the validation loss in the first rounds means nodes fit what they
see (issue 13: shards of one package, trained in order) instead of learning the corpus.

    python bench/demo_losses.py --rounds 10                  # this tree
    PYTHONPATH=/path/to/other/tree/pkg python bench/demo_losses.py --dir /tmp/before

The run directory is made fresh (an existing --dir is refused).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from demo import Child, _read_port, _tool, _wait  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/gpt5os-demo-losses"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    root = args.dir.resolve()
    if root.exists():
        raise SystemExit(f"{root} exists: give a fresh --dir")
    root.mkdir(parents=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    children: list[Child] = []
    started = time.monotonic()
    try:
        port_file = root / "coordinator.port"
        children.append(
            Child(
                "coordinator",
                [
                    _tool("gpt5os-coordinator"),
                    "serve",
                    "--dir",
                    str(root / "run"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--port-file",
                    str(port_file),
                ],
                root / "coordinator.log",
                env,
            )  # fmt: skip
        )
        port = _wait(lambda: _read_port(port_file), 900, "the coordinator", children)
        for i in range(1, args.nodes + 1):
            children.append(
                Child(
                    f"node-{i}",
                    [
                        _tool("gpt5os-node"),
                        "join",
                        "--coordinator",
                        f"127.0.0.1:{port}",
                        "--home",
                        str(root / f"node-{i}"),
                        "--threads",
                        "1",
                        "--max-rounds",
                        str(args.rounds),
                        "--min-peers",
                        str(args.nodes),
                    ],
                    root / f"node-{i}.log",
                    env,
                )  # fmt: skip
            )
        deadline = time.monotonic() + args.timeout
        while any(c.alive() for c in children[1:]) and time.monotonic() < deadline:
            time.sleep(1.0)
    finally:
        for child in reversed(children):
            child.stop()
    with sqlite3.connect(root / "run" / "coordinator.sqlite") as db:
        rows = db.execute(
            "SELECT round, loss, val_loss FROM rounds ORDER BY round LIMIT ?", (args.rounds,)
        ).fetchall()
    print(
        f"{len(rows)} rounds in {time.monotonic() - started:.0f} s (load {os.getloadavg()[0]:.1f})"
    )
    print(f"{'round':>5} {'train':>7} {'val':>7} {'val-train':>9}")
    gaps = []
    for rnd, loss, val in rows:
        gap = val - loss if loss is not None and val is not None else None
        if gap is not None:
            gaps.append(gap)
        fmt = lambda x: f"{x:7.3f}" if x is not None else "      -"  # noqa: E731
        print(f"{rnd:>5} {fmt(loss)} {fmt(val)} {gap if gap is None else f'{gap:9.3f}'}")
    if gaps:
        print(f"mean gap (val - train) over {len(gaps)} rounds: {sum(gaps) / len(gaps):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
