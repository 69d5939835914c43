"""How a state (θ_global + outer momentum) moves between two peers: big raw parts, few copies.

hivemind's `rpc_download_state` sends each tensor as 64 KiB protobuf parts (23k messages for a
0.1b state) and its receiver joins the parts, copies them into a bytearray and again into a
tensor, which the averager process then pickles to the host process (another copy into shared
memory). Here the server sends parts of `PART_BYTES` straight from the tensor's bytes, and the
receiver copies each part once, into a tensor in shared memory (handed to the host process
without a copy) while it hashes θ_global's bytes as they arrive. The server encodes each
message by hand (`state_frames`): one copy of each byte instead of protobuf's three. The parts are hivemind's
`runtime_pb2.Tensor` pieces (the first carries dtype and shape), so hivemind's own receiver
still reads what we send and we still read a stock hivemind peer.

A server serves at most a few downloads at once (`ServeSlots`): a crowd of late joiners that all
picked the same peer get "busy" from it and try their next source (hivemind issue 169), and a
peer never holds more than a few copies of its state for downloaders.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from hivemind.proto import runtime_pb2

# 64x fewer messages than hivemind's 64 KiB parts (its streams have no size cap)
PART_BYTES = 4 * 2**20
BUSY = "busy"  # the metadata key of a server's "serving too many downloads, try the next" answer
MAX_CONCURRENT_DOWNLOADS = 2  # per serving peer; each holds a copy of the state while it runs

_NUMPY_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


class Downloaded(NamedTuple):
    """A state as one peer served it. `digest`: sha256 of the first tensors (θ_global) computed
    by the receiver from the bytes it got, or None (then the caller hashes them itself)."""

    meta: dict[str, Any]
    tensors: list[torch.Tensor]
    digest: str | None = None


@dataclass(frozen=True)
class Busy:
    """A source that serves too many downloads right now: try it again later."""


def _raw(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes, without a copy when it is contiguous and on the CPU."""
    t = tensor.detach().cpu().contiguous()
    return memoryview(t.numpy()).cast("B") if t.numel() else memoryview(b"")


def _split(
    tensors: Sequence[torch.Tensor], part_bytes: int
) -> Iterator[tuple[memoryview, runtime_pb2.Tensor | None]]:
    """Each tensor's bytes in parts of up to `part_bytes`, the first part of a tensor with its
    header (dtype, shape and number of parts: hivemind's `split_for_streaming` layout), the
    others with None."""
    for tensor in tensors:
        name = str(tensor.dtype).replace("torch.", "")
        if name not in _NUMPY_DTYPES:
            raise ValueError(f"state tensors must be float16/32/64, not {name}")
        raw = _raw(tensor)
        starts = range(0, max(len(raw), 1), part_bytes)
        for i, start in enumerate(starts):
            header = None
            if i == 0:
                header = runtime_pb2.Tensor(size=list(tensor.shape), dtype=name, chunks=len(starts))
            yield raw[start : start + part_bytes], header


def state_parts(
    tensors: Sequence[torch.Tensor], part_bytes: int = PART_BYTES
) -> Iterator[runtime_pb2.Tensor]:
    """Each tensor as hivemind's uncompressed streaming parts of up to `part_bytes` (`_split`)."""
    for chunk, header in _split(tensors, part_bytes):
        if header is None:
            yield runtime_pb2.Tensor(buffer=chunk.tobytes())
            continue
        header.compression = runtime_pb2.CompressionType.NONE
        header.buffer = chunk.tobytes()
        header.requires_grad = False
        yield header


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)


def _field(number: int, payload: int) -> bytes:
    """A length-delimited protobuf field's tag and length (field numbers below 16)."""
    return bytes([number << 3 | 2]) + _varint(payload)


class RawMessage:
    """A message hivemind's stream writer sends as is: it only calls SerializeToString."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802  (protobuf's name)
        return self.data


def state_frames(
    metadata: bytes, tensors: Sequence[torch.Tensor], part_bytes: int = PART_BYTES
) -> Iterator[RawMessage]:
    """`averaging_pb2.DownloadData` messages of `state_parts`, encoded by hand: each part's bytes
    are copied once, from the tensor into the message (protobuf would copy them three times:
    the slice, the message, its serialisation). The first message carries `metadata`."""
    for chunk, first in _split(tensors, part_bytes):
        header = first.SerializeToString() if first is not None else b""
        buffer = _field(1, len(chunk))  # Tensor.buffer
        part = _field(2, len(header) + len(buffer) + len(chunk))  # DownloadData.tensor_part
        meta = _field(1, len(metadata)) + metadata if metadata else b""  # .metadata
        metadata = b""
        yield RawMessage(b"".join([meta, part, header, buffer, chunk]))


def _shared_empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory (share_memory_ would allocate and copy)."""
    numel = int(np.prod(shape)) if len(shape) else 1
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))


class StateAssembler:
    """Rebuilds the tensors from their parts as they arrive, one copy per byte, into shared
    memory; hashes the first `hashed` tensors' bytes on the way (model/checkpoint.py's
    tensors_sha256 of θ_global: the same digest, without a second pass over the state)."""

    def __init__(self, hashed: int, *, shared: bool = True) -> None:
        self.hashed = hashed
        self.shared = shared
        self.tensors: list[torch.Tensor] = []
        self._sha = hashlib.sha256()
        self._dest: memoryview | None = None
        self._filled = 0

    def add(self, part: runtime_pb2.Tensor) -> None:
        if part.dtype:  # the first part of a new tensor
            self._finish()
            if part.compression != runtime_pb2.CompressionType.NONE:
                raise ValueError("compressed state parts are not supported")
            dtype = _NUMPY_DTYPES.get(part.dtype)
            if dtype is None:
                raise ValueError(f"unexpected state dtype {part.dtype!r}")
            dtype = getattr(torch, part.dtype)
            if self.shared:  # handed to the host process without a copy
                tensor = _shared_empty(tuple(part.size), dtype)
            else:
                tensor = torch.empty(tuple(part.size), dtype=dtype)
            self.tensors.append(tensor)
            self._dest = memoryview(tensor.numpy()).cast("B") if tensor.numel() else None
            self._filled = 0
        elif not self.tensors:
            raise ValueError("a state part came before its tensor's header")
        data = part.buffer
        if not data:
            return
        end = self._filled + len(data)
        if self._dest is None or end > len(self._dest):
            raise ValueError("a state tensor got more bytes than its shape holds")
        self._dest[self._filled : end] = data
        self._filled = end
        if len(self.tensors) <= self.hashed:
            self._sha.update(data)  # hashlib releases the GIL on big buffers

    def _finish(self) -> None:
        if self.tensors and self._filled != (len(self._dest) if self._dest is not None else 0):
            raise ValueError("a state tensor ended before all of its bytes came")

    def result(self) -> tuple[list[torch.Tensor], str | None]:
        """(tensors, sha256 of the first `hashed` tensors); the digest is None when fewer came."""
        self._finish()
        digest = self._sha.hexdigest() if len(self.tensors) >= self.hashed else None
        return self.tensors, digest


@dataclass
class ServeSlots:
    """At most `limit` downloads served at once; `acquire` is False when all are taken."""

    limit: int = MAX_CONCURRENT_DOWNLOADS

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def acquire(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.active = max(0, self.active - 1)
