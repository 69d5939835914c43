"""Run checkpoints (coordinator/checkpoints.py): atomic, keep-last-N, newest intact one wins,
a failed write (injected OSError, a real full tmpfs) leaves the previous one loadable."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from gpt5os.coordinator.checkpoints import (
    CHECKPOINTS_SUBDIR,
    CheckpointDir,
    CheckpointInfo,
    read_info,
    read_safetensors_header,
)
from gpt5os.model import RWKV7, ModelConfig
from gpt5os.model.checkpoint import tensors_sha256
from tmpfs_support import small_tmpfs

CONFIG = ModelConfig(vocab_size=97, n_layer=2, n_embd=64, head_size=32)
SPEC_JSON = '{"run_id": "test"}'


def make_state(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    model = RWKV7(CONFIG)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    momentum = {n: torch.full_like(p, float(seed)) for n, p in params.items()}
    return params, momentum


def write(ckpts: CheckpointDir, round: int, seed: int | None = None) -> CheckpointInfo:
    params, momentum = make_state(round if seed is None else seed)
    return ckpts.write(
        params=params,
        momentum=momentum,
        round=round,
        tokens=1000 * round,
        run_spec_json=SPEC_JSON,
        model_config=CONFIG,
    )


def test_write_then_load_round_trips_everything(tmp_path):
    ckpts = CheckpointDir(tmp_path)
    params, momentum = make_state(5)
    # the digest is defined by named_parameters() order, whatever order the caller's dict has
    shuffled = dict(reversed(list(params.items())))
    info = ckpts.write(
        params=shuffled,
        momentum=momentum,
        round=5,
        tokens=81920,
        run_spec_json=SPEC_JSON,
        model_config=CONFIG,
    )
    assert info.path == tmp_path / CHECKPOINTS_SUBDIR / "round-00000005.safetensors"
    assert info.params_sha256 == tensors_sha256(params.values())
    # the definition, pinned: sha256 of the fp32 bytes in named_parameters() order
    raw = b"".join(t.numpy().tobytes() for t in params.values())
    assert info.params_sha256 == hashlib.sha256(raw).hexdigest()
    loaded = ckpts.load(info)
    assert list(loaded.params) == list(params)
    assert all(torch.equal(loaded.params[n], params[n]) for n in params)
    assert all(torch.equal(loaded.momentum[n], momentum[n]) for n in params)
    assert (loaded.round, loaded.tokens, loaded.run_spec_json) == (5, 81920, SPEC_JSON)
    assert loaded.model_config == CONFIG
    assert read_info(info.path) == info
    assert set(info.to_json()) == {"round", "tokens", "params_sha256", "path", "written_at"}
    assert sorted(os.listdir(info.path.parent)) == [info.path.name]  # no temp file left


def test_digest_equals_outer_state_digest(tmp_path):
    """The checkpoint's sha is the nodes' OuterState.digest() of the same θ_global."""
    from gpt5os.node.diloco import OuterState
    from gpt5os.proto import pb

    torch.manual_seed(3)
    model = RWKV7(CONFIG)
    state = OuterState(model, pb.OuterOptimizerSpec(lr=0.7, momentum=0.9, nesterov=True))
    info = CheckpointDir(tmp_path).write(
        params=dict(model.named_parameters()),
        momentum={},
        round=0,
        tokens=0,
        run_spec_json=SPEC_JSON,
        model_config=CONFIG,
    )
    assert info.params_sha256 == state.digest()


def test_keeps_the_newest_n_and_lists_oldest_first(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=2)
    for r in (1, 2, 3, 4):
        write(ckpts, r)
    assert [i.round for i in ckpts.list()] == [3, 4]
    assert ckpts.latest().round == 4
    assert ckpts.get(3).tokens == 3000
    with pytest.raises(LookupError, match="no checkpoint of round 1 .*rounds here: 3, 4"):
        ckpts.get(1)


def test_empty_dir_has_no_latest(tmp_path):
    assert CheckpointDir(tmp_path).latest() is None
    assert CheckpointDir(tmp_path).list() == []


def test_torn_newest_file_is_skipped_and_the_previous_is_latest(tmp_path, caplog):
    ckpts = CheckpointDir(tmp_path)
    write(ckpts, 1)
    newest = write(ckpts, 2)
    data = newest.path.read_bytes()
    newest.path.write_bytes(data[: len(data) // 2])  # what a torn write would leave
    (ckpts.dir / "round-00000009.safetensors").write_bytes(b"\x00" * 3)
    with caplog.at_level(logging.WARNING):
        assert ckpts.latest().round == 1
    assert "truncated" in caplog.text
    with pytest.raises(LookupError):
        ckpts.get(2)


def test_corrupted_tensor_bytes_fail_the_digest_check(tmp_path):
    ckpts = CheckpointDir(tmp_path)
    info = write(ckpts, 1)
    header, _ = read_safetensors_header(info.path)
    raw = bytearray(info.path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    start = 8 + header_len + header["head.weight"]["data_offsets"][0]
    raw[start + 1] ^= 0xFF  # flip bits in one parameter: the header still parses
    info.path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt"):
        ckpts.load(ckpts.latest())


def test_corrupted_momentum_fails_its_digest_check(tmp_path):
    ckpts = CheckpointDir(tmp_path)
    info = write(ckpts, 1)
    raw = bytearray(info.path.read_bytes())
    raw[-3] ^= 0xFF  # the momentum tensors come last in the file
    info.path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="momentum"):
        ckpts.load(ckpts.latest())


def test_wrong_param_names_are_refused(tmp_path):
    params, momentum = make_state(0)
    params.pop("head.weight")
    with pytest.raises(ValueError, match="missing .*head.weight"):
        CheckpointDir(tmp_path).write(
            params=params,
            momentum={},
            round=0,
            tokens=0,
            run_spec_json=SPEC_JSON,
            model_config=CONFIG,
        )
    assert CheckpointDir(tmp_path).list() == []


def test_injected_write_error_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpts = CheckpointDir(tmp_path)
    first = write(ckpts, 1)
    import safetensors.torch

    real = safetensors.torch.save_file

    def half_then_enospc(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_enospc)
    with pytest.raises(OSError, match="No space left"):
        write(ckpts, 2)
    assert sorted(os.listdir(ckpts.dir)) == [first.path.name]  # temp file removed
    assert ckpts.latest() == first
    assert ckpts.load(first).round == 1


def test_stale_temp_file_of_a_killed_writer_is_ignored_then_removed(tmp_path):
    ckpts = CheckpointDir(tmp_path)
    first = write(ckpts, 1)
    stale = ckpts.dir / ".round-00000002.safetensors.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert ckpts.latest() == first
    write(ckpts, 2)
    assert not stale.exists()


def test_full_disk_keeps_the_previous_checkpoint(tmp_path):
    """A tmpfs with room for one and a half checkpoints: the second write hits ENOSPC."""
    size = write(CheckpointDir(tmp_path / "probe"), 1).path.stat().st_size
    with small_tmpfs(tmp_path, size * 3 // 2) as mnt:
        _check_full_disk(CheckpointDir(mnt))


def _check_full_disk(ckpts: CheckpointDir) -> None:
    first = write(ckpts, 1)
    with pytest.raises(OSError) as err:
        write(ckpts, 2)
    assert "No space left" in str(err.value) or err.value.errno == errno.ENOSPC
    assert os.listdir(ckpts.dir) == [first.path.name]
    assert ckpts.latest() == first
    assert ckpts.load(first).round == 1


def test_listing_does_not_import_torch(tmp_path):
    write(CheckpointDir(tmp_path), 7)
    code = (
        "import sys; from pathlib import Path;"
        "from gpt5os.coordinator.checkpoints import CheckpointDir;"
        f"info = CheckpointDir(Path({str(tmp_path)!r})).latest();"
        "assert info.round == 7, info;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        CheckpointDir(Path(tmp_path), keep=0)


WRITER = """
import sys, torch
from pathlib import Path
from gpt5os.coordinator.checkpoints import CheckpointDir
from gpt5os.model import RWKV7, ModelConfig
config = ModelConfig(n_layer=1, n_embd=64, head_size=64)  # ~8M params: a write takes a while
with torch.device("meta"):
    shapes = {n: p.shape for n, p in RWKV7(config, init_weights=False).named_parameters()}
params = {n: torch.rand(s) for n, s in shapes.items()}
ckpts = CheckpointDir(Path(sys.argv[1]), keep=2)
for r in range(1, 1000):
    ckpts.write(params=params, momentum={}, round=r, tokens=r, run_spec_json="{}",
                model_config=config)
    print(r, flush=True)
"""


def test_kill_9_while_writing_leaves_the_newest_finished_checkpoint_loadable(tmp_path):
    """A real writer process killed with SIGKILL mid-write (its temp file exists)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "1"  # one checkpoint finished
        ckpt_dir = tmp_path / CHECKPOINTS_SUBDIR
        while not any(p.name.endswith(".tmp") for p in ckpt_dir.iterdir()):
            assert proc.poll() is None, "writer ended"
            time.sleep(0.002)  # poll, leaving the CPU to the writer
        proc.kill()  # SIGKILL while a temp file is being written
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    ckpts = CheckpointDir(tmp_path, keep=2)
    latest = ckpts.latest()
    assert latest is not None and latest.round >= 1
    loaded = ckpts.load(latest)
    assert loaded.params_sha256 == latest.params_sha256
    # the restarted writer goes on and clears what the killed one left
    info = ckpts.write(params=loaded.params, momentum=loaded.momentum, round=latest.round + 1,
                       tokens=0, run_spec_json="{}", model_config=loaded.model_config)  # fmt: skip
    assert sorted(p.name for p in ckpt_dir.iterdir())[-1] == info.path.name
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]
