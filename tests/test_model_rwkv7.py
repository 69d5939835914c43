"""RWKV7 model: shapes and names of the presets, reference init, RNN == parallel, training."""

from __future__ import annotations

import pytest
import torch
from gpt5os.model import PRESETS, RWKV7, ModelConfig, RWKV7State


def small_config(**kw) -> ModelConfig:
    base = dict(vocab_size=300, n_layer=3, n_embd=128, head_size=64)
    base.update(kw)
    return ModelConfig(**base)


def perturbed(model: RWKV7, seed: int = 0, scale: float = 0.05) -> RWKV7:
    """Reference init has zeros (output, ffn.value, LoRA inputs): perturb so every path counts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


class TestConfig:
    def test_presets(self):
        expected = {"tiny": (2, 128), "0.1b": (12, 768), "0.4b": (24, 1024),
                    "1.5b": (24, 2048), "3b": (32, 2560), "7b": (32, 4096)}  # fmt: skip
        for name, (n_layer, n_embd) in expected.items():
            cfg = ModelConfig.from_preset(name)
            assert (cfg.n_layer, cfg.n_embd, cfg.head_size, cfg.vocab_size) == (
                n_layer, n_embd, 64, 65536)  # fmt: skip
        assert set(PRESETS) == set(expected)

    def test_official_0_1b_lora_widths(self):
        cfg = ModelConfig.from_preset("0.1b")
        assert (cfg.d_decay_lora, cfg.d_aaa_lora, cfg.d_mv_lora, cfg.d_gate_lora) == (
            64,
            64,
            32,
            128,
        )
        assert cfg.dim_ffn == 3072

    def test_unknown_preset_and_bad_values(self):
        with pytest.raises(ValueError, match="known presets: tiny"):
            ModelConfig.from_preset("13b")
        with pytest.raises(ValueError, match="multiple of head_size"):
            ModelConfig(n_layer=1, n_embd=100)
        with pytest.raises(ValueError, match="n_layer"):
            ModelConfig(n_layer=0, n_embd=64)
        with pytest.raises(ValueError, match="unknown ModelConfig fields"):
            ModelConfig.from_dict({"n_layer": 1, "n_embd": 64, "bogus": 1})

    def test_dict_round_trip_and_preset_copies(self):
        cfg = ModelConfig.from_preset("tiny")
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        cfg.extra["x"] = 1
        assert ModelConfig.from_preset("tiny").extra == {}

    @pytest.mark.parametrize("name", ["0.1b", "7b"])
    def test_num_params_matches_module(self, name):
        cfg = ModelConfig.from_preset(name)
        with torch.device("meta"):
            model = RWKV7(cfg, init_weights=False)
        assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


class TestArchitecture:
    def test_reference_parameter_names_and_shapes(self):
        cfg = ModelConfig.from_preset("0.1b")
        with torch.device("meta"):
            sd = RWKV7(cfg, init_weights=False).state_dict()
        c = 768
        assert sd["emb.weight"].shape == (65536, c) and sd["head.weight"].shape == (65536, c)
        assert "blocks.0.ln0.weight" in sd and "blocks.1.ln0.weight" not in sd
        att = "blocks.1.att."
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a"):
            assert sd[att + name].shape == (1, 1, c), name
        assert sd[att + "w1"].shape == (c, 64) and sd[att + "w2"].shape == (64, c)
        assert sd[att + "g1"].shape == (c, 128) and sd[att + "v1"].shape == (c, 32)
        assert sd[att + "r_k"].shape == (12, 64)
        assert sd[att + "ln_x.weight"].shape == (c,)
        assert sd["blocks.0.ffn.key.weight"].shape == (4 * c, c)
        assert sd["blocks.0.ffn.value.weight"].shape == (c, 4 * c)
        assert "blocks.0.att.v0" not in sd  # layer 0's value is the residual source
        assert "ln_out.weight" in sd

    def test_init_is_deterministic(self):
        torch.manual_seed(3)
        a = RWKV7(small_config()).state_dict()
        torch.manual_seed(3)
        b = RWKV7(small_config()).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)

    def test_reference_init_values(self):
        torch.manual_seed(0)
        model = RWKV7(small_config(n_layer=4))
        b2 = model.blocks[2]
        assert torch.all(b2.att.output.weight == 0) and torch.all(b2.ffn.value.weight == 0)
        assert torch.allclose(b2.att.ln_x.weight, torch.full((128,), (3 / 4) ** 0.7))
        assert model.emb.weight.abs().max() <= 1e-4
        head = model.head.weight  # orthogonal columns with gain 0.5 * sqrt(V / C)
        gram = head.T @ head
        assert torch.allclose(gram, torch.eye(128) * 0.25 * 300 / 128, atol=1e-3)
        assert torch.allclose(b2.att.r_k, torch.full_like(b2.att.r_k, -0.04))
        assert torch.all(b2.att.w1 == 0) and b2.att.w2.abs().sum() > 0

    def test_logits_shape(self):
        model = RWKV7(small_config())
        assert model(torch.randint(0, 300, (2, 5))).shape == (2, 5, 300)

    def test_rnn_decoding_equals_parallel_forward(self):
        torch.manual_seed(1)
        model = perturbed(RWKV7(small_config()))
        idx = torch.randint(0, 300, (2, 40))
        with torch.no_grad():
            full = model(idx)
            logits, state = model(idx[:, :11], return_state=True)  # prefill, then RNN steps
            steps = [logits]
            for t in range(11, 40):
                logits, state = model(idx[:, t : t + 1], state, return_state=True)
                steps.append(logits)
            rnn = torch.cat(steps, dim=1)
            step_by_step = [model(idx[:, :1], return_state=True)]
            for t in range(1, 40):
                step_by_step.append(
                    model(idx[:, t : t + 1], step_by_step[-1][1], return_state=True)
                )
            pure_rnn = torch.cat([lg for lg, _ in step_by_step], dim=1)
        scale = full.abs().max()
        assert (rnn - full).abs().max() < 1e-4 * scale
        assert (pure_rnn - full).abs().max() < 1e-4 * scale

    def test_cpu_and_reference_wkv_give_the_same_model(self):
        torch.manual_seed(2)
        model = perturbed(RWKV7(small_config(n_layer=2)))
        idx = torch.randint(0, 300, (1, 37))  # two chunks of 32, the second padded
        targets = torch.randint(0, 300, (1, 37))
        grads = {}
        for impl in ("cpu", "reference"):
            model.wkv_impl = impl
            model.zero_grad()
            model.loss(idx, targets).backward()
            grads[impl] = torch.cat([p.grad.flatten() for p in model.parameters()])
        err = (grads["cpu"] - grads["reference"]).norm() / grads["reference"].norm()
        assert err < 1e-4

    def test_state_carries_gradients(self):
        """Truncated BPTT: the second window's loss reaches weights through the carried state."""
        torch.manual_seed(4)
        model = perturbed(RWKV7(small_config()))
        idx = torch.randint(0, 300, (1, 30))
        _, state = model(idx[:, :15], return_state=True)
        assert isinstance(state, RWKV7State) and state.wkv.dtype == torch.float32
        logits = model(idx[:, 15:], state)
        logits.sum().backward()
        assert model.blocks[0].att.receptance.weight.grad.abs().sum() > 0

    def test_training_reduces_loss(self):
        torch.manual_seed(5)
        model = RWKV7(small_config(n_layer=2))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        idx = torch.randint(0, 300, (4, 33))
        losses = []
        for _ in range(8):
            loss = model.loss(idx[:, :-1], idx[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] - 0.5

    def test_bad_idx_shape(self):
        with pytest.raises(ValueError, match=r"\[B, T\]"):
            RWKV7(small_config())(torch.zeros(5, dtype=torch.long))
