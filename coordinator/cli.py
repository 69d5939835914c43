"""`gpt5os-coordinator`: create, serve, watch and steer a training run.

Every failure a person can fix ends as one `Error: ...` line on stderr and exit code 1 (click's
ClickException), never a traceback: expected errors are caught where they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

# gRPC's C core logs bind failures itself; the CLI says it in one line of its own instead.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import click  # noqa: E402
from gpt5os.common.swarm_token import TOKEN_LIFETIME_S  # noqa: E402
from gpt5os.coordinator import admission as adm  # noqa: E402
from gpt5os.coordinator.admission import DEFAULT_MODE, MODES  # noqa: E402
from gpt5os.coordinator.data.cli import data  # noqa: E402
from gpt5os.coordinator.keeper_auth import ensure_keeper_key  # noqa: E402
from gpt5os.coordinator.limits import MAX_WATCHERS, NODE_BURST, NODE_RATE, Limits  # noqa: E402
from gpt5os.coordinator.records import ApiError  # noqa: E402
from gpt5os.coordinator.run_spec import COMPRESSIONS, OUTER_WARMUP_ROUNDS, PRESETS  # noqa: E402
from gpt5os.coordinator.runs import RUN_FILE, create_run, load_run, update_spec  # noqa: E402
from gpt5os.coordinator.store import DB_NAME, Store, StoreError  # noqa: E402
from gpt5os.coordinator.swarm_key import ensure_coordinator_key  # noqa: E402

EXPECTED = (OSError, ValueError, StoreError, ApiError)
FINGERPRINT_HELP = (
    "Talk TLS to a coordinator whose certificate has this SHA-256 fingerprint (as `serve` "
    "prints it) and refuse any other."
)
TLS_HELP = "Talk TLS to a coordinator whose certificate a CA this machine trusts signed."


@click.group()
@click.version_option(package_name="gpt5os")
def main() -> None:
    """Coordinate a gpt5os training run: hand out data, keep the swarm's state, serve the API."""


main.add_command(data)


def _fail(e: BaseException) -> click.ClickException:
    return click.ClickException(getattr(e, "message", None) or str(e))


# -- init ------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir", "run_dir", required=True, type=click.Path(path_type=Path), help="New run directory."
)
@click.option(
    "--data", "data_dir", required=True, type=click.Path(path_type=Path), help="Prepared data."
)
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    help="Model shape and training settings [default: tiny, or with --from-checkpoint the preset "
    "of the checkpoint's shape].",
)
@click.option(
    "--from-checkpoint",
    type=click.Path(path_type=Path),
    help="Start from this model: our .safetensors or an official RWKV-7 .pth (its shape decides "
    "the model); it becomes the run's round-0 checkpoint.",
)
@click.option("--run-id", help="Default: <preset>-<random hex>.")
@click.option("--seq-len", type=click.IntRange(min=1))
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option(
    "--inner-steps",
    type=click.IntRange(min=1),
    help="DiLoCo's H: inner steps each node trains between two outer rounds [default: 500, tiny 16].",
)
@click.option("--inner-lr", type=click.FloatRange(min=0, min_open=True))
@click.option("--inner-min-lr", type=click.FloatRange(min=0))
@click.option("--inner-optimizer", "inner_name", type=click.Choice(["adamw", "adamw8bit"]))
@click.option("--outer-lr", type=click.FloatRange(min=0, min_open=True))
@click.option("--outer-momentum", type=click.FloatRange(min=0, max=1, max_open=True))
@click.option(
    "--outer-warmup-rounds",
    type=click.IntRange(min=0),
    help="Rounds over which the outer momentum warms up from 0, so a run from a random model "
    f"does not overshoot in its first rounds [default: {OUTER_WARMUP_ROUNDS}; 0: full momentum "
    "from round 1, e.g. for a run from a trained --from-checkpoint].",
)
@click.option("--compression", type=click.Choice(COMPRESSIONS))
@click.option("--seed", type=click.IntRange(min=0))
@click.option(
    "--val-batches",
    type=click.IntRange(min=1),
    help="Full batches of held-out data each node evaluates per round (default 8); the data "
    "must hold val_batches x batch_size x seq_len + 1 held-out tokens.",
)
@click.option("--min-node-version", help="Refuse nodes older than this gpt5os version.")
@click.option("--lease-seconds", type=click.FloatRange(min=0, min_open=True))
@click.option("--heartbeat-seconds", type=click.FloatRange(min=0, min_open=True))
@click.option("--max-leases-per-node", type=click.IntRange(min=1))
@click.option(
    "--admission",
    type=click.Choice(MODES),
    default=DEFAULT_MODE,
    show_default=True,
    help="open: any node may join; invite-only: a node needs an invite (`invite`) or its key "
    "allowed (`allow`) to join the first time.",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Make a self-signed TLS certificate and key in RUN_DIR/tls; `serve` then speaks TLS and "
    "prints the certificate's fingerprint, which nodes pin with --coordinator-fingerprint.",
)
@click.option(
    "--tls-host",
    "tls_hosts",
    multiple=True,
    metavar="NAME|IP",
    help="With --tls: a host name or IP address nodes use to reach the coordinator (repeatable).",
)
def init(
    run_dir: Path, data_dir: Path, tls: bool, tls_hosts: tuple[str, ...], **options: Any
) -> None:
    """Create a run in --dir from data prepared with `gpt5os-coordinator data prepare`."""
    from gpt5os.common.tls import fingerprint, make_self_signed

    options["inner_name"] = options.pop("inner_name")
    try:
        spec = create_run(run_dir, data_dir, **options)
        ensure_keeper_key(run_dir)
        ensure_coordinator_key(run_dir)
        if tls:
            files = make_self_signed(run_dir, list(tls_hosts))
            click.echo(
                f"gpt5os-coordinator: TLS certificate {files.cert} (key {files.key}), "
                f"sha256 fingerprint {fingerprint(files.cert.read_bytes())}"
            )
    except EXPECTED as e:
        raise _fail(e) from None
    start = ""
    if options.get("from_checkpoint") is not None:
        start = f" from {options['from_checkpoint']} (round-0 checkpoint in {run_dir}/checkpoints)"
    if options.get("admission") == adm.INVITE_ONLY:
        start += " (invite-only: admit nodes with `gpt5os-coordinator invite` or `allow`)"
    click.echo(
        f"gpt5os-coordinator: created run {spec.run_id} (preset {spec.model.preset}) in {run_dir}"
        f"{start}; serve it with `gpt5os-coordinator serve --dir {run_dir}`"
    )


# -- export ----------------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory."
)
@click.option(
    "--format",
    "fmt",
    required=True,
    metavar="safetensors|rwkv-pth",
    help="safetensors: loads with gpt5os.model.load_checkpoint; rwkv-pth: the official RWKV-7 "
    "layout (the `rwkv` package, ChatRWKV, RWKV-Runner).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="File to write.")
@click.option("--round", "round_", type=click.IntRange(min=0), help="Default: the latest.")
@click.option(
    "--dtype",
    default="fp32",
    show_default=True,
    metavar="fp32|bf16",
    help="Tensor type of an rwkv-pth file (official releases are bf16).",
)
def export(run_dir: Path, fmt: str, out: Path, round_: int | None, dtype: str) -> None:
    """Write the run's latest (or --round N's) checkpoint as a model file."""
    from gpt5os.coordinator.model_files import export_checkpoint

    if not run_dir.is_dir():
        raise click.ClickException(f"run directory {run_dir} does not exist")
    try:
        info = export_checkpoint(run_dir, fmt, out, round=round_, pth_dtype=dtype)
    except (*EXPECTED, LookupError) as e:
        raise _fail(e) from None
    click.echo(
        f"gpt5os-coordinator: exported round {info.round} ({info.tokens:,} tokens, params sha256 "
        f"{info.params_sha256[:16]}) as {fmt} to {out}"
    )
    if fmt == "rwkv-pth" and out.suffix == ".pth":
        # rwkv.model.RWKV appends ".pth" to the name it is given (rwkv 0.8.32)
        click.echo(f"load it with rwkv: RWKV(model={str(out.with_suffix(''))!r}, ...)")


# -- serve -----------------------------------------------------------------------------------


def _ensure_run(run_dir: Path) -> None:
    """An empty or missing RUN_DIR gets the embedded default run (stdlib data, preset tiny)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise click.ClickException(f"{run_dir} is not a directory")
    try:
        entries = set(os.listdir(run_dir)) if run_dir.exists() else set()
    except OSError as e:
        raise click.ClickException(f"cannot read run directory {run_dir}: {e.strerror}") from None
    if RUN_FILE in entries:
        if not os.access(run_dir / RUN_FILE, os.R_OK) or not os.access(run_dir, os.W_OK):
            raise click.ClickException(
                f"cannot read and write run directory {run_dir}: check its permissions"
            )
        return
    if entries - {"data"}:
        raise click.ClickException(
            f"{run_dir} is not empty and holds no run ({RUN_FILE} missing): choose an empty "
            f"directory, or create a run with `gpt5os-coordinator init --dir {run_dir} --data DIR`"
        )
    from gpt5os.coordinator.data.prepare import prepare

    click.echo(
        f"gpt5os-coordinator: preparing the default run in {run_dir} (stdlib data, preset tiny)",
        err=True,
    )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        prepare(["stdlib"], run_dir / "data", progress=sys.stderr.isatty())
        create_run(run_dir, run_dir / "data", preset="tiny")
    except click.ClickException:
        raise
    except Exception as e:  # the data pipeline's own errors carry actionable messages
        raise _fail(e) from None


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


@main.command()
@click.option(
    "--dir", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=50051, show_default=True)
@click.option("--port-file", type=click.Path(path_type=Path), help="Write the bound port here.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics.")
@click.option("--dht/--no-dht", default=True, show_default=True, help="Run a DHT bootstrap peer.")
@click.option(
    "--keeper/--no-keeper",
    default=True,
    show_default=True,
    help="Run the keeper (the run's checkpointed replica of the model) as a child process.",
)
@click.option(
    "--checkpoint-every", type=click.IntRange(min=1), help="Default: 1 for tiny, else 10."
)
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--swarm-token-lifetime",
    type=click.FloatRange(min=5.0),
    default=TOKEN_LIFETIME_S,
    show_default=True,
    help="Seconds a hivemind swarm token admits its holder (at least 3 heartbeats); renewed at "
    "half its life or two heartbeats before its end (a banned node's is not).",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Serve TLS with this PEM certificate (e.g. one a CA signed) instead of RUN_DIR/tls's.",
)
@click.option(
    "--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="Its key (mode 0600)."
)
@click.option(
    "--node-rate",
    type=click.FloatRange(min=0),
    default=NODE_RATE,
    show_default=True,
    help="Requests per second one node (or one address) may send, sustained; 0: no limit.",
)
@click.option(
    "--node-burst",
    type=click.FloatRange(min=1),
    default=NODE_BURST,
    show_default=True,
    help="Requests one node may send at once above --node-rate.",
)
@click.option(
    "--max-watchers",
    type=click.IntRange(min=0),
    default=MAX_WATCHERS,
    show_default=True,
    help="Concurrent WatchSwarm streams (dashboards); 0: no limit.",
)
def serve(
    run_dir: Path,
    host: str,
    port: int,
    port_file: Path | None,
    metrics_port: int | None,
    dht: bool,
    keeper: bool,
    checkpoint_every: int | None,
    keep_checkpoints: int,
    swarm_token_lifetime: float,
    tls_cert: Path | None,
    tls_key: Path | None,
    node_rate: float,
    node_burst: float,
    max_watchers: int,
) -> None:
    """Serve the run in --dir (an empty or missing --dir gets the default stdlib run).

    With a certificate (`init --tls`, or --tls-cert/--tls-key) it serves TLS only."""
    from gpt5os.common.tls import TlsFiles

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("give both --tls-cert and --tls-key, or neither")
    _ensure_run(run_dir)
    tls = TlsFiles(tls_cert, tls_key) if tls_cert is not None else TlsFiles.of_run(run_dir)
    if tls_cert is None and not tls.exists():
        tls = None
    limits = Limits(node_rate=node_rate, node_burst=node_burst, max_watchers=max_watchers)
    keeper_options = None
    if keeper:
        from gpt5os.coordinator.keeper_process import KeeperOptions

        keeper_options = KeeperOptions(
            run_dir=run_dir,
            coordinator="",  # filled in once the port is bound
            host=host,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
        )
    try:
        asyncio.run(
            _serve(
                run_dir,
                host,
                port,
                port_file,
                metrics_port,
                dht,
                keeper_options,
                swarm_token_lifetime,
                tls,
                limits,
            )
        )
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        pass


def _log_to_stderr() -> None:
    import logging

    logger = logging.getLogger("gpt5os.coordinator")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


async def _serve(
    run_dir: Path,
    host: str,
    port: int,
    port_file: Path | None,
    metrics_port: int | None,
    dht: bool,
    keeper_options: Any,
    swarm_token_lifetime: float = TOKEN_LIFETIME_S,
    tls: Any = None,
    limits: Any = None,
) -> None:
    import dataclasses

    from gpt5os.coordinator.keeper_process import KeeperSupervisor
    from gpt5os.coordinator.server import CoordinatorServer, ServeError

    server = CoordinatorServer(
        run_dir,
        host=host,
        port=port,
        metrics_port=metrics_port,
        start_dht=dht,
        swarm_token_lifetime_s=swarm_token_lifetime,
        tls=tls,
        limits=limits,
    )
    stop = asyncio.Event()
    try:
        bound = await server.start()
    except ServeError as e:
        raise click.ClickException(str(e)) from None
    _log_to_stderr()  # one line per admission decision and refusal, with the node id
    # After start: the DHT child process must not inherit these handlers (see dht.py).
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = None
    try:
        if keeper_options is not None:
            reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            options = dataclasses.replace(
                keeper_options, coordinator=f"{reach}:{bound}", fingerprint=server.fingerprint
            )
            supervisor = KeeperSupervisor(options)
            supervisor.start()
        if port_file is not None:
            _write_port_file(port_file, bound)
        extra = f", metrics on {host}:{server.metrics_port}" if metrics_port is not None else ""
        if server.dht_maddrs:
            peers = " ".join(server.dht_maddrs)
            click.echo(f"gpt5os-coordinator: DHT bootstrap peer {peers}", err=True)
        if server.fingerprint is not None:
            extra += f", TLS certificate sha256 fingerprint {server.fingerprint}"
        click.echo(
            f"gpt5os-coordinator: serving run {server.swarm.run_id} on {host}:{bound}{extra}"
        )
        sys.stdout.flush()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if supervisor is not None:
                supervisor.poll()
        click.echo("gpt5os-coordinator: shutting down", err=True)
    except OSError as e:
        raise click.ClickException(f"cannot write port file {port_file}: {e.strerror}") from None
    finally:
        if supervisor is not None:
            await asyncio.to_thread(supervisor.stop)
        await server.stop(grace=1.0)


@main.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--coordinator", default="127.0.0.1:50051", show_default=True, help="HOST:PORT.")
@click.option(
    "--checkpoint-every", type=click.IntRange(min=1), help="Default: 1 for tiny, else 10."
)
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--dht-listen", default="/ip4/0.0.0.0/tcp/0", show_default=True)
@click.option("--coordinator-fingerprint", "fingerprint", help=FINGERPRINT_HELP)
@click.option("--tls", is_flag=True, help=TLS_HELP)
@click.option("-v", "--verbose", is_flag=True)
def keeper(
    run_dir: Path,
    coordinator: str,
    checkpoint_every: int | None,
    keep_checkpoints: int,
    dht_listen: str,
    fingerprint: str | None,
    tls: bool,
    verbose: bool,
) -> None:
    """Run the keeper for the run in --dir against a coordinator (e.g. on another machine; it
    needs the run directory's keeper_key.pem). `serve` starts one itself unless --no-keeper."""
    if not (run_dir / "keeper_key.pem").exists():
        raise click.ClickException(
            f"{run_dir / 'keeper_key.pem'} not found: copy the run directory's keeper key here"
        )
    args = [
        sys.executable, "-m", "gpt5os.node.keeper_cli", "--dir", str(run_dir),
        "--coordinator", coordinator, "--keep-checkpoints", str(keep_checkpoints),
        "--dht-listen", dht_listen,
    ]  # fmt: skip
    if checkpoint_every is not None:
        args += ["--checkpoint-every", str(checkpoint_every)]
    args += _security(fingerprint, tls).args()
    if verbose:
        args.append("-v")
    sys.stdout.flush()
    os.execv(sys.executable, args)  # the keeper is node code: a process of its own


# -- status ----------------------------------------------------------------------------------


def _status_from_dir(run_dir: Path) -> dict[str, Any]:
    from gpt5os.coordinator.checkpoints import CheckpointDir
    from gpt5os.coordinator.snapshot import status_dict
    from gpt5os.coordinator.swarm import open_swarm

    config = load_run(run_dir)
    sw = open_swarm(run_dir, config, now=time.time(), readonly=True)
    try:
        return status_dict(sw, time.time(), CheckpointDir(run_dir).latest())
    finally:
        sw.store.close()


def _security(fingerprint: str | None, tls: bool) -> Any:
    from gpt5os.common.channels import ChannelError, Security

    try:
        return Security.from_options(fingerprint, tls)
    except ChannelError as e:
        raise click.ClickException(str(e)) from None


def _status_from_server(address: str, timeout: float, security: Any) -> dict[str, Any]:
    import grpc
    from gpt5os.common.channels import ChannelError, open_channel
    from gpt5os.coordinator.snapshot import snapshot_dict
    from gpt5os.proto import pb, pb_grpc

    try:
        channel = open_channel(address, security)
    except ChannelError as e:
        raise click.ClickException(str(e)) from None
    with channel:
        try:
            snap = pb_grpc.CoordinatorStub(channel).GetStatus(
                pb.GetStatusRequest(), timeout=timeout
            )
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise click.ClickException(
                    f"no coordinator answers at {address}: check the address and that it is running"
                ) from None
            raise click.ClickException(f"coordinator at {address}: {e.details()}") from None
    return snapshot_dict(snap)


def _summary(s: dict[str, Any]) -> str:
    sh = s["shards"]
    active = [n for n in s["nodes"] if n["state"] == "active"]
    last = s["loss_history"][-1][1] if s["loss_history"] else None
    lines = [
        f"run {s['run_id']} ({s['preset']}){'  PAUSED' if s['paused'] else ''}",
        f"epoch {s['epoch']}  outer round {s['outer_round']}  "
        f"shards done {sh['done']}/{sh['total']} (leased {sh['leased']}, pending {sh['pending']})",
        f"nodes {len(active)} active / {len(s['nodes'])} known  tokens {s['tokens_trained']:,}  "
        f"{s['tokens_per_second']:,.0f} tokens/s  loss {'-' if last is None else f'{last:.4f}'}",
        _checkpoint_line(s["checkpoint"], s["server_unix"]),
    ]
    keeper = s.get("keeper") or {}
    cert = keeper.get("certified")
    if keeper.get("last_report_unix"):
        state = "live" if keeper["live"] else "DOWN"
        line = f"keeper {state}, last round {keeper['last_round']}"
        if keeper.get("checkpoint_round") is not None:
            line += f", checkpoint round {keeper['checkpoint_round']}"
        lines.append(line)
    if cert:
        lines.append(
            f"certified round {cert['round']} ({cert['source']}) sha256 {cert['params_sha256'][:16]}"
        )
    for n in active[:20]:
        loss = "-" if n["last_loss"] is None else f"{n['last_loss']:.4f}"
        lines.append(
            f"  {n['node_id']}  {n['device'] or '?':<12} {n['tokens_per_second']:>10,.0f} tok/s  "
            f"{n['tokens_trained']:>12,} tokens  loss {loss}"
        )
    return "\n".join(lines)


def _checkpoint_line(c: dict[str, Any] | None, now: float) -> str:
    if c is None:
        return "checkpoint: none yet"
    age = max(0.0, now - c["written_at"])
    return (
        f"checkpoint: round {c['round']}  {c['tokens']:,} tokens  {age:,.0f}s ago  "
        f"sha256 {c['params_sha256'][:16]}  {c['path']}"
    )


@main.command()
@click.option("--dir", "run_dir", type=click.Path(path_type=Path), help="Read the run's database.")
@click.option("--coordinator", "address", help="Ask a running coordinator (HOST:PORT).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", type=float, default=10.0, show_default=True)
@click.option("--coordinator-fingerprint", "fingerprint", help=FINGERPRINT_HELP)
@click.option("--tls", is_flag=True, help=TLS_HELP)
def status(
    run_dir: Path | None,
    address: str | None,
    as_json: bool,
    timeout: float,
    fingerprint: str | None,
    tls: bool,
) -> None:
    """Show the run's state (from --dir, or from a coordinator over gRPC)."""
    if (run_dir is None) == (address is None):
        raise click.UsageError("give exactly one of --dir RUN_DIR or --coordinator HOST:PORT")
    security = _security(fingerprint, tls)
    try:
        s = (
            _status_from_dir(run_dir)
            if run_dir is not None
            else _status_from_server(address, timeout, security)
        )
    except EXPECTED as e:
        raise _fail(e) from None
    click.echo(json.dumps(s, indent=1) if as_json else _summary(s))


# -- pause / resume / ban / unban ------------------------------------------------------------------


def _open_store(run_dir: Path) -> Store:
    if not (run_dir / DB_NAME).is_file():
        raise click.ClickException(f"{run_dir} holds no run ({DB_NAME} missing)")
    try:
        return Store(run_dir / DB_NAME)
    except StoreError as e:
        raise _fail(e) from None


def _set_paused(run_dir: Path, paused: bool) -> None:
    store = _open_store(run_dir)
    try:
        with store.tx():
            store.set_meta("paused", int(paused))
    finally:
        store.close()
    word = "paused: no new leases until `resume`" if paused else "resumed: leasing again"
    click.echo(f"gpt5os-coordinator: run in {run_dir} {word}")


@main.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path))
def pause(run_dir: Path) -> None:
    """Stop handing out leases (a running server notices within a second)."""
    _set_paused(run_dir, True)


@main.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path))
def resume(run_dir: Path) -> None:
    """Hand out leases again."""
    _set_paused(run_dir, False)


@main.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path))
@click.option("--reason", default="banned by the maintainer", show_default=True)
@click.argument("node_id")
def ban(run_dir: Path, reason: str, node_id: str) -> None:
    """Ban NODE_ID (full id or unique prefix): its leases return to the queue, it cannot rejoin
    (until `unban`); a running coordinator refuses it within a second."""
    store = _open_store(run_dir)
    try:
        ids = [n["node_id"] for n in store.nodes() if n["node_id"].startswith(node_id)]
        if not ids or not node_id:
            raise click.ClickException(f"no node {node_id!r} in the run in {run_dir}")
        if len(ids) > 1:
            raise click.ClickException(f"{node_id!r} matches {len(ids)} nodes: give more of the id")
        with store.tx():
            store.add_ban(ids[0], time.time(), reason)
    finally:
        store.close()
    click.echo(f"gpt5os-coordinator: banned node {ids[0]}")


@main.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path))
@click.argument("node_id")
def unban(run_dir: Path, node_id: str) -> None:
    """Lift the ban of NODE_ID (full id or unique prefix): it may join again."""
    store = _open_store(run_dir)
    try:
        ids = [b for b in store.bans() if b.startswith(node_id)] if node_id else []
        if not ids:
            raise click.ClickException(f"no banned node {node_id!r} in the run in {run_dir}")
        if len(ids) > 1:
            raise click.ClickException(
                f"{node_id!r} matches {len(ids)} banned nodes: give more of the id"
            )
        with store.tx():
            store.remove_ban(ids[0])
    finally:
        store.close()
    click.echo(f"gpt5os-coordinator: unbanned node {ids[0]}: it may join again")


# -- admission: invite / allow ---------------------------------------------------------------


def _admission(run_dir: Path) -> tuple[Store, adm.Admission]:
    store = _open_store(run_dir)
    try:
        mode = load_run(run_dir).admission
    except EXPECTED as e:
        store.close()
        raise _fail(e) from None
    return store, adm.Admission(store, mode)


@main.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--uses",
    type=click.IntRange(min=1),
    default=adm.DEFAULT_INVITE_USES,
    show_default=True,
    help="How many nodes (keys) the invite admits.",
)
@click.option(
    "--expires",
    default=adm.DEFAULT_INVITE_EXPIRY,
    show_default=True,
    metavar="DURATION",
    help="How long the invite stays valid: e.g. 30m, 12h, 7d, 2w, or never.",
)
def invite(run_dir: Path, uses: int, expires: str) -> None:
    """Print a new invite token for an invite-only run (alone on stdout); a node joins with
    `gpt5os-node join --invite TOKEN`, and its key stays admitted for good."""
    try:
        expires_s = adm.parse_duration(expires)
    except ValueError as e:
        raise click.ClickException(f"--expires: {e}") from None
    store, admission = _admission(run_dir)
    try:
        if admission.mode != adm.INVITE_ONLY:
            raise click.ClickException(
                f"the run in {run_dir} is {admission.mode}: every node joins without an invite "
                f"(invites are for runs made with `init --admission {adm.INVITE_ONLY}`)"
            )
        token = admission.create_invite(time.time(), uses=uses, expires_s=expires_s)
    except EXPECTED as e:
        raise _fail(e) from None
    finally:
        store.close()
    click.echo(token)


@main.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path))
@click.argument("node")
def allow(run_dir: Path, node: str) -> None:
    """Admit NODE (its id, the first line of `gpt5os-node identity`, or its public key) to an
    invite-only run: it joins without an invite."""
    try:
        node_id = adm.node_id_from(node)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    store, admission = _admission(run_dir)
    try:
        if node_id in store.bans():
            raise click.ClickException(
                f"node {node_id} is banned: lift the ban first with `gpt5os-coordinator unban`"
            )
        added = admission.allow(node_id, time.time())
    except EXPECTED as e:
        raise _fail(e) from None
    finally:
        store.close()
    note = "" if added else " (it was admitted already)"
    if admission.mode == adm.OPEN:
        note += f" (the run is {adm.OPEN}: every node is admitted anyway)"
    click.echo(f"gpt5os-coordinator: allowed node {node_id}{note}")


@main.command()
@click.option("--dir", "run_dir", required=True, type=click.Path(path_type=Path))
@click.option("--set", "changes", multiple=True, metavar="KEY=VALUE", help="e.g. inner_lr=1e-3")
def spec(run_dir: Path, changes: tuple[str, ...]) -> None:
    """Print the run spec, or change it with --set (bumps its revision).

    A running server hands the new spec to every node that joins from then on; nodes already
    training see the new revision in their next heartbeat and log that a restart picks it up.
    """
    try:
        if not changes:
            click.echo(load_run(run_dir).spec.to_json())
            return
        pairs = {}
        for item in changes:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. inner_lr=1e-3")
            pairs[key] = value
        new = update_spec(run_dir, pairs)
    except EXPECTED as e:
        raise _fail(e) from None
    click.echo(f"gpt5os-coordinator: run {new.run_id} spec is now revision {new.revision}")
