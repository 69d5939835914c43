"""The held-out split and the packing order (pure logic, milliseconds)."""

from __future__ import annotations

import numpy as np
from gpt5os.coordinator.data.order import (
    MAX_VAL_SHARE,
    choose_validation,
    hash_keys,
    packing_order,
)

RNG = np.random.default_rng(0)
KEYS = RNG.integers(0, 2**63, size=200, dtype=np.uint64) * np.uint64(2)
LENGTHS = RNG.integers(50, 500, size=200)


def test_fraction_alone_takes_the_documents_below_the_hash_threshold() -> None:
    held = choose_validation(KEYS, LENGTHS, val_fraction=0.1, val_tokens=0)
    assert (held == (KEYS < np.uint64(int(0.1 * 2**64)))).all()


def test_val_tokens_adds_the_lowest_hash_documents_until_enough() -> None:
    need = int(LENGTHS.sum() * 0.3)
    held = choose_validation(KEYS, LENGTHS, val_fraction=0.01, val_tokens=need)
    assert LENGTHS[held].sum() >= need
    # minimal: without its highest-hash document it would hold too few
    top = np.flatnonzero(held)[np.argmax(KEYS[held])]
    assert LENGTHS[held].sum() - LENGTHS[top] < need
    assert KEYS[held].max() < KEYS[~held].min()  # a prefix in hash order


def test_val_tokens_never_takes_more_than_half_and_leaves_training_a_document() -> None:
    held = choose_validation(KEYS, LENGTHS, val_fraction=0.0, val_tokens=10**9)
    assert 0 < LENGTHS[held].sum() <= MAX_VAL_SHARE * LENGTHS.sum()
    two = choose_validation(KEYS[:2], LENGTHS[:2], val_fraction=0.99, val_tokens=10**9)
    assert two.sum() == 1


def test_no_validation_asked_gives_none() -> None:
    assert not choose_validation(KEYS, LENGTHS, val_fraction=0.0, val_tokens=0).any()


def test_hash_keys_read_the_digest_prefix_big_endian() -> None:
    digests = bytes(range(16)) + bytes([255] * 16)
    keys = hash_keys(digests, 16)
    assert keys.tolist() == [0x0001020304050607, 2**64 - 1]


def test_packing_order_is_a_seeded_permutation_per_split() -> None:
    docs = np.arange(0, 300, 3)
    a = packing_order(docs, seed=0, split="train")
    assert sorted(a.tolist()) == docs.tolist() and not (a == docs).all()
    assert (a == packing_order(docs, seed=0, split="train")).all()
    assert not (a == packing_order(docs, seed=1, split="train")).all()
    assert not (a == packing_order(docs, seed=0, split="val")).all()
