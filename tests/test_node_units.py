"""Pure pieces of the node: batching, the LR schedule, identity files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from gpt5os.node.config import NodeConfig
from gpt5os.node.coordinator_client import CoordinatorError, parse_address
from gpt5os.node.identity import load_or_create_identity
from gpt5os.node.schedule import inner_lr
from gpt5os.node.shard_feed import cut_batches
from gpt5os.proto import pb


def test_batches_are_consecutive_windows_with_next_token_targets() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    batches = list(cut_batches(tokens, seq_len=10, batch_size=4))
    inputs = np.concatenate([x for x, _ in batches])
    targets = np.concatenate([y for _, y in batches])
    assert inputs.shape == (99, 10)  # (1000 - 1) // 10 windows
    assert (inputs[:, 1:] == targets[:, :-1]).all()
    assert (targets == inputs + 1).all()
    assert inputs[1, 0] == 10


def test_a_shard_shorter_than_one_window_gives_no_batch() -> None:
    assert list(cut_batches(np.arange(5, dtype=np.uint16), seq_len=10, batch_size=2)) == []


def test_lr_warms_up_then_decays_to_the_floor() -> None:
    spec = pb.InnerOptimizerSpec(lr=1e-3, min_lr=1e-4, warmup_tokens=1000, decay_tokens=10_000)
    assert inner_lr(spec, 0) == pytest.approx(1e-6)
    assert inner_lr(spec, 999) == pytest.approx(1e-3)
    assert inner_lr(spec, 1000) == pytest.approx(1e-3)
    assert inner_lr(spec, 6000) == pytest.approx(5.5e-4)
    assert inner_lr(spec, 11_000) == pytest.approx(1e-4)
    assert inner_lr(spec, 10**9) == pytest.approx(1e-4)


def test_identity_is_created_private_and_reloaded(tmp_path) -> None:
    first = load_or_create_identity(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "node_key.pem").st_mode)
    assert mode == 0o600
    assert len(first.public_key) == 32
    assert load_or_create_identity(tmp_path).node_id == first.node_id


def test_a_corrupt_key_file_is_an_error_with_advice(tmp_path) -> None:
    (tmp_path / "node_key.pem").write_text("garbage")
    (tmp_path / "node_key.pem").chmod(0o600)
    with pytest.raises(ValueError, match="not a valid node key.*move it away"):
        load_or_create_identity(tmp_path)


@pytest.mark.parametrize("bad", ["localhost", "host:", ":50051", "host:99999", "host:port"])
def test_bad_coordinator_addresses_are_refused(bad: str) -> None:
    with pytest.raises(CoordinatorError, match="HOST:PORT"):
        parse_address(bad)


def test_dht_listens_on_loopback_for_a_local_coordinator(tmp_path) -> None:
    local = NodeConfig(coordinator="127.0.0.1:1", home=tmp_path)
    remote = NodeConfig(coordinator="swarm.example.org:50051", home=tmp_path)
    assert local.resolved_dht_listen() == "/ip4/127.0.0.1/tcp/0"
    assert remote.resolved_dht_listen() == "/ip4/0.0.0.0/tcp/0"


def test_adamw8bit_inner_optimizer_trains_with_8bit_state() -> None:
    """`inner.name: adamw8bit` builds bitsandbytes' AdamW8bit (its state really 8-bit) and
    trains like AdamW: the same falling loss on a fixed batch, to within quantisation."""
    import dataclasses

    import torch
    from gpt5os.coordinator.run_spec import preset_spec
    from gpt5os.model import RWKV7, ModelConfig
    from gpt5os.node.trainer import build_inner_optimizer

    batch = torch.randint(1, 257, (2, 17), generator=torch.Generator().manual_seed(0))
    losses = {}
    for name in ("adamw", "adamw8bit"):
        torch.manual_seed(0)
        model = RWKV7(ModelConfig(vocab_size=257, n_layer=1, n_embd=64, head_size=32))
        inner = dataclasses.replace(preset_spec("tiny", run_id="u").inner, name=name, lr=3e-3)
        opt = build_inner_optimizer(model, inner)
        losses[name] = []
        for _ in range(8):
            logits = model(batch[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
        if name == "adamw8bit":
            assert type(opt).__name__ == "AdamW8bit"
            emb = model.emb.weight if hasattr(model, "emb") else next(model.parameters())
            assert opt.state[emb]["state1"].dtype == torch.uint8
    assert losses["adamw8bit"][-1] < losses["adamw8bit"][0] - 0.1
    assert losses["adamw8bit"] == pytest.approx(losses["adamw"], rel=0.02)


def test_a_delayed_outer_step_moves_the_local_model_by_the_global_update() -> None:
    """Overlapped rounds (OuterState.begin_overlapped_round / apply_outer_step(delayed=True)):
    θ_local restarts from θ_global_old, trains on, and is moved by θ_global_new − θ_global_old
    when the average lands; a plain step resets θ_local to θ_global_new."""
    import torch
    from gpt5os.coordinator.run_spec import OuterOptimizerSpec
    from gpt5os.node.diloco import OuterState

    model = torch.nn.Linear(3, 2)
    outer = OuterState(model, OuterOptimizerSpec())
    old = [g.clone() for g in outer.global_params]
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(0.5)  # a round of local training
    deltas = outer.begin_overlapped_round()
    assert all(torch.allclose(d, torch.full_like(d, 0.5)) for d in deltas)
    assert all(torch.equal(p.detach(), g) for p, g in zip(model.parameters(), old, strict=True))
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(0.25)  # the next round's first steps, while the all-reduce runs
    outer.apply_outer_step(deltas, tokens=10, group_size=2, delayed=True)
    for p, g, o in zip(model.parameters(), outer.global_params, old, strict=True):
        assert not torch.equal(g, o)
        torch.testing.assert_close(p.detach(), g - 0.25)
    outer.apply_outer_step(deltas, tokens=10, group_size=2)
    assert all(
        torch.equal(p.detach(), g)
        for p, g in zip(model.parameters(), outer.global_params, strict=True)
    )
