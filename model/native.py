"""Building and loading our small C++ CPU kernels (kernels/*_cpu.cpp), shared by wkv_cpu and
decode_cpu.

Why not torch.utils.cpp_extension: these kernels need no torch headers, so g++ builds each in
about a second (a torch extension takes a minute here) and they load through ctypes. A library
is cached by the hash of its source, flags, compiler version and CPU (the flags say
-march=native), so a cache shared between machines never loads code for instructions a CPU
lacks. Where no compiler exists, the build fails or the kernel's switch says 0, `load` returns
None and callers use their PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KERNELS = Path(__file__).resolve().parent / "kernels"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")


def cache_dir() -> Path:
    root = os.environ.get("GPT5OS_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root or Path.home() / ".cache") / "gpt5os" / "kernels"


@functools.cache
def cpu_id() -> str:
    """What -march=native depends on: the CPU model and its instruction-set flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def load(name: str, *, switch: str, defines: Sequence[str] = ()) -> ctypes.CDLL | None:
    """Build kernels/`name`.cpp on first use (cached) and load it; None where impossible.

    `switch`: the environment variable that turns this kernel off when set to "0"."""
    if os.environ.get(switch, "1") == "0":
        return None
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx or platform.system() != "Linux":
        return None
    source = KERNELS / f"{name}.cpp"
    flags = [*FLAGS, *defines]
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        key = hashlib.sha256(
            source.read_bytes()
            + " ".join(flags).encode()
            + version.stdout.encode()
            + cpu_id().encode()
        ).hexdigest()[:16]
        path = cache_dir() / f"{name}_{key}.so"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # build beside the target and rename: concurrent first uses never see half a file
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                out = Path(tmp) / path.name
                subprocess.run([cxx, *flags, str(source), "-o", str(out)], check=True,
                               capture_output=True, timeout=300)  # fmt: skip
                os.replace(out, path)
        return ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def _pool(name: str, workers: int, pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"gpt5os-{name}")


def thread_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """A pool per (kernel, size) and process: a forked child inherits the parent's executor but
    not its threads, and would wait forever on work submitted to it."""
    return _pool(name, workers, os.getpid())
