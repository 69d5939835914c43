"""The dashboard's checkpoint line: the newest checkpoint's round and age, or that there is none."""

from __future__ import annotations

from gpt5os.dashboard.swarm_view import checkpoint_text
from gpt5os.proto import pb


def test_checkpoint_text_says_round_and_age_or_that_there_is_none() -> None:
    run = pb.RunStatus(checkpoint=pb.CheckpointSummary(round=12, written_at=1000.0))
    assert checkpoint_text(run, 1000.0 + 125) == "checkpoint round 12, 2m ago"
    assert checkpoint_text(pb.RunStatus(), 5.0) == "no checkpoint yet"
    assert checkpoint_text(None, 5.0) == ""
