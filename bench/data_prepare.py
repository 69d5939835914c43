"""`data prepare` throughput with 1 and N workers, and what each filter removes.

Runs the real pipeline (scan with MinHash, tokenize, pack) on the same inputs once per worker
count, each into a fresh directory, checks that the outputs are byte-identical, and prints
documents/s and tokens/s of the whole prepare, the speed-up over 1 worker measured in the same
run, and the share of documents and bytes each filter dropped.

    python bench/data_prepare.py                       # the stdlib corpus, 1 and 2 workers
    python bench/data_prepare.py --workers 1,2,4 --max-bytes 4000000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from gpt5os.coordinator.data.filters import FILTER_NAMES
from gpt5os.coordinator.data.prepare import prepare


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", default=["stdlib"])
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--max-bytes", type=int, default=None)
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    print(f"inputs {args.inputs}, load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cpus")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            out = Path(tmp) / f"w{n}"
            started = time.perf_counter()
            m = prepare(args.inputs, out, max_bytes=args.max_bytes, workers=n, progress=False)
            seconds = time.perf_counter() - started
            results[n] = (m, seconds, tree_digest(out))
    base = results[counts[0]][1]
    print(f"{'workers':>7} {'seconds':>8} {'docs/s':>8} {'tokens/s':>10} {'speed-up':>8}")
    for n, (m, seconds, _) in results.items():
        docs, tokens = m.report["documents"]["read"], m.report["tokens"]["total"]
        print(
            f"{n:>7} {seconds:>8.1f} {docs / seconds:>8.0f} {tokens / seconds:>10,.0f} "
            f"{base / seconds:>7.2f}x"
        )
    digests = {d for _, _, d in results.values()}
    print("outputs byte-identical across worker counts:", len(digests) == 1)
    m = results[counts[0]][0]
    read = m.report["documents"]["read"]
    print(f"documents read {read}, kept {m.report['documents']['kept']}")
    for name in FILTER_NAMES:
        dropped = m.report["dropped"].get(name, 0)
        print(f"  {name:<15} {dropped:>6} documents  {dropped / read:>7.2%}")
    print(f"tokens {m.report['tokens']['total']:,} (val {m.report['tokens']['val']:,})")


if __name__ == "__main__":
    main()
