"""How a state moves between peers (node/state_wire.py) and how a crowd of joiners spreads over
the sources (node/state_sync.py's busy handling), without processes: the parts, the receiver
and its digest, the serving limit, the server's RPC handler on a stand-in, and StateSync with
injected downloads and sleep."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest
import torch
from gpt5os.common.log_limit import LogLimit
from gpt5os.node.diloco import tensors_sha256
from gpt5os.node.state_sync import Adopted, NotAdopted, StateSync, Target
from gpt5os.node.state_wire import (
    BUSY,
    Busy,
    Downloaded,
    ServeSlots,
    StateAssembler,
    state_frames,
    state_parts,
)
from gpt5os.node.swarm import PseudoGradientAverager
from hivemind.compression import deserialize_torch_tensor
from hivemind.proto import averaging_pb2, runtime_pb2
from hivemind.utils.mpfuture import MPFuture
from hivemind.utils.serializer import MSGPackSerializer
from hivemind.utils.streaming import combine_from_streaming


def _state() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(3, 5, generator=g),
        torch.randn(7, generator=g),
        torch.zeros(0),
        torch.randn(11, generator=g, dtype=torch.float64),
    ]


def test_parts_are_big_raw_slices_that_rebuild_the_tensors_and_their_digest() -> None:
    tensors = _state()
    parts = list(state_parts(tensors, part_bytes=16))
    # 60 bytes in 4 parts, 28 in 2, an empty tensor in 1, 88 bytes in 6
    assert [len(p.buffer) for p in parts[:4]] == [16, 16, 16, 12]
    assert len(parts) == 4 + 2 + 1 + 6
    assert [p.dtype for p in parts if p.dtype] == ["float32", "float32", "float32", "float64"]
    receiver = StateAssembler(hashed=2)
    for part in parts:
        receiver.add(part)
    got, digest = receiver.result()
    assert len(got) == 4 and all(torch.equal(a, b) for a, b in zip(got, tensors, strict=True))
    assert [t.shape for t in got] == [t.shape for t in tensors] and got[3].dtype == torch.float64
    assert got[0].is_shared()  # handed to the host process without a copy
    assert digest == tensors_sha256(tensors[:2])  # θ_global's digest, as the certificate has it
    assert StateAssembler(hashed=5).add(parts[0]) is None  # fewer tensors than hashed: no digest
    short = StateAssembler(hashed=5)
    for part in parts:
        short.add(part)
    assert short.result()[1] is None


def test_hand_encoded_messages_are_the_protobuf_messages_of_the_parts() -> None:
    tensors = [*_state(), torch.randn(300)]  # a part over 127 bytes: multi-byte lengths
    meta = MSGPackSerializer.dumps({"round": 2})
    frames = [
        averaging_pb2.DownloadData.FromString(f.SerializeToString())
        for f in state_frames(meta, tensors, part_bytes=200)
    ]
    parts = list(state_parts(tensors, part_bytes=200))
    assert [f.tensor_part for f in frames] == parts
    assert frames[0].metadata == meta and not any(f.metadata for f in frames[1:])
    with pytest.raises(ValueError, match="float16/32/64"):
        list(state_frames(b"", [torch.ones(2, dtype=torch.int64)]))


def test_hivemind_reads_our_parts_and_we_read_hivemind_s() -> None:
    """Peers of an older gpt5os (hivemind's 64 KiB parts and receiver) still interoperate."""
    tensors = _state()[:2]
    parts = list(state_parts(tensors, part_bytes=16))
    first = [i for i, p in enumerate(parts) if p.dtype] + [len(parts)]
    for k, t in enumerate(tensors):
        rebuilt = deserialize_torch_tensor(combine_from_streaming(parts[first[k] : first[k + 1]]))
        assert torch.equal(rebuilt, t)
    from hivemind.compression import NoCompression
    from hivemind.compression.base import CompressionInfo
    from hivemind.utils.streaming import split_for_streaming

    receiver = StateAssembler(hashed=1, shared=False)
    for t in tensors:
        for part in split_for_streaming(
            NoCompression().compress(t, CompressionInfo.from_tensor(t)), 8
        ):
            receiver.add(part)
    got, digest = receiver.result()
    assert all(torch.equal(a, b) for a, b in zip(got, tensors, strict=True))
    assert digest == tensors_sha256(tensors[:1])


def test_the_receiver_refuses_a_malformed_stream() -> None:
    parts = list(state_parts([torch.ones(4)], part_bytes=8))  # 2 parts of 8 bytes
    with pytest.raises(ValueError, match="before its tensor's header"):
        StateAssembler(1).add(parts[1])
    too_many = StateAssembler(1)
    too_many.add(parts[0])
    too_many.add(parts[1])
    with pytest.raises(ValueError, match="more bytes than its shape"):
        too_many.add(parts[1])
    truncated = StateAssembler(1)
    truncated.add(parts[0])
    with pytest.raises(ValueError, match="ended before all of its bytes"):
        truncated.result()
    with pytest.raises(ValueError, match="ended before all of its bytes"):
        truncated.add(parts[0])  # the next tensor starts while this one is short
    odd = runtime_pb2.Tensor(dtype="int64", size=[1], buffer=b"\0" * 8)
    with pytest.raises(ValueError, match="unexpected state dtype"):
        StateAssembler(1).add(odd)
    squeezed = runtime_pb2.Tensor(
        dtype="float32", size=[1], buffer=b"\0" * 4, compression=runtime_pb2.CompressionType.FLOAT16
    )
    with pytest.raises(ValueError, match="compressed"):
        StateAssembler(1).add(squeezed)
    with pytest.raises(ValueError, match="float16/32/64"):
        list(state_parts([torch.ones(2, dtype=torch.int64)]))


def test_serve_slots_limit_concurrent_downloads() -> None:
    slots = ServeSlots(limit=2)
    assert slots.acquire() and slots.acquire() and not slots.acquire()
    slots.release()
    assert slots.acquire() and not slots.acquire()
    slots.release(), slots.release(), slots.release()
    assert slots.active == 0  # an extra release does not open a third slot
    assert slots.acquire() and slots.acquire() and not slots.acquire()


def _server(limit: int, sharing: bool = True) -> SimpleNamespace:
    async def current_state():
        return MSGPackSerializer.dumps({"round": 3}), [torch.ones(2), torch.zeros(3)], None

    return SimpleNamespace(
        allow_state_sharing=sharing,
        _serving=ServeSlots(limit=limit),
        _refusals=LogLimit(),
        serializer=MSGPackSerializer,
        _get_current_state_from_host_process=current_state,
    )


def _serve(server: SimpleNamespace) -> list[averaging_pb2.DownloadData]:
    async def collect():
        context = SimpleNamespace(remote_id="joiner")
        stream = PseudoGradientAverager.rpc_download_state(
            server, averaging_pb2.DownloadRequest(), context
        )
        return [averaging_pb2.DownloadData.FromString(m.SerializeToString()) async for m in stream]

    return asyncio.run(collect())


def test_the_server_answers_busy_beyond_its_limit_and_frees_its_slot_after_each_download() -> None:
    server = _server(limit=1)
    messages = _serve(server)
    assert MSGPackSerializer.loads(messages[0].metadata) == {"round": 3}
    assert [m.tensor_part.dtype for m in messages] == ["float32", "float32"]
    assert not messages[1].metadata and server._serving.active == 0
    assert server._serving.acquire()  # another download is running
    busy = _serve(server)
    assert len(busy) == 1 and MSGPackSerializer.loads(busy[0].metadata) == {BUSY: True}
    assert not busy[0].HasField("tensor_part")
    assert _serve(_server(limit=1, sharing=False)) == []  # hivemind's "no": nothing at all


def _good(n_params: int = 1) -> tuple[Target, Downloaded]:
    tensors = [torch.ones(2), torch.zeros(2)]
    target = Target(4, 0, tensors_sha256(tensors[:n_params]))
    return target, Downloaded({"round": 4, "swarm_tokens": 0}, tensors)


def test_a_busy_source_is_skipped_then_retried_after_a_back_off() -> None:
    target, good = _good()
    answers = {b"a": [Busy(), Busy(), good], b"b": [None, None, None]}
    waits, adopted = [], []
    sync = StateSync(
        sources=lambda: [b"a", b"b"],
        claims=dict,
        download=lambda p: answers[p].pop(0),
        adopt=lambda meta, tensors: adopted.append(meta["round"]),
        n_params=1,
        rng=random.Random(1),
        sleep=waits.append,
    )
    outcome = sync.sync(target)
    # a busy, b no state; a busy again (b is not asked again: it has no state); a serves
    assert isinstance(outcome, Adopted) and outcome.tried == 4 and adopted == [4]
    assert answers[b"b"] == [None, None]
    assert len(waits) == 2 and 1.0 <= waits[0] <= 3.0 and 2.0 <= waits[1] <= 6.0  # doubling

    forever = StateSync(
        sources=lambda: [b"a"],
        claims=dict,
        download=lambda p: Busy(),
        adopt=lambda meta, tensors: pytest.fail("nothing to adopt"),
        n_params=1,
        busy_retries=2,
        sleep=waits.append,
    )
    outcome = forever.sync(target)
    assert isinstance(outcome, NotAdopted) and outcome.tried == 3
    assert outcome.reasons == ["…" + b"a".hex() + ": busy"] * 3


def test_the_digest_computed_while_receiving_is_the_one_checked() -> None:
    target, good = _good()
    liar = Downloaded(good.meta, good.tensors, digest="0" * 64)  # as if other bytes had come
    sync = StateSync(
        sources=lambda: [b"a"],
        claims=dict,
        download=lambda p: liar,
        adopt=lambda meta, tensors: pytest.fail("a digest mismatch must not be adopted"),
        n_params=1,
    )
    assert "is not the certified" in sync.sync(target).reasons[0]
    sync.download = lambda p: Downloaded(good.meta, good.tensors, target.params_sha256)
    sync.adopt = lambda meta, tensors: None
    assert isinstance(sync.sync(target), Adopted)


def test_a_crowd_of_joiners_spreads_over_the_sources_and_none_serves_beyond_its_limit() -> None:
    """Seven joiners at once, three peers serving at most two downloads each: every joiner ends
    with the certified state, no peer ever serves more than two, and the seventh, which found
    every peer busy, gets its state once a download has ended (hivemind issue 169)."""
    target, good = _good()
    sources = [b"p1", b"p2", b"p3"]
    slots = {p: ServeSlots(limit=2) for p in sources}
    served = {p: 0 for p in sources}
    running: list[bytes] = []  # downloads still running (the crowd joins at once)

    def download(peer: bytes):
        if not slots[peer].acquire():
            return Busy()
        served[peer] += 1
        running.append(peer)
        return good

    def one_download_ends(_seconds: float) -> None:
        slots[running.pop(0)].release()

    outcomes = []
    for joiner in range(7):
        sync = StateSync(
            sources=lambda: list(sources),
            claims=dict,
            download=download,
            adopt=lambda meta, tensors: None,
            n_params=1,
            rng=random.Random(joiner),
            sleep=one_download_ends,
        )
        outcomes.append(sync.sync(target))
        assert max(s.active for s in slots.values()) <= 2
    assert all(isinstance(o, Adopted) for o in outcomes)
    assert sorted(served.values()) == [2, 2, 3]  # spread, not one peer
    assert outcomes[-1].tried > 1  # the last one met busy peers first


def _download_from(server: SimpleNamespace, problem: str = ""):
    """The downloader's side of node/swarm.py, reading from the server's handler in-process."""

    class Stub:  # hivemind's wire in between: each message serialised and parsed
        async def rpc_download_state(self, request):
            context = SimpleNamespace(remote_id="joiner")
            handler = PseudoGradientAverager.rpc_download_state(server, request, context)

            async def wire():
                async for message in handler:
                    yield averaging_pb2.DownloadData.FromString(message.SerializeToString())

            return wire()

    joiner = SimpleNamespace(
        get_stub=lambda p2p, peer, namespace: Stub(),
        _p2p=None,
        prefix="unit",
        _averaged_tensors=[None],  # θ_global is the first tensor
        serializer=MSGPackSerializer,
        source_problem=lambda meta, peer: problem,
        _refusals=LogLimit(),
    )
    future = MPFuture()
    download = PseudoGradientAverager._download_state_from
    asyncio.run(download(joiner, b"\x00\x24" + bytes(36), 5.0, future))
    return future.result(timeout=5)


def test_the_downloader_takes_a_state_a_busy_answer_and_a_refusal_apart() -> None:
    loaded = _download_from(_server(limit=1))
    assert isinstance(loaded, Downloaded) and loaded.meta == {"round": 3}
    assert [t.tolist() for t in loaded.tensors] == [[1.0, 1.0], [0.0, 0.0, 0.0]]
    assert loaded.digest == tensors_sha256([torch.ones(2)])
    full = _server(limit=1)
    full._serving.acquire()
    assert isinstance(_download_from(full), Busy)
    assert _download_from(_server(limit=1), problem="no swarm token") is None
    assert _download_from(_server(limit=1, sharing=False)) is None
