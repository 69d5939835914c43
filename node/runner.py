"""Runs one node from start to clean exit: identity, join, train, leave.

Every failure a volunteer can fix (bad address, coordinator down, refused join, no GPU, a run
this machine cannot hold) becomes a NodeError with one readable line; the CLI prints it without
a traceback. So does any other failure while the node starts (building the model, starting
hivemind): the traceback goes to the debug log (`-v`).
"""

from __future__ import annotations

import logging
import signal
import threading

from gpt5os.common.channels import ChannelError, Security

from .config import NodeConfig
from .coordinator_client import Banned, CoordinatorClient, CoordinatorError, parse_address
from .identity import load_or_create_identity
from .reachability import network_mode

log = logging.getLogger("gpt5os.node")


class NodeError(RuntimeError):
    pass


def one_line(e: BaseException) -> str:
    """`Type: message` on one line, for errors nobody anticipated."""
    text = " ".join(str(e).split()) or "(no message)"
    return f"{type(e).__name__}: {text}"


def check_memory(spec, device, micro_batch: int | None = None, *, overlap: bool = False) -> None:
    """Refuse, with one line, a run this machine cannot hold (node/memory.py's estimate);
    activations are those of one micro-batch; `overlap`: join --overlap."""
    import dataclasses

    from . import memory

    shape = memory.shape_of(spec)
    if micro_batch:
        shape = dataclasses.replace(shape, batch_size=min(micro_batch, shape.batch_size))
    need = memory.estimate(shape, device.type, overlap=overlap)
    device_free = None
    if device.type == "cuda":
        import torch

        device_free = torch.cuda.mem_get_info(device)[0]
    host_free = memory.available_host_bytes()
    log.info(
        "this run needs ~%.1f GiB of RAM%s (%d parameters); %s available",
        need.host / memory.GIB,
        f" and ~{need.device / memory.GIB:.1f} GiB of GPU memory" if need.device else "",
        need.params,
        "unknown" if host_free is None else f"{host_free / memory.GIB:.1f} GiB",
    )
    problem = memory.refusal(need, host_free, device_free, spec.model.preset)
    if problem is None:
        return
    if memory.skip_check():
        log.warning("%s (GPT5OS_SKIP_MEMORY_CHECK is set: joining anyway)", problem)
        return
    raise NodeError(problem)


def run_node(config: NodeConfig, stop: threading.Event) -> int:
    """Join, train until stopped or --max-rounds, leave; returns the outer rounds completed."""
    try:
        parse_address(config.coordinator)
        security = Security.from_options(config.coordinator_fingerprint, config.tls)
        identity = load_or_create_identity(config.home)
    except (CoordinatorError, ChannelError, ValueError, OSError) as e:
        raise NodeError(str(e)) from None

    import torch  # after the cheap checks: a typo is reported without waiting for torch

    from .swarm import SwarmPeer, swarm_prefix
    from .trainer import (
        Trainer,
        build_training_state,
        describe_device,
        parameter_numels,
        resolve_device,
    )

    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        device = resolve_device(config.device)
    except (ValueError, RuntimeError) as e:
        raise NodeError(f"bad --device {config.device!r}: {e}") from None

    from gpt5os.common.swarm_auth import SwarmKey

    from .swarm_access import SwarmAccess

    def banned(reason: str) -> None:  # from any thread's call: stop everything, do not retry
        log.debug("the coordinator refused this node: %s", reason)
        stop.set()

    client = CoordinatorClient(
        config.coordinator,
        identity,
        display_name=config.display_name,
        security=security,
        invite=config.invite,
        on_banned=banned,
    )
    trainer = None
    reason = "stopped"
    swarm_key = SwarmKey()  # our hivemind identity; the coordinator's swarm token names it
    try:
        session = client.join(describe_device(device), swarm_public_key=swarm_key.public_key)
        access = SwarmAccess.from_response(swarm_key, session.join)
        spec = session.spec
        log.info(
            "joined run %s as node %s: preset %s, %d inner steps per round, %d bootstrap peers, device %s",
            spec.run_id,
            session.node_id,
            spec.model.preset,
            spec.inner_steps,
            len(session.join.initial_peers),
            device,
        )
        check_memory(spec, device, config.micro_batch, overlap=config.overlap)
        try:
            mode = network_mode(
                client,
                config.resolved_dht_listen(),
                client_mode=config.client_mode,
                announce_host=config.announce_host,
            )
        except ValueError as e:
            raise NodeError(str(e)) from None
        log.info("%s", mode.describe())
        try:
            # hivemind forks its DHT and averager processes first, while this process holds no
            # model: forked later, each would keep a copy-on-write snapshot of the tensors that
            # training rewrites (bench/memory.py). The averager gets the outer state once it exists.
            sigint = signal.getsignal(signal.SIGINT)
            peer = SwarmPeer.start(
                None,
                spec,
                initial_peers=list(session.join.initial_peers),
                listen=mode.listen,
                client_mode=mode.client_mode,
                announce=mode.announce,
                prefix=swarm_prefix(session.join.dht_prefix, spec.run_id),
                node_id=session.node_id,
                numels=parameter_numels(spec),
                access=access,
            )
            # hivemind's DecentralizedAverager.run_in_background sets SIGINT to SIG_IGN in *this*
            # process before it forks: without this, Ctrl-C would be ignored from here on.
            signal.signal(signal.SIGINT, sigint)
            try:
                model, outer = build_training_state(spec, device)
                peer.averager.outer = outer
                trainer = Trainer(
                    config, client, session, stop, model=model, outer=outer, peer=peer
                )
            except BaseException:
                peer.close()  # the trainer would have closed it; without one, nobody else does
                raise
        except (NodeError, CoordinatorError):
            raise
        except Exception as e:  # anything else while starting: one line, traceback under -v
            log.debug("the node failed to start", exc_info=True)
            raise NodeError(f"the node failed to start: {one_line(e)}") from None
        rounds = trainer.train()
        if client.banned is not None:
            raise NodeError(f"stopped: the coordinator refused this node: {client.banned}")
        if trainer.heartbeat.refused:
            raise NodeError(f"left: {trainer.heartbeat.refused}")
        if config.max_rounds is not None and len(rounds) >= config.max_rounds:
            reason = f"finished {len(rounds)} rounds"
        return len(rounds)
    except Banned:
        raise NodeError(f"stopped: the coordinator refused this node: {client.banned}") from None
    except CoordinatorError as e:
        if client.banned is not None:  # banned mid-call: say that, not the call that noticed
            raise NodeError(
                f"stopped: the coordinator refused this node: {client.banned}"
            ) from None
        raise NodeError(str(e)) from None
    finally:
        stop.set()
        if trainer is not None:
            trainer.close()
        swarm_key.close()
        if client.session is not None and client.banned is None:  # a banned node cannot Leave
            try:
                client.leave(reason)
            except CoordinatorError as e:
                log.warning("could not say goodbye to the coordinator: %s", e)
        client.close()
