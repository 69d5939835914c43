"""Wire codecs for lossy averaging, and the error feedback that keeps their loss from adding up.

A codec turns a float32 part of the pseudo-gradient buffers into bytes and back. Decoding is
exact integer-times-scale arithmetic in float32, so the same bytes decode to the same bits on any
machine: that is what lets every member of a group hold a bitwise-equal average (allreduce.py
sends the reducer's *quantized* average to every member, and the reducer decodes those bytes too).

- `blockwise8`: blocks of BLOCK values share one bfloat16 scale (absmax / 127) and each value is a
  signed 8-bit code, so the wire carries 1 + 2/BLOCK bytes per value (1.001 at BLOCK = 2048).
  code · scale is exact in float32 (7 + 8 significant bits), and quantizing decoded values again
  gives the same codes (the block's largest code is ±127, so its scale comes back unchanged): a
  sender that puts `roundtrip(x)` into its buffer sends exactly those values.
- `blockwise4`, `blockwise2`: the same with 4-bit (-7..7) and 2-bit (-1..1) codes packed two and
  four to a byte: 0.501 and 0.251 bytes a value, for links where even 8 bits are too many; each
  round's coarser step is carried by error feedback (what they cost in loss: bench/RESULTS.md).
- `float16`: two bytes per value.

They are hivemind `CompressionBase`s so hivemind's TensorPartContainer serializes the parts a
peer sends; the messages are tagged by `dtype` (a name hivemind's own codecs do not know) and only
our runner (allreduce.py) decodes them.

Error feedback (`ErrorFeedback`): a node adds the quantization error it kept from earlier rounds
to this round's pseudo-gradient before quantizing, and keeps the new error. What it sends over T
rounds then sums to what it meant to send, short of one round's error: quantization loses nothing
for good, not even values below a block's step. The buffer is this node's, not part of θ_global,
and is kept in bfloat16 (2 bytes a parameter instead of 4): the error is at most half a block's
step, and bfloat16 keeps it to 2⁻⁹ of itself, far below the step, with float32's range (no
underflow of small blocks); the conversion rounds to nearest even, the same bits everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from hivemind.compression import CompressionBase, CompressionInfo
from hivemind.proto import runtime_pb2

BLOCK = 2048  # values per scale: 2 bytes of scale over 2048 one-byte codes = 1.001 bytes a value
ERROR_DTYPE = torch.bfloat16  # error feedback's buffer (see module doc)
CHUNK_VALUES = 1 << 20  # values error feedback encodes at a time (ErrorFeedback.chunk)
TINY_SCALE = 2.0**-100  # scales below this become 0 (no subnormal arithmetic anywhere)


class CodecError(ValueError):
    """A message that is not what this codec writes (a bug or a hostile peer)."""


class Codec(CompressionBase):
    """A float32 codec with a deterministic decode. Subclasses define `encode_bytes`/`decode_bytes`."""

    name: str = ""
    bytes_per_value: float = 4.0
    # hivemind only uses the type to pick a decoder in its own code paths; ours decode by dtype.
    compression_type = runtime_pb2.CompressionType.NONE

    @property
    def tag(self) -> str:
        return f"gpt5os.{self.name}"

    # -- bytes ---------------------------------------------------------------------------------

    def encode_bytes(self, x: torch.Tensor, generator: torch.Generator | None = None) -> bytes:
        raise NotImplementedError

    def decode_bytes(self, data: bytes, numel: int) -> torch.Tensor:
        raise NotImplementedError

    def wire_size(self, numel: int) -> int:
        raise NotImplementedError

    # -- hivemind's CompressionBase ------------------------------------------------------------

    def compress(
        self,
        tensor: torch.Tensor,
        info: CompressionInfo | None = None,
        allow_inplace: bool = False,
        *,
        generator: torch.Generator | None = None,
    ) -> runtime_pb2.Tensor:
        flat = tensor.detach().reshape(-1).to(torch.float32)
        return runtime_pb2.Tensor(
            compression=self.compression_type,
            buffer=self.encode_bytes(flat, generator),
            size=[flat.numel()],
            dtype=self.tag,
        )

    def extract(self, serialized_tensor: runtime_pb2.Tensor) -> torch.Tensor:
        if serialized_tensor.dtype != self.tag or len(serialized_tensor.size) != 1:
            raise CodecError(
                f"expected a {self.tag} message, got dtype {serialized_tensor.dtype!r}"
            )
        numel = int(serialized_tensor.size[0])
        if len(serialized_tensor.buffer) != self.wire_size(numel):
            raise CodecError(
                f"{self.tag}: {len(serialized_tensor.buffer)} bytes for {numel} values, "
                f"expected {self.wire_size(numel)}"
            )
        return self.decode_bytes(serialized_tensor.buffer, numel)

    def estimate_compression_ratio(self, info: CompressionInfo) -> float:
        # relative to the float32 buffers: hivemind cuts parts of part_size_bytes / (4 * ratio)
        # values; whole bytes per code keep parts a whole number of blocks (see Blockwise8)
        return math.floor(self.bytes_per_value) / 4.0

    def roundtrip(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) for a whole tensor (float32, flat), with blocks aligned to its start."""
        flat = x.detach().reshape(-1).to(torch.float32)
        return self.decode_bytes(self.encode_bytes(flat), flat.numel())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Blockwise8(Codec):
    """8-bit absmax codes, one bfloat16 scale per `block` values (see module doc)."""

    name = "blockwise8"
    bits = 8
    levels = 127  # codes run from -levels to levels

    def __init__(self, block: int = BLOCK) -> None:
        self.block = block
        self.bytes_per_value = self.bits / 8 + 2.0 / block

    def wire_size(self, numel: int) -> int:
        return math.ceil(numel * self.bits / 8) + 2 * math.ceil(numel / self.block)

    def estimate_compression_ratio(self, info: CompressionInfo) -> float:
        # hivemind cuts parts of part_size_bytes / (4 * ratio) values: 2**19 / (bits / 8) is a
        # whole number of blocks for 8, 4 and 2 bits (swarm.py checks it)
        return self.bits / 32

    def quantize(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(bfloat16 scales, int8 codes) of flat float32 `x`; `generator`: round stochastically
        (unbiased: the expected decoded value is x) instead of to the nearest code."""
        if not bool(torch.isfinite(x).all()):
            raise CodecError("cannot quantize NaN/Inf")
        n = x.numel()
        blocks = math.ceil(n / self.block)
        padded = torch.zeros(blocks * self.block, dtype=torch.float32)
        padded[:n] = x
        padded = padded.view(blocks, self.block)
        absmax = padded.abs().amax(dim=1)
        scales = (absmax / float(self.levels)).to(torch.bfloat16)
        scales[scales.float() < TINY_SCALE] = 0
        safe = scales.float()
        safe[safe == 0] = 1.0
        scaled = padded / safe[:, None]
        if generator is None:
            scaled.round_()
        else:
            noise = torch.rand(scaled.shape, generator=generator, dtype=torch.float32)
            scaled.add_(noise).floor_()
        codes = scaled.clamp_(-self.levels, self.levels).to(torch.int8).reshape(-1)[:n]
        return scales, codes

    def dequantize(self, scales: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        n = codes.numel()
        blocks = scales.numel()
        padded = torch.zeros(blocks * self.block, dtype=torch.float32)
        padded[:n] = codes.to(torch.float32)
        return (padded.view(blocks, self.block) * scales.float()[:, None]).reshape(-1)[:n].clone()

    def roundtrip(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequantize(*self.quantize(x.detach().reshape(-1).to(torch.float32)))

    def encode_bytes(self, x: torch.Tensor, generator: torch.Generator | None = None) -> bytes:
        scales, codes = self.quantize(x, generator)
        return scales.view(torch.int16).numpy().tobytes() + self.pack(codes).numpy().tobytes()

    def decode_bytes(self, data: bytes, numel: int) -> torch.Tensor:
        blocks = math.ceil(numel / self.block)
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        scales = raw[: 2 * blocks].view(torch.int16).view(torch.bfloat16)
        return self.dequantize(scales, self.unpack(raw[2 * blocks :], numel))

    def pack(self, codes: torch.Tensor) -> torch.Tensor:
        """int8 codes -> the bytes that travel (8 bits: the codes themselves)."""
        return codes

    def unpack(self, packed: torch.Tensor, numel: int) -> torch.Tensor:
        return packed.view(torch.int8)


class BlockwiseLowBit(Blockwise8):
    """`bits`-bit absmax codes (4: -7..7, 2: -1..1), 8 // bits to a byte, one bfloat16 scale per
    block: 0.501 / 0.251 bytes a value at BLOCK = 2048. What the decoded values keep is what the
    8-bit codec's argument gives (code · scale exact in float32, re-quantizing decoded values
    gives the same codes); error feedback carries what each round's coarser step loses."""

    def pack(self, codes: torch.Tensor) -> torch.Tensor:
        per = 8 // self.bits
        n = codes.numel()
        biased = torch.zeros(math.ceil(n / per) * per, dtype=torch.uint8)
        biased[:n] = (codes.to(torch.int16) + self.levels).to(torch.uint8)
        biased = biased.view(-1, per)
        packed = biased[:, 0].clone()
        for i in range(1, per):
            packed |= biased[:, i] << (self.bits * i)
        return packed

    def unpack(self, packed: torch.Tensor, numel: int) -> torch.Tensor:
        per = 8 // self.bits
        mask = (1 << self.bits) - 1
        fields = [(packed >> (self.bits * i)) & mask for i in range(per)]
        biased = torch.stack(fields, dim=1).reshape(-1)[:numel]
        if bool((biased > 2 * self.levels).any()):
            raise CodecError(f"{self.tag}: a code outside -{self.levels}..{self.levels}")
        return (biased.to(torch.int16) - self.levels).to(torch.int8)


class Blockwise4(BlockwiseLowBit):
    name = "blockwise4"
    bits = 4
    levels = 7


class Blockwise2(BlockwiseLowBit):
    name = "blockwise2"
    bits = 2
    levels = 1


class Float16(Codec):
    """Two bytes a value; decode (fp16 -> fp32) is exact."""

    name = "float16"
    bytes_per_value = 2.0

    def wire_size(self, numel: int) -> int:
        return 2 * numel

    def encode_bytes(self, x: torch.Tensor, generator: torch.Generator | None = None) -> bytes:
        if not bool(torch.isfinite(x).all()):
            raise CodecError("cannot encode NaN/Inf")
        # values beyond fp16's range are clamped, never sent as Inf
        return x.clamp(-65504.0, 65504.0).to(torch.float16).view(torch.int16).numpy().tobytes()

    def decode_bytes(self, data: bytes, numel: int) -> torch.Tensor:
        raw = torch.frombuffer(bytearray(data), dtype=torch.int16)
        return raw.view(torch.float16).to(torch.float32)


CODECS: dict[str, type[Codec]] = {
    "blockwise8": Blockwise8,
    "blockwise4": Blockwise4,
    "blockwise2": Blockwise2,
    "float16": Float16,
}


def codec_for(compression: str) -> Codec:
    """The codec a run spec's `compression` names; ValueError for exact ("none") or unknown."""
    try:
        return CODECS[compression]()
    except KeyError:
        known = ", ".join(CODECS)
        raise ValueError(f"no wire codec named {compression!r} (known: {known})") from None


class ErrorFeedback:
    """This node's quantization error, carried from round to round (see module doc).

    `contribution(deltas)` gives what to send this round: roundtrip(Δ + e) per tensor. The error
    is only committed (`commit`) when the round's average was applied with our contribution in
    it; a round we did not average keeps the old error."""

    def __init__(
        self, codec: Codec, chunk: int = CHUNK_VALUES, dtype: torch.dtype = ERROR_DTYPE
    ) -> None:
        self.codec = codec
        self.dtype = dtype
        self.errors: list[torch.Tensor] | None = None  # `dtype`, one per tensor, flat
        # values encoded at a time: the transients of Δ + e and its roundtrip exist for one
        # chunk, not for a whole tensor; a whole number of blocks, so blocks (aligned to the
        # tensor's start) and their bits are the same as one roundtrip of the tensor
        block = getattr(codec, "block", 1)
        self.chunk = max(block, chunk // block * block)

    def _ensure(self, deltas: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        # sizes without computing Δ where the deltas are computed when read (diloco.py)
        numels = deltas.numels() if hasattr(deltas, "numels") else [d.numel() for d in deltas]
        if self.errors is None or [e.numel() for e in self.errors] != numels:
            self.errors = [torch.zeros(n, dtype=self.dtype) for n in numels]
        return self.errors

    def write_contribution(
        self, deltas: Sequence[torch.Tensor], out: Sequence[torch.Tensor]
    ) -> None:
        """out[i] ← roundtrip(Δ_i + e_i), exactly the values that will travel."""
        for delta, error, buf in zip(deltas, self._ensure(deltas), out, strict=True):
            for span, x in self._sums(delta, error):
                buf[span].copy_(self.codec.roundtrip(x))

    def commit(self, deltas: Sequence[torch.Tensor]) -> None:
        """e_i ← (Δ_i + e_i) − roundtrip(Δ_i + e_i): the part of this round's Δ still unsent."""
        for delta, error in zip(deltas, self._ensure(deltas), strict=True):
            for span, x in self._sums(delta, error):
                error[span].copy_(x - self.codec.roundtrip(x))

    def _sums(self, delta: torch.Tensor, error: torch.Tensor):
        """(slice, Δ + e over it) for each chunk of one tensor."""
        flat = delta.detach().reshape(-1)
        for start in range(0, flat.numel(), self.chunk):
            span = slice(start, start + self.chunk)
            yield span, flat[span].to(torch.float32) + error[span].to(torch.float32)

    def norm(self) -> float:
        return math.sqrt(sum(float(e.double().pow(2).sum()) for e in self.errors or []))
