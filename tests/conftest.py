"""Fixtures shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import prepare_small_corpus
from gpt5os.coordinator.testkit import aio_channel
from gpt5os.proto import pb_grpc


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A slice of the interpreter's standard library, tokenized into small shards, prepared
    once per test session."""
    return prepare_small_corpus(tmp_path_factory.mktemp("data") / "stdlib")


@pytest.fixture
async def stub(server):
    """A coordinator stub on the module's `server` fixture (a started CoordinatorServer) whose
    node requests are signed with keys from testkit.node_key()."""
    async with aio_channel(server.address) as channel:
        yield pb_grpc.CoordinatorStub(channel)
