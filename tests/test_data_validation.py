"""The held-out split at every size: prepared for seq_len 4096, read as full batches by the
node's validation code, and refused at `init` when too small for the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gpt5os.coordinator.data.prepare import DEFAULT_VAL_TOKENS, prepare
from gpt5os.coordinator.manifest import load_manifest
from gpt5os.coordinator.run_spec import preset_spec, val_tokens_needed
from gpt5os.coordinator.runs import create_run
from gpt5os.node.validation import held_out_tokens, validation_batches


@pytest.fixture(scope="module")
def stdlib_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    prepare(["stdlib"], out, max_bytes=3_000_000, progress=False)  # default --val-tokens
    return out


def test_default_val_tokens_fill_every_preset() -> None:
    for preset in ("tiny", "0.1b", "0.4b", "1.5b", "3b", "7b"):
        assert preset_spec(preset, run_id="x").val_tokens <= DEFAULT_VAL_TOKENS
    assert DEFAULT_VAL_TOKENS == val_tokens_needed(4096, 8, 8)


def test_val_split_yields_full_batches_at_seq_len_4096(stdlib_data: Path, tmp_path: Path) -> None:
    manifest = load_manifest(stdlib_data)
    assert sum(s.tokens for s in manifest.val) >= DEFAULT_VAL_TOKENS
    spec = create_run(tmp_path / "run", stdlib_data, preset="0.1b")  # accepted at init
    assert (spec.seq_len, spec.batch_size, spec.val_batches) == (4096, 8, 8)
    shards = (np.fromfile(stdlib_data / s.path, dtype="<u2") for s in manifest.val)
    tokens = held_out_tokens(shards, spec.val_tokens)
    batches = validation_batches(tokens, seq_len=4096, batch_size=8, val_batches=8)
    assert len(batches) == 8
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (8, 4096)
        assert (inputs[:, 1:] == targets[:, :-1]).all()
    # the same tokens for every node: the first ones of the held-out stream, in manifest order
    stream = np.concatenate([np.fromfile(stdlib_data / s.path, dtype="<u2") for s in manifest.val])
    assert (np.concatenate([b[0] for b in batches]).ravel() == stream[: 8 * 8 * 4096]).all()


def test_init_refuses_a_split_too_small_and_says_how_much(tmp_path: Path) -> None:
    small = tmp_path / "small"
    prepare(["stdlib"], small, max_bytes=300_000, val_tokens=3000, progress=False)
    have = sum(s.tokens for s in load_manifest(small).val)
    assert have < 32769  # 8 batches of 4 x 1024, plus one
    with pytest.raises(ValueError) as e:
        create_run(tmp_path / "run", small, preset="tiny", seq_len=1024)
    msg = str(e.value)
    assert f"holds {have:,} held-out tokens; this run needs 32,769" in msg
    assert "--val-tokens 32769" in msg
    assert not (tmp_path / "run" / "run.json").exists()
    create_run(tmp_path / "run2", small, preset="tiny", val_batches=1)  # 513 tokens: fits


def test_held_out_tokens_reads_across_shards_and_only_what_it_needs() -> None:
    read = []

    def shards():
        for i in range(5):
            read.append(i)
            yield np.full(10, i, dtype=np.uint16)

    got = held_out_tokens(shards(), 25)
    assert got.tolist() == [0] * 10 + [1] * 10 + [2] * 5 and read == [0, 1, 2]
    assert held_out_tokens(iter([np.zeros(3, np.uint16)]), 4) is None
    with pytest.raises(ValueError, match="do not fill"):
        validation_batches(np.zeros(20, np.uint16), seq_len=4, batch_size=2, val_batches=3)
