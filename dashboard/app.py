"""`DashboardApp`: one Textual app over the coordinator's WatchSwarm stream.

Data flow: a worker (`_feed`) running in the app's event loop reads the stream from a
`SwarmSource`, applies each message to a pure `SwarmView`, and asks the main screen to render.
When the stream breaks the worker says so on the status line and reconnects with `Backoff`;
every reconnect starts with a fresh snapshot, which replaces the old picture.

With `snapshot_path` set the app renders once the first snapshot has arrived, writes the screen
as SVG and exits (return code 0), or exits with return code 1 and `error_line` set when no
snapshot arrives within `snapshot_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from gpt5os.dashboard.feed import Backoff, SourceError, SwarmSource
from gpt5os.dashboard.help_screen import HelpScreen
from gpt5os.dashboard.main_screen import Connection, MainScreen
from gpt5os.dashboard.node_screen import NodeScreen
from gpt5os.dashboard.swarm_view import SwarmView
from textual import work
from textual.app import App
from textual.binding import Binding

AGE_REFRESH_S = 1.0


class DashboardApp(App[None]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "gpt5os dashboard"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help", key_display="?"),
    ]

    def __init__(
        self,
        source: SwarmSource,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        localtime: Callable[[float], time.struct_time] = time.localtime,
        snapshot_path: Path | None = None,
        snapshot_timeout: float = 30.0,
        refresh_ages: bool = True,
    ) -> None:
        """
        :param source: where updates come from (`CoordinatorSource` for a real coordinator)
        :param backoff: reconnect delays; tests pass a small base
        :param clock: local wall clock; snapshot tests freeze it so "12s ago" is stable
        :param localtime: how event times become clock time (tests pass `time.gmtime`)
        :param refresh_ages: re-render "last seen" every second between updates
        """
        super().__init__()
        self.source = source
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.localtime = localtime
        self.snapshot_path = snapshot_path
        self.snapshot_timeout = snapshot_timeout
        self._refresh_ages = refresh_ages
        self.view = SwarmView()
        self.connection = Connection(
            address=source.address, text=f"connecting to {source.address}..."
        )
        self.reconnect_attempt = 0
        self.ever_connected = False
        self.error_line: str | None = None
        self._snapshot_done = False
        self.main = MainScreen(localtime=localtime)

    # -- lifecycle -----------------------------------------------------------------------------

    async def on_mount(self) -> None:
        await self.push_screen(self.main)
        self._render()
        self._feed()
        if self.snapshot_path is not None:
            self.set_timer(self.snapshot_timeout, self._snapshot_timed_out)
        elif self._refresh_ages:
            self.set_interval(AGE_REFRESH_S, self._tick)

    async def on_unmount(self) -> None:
        await self.source.close()

    def server_now(self) -> float:
        return self.view.server_now(self.clock())

    # -- the feed ------------------------------------------------------------------------------

    @work(exclusive=True, group="feed")
    async def _feed(self) -> None:
        while True:
            try:
                async for update in self.source.watch():
                    self.view.apply(update, local_now=self.clock())
                    if update.WhichOneof("update") == "snapshot":
                        self._on_connected()
                    self._render()
                reason = "the stream ended"
            except (SourceError, grpc.RpcError) as err:
                reason = str(err)
            self.reconnect_attempt += 1
            delay = self.backoff.delay(self.reconnect_attempt)
            self._on_disconnected(reason, delay)
            await asyncio.sleep(delay)

    def _on_connected(self) -> None:
        self.reconnect_attempt = 0
        self.ever_connected = True
        self.connection.ok = True
        self.connection.text = f"live from {self.source.address}"
        if self.snapshot_path is not None and not self._snapshot_done:
            self._snapshot_done = True
            # two refreshes: the first lays the screen out, the second paints charts at size
            self.call_after_refresh(lambda: self.call_after_refresh(self._write_snapshot))

    def _on_disconnected(self, reason: str, delay: float) -> None:
        self.connection.ok = False
        n = self.reconnect_attempt
        if self.ever_connected:
            self.connection.text = (
                f"coordinator unreachable - reconnecting (attempt {n}, next in {delay:.1f}s)"
                f"  [{reason}]"
            )
        else:
            self.connection.text = (
                f"cannot reach coordinator at {self.source.address}, retrying in {delay:.1f}s"
                f" (attempt {n})  [{reason}]"
            )
        self.main.show_header(self.view, self.connection)

    def _render(self) -> None:
        self.main.show(self.view, self.connection, server_now=self.server_now())

    def _tick(self) -> None:
        if self.view.has_snapshot:
            self.main.refresh_ages(self.server_now())

    # -- --snapshot mode -----------------------------------------------------------------------

    def _write_snapshot(self) -> None:
        assert self.snapshot_path is not None
        svg = self.export_screenshot(title=f"gpt5os dashboard - {self.source.address}")
        path = Path(self.snapshot_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(svg, encoding="utf-8")
        os.replace(tmp, path)
        self.exit(return_code=0)

    def _snapshot_timed_out(self) -> None:
        if self._snapshot_done:
            return
        self.error_line = (
            f"error: no snapshot from the coordinator at {self.source.address} within "
            f"{self.snapshot_timeout:g}s ({self.connection.text}); is `gpt5os-coordinator serve` "
            "running there?"
        )
        self.exit(return_code=1)

    # -- actions -------------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def open_node(self, node_id: str) -> None:
        self.push_screen(NodeScreen(node_id, clock=self.server_now))
