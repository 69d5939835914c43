"""Generate the Python modules for proto/gpt5os/v1/*.proto.

grpc_tools writes absolute imports (`from gpt5os.v1 import x_pb2`) that follow the .proto path; our
modules live at gpt5os.proto.gpt5os.v1, so the import is rewritten to a relative one. The generated
files are committed; tests/test_proto_drift.py runs this into a temp dir and fails on any diff.

Usage: python scripts/gen_proto.py [--out DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = PROTO_ROOT / "gpt5os" / "v1"


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto under proto/gpt5os/v1 into out_root/gpt5os/v1; return the files."""
    protos = sorted(PACKAGE_DIR.glob("*.proto"))
    out_dir = out_root / "gpt5os" / "v1"
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = sorted(out_dir.glob("*_pb2*.py*"))
    for path in written:
        text = path.read_text()
        text = re.sub(r"^from gpt5os\.v1 import ", "from . import ", text, flags=re.M)
        path.write_text(text)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT)
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
