"""hivemind's butterfly all-reduce, changed so that every member ends with the same bits.

hivemind's reducer of a part sends each sender `average − sender's part` (in that sender's codec)
and keeps its own part uncompressed, so with a lossy codec every member holds a different
average (FIELD-NOTES). Here the reducer quantizes the part's average once, sends those same bytes
to every sender, and sets its own part to their decoded value; every member copies the decoded
average into its buffers (no `local + delta`). Codec decoding is exact (codec.py), so every
member's result is bitwise equal.

Also here:
- the reducer's sum is robust (robust.py): non-finite parts dropped, each sender's weight
  bounded by the run's claim_bound and capped at the group's median, norms clipped to it;
- the reducer rounds the average stochastically (unbiased), so rounding errors do not add up in
  one direction over rounds (senders' own rounding is corrected by error feedback, codec.py);
- each AVERAGED_PART carries, as its `weight`, how many senders' parts the reducer received for
  it: a member knows its result is complete only when every part came from its reducer with every
  sender in it (`WireReport.complete`); the group's verdicts (group_average.py) then compare
  digests;
- bytes are counted as serialized (`WireReport`): what this peer put on the wire and received.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass

import torch
from hivemind.averaging.allreduce import AllReduceRunner
from hivemind.averaging.partition import AllreduceException, BannedException, TensorPartReducer
from hivemind.p2p import PeerID
from hivemind.proto import averaging_pb2, runtime_pb2
from hivemind.utils import get_logger
from hivemind.utils.asyncio import aiter_with_timeout, amap_in_executor, attach_event_on_finished

from .codec import Codec
from .robust import RobustConfig, robust_mean

logger = get_logger(__name__)


@dataclass
class WireReport:
    """One all-reduce as this peer saw it."""

    sent_bytes: int = 0
    sent_values: int = 0
    received_bytes: int = 0
    received_values: int = 0
    parts: int = 0  # result parts registered
    incomplete_parts: int = 0  # parts with fewer senders than the group has, or lost
    dropped: int = 0  # (as a reducer) parts dropped as non-finite
    clipped: int = 0  # (as a reducer) parts clipped to the median bound
    capped: int = 0  # (as a reducer) weights capped
    bounded: int = 0  # (as a reducer) senders whose claimed weight was above the run's bound

    @property
    def complete(self) -> bool:
        return self.parts > 0 and self.incomplete_parts == 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReducedPart:
    message: runtime_pb2.Tensor  # the quantized average, sent as is to every sender
    decoded: torch.Tensor  # its decoded value, what every member (the reducer too) keeps
    senders: int  # how many senders' parts were received for it


class RobustPartReducer(TensorPartReducer):
    """Collects every sender's part, then reduces it with robust_mean and quantizes it once."""

    def __init__(
        self,
        part_shapes: Sequence[torch.Size],
        num_senders: int,
        *,
        codec: Codec,
        robust: RobustConfig,
        seed: bytes,
        report: WireReport,
    ) -> None:
        self.codec, self.robust, self.seed, self.report = codec, robust, seed, report
        self._bounded: set[int] = set()  # senders whose claimed weight we bounded (logged once)
        super().__init__(part_shapes, num_senders)

    def reset_accumulators(self) -> None:
        assert self.current_part_accumulated_from == self.num_current_senders or (
            self.current_part_index == -1
        )
        if self.current_part_index >= self.num_parts - 1:
            self.finalize()
            return
        self.current_part_index += 1
        self.current_part_accumulated_from = 0
        self.current_part_future = asyncio.Future()
        self.num_current_senders = sum(
            self.current_part_index < failed for failed in self.sender_failed_after
        )
        self.accumulator = [None] * self.num_senders
        self.weights = [0.0] * self.num_senders
        self.denominator = 0.0

    async def accumulate_part(
        self, sender_index: int, part_index: int, tensor_part: torch.Tensor, weight: float = 1.0
    ) -> ReducedPart:
        assert 0 <= sender_index < self.num_senders, "invalid sender index"
        assert 0 <= part_index < self.num_parts, "invalid part index"
        self.num_parts_received[sender_index] += 1
        while part_index > self.current_part_index:
            await asyncio.wait(
                {self.current_part_future, asyncio.create_task(self.finished.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self.finished.is_set():
                raise AllreduceException(f"attempted to aggregate part in a finalized {self}")
        if self.sender_failed_after[sender_index] != float("inf"):
            raise BannedException(f"sender {sender_index} was banned in background")
        assert part_index == self.current_part_index
        if tensor_part.shape != self.part_shapes[part_index]:
            raise AllreduceException(
                f"sender {sender_index} sent a part of shape {tuple(tensor_part.shape)}, "
                f"expected {tuple(self.part_shapes[part_index])}"
            )
        current_part_future = self.current_part_future
        if part_index < self.sender_failed_after[sender_index]:
            self.accumulator[sender_index] = tensor_part
            self.weights[sender_index] = float(weight)
            self.current_part_accumulated_from += 1
            self.check_current_part_finished()
        return await current_part_future

    def check_current_part_finished(self) -> None:
        assert self.current_part_accumulated_from <= self.num_current_senders
        if self.current_part_accumulated_from == self.num_current_senders:
            self.current_part_future.set_result(self._reduce())
            self.reset_accumulators()

    def _reduce(self) -> ReducedPart:
        shape = self.part_shapes[self.current_part_index]
        mean, what = robust_mean(self.accumulator, self.weights, self.robust)
        if mean is None:
            mean = torch.zeros(shape)
        self.report.dropped += len(what.dropped)
        self.report.clipped += len(what.clipped)
        self.report.capped += len(what.capped)
        for i in set(what.bounded) - self._bounded:
            self._bounded.add(i)
            self.report.bounded += 1
            logger.warning(
                f"sender {i} claims weight {self.weights[i]:.6g}, more than the run allows a "
                f"member ({self.robust.max_weight:.6g} tokens): counted as that"
            )
        if what.dropped or what.clipped or what.capped:  # the round's wire line sums them up
            logger.debug(
                f"part {self.current_part_index}: dropped {list(what.dropped)} (non-finite), "
                f"clipped {list(what.clipped)}, capped weights of {list(what.capped)}"
            )
        # Stochastic rounding, seeded by the group and the part: the reducer alone draws it.
        seed = hashlib.sha256(self.seed + self.current_part_index.to_bytes(8, "big")).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(seed[:8], "big") >> 1)
        message = self.codec.compress(mean.reshape(-1), generator=generator)
        decoded = self.codec.extract(message).reshape(shape)
        received = sum(p is not None for p in self.accumulator)
        return ReducedPart(message=message, decoded=decoded, senders=received)


class SameBytesRunner(AllReduceRunner):
    """AllReduceRunner whose results are the reducers' quantized averages (see module doc)."""

    def __init__(self, *, robust: RobustConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.codec: Codec = kwargs["compression"]
        self.report = WireReport()
        stock = self.tensor_part_reducer
        stock.finished.set()  # retire hivemind's reducer without its "received 0%" warning
        self.tensor_part_reducer = RobustPartReducer(
            stock.part_shapes,
            stock.num_senders,
            codec=self.codec,
            robust=robust,
            seed=bytes(self.group_id),
            report=self.report,
        )
        self.num_senders = len(self.sender_peer_ids)

    def _register(self, peer_index: int, part_index: int, decoded: torch.Tensor, senders: int):
        self.report.parts += 1
        if senders != self.num_senders or not bool(torch.isfinite(decoded).all()):
            self.report.incomplete_parts += 1  # a lost sender, or a reducer that sent NaN/Inf
        self.tensor_part_container.register_processed_part(peer_index, part_index, decoded)

    async def _communicate_with_peer(self, peer_id: PeerID) -> None:
        peer_index = self.ordered_peer_ids.index(peer_id)
        if peer_id == self.peer_id:
            sender_index = self.sender_peer_ids.index(peer_id)
            for part_index, part in enumerate(self.parts_for_local_averaging):
                # our own part as the others see it: through the codec (the buffers hold values
                # that survive it unchanged, codec.py; this makes it so for any buffer)
                own = self.codec.extract(self.codec.compress(part)).reshape(part.shape)
                reduced = await self.tensor_part_reducer.accumulate_part(
                    sender_index, part_index, own, weight=self.weight
                )
                self._register(peer_index, part_index, reduced.decoded, reduced.senders)
            return
        try:
            done_sending = asyncio.Event()
            inputs = self._generate_input_for_peer(peer_index)
            stream = await self._get_peer_stub(peer_id).rpc_aggregate_part(
                attach_event_on_finished(inputs, done_sending)
            )
            if self.should_delay_results(self.peer_id):
                await done_sending.wait()

            def decode(msg):
                if msg.code != averaging_pb2.AVERAGED_PART:
                    raise AllreduceException(
                        f"{peer_id} sent {averaging_pb2.MessageCode.Name(msg.code)}"
                    )
                return self.codec.extract(msg.tensor_part), int(msg.weight), msg.ByteSize()

            part_index = 0
            async for decoded, senders, size in amap_in_executor(
                decode,
                aiter_with_timeout(stream, self.reducer_timeout),
                max_prefetch=self.tensor_part_container.prefetch,
            ):
                self.report.received_bytes += size
                self.report.received_values += decoded.numel()
                self._register(peer_index, part_index, decoded, senders)
                part_index += 1
            if part_index != self.tensor_part_container.num_parts_by_peer[peer_index]:
                raise AllreduceException(
                    f"peer {peer_id} sent {part_index} parts, but we expected "
                    f"{self.tensor_part_container.num_parts_by_peer[peer_index]}"
                )
        except BaseException as e:
            if isinstance(e, Exception):
                logger.debug(f"Caught {e!r} when communicating to {peer_id}", exc_info=True)
            lost = (
                self.tensor_part_container.num_parts_by_peer[peer_index]
                - (self.tensor_part_container._outputs_registered_by_peer[peer_index])
            )
            self.report.parts += lost
            self.report.incomplete_parts += lost
            self.tensor_part_container.register_failed_reducer(peer_index)
            raise

    async def _generate_input_for_peer(
        self, peer_index: int
    ) -> AsyncIterator[averaging_pb2.AveragingData]:
        async for message in super()._generate_input_for_peer(peer_index):
            self.report.sent_bytes += message.ByteSize()
            self.report.sent_values += int(message.tensor_part.size[0])
            yield message

    async def _accumulate_parts_streaming(self, stream, sender_index: int):
        part_index = 0
        try:

            def decode(msg):
                return self.codec.extract(msg.tensor_part), msg.weight, msg.ByteSize()

            async for tensor_part, weight, size in amap_in_executor(
                decode, stream, max_prefetch=self.tensor_part_container.prefetch
            ):
                self.report.received_bytes += size
                self.report.received_values += tensor_part.numel()
                try:
                    reduced = await self.tensor_part_reducer.accumulate_part(
                        sender_index, part_index, tensor_part, weight=weight
                    )
                    part_index += 1
                except BannedException:
                    logger.debug(f"Sender {sender_index} is already banned")
                    break
                reply = averaging_pb2.AveragingData(
                    code=averaging_pb2.AVERAGED_PART,
                    tensor_part=reduced.message,
                    weight=float(reduced.senders),
                )
                self.report.sent_bytes += reply.ByteSize()
                self.report.sent_values += reduced.decoded.numel()
                yield reply
        finally:
            if part_index != self.tensor_part_reducer.num_parts:
                await self._ban_sender(self.sender_peer_ids[sender_index])
