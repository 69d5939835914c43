"""The `?` overlay: what each key does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP_TEXT = """\
[b]gpt5os dashboard[/b] - the swarm, live from the coordinator's WatchSwarm stream

[b]q[/b]          quit
[b]?[/b]          this help (Esc, ? or q closes it)
[b]s[/b]          cycle the nodes table's sort column
[b]r[/b]          reverse the sort
[b]/[/b]          filter nodes by id, name, device or state
           (Enter keeps it, Esc clears it)
[b]Enter[/b]      open the selected node's detail (Esc goes back)
[b]↑ ↓[/b]        move in the nodes table; click a column header to sort by it

Every number is the coordinator's own: tokens/s, coverage, ETA, shard counts, round losses.
When the coordinator goes away the status line says so and the dashboard reconnects by itself.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "close"),
        Binding("question_mark", "close", "close"),
        Binding("q", "close", "close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(HELP_TEXT, id="help-text")

    def action_close(self) -> None:
        self.dismiss()
