"""Swarm state as messages: the full SwarmSnapshot, WatchSwarm deltas, NodeDetail and status JSON.

One code path for every reader: GetStatus, the first message of WatchSwarm and
`gpt5os-coordinator status` (which loads a read-only Swarm from the database and renders it
here) all describe the swarm identically. Lists are bounded: the last EVENTS_KEPT events, the
last ROUNDS_SHOWN rounds, histories downsampled to at most HISTORY_SHOWN points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from gpt5os.coordinator.checkpoints import CheckpointInfo
from gpt5os.coordinator.records import NodeRecord, RoundAgg
from gpt5os.coordinator.scheduler import LeaseInfo
from gpt5os.coordinator.swarm import Swarm
from gpt5os.proto import pb

HISTORY_SHOWN = 1000
ROUNDS_SHOWN = 500
INACTIVE_SHOWN = 1000  # left/lost/banned nodes in a snapshot, most recently seen first
SnapshotOrDelta = TypeVar("SnapshotOrDelta", pb.SwarmSnapshot, pb.SwarmDelta)


def downsample(points: list[Any], limit: int = HISTORY_SHOWN) -> list[Any]:
    """At most `limit` evenly spaced points, always keeping the first and the last."""
    n = len(points)
    if n <= limit:
        return list(points)
    step = (n - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def checkpoint_summary(info: CheckpointInfo | None) -> pb.CheckpointSummary | None:
    if info is None:
        return None
    return pb.CheckpointSummary(
        round=info.round,
        tokens=info.tokens,
        params_sha256=info.params_sha256,
        path=str(info.path),
        written_at=info.written_at,
    )


def checkpoint_dict(run: pb.RunStatus) -> dict[str, Any] | None:
    """`status --json`'s "checkpoint": the same keys as CheckpointInfo.to_json(), or null."""
    if not run.HasField("checkpoint"):
        return None
    c = run.checkpoint
    return {
        "round": c.round,
        "tokens": c.tokens,
        "params_sha256": c.params_sha256,
        "path": c.path,
        "written_at": c.written_at,
    }


def with_checkpoint(msg: SnapshotOrDelta, info: CheckpointInfo | None) -> SnapshotOrDelta:
    """Put the run's newest checkpoint (the server's LatestCheckpoint, or the run dir's) into
    a SwarmSnapshot's or SwarmDelta's RunStatus; unset when there is none yet."""
    summary = checkpoint_summary(info)
    if summary is not None:
        msg.run.checkpoint.CopyFrom(summary)
    return msg


def run_status(sw: Swarm) -> pb.RunStatus:
    counts = sw.sched.counts()
    epoch_tokens = sw.sched.epoch_tokens()
    done_tokens = sw.sched.done_tokens()
    tps = sw.tokens_per_second()
    eta = (epoch_tokens - done_tokens) / tps if tps > 0 else -1.0
    return pb.RunStatus(
        run_id=sw.run_id,
        preset=sw.spec.model.preset,
        epoch=sw.sched.epoch,
        outer_round=sw.outer_round,
        tokens_trained=sw.tokens_trained(),
        tokens_per_second=tps,
        shards=pb.ShardProgress(**counts),
        epoch_coverage=done_tokens / epoch_tokens if epoch_tokens else 0.0,
        eta_s=eta,
        paused=sw.paused,
        spec_revision=sw.spec.revision,
        started_unix=sw.started_unix,
        epoch_tokens=epoch_tokens,
        active_nodes=sum(1 for n in sw.nodes.values() if n.state == "active"),
    )


def node_status(n: NodeRecord) -> pb.NodeStatus:
    return pb.NodeStatus(
        node_id=n.node_id,
        display_name=n.display_name,
        device=n.device,
        state=n.state,
        tokens_per_second=n.tokens_per_second,
        tokens_trained=n.tokens_trained,
        last_loss=n.last_loss if n.last_loss is not None else 0.0,
        last_seen_unix=n.last_seen_unix,
        joined_unix=n.joined_unix,
        shards_done=n.shards_done,
        rounds=n.rounds,
        software_version=n.software_version,
    )


def round_status(a: RoundAgg) -> pb.RoundStatus:
    msg = pb.RoundStatus(
        round=a.round,
        peers=len(a.reports),
        tokens=a.tokens,
        mean_loss=a.mean_loss,
        duration_s=a.duration_s,
        finished_unix=a.finished_unix or 0.0,
        node_ids=a.node_ids,
    )
    val = a.mean_val_loss
    if val is not None:
        msg.val_loss = val
    return msg


def lease_msg(lease: LeaseInfo) -> pb.Lease:
    return pb.Lease(
        shard_id=lease.shard.shard_id,
        tokens=lease.shard.tokens,
        size_bytes=lease.shard.size_bytes,
        sha256=lease.shard.sha256,
        deadline_unix=lease.deadline,
        epoch=lease.epoch,
    )


def _loss(points: list[tuple[int, int, float]]) -> list[pb.LossPoint]:
    return [pb.LossPoint(tokens=t, loss=v) for _, t, v in points]


def _tput(points: list[tuple[int, float, float]]) -> list[pb.ThroughputPoint]:
    return [pb.ThroughputPoint(unix=u, tokens_per_second=v) for _, u, v in points]


def _events(events: list[tuple[int, float, str, str, str]]) -> list[pb.Event]:
    return [pb.Event(id=i, unix=u, kind=k, node_id=n, message=m) for i, u, k, n, m in events]


def nodes_shown(sw: Swarm) -> list[NodeRecord]:
    """Every active node, and the most recently seen of the others (a run that lasts weeks
    meets far more volunteers than are online at once; snapshots stay small)."""
    active = [n for n in sw.nodes.values() if n.state == "active"]
    others = [n for n in sw.nodes.values() if n.state != "active"]
    if len(others) > INACTIVE_SHOWN:
        others = sorted(others, key=lambda n: n.last_seen_unix)[-INACTIVE_SHOWN:]
    shown = {n.node_id for n in active} | {n.node_id for n in others}
    return [n for n in sw.nodes.values() if n.node_id in shown]


def _recent_rounds(sw: Swarm) -> list[RoundAgg]:
    return [sw.rounds[r] for r in sorted(sw.rounds)[-ROUNDS_SHOWN:]]


def keeper_status(sw: Swarm, now: float) -> pb.KeeperStatus:
    latest = sw.latest_certified()
    return pb.KeeperStatus(
        live=sw.keeper_live(now),
        last_round=sw.keeper_last_round,
        last_report_unix=sw.keeper_last_unix,
        certified=latest.to_pb() if latest is not None else None,
        checkpoint_round=sw.keeper_checkpoint_round,
    )


def snapshot(sw: Swarm, now: float) -> pb.SwarmSnapshot:
    return pb.SwarmSnapshot(
        run=run_status(sw),
        keeper=keeper_status(sw, now),
        nodes=[node_status(n) for n in nodes_shown(sw)],
        rounds=[round_status(a) for a in _recent_rounds(sw)],
        loss_history=_loss(downsample(sw.loss_points)),
        val_loss_history=_loss(downsample(sw.val_points)),
        throughput_history=_tput(downsample(list(sw.throughput))),
        events=_events(list(sw.events)),
        server_unix=now,
    )


@dataclass(kw_only=True)
class Cursor:
    """What one WatchSwarm stream has already sent."""

    version: int = 0
    loss_seq: int = 0
    val_seq: int = 0
    tput_seq: int = 0
    event_id: int = 0

    @classmethod
    def after_snapshot(cls, sw: Swarm) -> Cursor:
        return cls(
            version=sw.version,
            loss_seq=sw.loss_points[-1][0] if sw.loss_points else 0,
            val_seq=sw.val_points[-1][0] if sw.val_points else 0,
            tput_seq=sw.throughput[-1][0] if sw.throughput else 0,
            event_id=sw.events[-1][0] if sw.events else 0,
        )


def delta(sw: Swarm, cur: Cursor, now: float) -> pb.SwarmDelta:
    """What changed since `cur` (which is advanced). RunStatus is always included."""
    msg = pb.SwarmDelta(
        run=run_status(sw),
        keeper=keeper_status(sw, now),
        nodes=[node_status(n) for n in sw.nodes.values() if n.version > cur.version],
        rounds=[round_status(a) for a in _recent_rounds(sw) if a.version > cur.version],
        loss_history=_loss([p for p in sw.loss_points if p[0] > cur.loss_seq]),
        val_loss_history=_loss([p for p in sw.val_points if p[0] > cur.val_seq]),
        throughput_history=_tput([p for p in sw.throughput if p[0] > cur.tput_seq]),
        events=_events([e for e in sw.events if e[0] > cur.event_id]),
        server_unix=now,
    )
    new = Cursor.after_snapshot(sw)
    cur.__dict__.update(new.__dict__)
    return msg


def node_detail(sw: Swarm, node: NodeRecord) -> pb.NodeDetail:
    rounds = [a for a in _recent_rounds(sw) if node.node_id in a.reports]
    # x axis: the node's own tokens trained so far (a running total over its round reports)
    loss_history, tokens = [], 0
    for a in rounds:
        report = a.reports[node.node_id]
        tokens += int(report["tokens"])
        loss_history.append(pb.LossPoint(tokens=tokens, loss=report["mean_loss"]))
    return pb.NodeDetail(
        node=node_status(node),
        loss_history=loss_history,
        throughput_history=[
            pb.ThroughputPoint(unix=u, tokens_per_second=v) for u, v in node.throughput
        ],
        leases=[lease_msg(lease) for lease in sw.sched.leases_of(node.node_id)],
        rounds=[round_status(a) for a in rounds],
    )


def status_dict(sw: Swarm, now: float, checkpoint: CheckpointInfo | None = None) -> dict[str, Any]:
    """`gpt5os-coordinator status --dir --json`: the snapshot plus each round's node reports."""
    reports = {
        a.round: [
            {
                "node_id": nid,
                "peer_node_ids": list(r["peer_node_ids"]),
                "tokens": r["tokens"],
                "mean_loss": r["mean_loss"],
                "params_sha256": r["params_sha256"],
                "val_loss": r.get("val_loss"),
                "group_tokens": r["group_tokens"],
            }
            for nid, r in sorted(a.reports.items())
        ]
        for a in _recent_rounds(sw)
    }
    losses = {n.node_id: n.last_loss for n in sw.nodes.values()}
    msg = with_checkpoint(snapshot(sw, now), checkpoint)
    return snapshot_dict(msg, reports=reports, last_losses=losses)


def snapshot_dict(
    snap: pb.SwarmSnapshot,
    *,
    reports: dict[int, list[dict[str, Any]]] | None = None,
    last_losses: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """A SwarmSnapshot as the JSON of `gpt5os-coordinator status` (the skeleton's field names).

    `reports` (per-node round reports) are only known from the database; over gRPC (`status
    --coordinator`) each round's "reports" is absent. `last_loss` is null before a node reported
    any loss.
    """
    run = snap.run

    def loss_of(n: pb.NodeStatus) -> float | None:
        if last_losses is not None:
            return last_losses.get(n.node_id)
        return n.last_loss if n.last_loss > 0 else None

    rounds = []
    for a in snap.rounds:
        d: dict[str, Any] = {
            "round": a.round,
            "peers": a.peers,
            "node_ids": list(a.node_ids),
            "tokens": a.tokens,
            "mean_loss": a.mean_loss,
            "val_loss": a.val_loss if a.HasField("val_loss") else None,
            "duration_s": a.duration_s,
            "finished_unix": a.finished_unix or None,
        }
        if reports is not None:
            d["reports"] = reports.get(a.round, [])
        rounds.append(d)
    return {
        "run_id": run.run_id,
        "preset": run.preset,
        "epoch": run.epoch,
        "outer_round": run.outer_round,
        "paused": run.paused,
        "spec_revision": run.spec_revision,
        "tokens_trained": run.tokens_trained,
        "tokens_per_second": run.tokens_per_second,
        "epoch_coverage": run.epoch_coverage,
        "epoch_tokens": run.epoch_tokens,
        "eta_s": run.eta_s,
        "active_nodes": run.active_nodes,
        "started_unix": run.started_unix,
        "checkpoint": checkpoint_dict(run),
        "shards": {
            "total": run.shards.total,
            "pending": run.shards.pending,
            "leased": run.shards.leased,
            "done": run.shards.done,
        },
        "nodes": [
            {
                "node_id": n.node_id,
                "display_name": n.display_name,
                "state": n.state,
                "device": n.device,
                "software_version": n.software_version,
                "tokens_trained": n.tokens_trained,
                "tokens_per_second": n.tokens_per_second,
                "last_loss": loss_of(n),
                "last_seen_unix": n.last_seen_unix,
                "joined_unix": n.joined_unix,
                "shards_done": n.shards_done,
                "rounds": n.rounds,
            }
            for n in snap.nodes
        ],
        "rounds": rounds,
        "loss_history": [[p.tokens, p.loss] for p in snap.loss_history],
        "val_loss_history": [[p.tokens, p.loss] for p in snap.val_loss_history],
        "throughput_history": [[p.unix, p.tokens_per_second] for p in snap.throughput_history],
        "events": [
            {"id": e.id, "unix": e.unix, "kind": e.kind, "node_id": e.node_id, "message": e.message}
            for e in snap.events
        ],
        "server_unix": snap.server_unix,
        "keeper": {
            "live": snap.keeper.live,
            "last_round": snap.keeper.last_round if snap.keeper.last_report_unix else None,
            "last_report_unix": snap.keeper.last_report_unix or None,
            "checkpoint_round": snap.keeper.checkpoint_round or None,
            "certified": (
                {
                    "round": snap.keeper.certified.round,
                    "tokens": snap.keeper.certified.tokens,
                    "params_sha256": snap.keeper.certified.params_sha256,
                    "source": snap.keeper.certified.source,
                }
                if snap.keeper.HasField("certified")
                else None
            ),
        },
    }
