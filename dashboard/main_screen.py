"""The main screen: header, loss chart, throughput, shards, leaderboard, nodes table, event log.

The layout degrades with the terminal: breakpoints put `-narrow`/`-wide` and `-short`/`-tall`
classes on the screen, and the stylesheet stacks or shrinks panels so that at 80x24 every panel
keeps its essentials (see dashboard.tcss).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt5os.dashboard.swarm_view import SortKey, SwarmView, default_descending, next_sort_key
from gpt5os.dashboard.widgets import (
    EventLog,
    Leaderboard,
    LossChart,
    NodesTable,
    RunHeader,
    ShardBar,
    ThroughputPanel,
)
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

MAX_TABLE_ROWS = 500  # rebuilding more rows on every update would make the app sluggish


@dataclass(kw_only=True)
class Connection:
    """What the status line says about the link to the coordinator."""

    address: str
    ok: bool = False
    text: str = ""


class MainScreen(Screen):
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]

    BINDINGS = [
        Binding("s", "cycle_sort", "sort"),
        Binding("r", "reverse_sort", "reverse", show=False),
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("escape", "clear_filter", "clear filter", show=False),
    ]

    def __init__(self, *, localtime, **kwargs) -> None:
        super().__init__(**kwargs)
        self._localtime = localtime
        self.sort_key: SortKey = "tokens"
        self.descending = default_descending(self.sort_key)
        self.query_text = ""
        self._view: SwarmView | None = None
        self._server_now = 0.0
        self._connection: Connection | None = None

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Horizontal(id="top"):
            yield LossChart(id="loss")
            with Vertical(id="side"):
                yield ThroughputPanel(id="throughput")
                yield ShardBar(id="shards")
                yield Leaderboard(id="leaderboard")
        with Horizontal(id="bottom"):
            with Vertical(id="nodes-pane"):
                yield Static(id="nodes-title")
                yield Static("", id="nodes-empty")
                yield NodesTable(id="nodes")
            yield EventLog(localtime=self._localtime, id="events")
        yield Input(placeholder="filter nodes by id, name, device or state", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one("#events", EventLog).border_title = "events"
        self.query_one(NodesTable).focus()

    # -- rendering -----------------------------------------------------------------------------

    def show(self, view: SwarmView, connection: Connection, *, server_now: float) -> None:
        """Render everything from `view`; called by the app after each applied update."""
        self._view = view
        self._server_now = server_now
        self.show_header(view, connection)
        if not view.has_snapshot:
            self._show_nodes()
            return
        self.query_one(LossChart).show(view)
        self.query_one(ThroughputPanel).show(view)
        self.query_one(ShardBar).show(view)
        self.query_one(Leaderboard).show(view)
        self.query_one(EventLog).show(view)
        self._show_nodes()

    def show_header(self, view: SwarmView, connection: Connection) -> None:
        self._connection = connection
        self.query_one(RunHeader).show(view, connection.text, connection.ok, self._server_now)

    def _show_nodes(self) -> None:
        view = self._view
        table = self.query_one(NodesTable)
        empty = self.query_one("#nodes-empty", Static)
        title = self.query_one("#nodes-title", Static)
        rows = (
            view.node_rows(sort_key=self.sort_key, reverse=self.descending, query=self.query_text)
            if view
            else []
        )
        total = len(view.nodes) if view else 0
        shown = f"{len(rows)} of {total}" if self.query_text else f"{total}"
        if len(rows) > MAX_TABLE_ROWS:  # a 10k-node swarm: the top rows, `/` finds the rest
            shown += f", first {MAX_TABLE_ROWS} shown"
            rows = rows[:MAX_TABLE_ROWS]
        order = "descending" if self.descending else "ascending"
        filt = f"  filter: {self.query_text!r}" if self.query_text else ""
        title.update(f"[b]nodes[/b] {shown}  [dim]sorted by {self.sort_key}, {order}{filt}[/]")
        if view is None or not view.has_snapshot:
            empty.update("waiting for the coordinator...")
        elif total == 0:
            empty.update("no nodes yet - start one with `gpt5os-node join --coordinator HOST:PORT`")
        elif not rows:
            empty.update(f"no node matches {self.query_text!r} (Esc clears the filter)")
        empty.display = not rows
        table.show(
            rows, sort_key=self.sort_key, descending=self.descending, server_now=self._server_now
        )

    def refresh_ages(self, server_now: float) -> None:
        """'last seen' and the checkpoint's age move on between updates."""
        self._server_now = server_now
        if self._view is not None and self._connection is not None:
            self.show_header(self._view, self._connection)
        self._show_nodes()

    # -- sorting and filtering -----------------------------------------------------------------

    def action_cycle_sort(self) -> None:
        self.sort_key = next_sort_key(self.sort_key)
        self.descending = default_descending(self.sort_key)
        self._show_nodes()

    def action_reverse_sort(self) -> None:
        self.descending = not self.descending
        self._show_nodes()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key == self.sort_key:
            self.descending = not self.descending
        else:
            self.sort_key = key  # type: ignore[assignment]
            self.descending = default_descending(self.sort_key)
        self._show_nodes()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.query_text = ""
        self._show_nodes()
        self.query_one(NodesTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.query_text = event.value
            self._show_nodes()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            if not event.value:
                event.input.display = False
            self.query_one(NodesTable).focus()

    # -- detail --------------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.open_node(event.row_key.value)  # type: ignore[attr-defined]
