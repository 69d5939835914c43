"""The fused CPU WKV-7 kernel (kernels/wkv7_cpu.cpp): built on first use, loaded with ctypes.

Why a separate C++ file and not torch.utils.cpp_extension: the kernel needs no torch headers,
so g++ compiles it in about a second (a torch extension takes a minute here), and the library
is cached by the hash of its source, flags and compiler. Where no compiler exists, or the build
fails, or the head size is not one it was built for, `wkv7_cpu` uses the pure-PyTorch chunked
form (`wkv_chunked`) instead: the same results to fp32 rounding, ~2-4x slower.
``GPT5OS_WKV_CPU_KERNEL=0`` forces that fallback.

Threads: the B*H heads are split across ``torch.get_num_threads()`` threads; ctypes releases
the GIL during each call, and every head is independent.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .wkv_chunked import balanced_chunk, check_decay, wkv7_chunked

SOURCE = Path(__file__).resolve().parent / "kernels" / "wkv7_cpu.cpp"
HEAD_SIZES = (16, 32, 64, 128)
SEGMENT = 32  # state checkpoint interval of the backward (it recomputes each segment)
ABI = 2
# -march=native: the library is cached per CPU (its flags are part of the cache key)
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC"]


def _cache_dir() -> Path:
    root = os.environ.get("GPT5OS_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root or Path.home() / ".cache") / "gpt5os" / "wkv7_cpu"


def _vector_width(cpu_id: str) -> int:
    """Floats per vector in the kernel: 16 where AVX-512 exists (measured 1.6x faster than 8 on
    an AVX-512 EPYC), else 8 (AVX2 registers; other CPUs split the vectors as they need)."""
    return 16 if " avx512f" in cpu_id else 8


def _cpu_id() -> str:
    """What -march=native depends on, so a cache shared between machines never loads a library
    built for instructions this CPU lacks."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


@functools.cache
def _library() -> ctypes.CDLL | None:
    """Build (first use only) and load the kernel; None where that is impossible."""
    if os.environ.get("GPT5OS_WKV_CPU_KERNEL", "1") == "0":
        return None
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx or platform.system() != "Linux":
        return None
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        cpu = _cpu_id()
        flags = [*FLAGS, f"-DWKV7_VEC={_vector_width(cpu)}"]
        key = hashlib.sha256(
            SOURCE.read_bytes() + " ".join(flags).encode() + version.stdout.encode() + cpu.encode()
        ).hexdigest()[:16]
        path = _cache_dir() / f"wkv7_cpu_{key}.so"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # build beside the target and rename: concurrent first uses never see half a file
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                out = Path(tmp) / path.name
                subprocess.run([cxx, *flags, str(SOURCE), "-o", str(out)], check=True,
                               capture_output=True, timeout=300)  # fmt: skip
                os.replace(out, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError):
        return None
    if lib.wkv7_cpu_abi() != ABI:
        return None
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.wkv7_cpu_forward.argtypes = [i64, i64, i64, i64, i64, i32, ptr, ptr, ptr, ptr, ptr]
    lib.wkv7_cpu_backward.argtypes = [i64, i64, i64, i64, i64, i32, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.wkv7_cpu_forward.restype = lib.wkv7_cpu_backward.restype = ctypes.c_int
    return lib


def available(n: int) -> bool:
    """Whether the kernel can run head size n here (building it on first call)."""
    return n in HEAD_SIZES and _library() is not None


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """Keyed by process id: a forked child inherits the executor but not its threads, and would
    wait forever on work submitted to it."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpt5os-wkv7-cpu")


def _split(fn, n_heads: int) -> None:
    """Run fn(h0, h1) over [0, n_heads) in torch.get_num_threads() parts, this thread included."""
    parts = max(1, min(torch.get_num_threads(), n_heads))
    bounds = [n_heads * i // parts for i in range(parts + 1)]
    futures = [
        _pool(parts, os.getpid()).submit(fn, bounds[i], bounds[i + 1]) for i in range(1, parts)
    ]
    codes = [fn(bounds[0], bounds[1])] + [f.result() for f in futures]
    if any(codes):
        raise RuntimeError(f"wkv7 CPU kernel failed (codes {codes})")


def _ptrs(*xs: Tensor):
    return (ctypes.c_void_p * len(xs))(*(x.data_ptr() for x in xs))


class _KernelWKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, w, k, v, a, b, s0, grad: bool):  # type: ignore[override]
        lib = _library()
        bsz, t_len, h, n = r.shape
        xs = [x.contiguous() for x in (r, w, k, v, a, b)]
        s0 = s0.contiguous()
        y = torch.empty_like(xs[0])
        s_end = torch.empty_like(s0)
        n_seg = -(-t_len // SEGMENT)
        ckpt = r.new_empty(bsz, h, n_seg, n, n) if grad else None
        x_ptrs = _ptrs(*xs)

        def run(h0: int, h1: int) -> int:
            return lib.wkv7_cpu_forward(h0, h1, t_len, h, n, SEGMENT, x_ptrs, s0.data_ptr(),
                                        y.data_ptr(), s_end.data_ptr(), None if ckpt is None else ckpt.data_ptr())  # fmt: skip

        _split(run, bsz * h)
        if grad:
            ctx.save_for_backward(*xs, ckpt)
        return y, s_end

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, ds_end: Tensor):  # type: ignore[override]
        lib = _library()
        *xs, ckpt = ctx.saved_tensors
        bsz, t_len, h, n = xs[0].shape
        dy = dy.contiguous()
        ds_end = ds_end.contiguous()
        dxs = [torch.empty_like(xs[0]) for _ in range(6)]
        ds0 = torch.empty_like(ds_end)
        x_ptrs, dx_ptrs = _ptrs(*xs), _ptrs(*dxs)

        def run(h0: int, h1: int) -> int:
            return lib.wkv7_cpu_backward(h0, h1, t_len, h, n, SEGMENT, x_ptrs, ckpt.data_ptr(),
                                         dy.data_ptr(), ds_end.data_ptr(), ds0.data_ptr(),
                                         dx_ptrs)  # fmt: skip

        _split(run, bsz * h)
        return (*dxs, ds0, None)


def wkv7_cpu(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`gpt5os.model.wkv7` with ``impl="cpu"``: the fused kernel where it runs, else the chunked
    form. Both accept the same decays (`wkv_chunked.check_decay`), so a call that works on one
    machine works on every other; single steps (RNN decoding) take the chunked module's
    direct update, which has no setup to amortise."""
    bsz, t_len, h, n = r.shape
    if t_len <= 1 or r.device.type != "cpu" or not available(n):
        return wkv7_chunked(r, w, k, v, a, b, state)
    out_dtype = r.dtype
    r, w, k, v, a, b = (x.float() for x in (r, w, k, v, a, b))
    check_decay(w, balanced_chunk(t_len))
    s0 = r.new_zeros(bsz, h, n, n) if state is None else state.float()
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (r, w, k, v, a, b, s0))
    y, s = _KernelWKV.apply(r, w, k, v, a, b, s0, grad)
    return y.to(out_dtype), s
