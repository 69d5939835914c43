"""The main screen's panels. Each renders from a `SwarmView` through `show(...)` and owns no data.

Widgets only format: every number they print (tokens/s, coverage, ETA, shard counts, round
means) is the coordinator's; sorting and filtering come from `swarm_view`.
"""

from __future__ import annotations

from collections.abc import Callable

from gpt5os.dashboard.swarm_view import (
    SortKey,
    SwarmView,
    checkpoint_text,
    format_ago,
    format_count,
    format_duration,
    format_loss,
    short_id,
)
from gpt5os.proto import pb
from rich.text import Text
from textual.containers import Vertical
from textual.widgets import DataTable, RichLog, Sparkline, Static
from textual_plotext import PlotextPlot


class RunHeader(Static):
    """Run id, preset, epoch, round, tokens, coverage, tokens/s, ETA; the connection line with the
    newest checkpoint's round and age."""

    def show(
        self, view: SwarmView, connection: str, connection_ok: bool, server_now: float = 0.0
    ) -> None:
        text = Text()
        text.append(" gpt5os ", style="bold reverse")
        run = view.run
        if run is None:
            text.append("  waiting for the coordinator's first snapshot", style="italic")
        else:
            fields = [
                ("", run.run_id or "-", ""),
                ("", run.preset or "-", ""),
                ("epoch ", str(run.epoch), ""),
                ("round ", str(run.outer_round), ""),
                ("", format_count(run.tokens_trained), " tokens"),
                ("", f"{run.epoch_coverage * 100:.1f}%", " of epoch"),
                ("", format_count(run.tokens_per_second), " tok/s"),
                ("ETA ", format_duration(run.eta_s), ""),
                ("", str(run.active_nodes), " nodes"),
            ]
            for i, (before, value, after) in enumerate(fields):
                text.append(" · " if i else "  ", style="dim")
                text.append(before, style="dim")
                text.append(value, style="bold")
                text.append(after, style="dim")
            if run.paused:
                text.append(" · PAUSED", style="bold yellow")
            keeper = view.keeper
            if keeper is not None and keeper.last_report_unix > 0:
                text.append(" · ", style="dim")
                if keeper.live:
                    text.append("keeper ", style="dim")
                    text.append(f"round {keeper.last_round}", style="bold green")
                else:
                    text.append("keeper DOWN", style="bold red")
                if keeper.checkpoint_round:
                    text.append(f" (checkpoint round {keeper.checkpoint_round})", style="dim")
        text.append("\n")
        style = "green" if connection_ok else "bold red"
        text.append(" ● " if connection_ok else " ✖ ", style=style)
        text.append(connection, style=None if connection_ok else style)
        ckpt = checkpoint_text(view.run, server_now) if view.has_snapshot else ""
        if ckpt:
            text.append(" · ", style="dim")
            saved = view.run is not None and view.run.HasField("checkpoint")
            text.append(ckpt, style="bold" if saved else "yellow")
        self.update(text)


class LossChart(PlotextPlot):
    """Training loss against swarm tokens, and validation loss when the run reports it."""

    def show(self, view: SwarmView) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        train = list(view.loss_history)
        val = list(view.val_loss_history)
        scale, unit = token_scale(max([t for t, _ in train + val], default=0))
        if train:
            plt.plot([t / scale for t, _ in train], [v for _, v in train], label="train loss")
        if val:
            plt.plot(
                [t / scale for t, _ in val], [v for _, v in val], label="val loss", marker="dot"
            )
        if not (train or val):
            plt.title("loss - no reports yet")
        plt.xlabel(f"tokens{unit}")
        self.refresh()


def token_scale(max_tokens: float) -> tuple[float, str]:
    if max_tokens >= 1e9:
        return 1e9, " (G)"
    if max_tokens >= 1e6:
        return 1e6, " (M)"
    if max_tokens >= 1e4:
        return 1e3, " (k)"
    return 1.0, ""


class ThroughputPanel(Vertical):
    """Swarm tokens/s over time: a sparkline under a one-line summary."""

    def compose(self):
        yield Static(id="throughput-label")
        yield Sparkline([], id="throughput-spark")

    def show(self, view: SwarmView) -> None:
        points = [tps for _, tps in view.throughput_history]
        now = view.run.tokens_per_second if view.run else 0.0
        label = Text()
        label.append("tok/s ", style="bold")
        label.append(format_count(now))
        if points:
            label.append(f"  peak {format_count(max(points))}", style="dim")
        self.query_one("#throughput-label", Static).update(label)
        # one point would paint a full bar: a trend needs two
        self.query_one("#throughput-spark", Sparkline).data = points if len(points) > 1 else []


class ShardBar(Static):
    """This epoch's shards as one bar: done, leased, pending (the coordinator's counts)."""

    _view: SwarmView | None = None

    def show(self, view: SwarmView) -> None:
        self._view = view
        shards = view.run.shards if view.run else pb.ShardProgress()
        width = max(10, self.size.width - 2) if self.size.width else 30
        total = shards.total
        text = Text()
        text.append("shards ", style="bold")
        text.append(f"{shards.done}/{total} done, {shards.leased} leased")
        text.append("\n")
        if total:
            done = round(width * shards.done / total)
            leased = min(width - done, round(width * shards.leased / total))
            text.append("█" * done, style="green")
            text.append("█" * leased, style="yellow")
            text.append("░" * (width - done - leased), style="dim")
        else:
            text.append("░" * width, style="dim")
        self.update(text)

    def on_resize(self) -> None:
        if self._view is not None:  # the bar's width follows the panel's
            self.show(self._view)


class Leaderboard(Static):
    """Tokens trained per node: the credit volunteers come to see."""

    def show(self, view: SwarmView, limit: int = 10) -> None:
        text = Text()
        text.append("leaderboard", style="bold")
        text.append("  tokens trained\n", style="dim")
        top = view.leaderboard(limit)
        if not top:
            text.append("no nodes yet", style="italic dim")
        best = max((n.tokens_trained for n in top), default=0) or 1
        for i, node in enumerate(top, 1):
            name = (node.display_name or short_id(node.node_id))[:14]
            bar = "▇" * max(1, round(8 * node.tokens_trained / best)) if node.tokens_trained else ""
            text.append(f"{i:>2}. {name:<14} {format_count(node.tokens_trained):>7} ")
            text.append(bar, style="magenta")
            if i < len(top):
                text.append("\n")
        self.update(text)


EVENT_STYLES = {
    "joined": "green",
    "left": "dim",
    "lost": "red",
    "lease_expired": "yellow",
    "banned": "bold red",
    "round_finished": "cyan",
    "shard_completed": "blue",
}


SHORT_KINDS = {"round_finished": "round", "lease_expired": "expired", "shard_completed": "shard"}


class EventLog(RichLog):
    """Joins, leaves, lost leases, finished rounds, bans; newest at the bottom."""

    def __init__(self, *, localtime: Callable, **kwargs) -> None:
        super().__init__(max_lines=500, wrap=True, min_width=20, markup=False, **kwargs)
        self._localtime = localtime
        self._last_id = -1
        self._snapshots_seen = -1
        self._view: SwarmView | None = None
        self._wrapped_at = 0

    def on_resize(self) -> None:
        # RichLog wraps lines when written: after a resize, write them again at the new width
        if self._view is not None and self.size.width != self._wrapped_at:
            self._snapshots_seen = -1
            self.show(self._view)

    def show(self, view: SwarmView) -> None:
        self._view = view
        self._wrapped_at = self.size.width
        if view.snapshots_seen != self._snapshots_seen:  # a fresh snapshot: start over
            self.clear()
            self._last_id = -1
            self._snapshots_seen = view.snapshots_seen
            if not view.events:
                self.write(Text("no events yet", style="italic dim"))
        for ev in view.events:
            if ev.id <= self._last_id and ev.id != 0:
                continue
            self._last_id = max(self._last_id, ev.id)
            t = self._localtime(ev.unix)
            line = Text()
            line.append(f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} ", style="dim")
            kind = SHORT_KINDS.get(ev.kind, ev.kind)
            line.append(f"{kind:<7}", style=EVENT_STYLES.get(ev.kind, ""))
            if ev.node_id:
                line.append(f" {short_id(ev.node_id)}")
            if ev.message:
                line.append(f" {ev.message}", style="dim")
            self.write(line)
        # the newest event must be in sight, also when the log was filled before its layout
        self.call_after_refresh(self.scroll_end, animate=False)


COLUMNS: tuple[tuple[SortKey, str, int], ...] = (
    ("id", "id", 8),
    ("name", "name", 9),
    ("state", "state", 6),
    ("tps", "tok/s", 7),
    ("tokens", "tokens", 7),
    ("loss", "loss", 6),
    ("seen", "seen", 7),
    ("device", "device", 10),
)


class NodesTable(DataTable):
    """One row per node, keyed by node id so the cursor stays on its node across updates."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True

    def show(
        self,
        nodes: list[pb.NodeStatus],
        *,
        sort_key: SortKey,
        descending: bool,
        server_now: float,
    ) -> None:
        selected = self._selected_key()
        self.clear(columns=True)
        for key, label, width in COLUMNS:
            arrow = (" ▼" if descending else " ▲") if key == sort_key else ""
            self.add_column(label + arrow, key=key, width=width + len(arrow))
        for n in nodes:
            state_style = {"active": "green", "lost": "red", "banned": "bold red"}.get(
                n.state, "dim"
            )
            self.add_row(
                short_id(n.node_id),
                n.display_name[:9],
                Text(n.state, style=state_style),
                Text(format_count(n.tokens_per_second), justify="right"),
                Text(format_count(n.tokens_trained), justify="right"),
                Text(format_loss(n.last_loss), justify="right"),
                Text(format_ago(server_now - n.last_seen_unix) if n.last_seen_unix else "-"),
                _short_device(n.device),
                key=n.node_id,
            )
        if selected is not None and selected in {n.node_id for n in nodes}:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def _selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # the cursor sits outside a just-cleared table
            return None

    def selected_node_id(self) -> str | None:
        return self._selected_key()


def _short_device(device: str) -> str:
    """'cuda:NVIDIA GeForce RTX 4090' -> 'RTX 4090': the model number is what people compare."""
    text = device.split(":", 1)[1] if device.startswith("cuda:") else device
    for prefix in ("NVIDIA GeForce ", "NVIDIA ", "AMD Radeon "):
        text = text.removeprefix(prefix)
    return text[:10]
