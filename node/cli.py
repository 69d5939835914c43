"""`gpt5os-node`: join a run as a volunteer, or generate text from a checkpoint."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from .config import DEFAULT_COORDINATOR, NodeConfig, default_home

log = logging.getLogger("gpt5os.node")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not verbose:  # hivemind is chatty at INFO; our own lines are the ones a volunteer reads
        logging.getLogger("hivemind").setLevel(logging.WARNING)
        for name in ("hivemind", "hivemind.averaging", "hivemind.dht", "hivemind.optim"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # set before hivemind forks its averager process, which logs there and inherits this
        logging.getLogger("hivemind.averaging.averager").addFilter(_HandledAveragingFailure())


class _HandledAveragingFailure(logging.Filter):
    """Drops hivemind's traceback for an all-reduce that found no group or lost a member.

    hivemind logs those with `logger.exception` from its averager process (averaging/averager.py,
    `_step`), but they are outcomes the node handles: group_average.py says "averaging failed
    (...)" in one line and the round goes on without the group or is retried. A volunteer should
    not read a traceback for them; with -v the filter is not installed and it shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from hivemind.averaging.matchmaking import MatchmakingException
        from hivemind.averaging.partition import AllreduceException

        kind = record.exc_info[0] if record.exc_info else None
        return not (kind and issubclass(kind, (AllreduceException, MatchmakingException)))


class _PendingTaskAtExit(logging.Filter):
    """Drops asyncio's "Task was destroyed but it is pending!" once the node is stopping.

    hivemind's ProgressTracker (optim/progress_tracker.py, `_progress_fetcher`) returns on
    shutdown without cancelling its pending DHT `get` task; when its event loop is collected,
    asyncio logs that task as an ERROR. Nothing is lost by then (the node has left), but every
    volunteer would read an error on a clean exit. Before the stop, the message still shows.
    """

    def __init__(self, stopping: threading.Event) -> None:
        super().__init__()
        self.stopping = stopping

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            self.stopping.is_set()
            and record.getMessage().startswith("Task was destroyed but it is pending")
        )


@click.group()
def main() -> None:
    """gpt5os volunteer node: donate your GPU to train one open RWKV-7 model."""


@main.command()
@click.option(
    "--coordinator",
    default=DEFAULT_COORDINATOR,
    show_default=True,
    help="HOST:PORT of the run's coordinator.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--max-rounds",
    type=click.IntRange(min=1),
    default=None,
    help="Leave after this many outer rounds.",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the node key and shard cache live (default: $GPT5OS_HOME or the user data dir).",
)
@click.option(
    "--min-peers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Wait until this many nodes (self included) are in the swarm before training.",
)
@click.option(
    "--dht-listen",
    default=None,
    help="hivemind listen multiaddr (default: loopback for a local coordinator, else all interfaces).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@click.option(
    "--name", "display_name", default="", help="Your name on the dashboard's leaderboard."
)
@click.option(
    "--coordinator-fingerprint",
    default=None,
    metavar="SHA256",
    help="Talk TLS to the coordinator and accept only the certificate with this fingerprint "
    "(`gpt5os-coordinator serve` prints it).",
)
@click.option(
    "--tls", is_flag=True, help="Talk TLS to a coordinator whose certificate a trusted CA signed."
)
@click.option(
    "--client-mode",
    is_flag=True,
    help="Run hivemind in client mode through relays without checking reachability (behind "
    "NAT, this is what the check decides on its own).",
)
@click.option(
    "--announce-host",
    default=None,
    metavar="HOST",
    help="Announce this public host (name or IP) for a port-forwarded machine; fix the "
    "port with --dht-listen /ip4/0.0.0.0/tcp/PORT.",
)
@click.option(
    "--micro-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Sequences per forward/backward when the run's batch does not fit at once: the step is "
    "accumulated from micro-batches and is the same (default: the whole batch).",
)
@click.option(
    "--overlap/--no-overlap",
    default=False,
    show_default=True,
    help="Average each round in the background while training the next round's first steps "
    "(one-step-delayed outer update).",
)
@click.option(
    "--stats-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="When leaving, write this node's training figures (steps, utilization, its θ_global "
    "digest) here as JSON.",
)
@click.option(
    "--invite",
    default="",
    metavar="TOKEN",
    help="Invite token from the run's maintainer (`gpt5os-coordinator invite`): needed to join "
    "an invite-only run the first time; later joins need none.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, hivemind included.")
def join(
    coordinator,
    device,
    max_rounds,
    home,
    min_peers,
    dht_listen,
    threads,
    display_name,
    coordinator_fingerprint,
    tls,
    client_mode,
    announce_host,
    micro_batch,
    overlap,
    stats_file,
    invite,
    verbose,
) -> None:
    """Join a run and train until Ctrl-C, SIGTERM or --max-rounds."""
    _setup_logging(verbose)
    config = NodeConfig(
        coordinator=coordinator,
        home=home or default_home(),
        device=device,
        max_rounds=max_rounds,
        min_peers=min_peers,
        dht_listen=dht_listen,
        threads=threads,
        display_name=display_name,
        coordinator_fingerprint=coordinator_fingerprint,
        tls=tls,
        client_mode=client_mode,
        announce_host=announce_host,
        micro_batch=micro_batch,
        stats_file=stats_file,
        overlap=overlap,
        invite=invite.strip(),
    )
    from .runner import NodeError, run_node

    stop = threading.Event()
    logging.getLogger("asyncio").addFilter(_PendingTaskAtExit(stop))
    main_pid = os.getpid()

    def request_stop(signum, _frame) -> None:
        if os.getpid() != main_pid:  # a forked hivemind helper inherited this handler: die as asked
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        log.info("%s received: finishing the current step and leaving", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        rounds = run_node(config, stop)
    except NodeError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted") from None
    click.echo(
        f"gpt5os-node: left after {rounds} outer round{'s' if rounds != 1 else ''}", err=True
    )


@main.command()
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the node key lives (default: $GPT5OS_HOME or the user data dir).",
)
def identity(home: Path | None) -> None:
    """Print this node's id (line 1) and the path of its key file (line 2); makes the key on
    first use. Send the id to a maintainer to be admitted to an invite-only run."""
    from .identity import load_or_create_identity

    try:
        ident = load_or_create_identity(home or default_home())
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(ident.node_id)
    click.echo(str(ident.path))


@main.command()
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A gpt5os .safetensors checkpoint or an official RWKV-7 .pth.",
)
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=1.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0), default=0.85, show_default=True)
@click.option("--seed", type=int, default=None)
@click.option("--device", default="cpu", show_default=True)
def generate(checkpoint, prompt, max_tokens, temperature, top_p, seed, device) -> None:
    """Continue a prompt with a trained model (RNN-mode decoding)."""
    from .generate_cmd import GenerateError, run_generate

    try:
        for piece in run_generate(
            checkpoint,
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            device=device,
        ):
            click.echo(piece, nl=False)
        click.echo()
    except GenerateError as e:
        raise click.ClickException(str(e)) from None
