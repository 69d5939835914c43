"""`gpt5os-dashboard`: watch a gpt5os run from the terminal.

    gpt5os-dashboard [--coordinator HOST:PORT] [--coordinator-fingerprint FP | --tls]
                     [--snapshot FILE.svg [--snapshot-timeout S]]

Interactive mode never gives up on an unreachable coordinator (it says so and retries with
backoff); `--snapshot` is for scripts, so it exits non-zero with one line once the timeout passes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_COORDINATOR = "127.0.0.1:50051"


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit code 2: scripts and people both read it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 120x40") from None
    if w < 40 or h < 12:
        raise argparse.ArgumentTypeError(f"{text!r} is too small (at least 40x12)")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="gpt5os-dashboard",
        description="Live terminal view of a gpt5os training run (WatchSwarm stream).",
    )
    p.add_argument(
        "--coordinator",
        default=DEFAULT_COORDINATOR,
        metavar="HOST:PORT",
        help=f"the coordinator's gRPC address (default {DEFAULT_COORDINATOR})",
    )
    p.add_argument(
        "--coordinator-fingerprint",
        metavar="SHA256",
        help="talk TLS and accept only the coordinator certificate with this fingerprint",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="talk TLS to a coordinator whose certificate a trusted CA signed",
    )
    p.add_argument(
        "--snapshot",
        type=Path,
        metavar="FILE.svg",
        help="render once the first snapshot arrives, write it as SVG and exit",
    )
    p.add_argument(
        "--snapshot-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="with --snapshot: give up after S seconds without a snapshot (default 30)",
    )
    p.add_argument(
        "--size",
        type=_size,
        default=(120, 40),
        metavar="WxH",
        help="with --snapshot: the terminal size to render (default 120x40)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here so `--help` and argument errors stay instant.
    from gpt5os.common.channels import ChannelError, Security
    from gpt5os.dashboard.app import DashboardApp
    from gpt5os.dashboard.feed import CoordinatorSource

    prog = "gpt5os-dashboard"
    try:
        security = Security.from_options(args.coordinator_fingerprint, args.tls)
        source = CoordinatorSource(args.coordinator, security=security)
    except (ValueError, ChannelError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if args.snapshot is not None:
        if args.snapshot_timeout <= 0:
            print(f"{prog}: error: --snapshot-timeout must be positive", file=sys.stderr)
            return 2
        parent = args.snapshot.expanduser().resolve().parent
        if not parent.is_dir():
            print(f"{prog}: error: folder {parent} does not exist for --snapshot", file=sys.stderr)
            return 2
        app = DashboardApp(
            source,
            snapshot_path=args.snapshot.expanduser().resolve(),
            snapshot_timeout=args.snapshot_timeout,
        )
        app.run(headless=True, size=args.size)
    else:
        app = DashboardApp(source)
        app.run()
    if app.error_line:
        print(f"{prog}: {app.error_line}", file=sys.stderr)
    if app.return_code is None:
        return 1  # the app never ran to completion (its own error went to the terminal)
    return app.return_code


if __name__ == "__main__":
    sys.exit(main())
