"""Screenshot tests of the dashboard (pytest-textual-snapshot; SVGs in tests/__snapshots__/).

They feed one fixed synthetic snapshot through `StaticSource` with a frozen clock and UTC event
times, so the pictures depend on the code alone. Update after an intended change with
`pytest tests/test_dashboard_snapshots.py --snapshot-update` and look at the SVGs before
committing them. Live behaviour against a real coordinator is in test_dashboard_pilot.py.
"""

from __future__ import annotations

import time

from gpt5os.dashboard.app import DashboardApp
from gpt5os.dashboard.feed import StaticSource
from gpt5os.proto import pb

NOW = 1_790_000_000.0  # frozen "now": 2026-09-21 UTC


def sample_snapshot() -> pb.SwarmSnapshot:
    """A small run in its first epoch: 5 nodes (one lost, one left), 6 rounds, events."""
    names = [
        ("a1b2c3d4e5f60718", "alice", "cuda:NVIDIA GeForce RTX 4090", "active", 41200, 3_120_000),
        ("b7e1f00d9c8a2b3c", "bob", "cuda:NVIDIA A100-SXM4-80GB", "active", 88100, 6_480_000),
        ("c0ffee1234567890", "carol", "cpu", "active", 690, 52_000),
        ("d00dfeed42424242", "dave", "cuda:NVIDIA GeForce RTX 3060", "lost", 0, 910_000),
        ("e1e2e3e4e5e6e7e8", "erin", "mps", "left", 0, 230_000),
    ]
    nodes = [
        pb.NodeStatus(
            node_id=nid,
            display_name=name,
            device=dev,
            state=state,
            tokens_per_second=tps,
            tokens_trained=tok,
            last_loss=4.2 - i * 0.15,
            last_seen_unix=NOW - (2 + i * 37 if state == "active" else 900 + i * 60),
            joined_unix=NOW - 7200,
            shards_done=tok // 65536,
            rounds=6 - i,
            software_version="0.1.0",
        )
        for i, (nid, name, dev, state, tps, tok) in enumerate(names)
    ]
    rounds = [
        pb.RoundStatus(
            round=r,
            peers=3,
            tokens=1_000_000 + r * 10_000,
            mean_loss=6.5 - r * 0.4,
            duration_s=60 + r,
            finished_unix=NOW - 3600 + r * 500,
            node_ids=[n.node_id for n in nodes[:3]],
        )
        for r in range(1, 7)
    ]
    loss = [pb.LossPoint(tokens=t * 200_000, loss=10.4 * 0.93**t + 2.0) for t in range(1, 55)]
    val = [
        pb.LossPoint(tokens=t * 2_000_000, loss=10.4 * 0.93 ** (t * 10) + 2.3) for t in range(1, 6)
    ]
    tput = [
        pb.ThroughputPoint(unix=NOW - 600 + 10 * i, tokens_per_second=90_000 + 40_000 * (i % 7) / 7)
        for i in range(60)
    ]
    kinds = [
        ("joined", 0, "alice joined (RTX 4090)"),
        ("joined", 1, "bob joined (A100)"),
        ("round_finished", 1, "round 5: 3 peers, 1.05M tokens"),
        ("lease_expired", 3, "shard train-00017 returned to the queue"),
        ("lost", 3, "no heartbeat for 60s"),
        ("left", 4, "erin left: interrupted"),
        ("round_finished", 0, "round 6: 3 peers, 1.06M tokens"),
    ]
    events = [
        pb.Event(id=i + 1, unix=NOW - 700 + 100 * i, kind=k, node_id=nodes[n].node_id, message=m)
        for i, (k, n, m) in enumerate(kinds)
    ]
    run = pb.RunStatus(
        run_id="run-7f3a",
        preset="tiny",
        epoch=1,
        outer_round=6,
        tokens_trained=10_792_000,
        tokens_per_second=129_990,
        shards=pb.ShardProgress(total=120, pending=64, leased=3, done=53),
        epoch_coverage=0.4417,
        eta_s=4210,
        spec_revision=1,
        started_unix=NOW - 7200,
        epoch_tokens=24_400_000,
        active_nodes=3,
        checkpoint=pb.CheckpointSummary(
            round=6, tokens=10_792_000, params_sha256="ab" * 32, written_at=NOW - 240
        ),
    )
    return pb.SwarmSnapshot(
        run=run,
        nodes=nodes,
        rounds=rounds,
        loss_history=loss,
        val_loss_history=val,
        throughput_history=tput,
        events=events,
        server_unix=NOW,
    )


def sample_details() -> dict[str, pb.NodeDetail]:
    """GetNode answers for the sample's nodes: own losses per round, throughput, a lease."""
    snap = sample_snapshot()
    details = {}
    for i, node in enumerate(snap.nodes):
        details[node.node_id] = pb.NodeDetail(
            node=node,
            loss_history=[
                pb.LossPoint(tokens=r * 180_000, loss=6.4 - r * 0.35 - i * 0.05)
                for r in range(1, 7)
            ],
            throughput_history=[
                pb.ThroughputPoint(
                    unix=NOW - 600 + 10 * k,
                    tokens_per_second=node.tokens_per_second * (0.8 + 0.04 * (k % 6)),
                )
                for k in range(60)
            ],
            leases=[
                pb.Lease(
                    shard_id=f"train-{20 + i:05d}", tokens=65536, epoch=1, deadline_unix=NOW + 240
                )
            ]
            if node.state == "active"
            else [],
            rounds=[r for r in snap.rounds if node.node_id in r.node_ids],
        )
    return details


def make_app(snapshot: pb.SwarmSnapshot | None = None) -> DashboardApp:
    source = StaticSource(
        snapshot or sample_snapshot(), details=sample_details(), address="127.0.0.1:50051"
    )
    return DashboardApp(source, clock=lambda: NOW, localtime=time.gmtime, refresh_ages=False)


async def _settle(pilot) -> None:
    app = pilot.app
    for _ in range(200):
        await pilot.pause()
        if app.view.has_snapshot:
            break
    await pilot.pause()


def test_main_screen_120x40(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_settle)


def test_main_screen_80x24(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_settle)


def test_empty_swarm_80x24(snap_compare) -> None:
    snap = pb.SwarmSnapshot(
        run=pb.RunStatus(
            run_id="run-empty",
            preset="tiny",
            epoch=1,
            eta_s=-1,
            shards=pb.ShardProgress(total=40, pending=40),
        ),
        server_unix=NOW,
    )
    assert snap_compare(make_app(snap), terminal_size=(80, 24), run_before=_settle)


async def _open_bob(pilot) -> None:
    await _settle(pilot)
    await pilot.press("enter")  # the cursor starts on bob: most tokens
    app = pilot.app
    for _ in range(200):
        await pilot.pause()
        if getattr(app.screen, "detail", None) is not None:
            break
    await pilot.pause()


def test_node_detail_120x40(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_open_bob)
