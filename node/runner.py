"""Runs one node from start to clean exit: identity, join, train, leave.

Every failure a volunteer can fix (bad address, coordinator down, refused join, no GPU) becomes a
NodeError with one readable line; the CLI prints it without a traceback.
"""

from __future__ import annotations

import logging
import signal
import threading

from .config import NodeConfig
from .coordinator_client import CoordinatorClient, CoordinatorError, parse_address
from .identity import load_or_create_identity

log = logging.getLogger("gpt5os.node")


class NodeError(RuntimeError):
    pass


def run_node(config: NodeConfig, stop: threading.Event) -> int:
    """Join, train until stopped or --max-rounds, leave; returns the outer rounds completed."""
    try:
        parse_address(config.coordinator)
        identity = load_or_create_identity(config.home)
    except (CoordinatorError, ValueError, OSError) as e:
        raise NodeError(str(e)) from None

    import torch  # after the cheap checks: a typo is reported without waiting for torch

    from .trainer import Trainer, describe_device, resolve_device

    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        device = resolve_device(config.device)
    except (ValueError, RuntimeError) as e:
        raise NodeError(f"bad --device {config.device!r}: {e}") from None

    client = CoordinatorClient(config.coordinator, identity, display_name=config.display_name)
    trainer = None
    reason = "stopped"
    try:
        session = client.join(describe_device(device))
        spec = session.spec
        log.info(
            "joined run %s as node %s: preset %s, %d tokens per round, %d bootstrap peers, device %s",
            spec.run_id,
            session.node_id,
            spec.model.preset,
            spec.tokens_per_round,
            len(session.join.initial_peers),
            device,
        )
        sigint = signal.getsignal(signal.SIGINT)
        trainer = Trainer(config, client, session, stop)
        # hivemind's DecentralizedAverager.run_in_background sets SIGINT to SIG_IGN in *this*
        # process before it forks: without this, Ctrl-C would be ignored from here on.
        signal.signal(signal.SIGINT, sigint)
        rounds = trainer.train()
        if trainer.heartbeat.refused:
            raise NodeError(f"left: {trainer.heartbeat.refused}")
        if config.max_rounds is not None and len(rounds) >= config.max_rounds:
            reason = f"finished {len(rounds)} rounds"
        return len(rounds)
    except CoordinatorError as e:
        raise NodeError(str(e)) from None
    finally:
        stop.set()
        if trainer is not None:
            trainer.close()
        if client.session is not None:
            try:
                client.leave(reason)
            except CoordinatorError as e:
                log.warning("could not say goodbye to the coordinator: %s", e)
        client.close()
