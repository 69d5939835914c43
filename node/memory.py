"""How much memory a node needs for a run, how much this machine has, and whether it fits.

One estimate (`estimate`) serves `join` (which refuses a run the machine cannot hold, before
allocating anything), the README's preset table (scripts/presets.py renders it) and
bench/memory.py (which prints it beside what a node really peaks at).

Where the bytes go, per model parameter (p):
- training state: the weights, their gradients and the inner optimizer's two moments
  (fp32: 4 + 4 + 8; AdamW8bit keeps its moments in 1 byte each: 4 + 4 + 2); on the device;
  the gradients exist only during a step (freed after it), so not while averaging;
- outer state: θ_global and the outer momentum, fp32 on the host: 8;
- error feedback (codecs "float16", "blockwise8"): this node's quantization error, kept from
  round to round in bfloat16 (codec.py): 2;
- while averaging only: the wire buffer hivemind averages, shared with the averager process
  (float64 fixed point with compression "none": 8; fp32 with a codec: 4); its pages go back to
  the system once the round's average is applied (swarm.py release_wire). Nothing else per
  parameter: the pseudo-gradient is computed one tensor at a time as it is written into the
  wire buffer (diloco.py LivePseudoGradients), the average is read from the wire buffer itself
  and the outer step runs one tensor at a time;
- while averaging, per value of the largest tensor (the embedding or the head, vocab × width):
  its Δ (4), SGD's Nesterov term (4), the averager process's assembled average of one tensor
  (4) and, with "none", the fp32 copy of its float64 average (4).
Activations and logits grow with batch_size × seq_len and sit on the device as well.

With `join --overlap` the round's averaging runs while the next round trains, so both peaks
coexist, and two more copies exist: the round's Δ, held for the background all-reduce (fp32 on
the host: 4), and the model copy that validates θ_global off the training loop (its weights, on
the device: 4; kept from the first overlapped round on).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GIB = 1024**3
M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial default
MADV_REMOVE = 9  # <sys/mman.h>: free a shared mapping's backing pages
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# bytes per parameter (see module doc)
WEIGHTS = 4
GRADS = 4
ADAM_MOMENTS = {"adamw": 8, "adamw8bit": 2}
OUTER_STATE = 8
_BLOCKWISE = ("blockwise8", "blockwise4", "blockwise2")  # the same buffers, whatever the bits
WIRE = {"none": 8, "float16": 4} | dict.fromkeys(_BLOCKWISE, 4)  # while averaging only
ERROR_FEEDBACK = {"none": 0, "float16": 2} | dict.fromkeys(_BLOCKWISE, 2)  # bf16, from round 1
OVERLAP_DELTA = 4  # join --overlap: the round's Δ, fp32 on the host, held while it averages
EVAL_COPY = 4  # join --overlap: the validation model's weights, on the device
# per value of the largest tensor
TENSOR_TRANSIENT = {"none": 16, "float16": 12} | dict.fromkeys(_BLOCKWISE, 12)
# Activations saved for backward, in bytes per token, measured on the CPU path with fp32 (one
# forward+backward at T=2048, peak RSS over the step before it; 2026-11-29): ~230 per layer and
# channel, ~10.3 per vocabulary entry (logits, their fp32 copy and gradient), ~100 per channel.
# A CUDA node uses the same figures (bf16 autocast should need less; not measured on a GPU).
ACT_PER_TOKEN_LAYER_CHANNEL = 230
ACT_PER_TOKEN_VOCAB = 11
ACT_PER_TOKEN_CHANNEL = 100
# Python, torch, hivemind's three processes and the p2p daemon, measured for `tiny`.
BASELINE_HOST = int(1.2 * GIB)


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a run spec (pb.RunSpec or RunSpec alike)."""

    params: int
    n_layer: int
    n_embd: int
    vocab_size: int
    seq_len: int
    batch_size: int
    optimizer: str = "adamw"
    compression: str = "none"


@dataclass(frozen=True)
class MemoryNeed:
    """Peak bytes a node needs: on the host, and on the GPU (0 for a CPU node)."""

    host: int
    device: int  # training state and activations on the GPU (0 for a CPU node)
    params: int
    device_state: int = 0  # the GPU part without activations: what `join` refuses on

    def host_per_param(self) -> float:
        return self.host / max(1, self.params)


def count_params(n_layer: int, n_embd: int, vocab_size: int, head_size: int) -> int:
    """The model's parameter count, exact, without allocating it (torch's meta device)."""
    import torch
    from gpt5os.model import RWKV7, ModelConfig

    config = ModelConfig(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, head_size=head_size)
    with torch.device("meta"):
        return sum(p.numel() for p in RWKV7(config).parameters())


def shape_of(spec) -> ModelShape:
    """ModelShape of a run spec (pb.RunSpec from the coordinator or the coordinator's RunSpec)."""
    m = spec.model
    return ModelShape(
        params=count_params(m.n_layer, m.n_embd, m.vocab_size, m.head_size),
        n_layer=m.n_layer,
        n_embd=m.n_embd,
        vocab_size=m.vocab_size,
        seq_len=spec.seq_len,
        batch_size=spec.batch_size,
        optimizer=spec.inner.name,
        compression=spec.compression,
    )


def estimate(shape: ModelShape, device_type: str, *, overlap: bool = False) -> MemoryNeed:
    """Peak memory of one node training `shape` on a "cpu" or "cuda" device (the one function);
    `overlap`: join --overlap (averaging while training, see the module doc)."""
    p = shape.params
    tokens = shape.seq_len * shape.batch_size
    activations = tokens * (
        shape.n_layer * shape.n_embd * ACT_PER_TOKEN_LAYER_CHANNEL
        + shape.vocab_size * ACT_PER_TOKEN_VOCAB
        + shape.n_embd * ACT_PER_TOKEN_CHANNEL
    )
    training = p * (WEIGHTS + GRADS + ADAM_MOMENTS.get(shape.optimizer, 8)) + activations
    compression = shape.compression if shape.compression in WIRE else "none"
    kept = p * (OUTER_STATE + ERROR_FEEDBACK[compression])
    averaging = _averaging(shape, compression)
    if overlap:
        averaging += p * OVERLAP_DELTA
        training += p * EVAL_COPY
    if device_type == "cuda":
        return MemoryNeed(
            host=BASELINE_HOST + kept + averaging,
            device=training,
            params=p,
            device_state=training - activations,
        )
    if overlap:  # a training step and the background round at once
        return MemoryNeed(host=BASELINE_HOST + kept + training + averaging, device=0, params=p)
    # on the CPU the peak is a training step's or the averaging's (no gradients then)
    averaging_phase = p * (WEIGHTS + ADAM_MOMENTS.get(shape.optimizer, 8)) + averaging
    return MemoryNeed(
        host=BASELINE_HOST + kept + max(training, averaging_phase), device=0, params=p
    )


def _averaging(shape: ModelShape, compression: str) -> int:
    """What a round's averaging adds on the host: the wire buffer and one tensor's transients."""
    largest = shape.vocab_size * shape.n_embd
    return shape.params * WIRE[compression] + largest * TENSOR_TRANSIENT[compression]


def estimate_keeper(shape: ModelShape) -> MemoryNeed:
    """Peak host memory of the run's keeper (node/keeper.py): the model it builds once (its
    weights), θ_global and the outer momentum, the wire buffer and averaging transients of a
    member, and the fp32 copies of θ_global and the momentum a checkpoint write takes. No
    gradients, inner optimizer, activations or error feedback: it never trains or sends."""
    p = shape.params
    compression = shape.compression if shape.compression in WIRE else "none"
    checkpoint_copy = OUTER_STATE
    host = BASELINE_HOST + p * (WEIGHTS + OUTER_STATE + checkpoint_copy)
    return MemoryNeed(host=host + _averaging(shape, compression), device=0, params=p)


def available_host_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable (what can be allocated without swapping), None where unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def refusal(
    need: MemoryNeed, host_available: int | None, device_available: int | None, preset: str
) -> str | None:
    """One line saying why this machine cannot hold the run, or None when it fits (or unknown)."""
    if host_available is not None and need.host > host_available:
        return (
            f"preset {preset} needs ~{need.host / GIB:.1f} GiB of RAM here and "
            f"{host_available / GIB:.1f} GiB is available: join a smaller run, or free memory"
        )
    # On a GPU only the training state counts: the activation figures were measured on the CPU.
    if need.device_state and device_available is not None and need.device_state > device_available:
        return (
            f"preset {preset} needs ~{need.device_state / GIB:.1f} GiB of GPU memory for its "
            f"weights, gradients and optimizer, and {device_available / GIB:.1f} GiB is free: "
            "join a smaller run"
        )
    return None


def skip_check() -> bool:
    """GPT5OS_SKIP_MEMORY_CHECK=1: join anyway (the estimate can be wrong; the OOM killer is not)."""
    return os.environ.get("GPT5OS_SKIP_MEMORY_CHECK", "") not in ("", "0")


def release_shared_pages(tensor, *, madvise=None) -> int:
    """Hand the pages of a tensor in shared memory back to the system; bytes released.

    For the averager's wire buffers between rounds: they sit in shared memory (shmem, mapped by
    the node's and the averager's process) and every round writes them whole before they are
    read, so in between they need not hold memory. madvise(MADV_REMOVE) frees the shmem pages
    under every mapping at once; they read as zeros and come back when written. Only whole pages
    inside the tensor; 0 where it is not possible (not Linux, not shared memory)."""
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes < PAGE or not tensor.is_shared() or not tensor.is_contiguous():
        return 0
    start = -(-tensor.data_ptr() // PAGE) * PAGE
    end = (tensor.data_ptr() + nbytes) // PAGE * PAGE
    if end <= start:
        return 0
    madvise = madvise or _libc_madvise()
    if madvise is None or madvise(start, end - start, MADV_REMOVE) != 0:
        return 0
    return end - start


def _libc_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def return_freed_memory_to_os() -> bool:
    """Make glibc serve every large allocation with its own mmap, so freeing a tensor gives its
    memory back to the system.

    By default glibc raises its mmap threshold each time a large block is freed (up to 32 MiB),
    after which tensors of that size come from the heap and their memory stays with the process
    once freed: a state download or an all-reduce left hivemind's averager process holding
    several bytes per parameter for good (bench/memory.py). Fixing the threshold turns that off.
    Called in the averager's process only: the training loop reuses its large blocks every step,
    where an mmap per allocation would cost page faults. A no-op where glibc is absent."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return ok
