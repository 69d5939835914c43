"""One node's detail, fetched with GetNode: its loss and throughput history, leases and rounds.

It asks the coordinator when opened and every few seconds while open; Escape goes back.
"""

from __future__ import annotations

from gpt5os.dashboard.feed import SourceError
from gpt5os.dashboard.swarm_view import (
    format_ago,
    format_count,
    format_duration,
    format_loss,
    short_id,
)
from gpt5os.dashboard.widgets import token_scale
from gpt5os.proto import pb
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Sparkline, Static
from textual_plotext import PlotextPlot

REFRESH_S = 5.0


class NodeScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("r", "reload", "reload"),
    ]

    def __init__(self, node_id: str, *, clock, **kwargs) -> None:
        super().__init__(**kwargs)
        self.node_id = node_id
        self._clock = clock
        self.detail: pb.NodeDetail | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"loading node {short_id(self.node_id)}...", id="node-header")
        with Horizontal(id="node-charts"):
            yield PlotextPlot(id="node-loss")
            with Vertical(id="node-side"):
                yield Static(id="node-tps-label")
                yield Sparkline([0.0], id="node-tps")
        with Horizontal(id="node-tables"):
            yield DataTable(id="node-leases", cursor_type="none")
            yield DataTable(id="node-rounds", cursor_type="none")
        yield Footer()

    def on_mount(self) -> None:
        leases = self.query_one("#node-leases", DataTable)
        leases.border_title = "leases held"
        leases.add_columns("shard", "tokens", "epoch", "deadline")
        rounds = self.query_one("#node-rounds", DataTable)
        rounds.border_title = "rounds taken part in"
        rounds.add_columns("round", "peers", "tokens", "loss", "took")
        self.action_reload()
        self.set_interval(REFRESH_S, self.action_reload)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_reload(self) -> None:
        self._load()

    @work(exclusive=True, group="node-detail")
    async def _load(self) -> None:
        try:
            detail = await self.app.source.get_node(self.node_id)  # type: ignore[attr-defined]
        except SourceError as err:
            self.error = str(err)
            self.query_one("#node-header", Static).update(
                Text(f"cannot load node {short_id(self.node_id)}: {err}", style="bold red")
            )
            return
        self.error = None
        self.detail = detail
        self.show(detail)

    def show(self, detail: pb.NodeDetail) -> None:
        n = detail.node
        head = Text()
        head.append(f" node {n.node_id} ", style="bold reverse")
        head.append(f"  {n.display_name or '-'}", style="bold")
        head.append(f"  {n.device or '-'}  state {n.state}  v{n.software_version or '?'}\n")
        head.append(
            f" {format_count(n.tokens_trained)} tokens trained  "
            f"{format_count(n.tokens_per_second)} tok/s  last loss {format_loss(n.last_loss)}  "
            f"{n.shards_done} shards  {n.rounds} rounds  "
            f"joined {format_ago(self._clock() - n.joined_unix) if n.joined_unix else '-'}"
        )
        self.query_one("#node-header", Static).update(head)

        plot = self.query_one("#node-loss", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        points = [(p.tokens, p.loss) for p in detail.loss_history]
        xs = [t for t, _ in points]
        unit = ""
        cumulative = all(a <= b for a, b in zip(xs, xs[1:], strict=False))
        if points:
            # tokens that only grow are a position in training; otherwise (per-report counts)
            # the report's order is the honest x axis
            scale, unit = token_scale(max(xs))
            x = [t / scale for t in xs] if cumulative else list(range(1, len(points) + 1))
            plt.plot(x, [v for _, v in points], label="this node's loss")
        else:
            plt.title("this node's loss - no reports yet")
        plt.xlabel(f"tokens{unit}" if points and cumulative else "report")
        plot.refresh()

        tps = [p.tokens_per_second for p in detail.throughput_history]
        label = Text("tokens/s ", style="bold")
        label.append(f"now {format_count(n.tokens_per_second)}")
        if tps:
            label.append(f"  peak {format_count(max(tps))}", style="dim")
        self.query_one("#node-tps-label", Static).update(label)
        self.query_one("#node-tps", Sparkline).data = tps or [0.0]

        leases = self.query_one("#node-leases", DataTable)
        leases.clear()
        now = self._clock()
        for lease in detail.leases:
            leases.add_row(
                lease.shard_id,
                format_count(lease.tokens),
                str(lease.epoch),
                f"in {format_duration(lease.deadline_unix - now)}",
            )
        rounds = self.query_one("#node-rounds", DataTable)
        rounds.clear()
        for r in sorted(detail.rounds, key=lambda r: r.round, reverse=True):
            rounds.add_row(
                str(r.round),
                str(r.peers),
                format_count(r.tokens),
                format_loss(r.mean_loss),
                format_duration(r.duration_s),
            )
