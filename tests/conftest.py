"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import prepare_small_corpus


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A slice of the interpreter's standard library, tokenized into small shards, prepared
    once per test session."""
    return prepare_small_corpus(tmp_path_factory.mktemp("data") / "stdlib")
