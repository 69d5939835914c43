"""App behaviour that needs no live coordinator: an unreachable address in interactive mode,
a very large swarm, the help overlay, and the node detail screen fed from a fixed snapshot.
"""

from __future__ import annotations

import socket

from gpt5os.dashboard.app import DashboardApp
from gpt5os.dashboard.feed import Backoff, CoordinatorSource, StaticSource
from gpt5os.dashboard.help_screen import HelpScreen
from gpt5os.dashboard.main_screen import MAX_TABLE_ROWS
from gpt5os.dashboard.node_screen import NodeScreen
from gpt5os.dashboard.widgets import NodesTable
from test_dashboard_snapshots import NOW, make_app, sample_snapshot
from test_dashboard_support import screen_text, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_coordinator_is_retried_with_backoff_not_fatal() -> None:
    address = f"127.0.0.1:{free_port()}"
    app = DashboardApp(CoordinatorSource(address), backoff=Backoff(base=0.02, cap=0.1))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.reconnect_attempt >= 3, "three attempts")
        text = screen_text(app)
        assert f"cannot reach coordinator at {address}, retrying in" in text
        assert app.is_running and not app.connection.ok
        assert "waiting for the coordinator" in text
        await pilot.press("q")
    assert app.return_code == 0


async def test_large_swarm_table_is_bounded_and_filter_reaches_the_rest() -> None:
    snap = sample_snapshot()
    del snap.nodes[:]
    for i in range(MAX_TABLE_ROWS + 100):
        snap.nodes.add(
            node_id=f"{i:04d}" + "ab" * 6,
            display_name=f"n{i}",
            state="active",
            tokens_trained=i,
            last_seen_unix=NOW,
        )
    app = make_app(snap)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view.has_snapshot, "snapshot")
        table = app.main.query_one(NodesTable)
        assert table.row_count == MAX_TABLE_ROWS
        assert f"first {MAX_TABLE_ROWS} shown" in screen_text(app)
        # largest tokens first: the smallest 100 are cut; a filter finds one of them
        await pilot.press("slash", *"n7 ")
        await wait_for(pilot, lambda: table.row_count < MAX_TABLE_ROWS, "filtered rows")
        assert "0007abab" in screen_text(app)


async def test_help_and_node_detail_from_a_fixed_snapshot() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view.has_snapshot, "snapshot")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("enter")  # the cursor starts on the top row: bob (most tokens)
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, NodeScreen) and app.screen.detail is not None,
            "bob's detail",
        )
        text = screen_text(app)
        assert "b7e1f00d9c8a2b3c" in text and "train-00021" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, NodeScreen)


async def test_detail_of_an_unknown_node_says_so() -> None:
    source = StaticSource(sample_snapshot(), details={}, address="static")
    app = DashboardApp(source, clock=lambda: NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.has_snapshot, "snapshot")
        app.open_node("nope")
        await wait_for(pilot, lambda: "cannot load node nope" in screen_text(app), "error")
        assert isinstance(app.screen, NodeScreen) and app.screen.error
