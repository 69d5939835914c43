"""Checkpoints: safetensors round trip, atomic writes, official .pth export read by `rwkv`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from gpt5os.model import (
    RWKV7,
    ModelConfig,
    export_rwkv_pth,
    import_rwkv_pth,
    load_checkpoint,
    save_checkpoint,
)
from gpt5os.model.checkpoint import read_checkpoint_metadata


def random_model(seed: int = 0, **kw) -> RWKV7:
    cfg = dict(vocab_size=1031, n_layer=3, n_embd=128, head_size=64)
    cfg.update(kw)
    torch.manual_seed(seed)
    model = RWKV7(ModelConfig(**cfg))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # reference init has zeros: perturb so nothing is zero
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def same_weights(a: RWKV7, b: RWKV7) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class TestSafetensors:
    def test_round_trip_keeps_config_weights_and_metadata(self, tmp_path):
        model = random_model(extra={"note": "x"})
        path = tmp_path / "sub" / "ckpt.safetensors"
        save_checkpoint(model, path, metadata={"outer_round": "7"})
        loaded = load_checkpoint(path)
        assert loaded.config == model.config and same_weights(model, loaded)
        assert read_checkpoint_metadata(path)["outer_round"] == "7"
        assert [p.name for p in path.parent.iterdir()] == ["ckpt.safetensors"]  # no temp left

    def test_overwrite_replaces_whole_file(self, tmp_path):
        path = tmp_path / "c.safetensors"
        save_checkpoint(random_model(0), path)
        second = random_model(1)
        save_checkpoint(second, path)
        assert same_weights(load_checkpoint(path), second)

    def test_failed_write_keeps_the_previous_checkpoint(self, tmp_path, monkeypatch):
        path = tmp_path / "c.safetensors"
        first = random_model(0)
        save_checkpoint(first, path)

        def boom(*a, **k):
            raise OSError("disk full")

        monkeypatch.setattr("gpt5os.model.checkpoint.save_file", boom)
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(random_model(1), path)
        assert same_weights(load_checkpoint(path), first)
        assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]

    def test_bad_files_give_clear_errors(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            load_checkpoint(tmp_path / "missing.safetensors")
        junk = tmp_path / "junk.safetensors"
        junk.write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="not a readable safetensors"):
            load_checkpoint(junk)
        from safetensors.torch import save_file

        foreign = tmp_path / "foreign.safetensors"
        save_file({"x": torch.zeros(2)}, str(foreign))
        with pytest.raises(ValueError, match="not a gpt5os RWKV-7 checkpoint"):
            load_checkpoint(foreign)


RWKV_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["RWKV_V7_ON"] = "1"
    import torch
    from rwkv.model import RWKV
    model = RWKV(model=sys.argv[1], strategy="cpu fp32")
    tokens = torch.load(sys.argv[2]).tolist()
    full, _ = model.forward(tokens, None, full_output=True)
    out, state = model.forward(tokens[:5], None, full_output=True)
    rest = [out]
    for t in tokens[5:]:
        out, state = model.forward([t], state)
        rest.append(out.view(1, -1))
    torch.save({"full": full, "rnn": torch.cat(rest)}, sys.argv[3])
    """
)


class TestOfficialPth:
    def test_rwkv_package_gives_our_logits(self, tmp_path):
        model = random_model(3)
        export_rwkv_pth(model, tmp_path / "m.pth", dtype=torch.float32)
        tokens = torch.randint(0, 1031, (24,))
        torch.save(tokens, tmp_path / "tokens.pt")
        env = {**os.environ, "RWKV_V7_ON": "1", "RWKV_CUDA_ON": "0"}
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                RWKV_SCRIPT,
                str(tmp_path / "m"),
                str(tmp_path / "tokens.pt"),
                str(tmp_path / "out.pt"),
            ],  # fmt: skip
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        theirs = torch.load(tmp_path / "out.pt")
        with torch.no_grad():
            ours = model(tokens[None])[0]
        scale = ours.abs().max()
        assert (theirs["full"] - ours).abs().max() < 1e-4 * scale
        assert (theirs["rnn"] - ours).abs().max() < 1e-4 * scale

    def test_import_round_trip(self, tmp_path):
        model = random_model(4)
        export_rwkv_pth(model, tmp_path / "m.pth", dtype=torch.float32)
        sd = torch.load(tmp_path / "m.pth", weights_only=True)
        assert {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"} <= set(sd)
        loaded = import_rwkv_pth(tmp_path / "m.pth")
        assert loaded.config == model.config and same_weights(model, loaded)

    def test_bf16_export_is_the_default(self, tmp_path):
        export_rwkv_pth(random_model(5), tmp_path / "m.pth")
        sd = torch.load(tmp_path / "m.pth", weights_only=True)
        assert all(v.dtype == torch.bfloat16 for v in sd.values())
        assert import_rwkv_pth(tmp_path / "m.pth").head.weight.dtype == torch.float32

    def test_bad_pth_files(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            import_rwkv_pth(tmp_path / "nope.pth")
        torch.save({"emb.weight": torch.zeros(4, 64)}, tmp_path / "partial.pth")
        with pytest.raises(ValueError, match="missing"):
            import_rwkv_pth(tmp_path / "partial.pth")
        sd = random_model(6).state_dict()
        sd["blocks.0.ffn.s_emb.weight"] = torch.zeros(3, 3)  # a DeepEmbed variant
        torch.save(sd, tmp_path / "de.pth")
        with pytest.raises(ValueError, match="unexpected"):
            import_rwkv_pth(tmp_path / "de.pth")
