"""`gpt5os-coordinator export` and `init --from-checkpoint` through the real CLI.

Export: the safetensors file loads with load_checkpoint, the official `.pth` gives our logits in
the `rwkv` package. Init: the round-0 checkpoint's params_sha256 is the sha of the file's weights.
Bad input: one clear line, exit 1, nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from gpt5os.coordinator.checkpoints import CheckpointDir
from gpt5os.coordinator.cli import main
from gpt5os.coordinator.runs import RUN_FILE, load_run
from gpt5os.coordinator.store import DB_NAME, Store
from gpt5os.coordinator.testkit import make_data_dir
from gpt5os.model import RWKV7, ModelConfig, load_checkpoint
from gpt5os.model.checkpoint import read_checkpoint_metadata, tensors_sha256
from gpt5os.model.rwkv_pth import export_rwkv_pth
from tmpfs_support import small_tmpfs

SMALL = ModelConfig(vocab_size=97, n_layer=2, n_embd=64, head_size=32)
# the smallest model a run can hold: the World tokenizer's vocabulary, one narrow layer
RUNNABLE = ModelConfig(n_layer=1, n_embd=64, head_size=64)


def cli(*args: str | Path):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_one_error_line(result, *words: str) -> None:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for w in words:
        assert w in lines[0], lines[0]


def random_params(config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = RWKV7(config)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # reference init has zeros: perturb so every tensor matters
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def write_rounds(run_dir: Path, config: ModelConfig, rounds=(1, 2)) -> dict[int, dict]:
    ckpts = CheckpointDir(run_dir)
    out = {}
    for r in rounds:
        params = random_params(config, r)
        ckpts.write(
            params=params,
            momentum={},
            round=r,
            tokens=16384 * r,
            run_spec_json='{"run_id": "x"}',
            model_config=config,
        )
        out[r] = params
    return out


def model_of(config: ModelConfig, params: dict[str, torch.Tensor]) -> RWKV7:
    from gpt5os.model.checkpoint import model_from_state_dict

    return model_from_state_dict(config, params)


# -- export ----------------------------------------------------------------------------------


def test_export_safetensors_latest_and_given_round(tmp_path):
    params = write_rounds(tmp_path / "run", SMALL)
    r = cli("export", "--dir", tmp_path / "run", "--format", "safetensors", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert "exported round 2" in r.stdout
    model = load_checkpoint(tmp_path / "a")
    assert model.config == SMALL
    assert tensors_sha256(p for _, p in model.named_parameters()) == tensors_sha256(
        params[2].values()
    )
    meta = read_checkpoint_metadata(tmp_path / "a")
    assert (meta["outer_round"], meta["swarm_tokens"]) == ("2", "32768")

    r = cli("export", "--dir", tmp_path / "run", "--format", "safetensors", "--round", "1",
            "--out", tmp_path / "b")  # fmt: skip
    assert r.exit_code == 0, r.output
    b = load_checkpoint(tmp_path / "b")
    assert all(torch.equal(p, params[1][n]) for n, p in b.named_parameters())


RWKV_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["RWKV_V7_ON"] = "1"
    import torch
    from rwkv.model import RWKV
    model = RWKV(model=sys.argv[1], strategy="cpu fp32")
    tokens = torch.load(sys.argv[2]).tolist()
    full, _ = model.forward(tokens, None, full_output=True)
    torch.save(full, sys.argv[3])
    """
)


def test_export_rwkv_pth_gives_our_logits_in_the_rwkv_package(tmp_path):
    params = write_rounds(tmp_path / "run", SMALL, rounds=(3,))
    out = tmp_path / "model.pth"
    r = cli("export", "--dir", tmp_path / "run", "--format", "rwkv-pth", "--out", out)
    assert r.exit_code == 0, r.output
    tokens = torch.randint(0, SMALL.vocab_size, (16,), generator=torch.Generator().manual_seed(0))
    torch.save(tokens, tmp_path / "tokens.pt")
    env = {**os.environ, "RWKV_V7_ON": "1", "RWKV_CUDA_ON": "0"}
    proc = subprocess.run(
        # the rwkv package appends ".pth" to the name it is given
        [sys.executable, "-c", RWKV_SCRIPT, str(tmp_path / "model"), str(tmp_path / "tokens.pt"),
         str(tmp_path / "logits.pt")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = torch.load(tmp_path / "logits.pt")
    with torch.no_grad():
        ours = model_of(SMALL, params[3])(tokens[None])[0]
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max() < 1e-4 * ours.abs().max()


def test_export_bf16_pth(tmp_path):
    write_rounds(tmp_path / "run", SMALL, rounds=(1,))
    out = tmp_path / "m.pth"
    r = cli("export", "--dir", tmp_path / "run", "--format", "rwkv-pth", "--dtype", "bf16",
            "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    sd = torch.load(out, weights_only=True)
    assert {v.dtype for v in sd.values()} == {torch.bfloat16}


def test_export_bad_input_writes_nothing(tmp_path):
    run = tmp_path / "run"
    out = tmp_path / "out.file"
    run.mkdir()
    r = cli("export", "--dir", run, "--format", "safetensors", "--out", out)
    assert_one_error_line(r, "no checkpoint", "yet")
    write_rounds(run, SMALL, rounds=(1,))
    r = cli("export", "--dir", run, "--format", "onnx", "--out", out)
    assert_one_error_line(r, "unknown --format 'onnx'", "safetensors, rwkv-pth")
    r = cli("export", "--dir", run, "--format", "safetensors", "--round", "7", "--out", out)
    assert_one_error_line(r, "no checkpoint of round 7", "rounds here: 1")
    r = cli("export", "--dir", run, "--format", "rwkv-pth", "--dtype", "int4", "--out", out)
    assert_one_error_line(r, "unknown dtype 'int4'")
    r = cli("export", "--dir", tmp_path / "nope", "--format", "safetensors", "--out", out)
    assert_one_error_line(r, "does not exist")
    # a checkpoint whose bytes were damaged is refused, not exported
    info = CheckpointDir(run).latest()
    raw = bytearray(info.path.read_bytes())
    raw[-3] ^= 0xFF
    info.path.write_bytes(bytes(raw))
    r = cli("export", "--dir", run, "--format", "safetensors", "--out", out)
    assert_one_error_line(r, "is corrupt")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# -- init --from-checkpoint ------------------------------------------------------------------


@pytest.fixture(scope="module")
def runnable_params() -> dict[str, torch.Tensor]:
    return random_params(RUNNABLE, 11)


def init(run_dir: Path, data: Path, source: Path, *extra: str):
    return cli("init", "--dir", run_dir, "--data", data, "--from-checkpoint", source, *extra)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    make_data_dir(tmp_path / "data", n_train=2, n_val=1, shard_tokens=512)
    return tmp_path / "data"


def test_init_from_official_pth_makes_round_zero_with_the_files_sha(
    tmp_path, data_dir, runnable_params
):
    pth = tmp_path / "released.pth"
    export_rwkv_pth(model_of(RUNNABLE, runnable_params), pth, dtype=torch.float32)
    r = init(tmp_path / "run", data_dir, pth)
    assert r.exit_code == 0, r.output
    info = CheckpointDir(tmp_path / "run").latest()
    assert (info.round, info.tokens) == (0, 0)
    # the file's own weights, in our parameter order, without the unused layer-0 value gate
    sd = torch.load(pth, weights_only=True)
    assert info.params_sha256 == tensors_sha256(sd[n] for n in runnable_params)
    spec = load_run(tmp_path / "run").spec
    assert (spec.model.n_layer, spec.model.n_embd, spec.model.head_size) == (1, 64, 64)
    assert spec.model.preset == "custom"
    loaded = CheckpointDir(tmp_path / "run").load(info)
    assert loaded.model_config == RUNNABLE and '"custom"' in loaded.run_spec_json


def test_exported_pth_starts_a_run_with_the_same_sha(tmp_path, data_dir, runnable_params):
    """export --format rwkv-pth, then init --from-checkpoint of that file: same θ_global."""
    src = tmp_path / "src"
    ckpts = CheckpointDir(src)
    info = ckpts.write(params=runnable_params, momentum={}, round=5, tokens=99,
                       run_spec_json="{}", model_config=RUNNABLE)  # fmt: skip
    for fmt, name in (("rwkv-pth", "m.pth"), ("safetensors", "m.safetensors")):
        r = cli("export", "--dir", src, "--format", fmt, "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
        r = init(tmp_path / f"run-{fmt}", data_dir, tmp_path / name)
        assert r.exit_code == 0, r.output
        start = CheckpointDir(tmp_path / f"run-{fmt}").latest()
        assert (start.round, start.params_sha256) == (0, info.params_sha256), fmt
        # round 0 is certified from init on: no node may start from the seeded model
        [cert] = Store(tmp_path / f"run-{fmt}" / DB_NAME).certified()
        assert (cert["round"], cert["params_sha256"], cert["source"]) == (
            0,
            info.params_sha256,
            "checkpoint",
        )
    # a run checkpoint itself is accepted too (its round and momentum are not carried over)
    r = init(tmp_path / "run-ckpt", data_dir, info.path)
    assert r.exit_code == 0, r.output
    assert CheckpointDir(tmp_path / "run-ckpt").latest().params_sha256 == info.params_sha256


def assert_no_run(run_dir: Path) -> None:
    assert not (run_dir / RUN_FILE).exists()
    assert not (run_dir / "checkpoints").exists()
    assert not run_dir.exists() or not any(run_dir.iterdir()), list(run_dir.iterdir())


def test_init_bad_checkpoints_write_nothing(tmp_path, data_dir, runnable_params):
    run = tmp_path / "run"
    r = init(run, data_dir, tmp_path / "missing.pth")
    assert_one_error_line(r, "missing.pth", "does not exist")
    assert_no_run(run)

    pth = tmp_path / "m.pth"
    export_rwkv_pth(model_of(RUNNABLE, runnable_params), pth, dtype=torch.float32)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    r = init(run, data_dir, cut)
    assert_one_error_line(r, "cut.pth")
    assert_no_run(run)

    sd = torch.load(pth, weights_only=True)
    sd["blocks.0.att.key.weight"] = torch.zeros(64, 32)  # wrong shape
    torch.save(sd, tmp_path / "bad-shape.pth")
    r = init(run, data_dir, tmp_path / "bad-shape.pth")
    assert_one_error_line(r, "blocks.0.att.key.weight", "(64, 32)")
    assert_no_run(run)

    wide = ModelConfig(n_layer=1, n_embd=64, head_size=64, d_decay_lora=64)  # not the formula
    export_rwkv_pth(model_of(wide, random_params(wide, 2)), tmp_path / "wide.pth")
    r = init(run, data_dir, tmp_path / "wide.pth")
    assert_one_error_line(r, "non-standard FFN or low-rank widths", "lora 64/32/32/32")
    assert_no_run(run)

    small = tmp_path / "small-vocab.pth"
    export_rwkv_pth(model_of(SMALL, random_params(SMALL, 1)), small)
    r = init(run, data_dir, small)
    assert_one_error_line(r, "vocabulary of 97 tokens")
    assert_no_run(run)

    ckpt_dir = tmp_path / "src"
    info = CheckpointDir(ckpt_dir).write(params=runnable_params, momentum={}, round=1, tokens=1,
                                         run_spec_json="{}", model_config=RUNNABLE)  # fmt: skip
    st = tmp_path / "cut.safetensors"
    st.write_bytes(info.path.read_bytes()[:-100])
    r = init(run, data_dir, st)
    assert_one_error_line(r, "cut.safetensors", "truncated")
    assert_no_run(run)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, not a model")
    r = init(run, data_dir, junk)
    assert_one_error_line(r, "junk.bin")
    assert_no_run(run)


def test_real_process_gives_one_line_and_no_traceback(tmp_path, data_dir):
    """The same path as a person's shell: the installed entry point, stderr as it is."""
    exe = str(Path(sys.executable).with_name("gpt5os-coordinator"))
    run = tmp_path / "run"
    done = subprocess.run(
        [exe, "init", "--dir", str(run), "--data", str(data_dir), "--from-checkpoint",
         str(tmp_path / "missing.pth")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr
    run.mkdir()
    done = subprocess.run(
        [exe, "export", "--dir", str(run), "--format", "rwkv-pth", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "no checkpoint" in done.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("fmt", ["safetensors", "rwkv-pth"])
def test_export_to_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, fmt):
    """safetensors and torch.save report ENOSPC in their own exception types: still one line."""
    write_rounds(tmp_path / "run", SMALL, rounds=(1,))
    with small_tmpfs(tmp_path, 64 * 1024) as mnt:  # far less than the model's ~0.6 MB
        r = cli("export", "--dir", tmp_path / "run", "--format", fmt, "--out", mnt / "m")
        assert_one_error_line(r, "No space left" if fmt == "safetensors" else "the disk is full")
        assert os.listdir(mnt) == []
