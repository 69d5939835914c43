"""The README's maintainer and volunteer commands and its preset table, in one place.

The README's command blocks and preset table are rendered from here (`python
scripts/walkthrough.py --write-readme`; tests/test_walkthrough.py fails when the README drifts), and
the per-preset end-to-end test runs the same command lines with test values and a few
test-only options (free ports, reduced sizes). So the commands a maintainer copies are the
commands the tests run.

Usage: python scripts/walkthrough.py [--write-readme | --check-readme]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# A template is the tool and its arguments; "{name}" is replaced by a value, and a value that is
# a list splices in several arguments.
Template = tuple[str, ...]

DATA_PREPARE: Template = ("gpt5os-coordinator", "data", "prepare", "--out", "{data}", "{corpus}")
INIT: Template = (
    "gpt5os-coordinator", "init", "--dir", "{run}", "--data", "{data}", "--preset", "{preset}",
)  # fmt: skip
SERVE: Template = (
    "gpt5os-coordinator", "serve", "--dir", "{run}", "--host", "{host}", "--port", "{port}",
)  # fmt: skip
STATUS: Template = ("gpt5os-coordinator", "status", "--dir", "{run}")
JOIN: Template = ("gpt5os-node", "join", "--coordinator", "{coordinator}", "--name", "{name}")
EXPORT: Template = (
    "gpt5os-coordinator", "export", "--dir", "{run}", "--format", "rwkv-pth", "--out", "{model}",
)  # fmt: skip
GENERATE: Template = ("gpt5os-node", "generate", "--checkpoint", "{model}", "--prompt", "{prompt}")

MAINTAINER = (DATA_PREPARE, INIT, SERVE, STATUS)
# Getting the model out once rounds have been checkpointed: the tests run these too.
MODEL_OUT = (EXPORT, GENERATE)

README_VALUES: dict[str, str | list[str]] = {
    "data": "data/",
    "corpus": ["corpus/", "more.jsonl.gz", "stdlib"],
    "run": "runs/main",
    "preset": "0.1b",
    "host": "0.0.0.0",
    "port": "50051",
    "coordinator": "swarm.example.org:50051",
    "name": "your name",
    "model": "model.pth",
    "prompt": "def fib(n):",
}
# README-only lines of the maintainer block (the tests exercise these elsewhere).
README_MAINTAINER_EXTRA = {
    STATUS: "          # or --json, or --coordinator HOST:PORT",
}
README_MAINTAINER_TAIL = (
    "gpt5os-coordinator pause --dir runs/main            # stop leasing; resume with `resume`",
    "gpt5os-coordinator ban --dir runs/main NODE_ID       # or a unique prefix of it",
    "gpt5os-coordinator spec --dir runs/main --set inner_lr=1e-3   # bumps the spec revision",
    "gpt5os-dashboard --coordinator runs.example.org:50051",
    "",
    "# the model out, and a released model in",
)
README_MODEL_EXTRA = {EXPORT: "   # [--round N] [--dtype bf16]"}
README_MODEL_TAIL = (
    "gpt5os-coordinator export --dir runs/main --format safetensors --out model.safetensors",
    "gpt5os-coordinator init --dir runs/ft --data data/ --from-checkpoint RWKV-x070-World-0.1B.pth",
)
README_VOLUNTEER_HEAD = (
    "pip install torch            # your CUDA build, first",
    "pip install .                # or: make install",
)


def render(template: Template, values: Mapping[str, str | Sequence[str]]) -> list[str]:
    """The argument list of `template` with its placeholders filled from `values`."""
    args: list[str] = []
    for part in template:
        if part.startswith("{") and part.endswith("}"):
            value = values[part[1:-1]]
            args.extend([value] if isinstance(value, str) else list(value))
        else:
            args.append(part)
    return args


def maintainer_block() -> str:
    lines = [
        shlex.join(render(t, README_VALUES)) + README_MAINTAINER_EXTRA.get(t, "")
        for t in MAINTAINER
    ]
    model = [
        shlex.join(render(t, README_VALUES)) + README_MODEL_EXTRA.get(t, "") for t in MODEL_OUT
    ]
    return "\n".join(
        ["```bash", *lines, *README_MAINTAINER_TAIL, *model, *README_MODEL_TAIL, "```"]
    )


def volunteer_block() -> str:
    join = shlex.join(render(JOIN, README_VALUES))
    return "\n".join(["```bash", *README_VOLUNTEER_HEAD, join, "```"])


def preset_table() -> str:
    """What each preset needs, from node/memory.py's estimate (the one `join` checks)."""
    from gpt5os.coordinator.run_spec import PRESETS, preset_spec
    from gpt5os.node import memory

    rows = [
        "| preset | parameters | layers × width | seq_len × batch | CPU node: RAM "
        "| GPU node: GPU memory + RAM |",
        "| --- | ---: | --- | --- | ---: | ---: |",
    ]
    for preset in PRESETS:
        spec = preset_spec(preset, run_id="readme")
        shape = memory.shape_of(spec)
        cpu = memory.estimate(shape, "cpu")
        gpu = memory.estimate(shape, "cuda")
        rows.append(
            f"| `{preset}` | {shape.params / 1e6:,.0f} M | {shape.n_layer} × {shape.n_embd} "
            f"| {spec.seq_len} × {spec.batch_size} | {_gib(cpu.host)} "
            f"| {_gib(gpu.device)} + {_gib(gpu.host)} |"
        )
    return "\n".join(rows)


def _gib(n: int) -> str:
    return f"{n / 1024**3:,.1f} GiB"


SECTIONS = {"maintainer": maintainer_block, "volunteer": volunteer_block, "presets": preset_table}


def readme_with_sections(text: str) -> str:
    """`text` with every `<!-- walkthrough:NAME -->` ... `<!-- /walkthrough:NAME -->` re-rendered."""
    for name, make in SECTIONS.items():
        start, end = f"<!-- walkthrough:{name} -->", f"<!-- /walkthrough:{name} -->"
        if start not in text or end not in text:
            raise ValueError(f"README.md lacks the {start} ... {end} markers")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{make()}\n{end}{tail}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-readme", action="store_true")
    group.add_argument("--check-readme", action="store_true")
    args = parser.parse_args()
    current = README.read_text()
    wanted = readme_with_sections(current)
    if args.write_readme:
        README.write_text(wanted)
        return 0
    if wanted != current:
        print("README.md is out of date: run python scripts/walkthrough.py --write-readme")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
