"""The committed gRPC modules are exactly what `make proto` generates from the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "proto" / "gpt5os" / "v1"


def test_regenerating_the_proto_modules_changes_nothing(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = sorted((tmp_path / "gpt5os" / "v1").glob("*_pb2*"))
    assert fresh, "gen_proto.py produced nothing"
    for path in fresh:
        committed = GENERATED / path.name
        assert committed.exists(), f"{committed} is missing: run `make proto` and commit it"
        assert committed.read_text() == path.read_text(), (
            f"{committed.name} is stale: run `make proto`"
        )
