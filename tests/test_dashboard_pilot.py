"""The dashboard against a real, in-process coordinator (grpc.aio in the test's event loop).

The coordinator is filled through its real gRPC API, acting as nodes (Join, Heartbeat,
LeaseShard, CompleteShard, ReportRound, Leave); the app is driven with Textual's pilot. Every
wait polls the app's state with a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gpt5os.coordinator.testkit import aio_channel
from gpt5os.dashboard.app import DashboardApp
from gpt5os.dashboard.feed import Backoff, CoordinatorSource
from gpt5os.dashboard.main_screen import MainScreen
from gpt5os.dashboard.node_screen import NodeScreen
from gpt5os.dashboard.swarm_view import format_count, short_id
from gpt5os.dashboard.widgets import NodesTable
from gpt5os.proto import pb, pb_grpc
from test_dashboard_support import (
    ApiNode,
    fill,
    make_run,
    screen_text,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

SIZE = (120, 40)


# -- waiting on the app --------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def table_ids(app: DashboardApp) -> list[str]:
    table = app.main.query_one(NodesTable)
    return [table.coordinate_to_cell_key((r, 0)).row_key.value for r in range(table.row_count)]


def make_app(address: str) -> DashboardApp:
    source = CoordinatorSource(address, min_interval_s=0.1)
    return DashboardApp(source, backoff=Backoff(base=0.05, cap=0.4))


# -- tests ---------------------------------------------------------------------------------------


async def test_widgets_show_the_coordinators_numbers_sort_filter_and_detail(run_dir: Path) -> None:
    server = await start_server(run_dir)
    try:
        async with aio_channel(server.address) as channel:
            stub = pb_grpc.CoordinatorStub(channel)
            nodes = await fill(stub)
            truth = await stub.GetStatus(pb.GetStatusRequest())
            app = make_app(server.address)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: len(app.view.nodes) == 3, "three nodes")
                run = truth.run
                assert run.run_id == "dash-test" and run.outer_round == 2
                text = screen_text(app)
                assert "dash-test" in text
                assert f"round {run.outer_round}" in text
                assert f"{format_count(run.tokens_trained)} tokens" in text
                assert f"{run.epoch_coverage * 100:.1f}% of epoch" in text
                shards = run.shards
                assert f"shards {shards.done}/{shards.total} done, {shards.leased} leased" in text
                assert shards.done == 3 and shards.leased == 1
                assert "live from" in text

                # the table: the coordinator's numbers, largest tokens first
                by_id = {n.node_id: n for n in truth.nodes}
                expect = sorted(by_id.values(), key=lambda n: (-n.tokens_trained, n.node_id))
                assert table_ids(app) == [n.node_id for n in expect]
                table = app.main.query_one(NodesTable)
                for row, n in enumerate(expect):
                    cells = [str(c) for c in table.get_row_at(row)]
                    assert cells[0] == short_id(n.node_id)
                    assert cells[2] == n.state
                    assert cells[4] == format_count(n.tokens_trained)
                assert by_id[nodes["carol"].node_id].state == "left"
                # the leaderboard and event log show the same run
                assert "1. bob" in text and "2. alice" in text
                assert "joined" in text and "round" in text

                # `s` cycles the sort: tokens -> tokens/s
                await pilot.press("s")
                assert app.main.sort_key == "tps"
                by_tps = sorted(by_id.values(), key=lambda n: (-n.tokens_per_second, n.node_id))
                assert table_ids(app) == [n.node_id for n in by_tps]
                await pilot.press("r")
                assert table_ids(app) == [n.node_id for n in reversed(by_tps)]

                # `/` filters
                await pilot.press("slash", *"carol")
                assert table_ids(app) == [nodes["carol"].node_id]
                await pilot.press("escape")
                assert len(table_ids(app)) == 3
                await pilot.press("slash", *"zzz")
                await wait_for(pilot, lambda: "no node matches" in screen_text(app), "empty")
                await pilot.press("escape")

                # Enter opens alice's detail (GetNode): her lease and her rounds
                table.move_cursor(row=table.get_row_index(nodes["alice"].node_id))
                await pilot.press("enter")
                await wait_for(
                    pilot,
                    lambda: isinstance(app.screen, NodeScreen) and app.screen.detail is not None,
                    "alice's detail",
                )
                detail = app.screen.detail
                assert detail.node.node_id == nodes["alice"].node_id
                assert len(detail.leases) == 1 and len(detail.rounds) == 2
                text = screen_text(app)
                assert nodes["alice"].node_id in text
                assert detail.leases[0].shard_id in text
                await pilot.press("escape")
                assert isinstance(app.screen, MainScreen)

                # a live change arrives as a delta and is shown
                alice_id = nodes["alice"].node_id
                before = app.view.nodes[alice_id].tokens_trained
                more = await nodes["alice"].train_one_shard(3.9)  # credit: a completed lease
                await wait_for(
                    pilot,
                    lambda: app.view.nodes[alice_id].tokens_trained == before + more.tokens,
                    "alice's new token count",
                )
                assert app.view.snapshots_seen == 1  # a delta, not a reconnect

                await pilot.press("question_mark")
                await wait_for(pilot, lambda: "cycle the nodes table" in screen_text(app), "help")
                await pilot.press("escape")
                await pilot.press("q")
            assert app.return_code == 0
    finally:
        await server.stop(grace=0.1)


async def test_empty_swarm_then_coordinator_restart_is_shown_and_recovered(run_dir: Path) -> None:
    server = await start_server(run_dir)
    port = int(server.address.rsplit(":", 1)[1])
    app = make_app(server.address)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.view.has_snapshot, "first snapshot")
            await wait_for(pilot, lambda: "no nodes yet" in screen_text(app), "empty state")

            async with aio_channel(server.address) as channel:
                dave = await ApiNode(pb_grpc.CoordinatorStub(channel), "dave", "cpu").join()
                await dave.heartbeat(700.0, 12_345, 6.1)
                dave_lease = await dave.train_one_shard(6.1)
            await wait_for(pilot, lambda: table_ids(app) == [dave.node_id], "dave's row")

            await server.stop(grace=0.1)
            server = None
            await wait_for(
                pilot,
                lambda: "coordinator unreachable - reconnecting (attempt" in screen_text(app),
                "the outage on screen",
            )
            assert not app.connection.ok
            # the last picture stays up during the outage
            assert table_ids(app) == [dave.node_id]
            await wait_for(pilot, lambda: app.reconnect_attempt >= 2, "a second attempt")

            server = await start_server(run_dir, port=port)
            await wait_for(pilot, lambda: app.connection.ok, "the reconnect")
            assert app.view.snapshots_seen == 2
            assert app.reconnect_attempt == 0
            await wait_for(pilot, lambda: "live from" in screen_text(app), "live status")
            # the restarted coordinator's fresh snapshot: dave is still in the run's history
            assert dave.node_id in app.view.nodes
            assert app.view.nodes[dave.node_id].tokens_trained == dave_lease.tokens
    finally:
        if server is not None:
            await server.stop(grace=0.1)
