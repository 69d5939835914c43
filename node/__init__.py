"""gpt5os-node: a volunteer's process that joins a run and trains with DiLoCo over hivemind."""
