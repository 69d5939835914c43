"""Mutation testing of the coordinator's and the node's pure logic with cosmic-ray: `make mutation`.

For each module (scheduler, swarm state, store, request validation; the certificate rules; the
node's re-sync decisions, state_sync) cosmic-ray changes one
operator at a time and runs that module's *unit* tests; a mutant the tests do not notice
"survives". The run happens in a copy of the working tree (cosmic-ray edits files in place), so
other tests and editors never see a mutant; `PYTHONPATH` makes `gpt5os.*` resolve to the copy.

Bounded on purpose: operators that only produce type errors or exotic arithmetic
(`a is None` -> `a < None`, `+` -> `<<`, ...) are filtered out before the run, and each mutant's
tests stop at the first failure (`-x`). Prints one line per module and the survivors' diffs.

    python bench/mutation.py [--only swarm] [--out bench/mutation-survivors.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNNER = Path(__file__).with_name("mutation_runner.py")
PACKAGES = ("model", "node", "coordinator", "proto", "dashboard")

# module -> the unit tests that guard it (fast, in-process, no gRPC server, no hivemind)
TARGETS: dict[str, list[str]] = {
    "scheduler": ["tests/test_coordinator_scheduler.py"],
    "swarm": ["tests/test_coordinator_swarm.py"],
    "store": ["tests/test_coordinator_store.py", "tests/test_coordinator_swarm.py"],
    "validate": ["tests/test_coordinator_validate.py"],
    # the rules alone (the rest of the file starts an in-process gRPC server per test)
    "certify": [
        "tests/test_coordinator_certified.py::test_the_majority_rule",
        "tests/test_coordinator_certified.py::test_a_stuck_run_continues_from_the_keepers_round_the_rule",
        "tests/test_coordinator_certified.py::test_the_rules_at_their_edges",
    ],
    # the node's round settlement after averaging: which state to adopt, from whom, and why not
    "state_sync": ["tests/test_node_outer_round.py"],
    # the rules each member applies to a round's gathered data: does our average stand, who
    # contributed, was the group big enough
    "settle": ["tests/test_node_settle.py"],
}
# modules outside coordinator/ (default: coordinator/<name>.py)
MODULE_PATHS = {"state_sync": "node/state_sync.py", "settle": "node/settle.py"}


def module_path(name: str) -> str:
    return MODULE_PATHS.get(name, f"coordinator/{name}.py")


EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_.*_(Pow|LShift|RShift|BitAnd|BitOr|BitXor|FloorDiv|Mod)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot)_(Lt|LtE|Gt|GtE)$",
    r"core/RemoveDecorator",  # @dataclass, @property, @staticmethod: every use breaks at once
]
TIMEOUT_S = 60.0


def copy_tree(dest: Path) -> Path:
    """Tracked and untracked (not ignored) files into dest/src; dest/root/gpt5os -> them."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    src = dest / "src"
    for name in filter(None, files):
        rel = Path(os.fsdecode(name))
        if not (ROOT / rel).is_file():
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    pkg = dest / "root" / "gpt5os"
    pkg.mkdir(parents=True)
    for name in PACKAGES:
        (pkg / name).symlink_to(src / name)
    return src


def keep_sample(session: Path, every: int) -> None:
    """Skip all but every `every`-th pending mutant (by job id order: the same sample each run)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = sorted(db.pending_work_items, key=lambda item: item.job_id)
        for i, item in enumerate(pending):
            if i % every:
                db.set_result(
                    item.job_id,
                    WorkResult(output="not in sample", worker_outcome=WorkerOutcome.SKIPPED),
                )


def run_module(name: str, src: Path, work: Path, env: dict[str, str], sample: int) -> dict:
    config = work / f"{name}.toml"
    session = work / f"{name}.sqlite"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module_path(name)}"\n'
        f"timeout = {TIMEOUT_S}\n"
        "excluded-modules = []\n"
        f'test-command = "{sys.executable} -S {RUNNER} --client {work / name}.sock"\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = {json.dumps(EXCLUDED_OPERATORS)}\n"
    )
    t0 = time.monotonic()
    sock = work / f"{name}.sock"
    server = subprocess.Popen(
        [sys.executable, str(RUNNER), "--serve", str(sock), "--", "-x", "-q",
         "-p", "no:cacheprovider", "-p", "no:textual-snapshot", "-p", "no:syrupy",
         *TARGETS[name]],
        cwd=src, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "ready" in server.stdout.readline(), "the mutation runner did not start"
        for cmd in (
            ["cosmic-ray", "init", str(config), str(session)],
            ["cr-filter-operators", str(session), str(config)],
            ["cosmic-ray", "baseline", str(config)],
        ):
            subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=src, env=env, check=True)
        if sample > 1:
            keep_sample(session, sample)
        subprocess.run(
            [str(BIN / "cosmic-ray"), "exec", str(config), str(session)],
            cwd=src,
            env=env,
            check=True,
        )
    finally:
        server.terminate()
        server.wait()
    dump = subprocess.run(
        [str(BIN / "cosmic-ray"), "dump", str(session)],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts = {"killed": 0, "survived": 0, "skipped": 0, "incompetent": 0}
    survivors = []
    for line in dump.splitlines():
        item, result = json.loads(line)
        if result is None or result.get("worker_outcome") == "skipped":
            counts["skipped"] += 1
            continue
        outcome = result.get("test_outcome")
        if outcome == "killed":
            counts["killed"] += 1
        elif outcome == "survived":
            counts["survived"] += 1
            m = item["mutations"][0]
            survivors.append(
                f"{name}:{m['start_pos'][0]} {m['operator_name']} #{m['occurrence']}\n"
                + (result.get("diff") or "")
            )
        else:
            counts["incompetent"] += 1
    tested = counts["killed"] + counts["survived"]
    counts["kill_rate"] = counts["killed"] / tested if tested else 0.0
    counts["seconds"] = round(time.monotonic() - t0)
    counts["survivors"] = survivors
    return counts


def retest(survivors_file: Path, src: Path, env: dict[str, str]) -> int:
    """Run each listed survivor (`module:line operator #occurrence`, as --out writes them) again
    against the current tests: how many the tests added since that run now kill."""
    heads = re.findall(r"^(\w+):\d+ (\S+) #(\d+)$", survivors_file.read_text(), re.M)
    killed = 0
    for module, operator, occurrence in heads:
        tests = " ".join(TARGETS[module])
        out = subprocess.run(
            [str(BIN / "cosmic-ray"), "mutate-and-test", module_path(module), operator,
             occurrence, f"{sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"],
            cwd=src, env=env, capture_output=True, text=True,
        ).stdout  # fmt: skip
        outcome = "killed" if '"killed"' in out else "survived" if '"survived"' in out else "?"
        killed += outcome == "killed"
        print(f"{module} {operator} #{occurrence}: {outcome}", flush=True)
    print(f"retest: {killed} of {len(heads)} earlier survivors now killed")
    return killed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(TARGETS))
    ap.add_argument("--sample", type=int, default=1, help="test every N-th mutant only")
    ap.add_argument("--retest", type=Path, help="re-run the survivors listed in this file")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "mutation-survivors.txt")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpt5os-mutation-"))
    try:
        src = copy_tree(work)
        env = dict(os.environ, PYTHONPATH=str(work / "root"))
        if args.retest:
            retest(args.retest, src, env)
            return 0
        results = {
            name: run_module(name, src, work, env, args.sample) for name in args.only or TARGETS
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    killed = sum(r["killed"] for r in results.values())
    tested = killed + sum(r["survived"] for r in results.values())
    lines = []
    for name, r in results.items():
        lines.append(
            f"{name:10s} killed {r['killed']:4d} survived {r['survived']:3d} "
            f"skipped {r['skipped']:4d} kill rate {r['kill_rate']:.1%} ({r['seconds']} s)"
        )
    lines.append(f"{'total':10s} killed {killed:4d} of {tested:4d}: {killed / max(tested, 1):.1%}")
    print("\n".join(lines))
    survivors = [s for r in results.values() for s in r["survivors"]]
    args.out.write_text("\n".join(lines) + "\n\n" + "\n".join(survivors))
    print(f"{len(survivors)} survivors with their diffs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
