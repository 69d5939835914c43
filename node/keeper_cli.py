"""`python -m gpt5os.node.keeper_cli`: the keeper process (`gpt5os-coordinator serve` starts it;
`gpt5os-coordinator keeper` runs it on its own). Options are those of `gpt5os-coordinator keeper`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click
from gpt5os.common.channels import ChannelError, Security
from gpt5os.common.lifetime import die_with_parent

from .keeper import KeeperConfig, KeeperError, run_keeper


@click.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--coordinator", default="127.0.0.1:50051", show_default=True, help="HOST:PORT.")
@click.option(
    "--checkpoint-every", type=click.IntRange(min=1), help="Default: 1 for tiny, else 10."
)
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--dht-listen", default="/ip4/127.0.0.1/tcp/0", show_default=True)
@click.option("--parent-pid", type=int, help="Exit when this process (the coordinator) dies.")
@click.option("--coordinator-fingerprint", "fingerprint", help="Pin the coordinator's TLS cert.")
@click.option("--tls", is_flag=True, help="TLS to a coordinator with a CA-signed certificate.")
@click.option("-v", "--verbose", is_flag=True)
def main(
    run_dir: Path,
    coordinator: str,
    checkpoint_every: int | None,
    keep_checkpoints: int,
    dht_listen: str,
    parent_pid: int | None,
    fingerprint: str | None,
    tls: bool,
    verbose: bool,
) -> None:
    """Keep the run's θ_global: average every round, certify it, write checkpoints."""
    if parent_pid is not None:
        # SIGTERM, not SIGKILL: the keeper then shuts its own hivemind children down
        die_with_parent(parent_pid, signal.SIGTERM)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not verbose:
        for name in ("hivemind", "hivemind.averaging", "hivemind.dht", "hivemind.optim"):
            logging.getLogger(name).setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        security = Security.from_options(fingerprint, tls)
    except ChannelError as e:
        raise click.ClickException(str(e)) from None
    config = KeeperConfig(
        run_dir=run_dir,
        coordinator=coordinator,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        dht_listen=dht_listen,
        security=security,
    )
    try:
        run_keeper(config, stop)
    except KeeperError as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    main()
