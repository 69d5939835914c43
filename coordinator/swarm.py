"""The swarm: every coordinator operation on nodes, shards and rounds, persisted through the store.

The gRPC server (server.py) validates a request's shape, then calls one method here; this
module judges it against the swarm's state (who holds what, who is banned, is the run paused),
changes memory and commits the change to SQLite before returning, so an acknowledged join,
lease, completion or report survives `kill -9`. Heartbeat stats are the exception: they are
batched in memory and written by `flush()` (see store.py for the contract).

No gRPC server, no sockets and no clock of its own (`now` is passed in), so the same object is
loaded read-only by `gpt5os-coordinator status --dir` to describe a run from its database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import grpc
from gpt5os.common.request_signing import node_id_of
from gpt5os.coordinator import certify
from gpt5os.coordinator.admission import Admission
from gpt5os.coordinator.certify import Certified
from gpt5os.coordinator.records import ApiError, NodeRecord, RoundAgg
from gpt5os.coordinator.runs import RunConfig, shard_ref
from gpt5os.coordinator.scheduler import Completion, LeaseInfo, ShardRef, ShardScheduler
from gpt5os.coordinator.store import Store
from gpt5os.proto import pb
from packaging.version import InvalidVersion, Version

EVENTS_KEPT = 500
LOST_AFTER_HEARTBEATS = 3
ROUND_SETTLE_S = 30.0
THROUGHPUT_EVERY_S = 5.0
HISTORY_POINTS = 20_000  # in memory; snapshots downsample to <= 1000
INITIAL_PEERS_MAX = 8
RECENT_PEERS_KEPT = 64
LOST_CHECK_EVERY_S = 2.0


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Swarm:
    """The coordinator's whole state in memory, backed by `store`.

    :param config: the run's spec and settings (run.json)
    :param store: the run's database; with `readonly=True` nothing is ever written
    :param now: the current time (the caller's clock), used to restart lease terms
    """

    def __init__(self, config: RunConfig, store: Store, *, now: float, readonly: bool = False):
        self.config = config
        self.spec = config.spec
        self.spec_pb = config.spec.to_pb()  # built once: Join hands it to every node
        self.store = store
        self.readonly = readonly
        self.version = 1
        self.run_id = store.get_meta("run_id") or self.spec.run_id
        self.started_unix = float(store.get_meta("started_unix") or now)
        self.paused = store.get_meta("paused") == "1"
        defs = store.shard_defs()
        self.shard_defs = {r["shard_id"]: dict(r) for r in defs}
        self._validation_shards: list[pb.Lease] | None = None
        train = [shard_ref(_Obj(r)) for r in defs if r["split"] == "train"]
        self.sched = ShardScheduler.restore(
            train,
            store.shard_states(),
            epoch=int(store.get_meta("epoch") or 0),
            lease_seconds=config.lease_seconds,
            seed=self.spec.seed,
            max_leases_per_node=config.max_leases_per_node,
        )
        self.nodes: dict[str, NodeRecord] = {
            r["node_id"]: NodeRecord.from_row(r) for r in store.nodes()
        }
        # Credit is the coordinator's ledger, never a node's word: the tokens of every shard it
        # leased to the node and saw completed (each counted once), rebuilt from the store.
        credit: dict[str, int] = {}
        for row in store.completions():
            d = self.shard_defs.get(row["shard_id"])
            if d is not None:
                credit[row["node_id"]] = credit.get(row["node_id"], 0) + int(d["tokens"])
        for node in self.nodes.values():
            node.tokens_trained = credit.get(node.node_id, 0)
        self.admission = Admission(store, config.admission)
        self.bans = store.bans()
        for nid in self.bans:
            if nid in self.nodes:
                self.nodes[nid].state = "banned"
        self.rounds: dict[int, RoundAgg] = {}
        for r in store.rounds():
            self.rounds[r["round"]] = RoundAgg(**r)
        for rep in store.reports():
            agg = self.rounds.setdefault(
                rep["round"], RoundAgg(round=rep["round"], first_unix=rep["unix"])
            )
            agg.reports[rep["node_id"]] = rep
        self.loss_points: list[tuple[int, int, float]] = []  # (seq = round, tokens, loss)
        self.val_points: list[tuple[int, int, float]] = []
        for agg in sorted(self.rounds.values(), key=lambda a: a.round):
            self._append_loss_points(agg)
        self.events: deque[tuple[int, float, str, str, str]] = deque(
            (tuple(r) for r in store.events(EVENTS_KEPT)), maxlen=EVENTS_KEPT
        )
        self.next_event_id = store.max_event_id() + 1
        self.throughput: deque[tuple[int, float, float]] = deque(maxlen=HISTORY_POINTS)
        for i, (unix, tps) in enumerate(store.throughput()[-HISTORY_POINTS:]):
            self.throughput.append((i + 1, unix, tps))
        self._recent_peers: OrderedDict[str, None] = OrderedDict(
            (n.node_id, None)
            for n in sorted(self.nodes.values(), key=lambda n: n.last_seen_unix)
            if n.dht_maddrs
        )
        self._open_rounds = {r for r, a in self.rounds.items() if not a.finished}
        self.certified: dict[int, Certified] = {
            r["round"]: Certified(**r) for r in store.certified()
        }
        self.keeper_last_unix = float(store.get_meta("keeper_last_unix") or 0.0)
        self.keeper_last_round = int(store.get_meta("keeper_last_round") or 0)
        self.keeper_maddrs: list[str] = []
        self.keeper_checkpoint_error = ""
        self.keeper_checkpoint_round = int(store.get_meta("keeper_checkpoint_round") or 0)
        self._last_lost_check = 0.0
        self._stuck_since: float | None = None
        self._pending_events: list[tuple[int, float, str, str, str]] = []
        self._dirty_nodes: set[str] = set()
        self._last_sample = 0.0
        if not readonly:
            # Nobody could heartbeat while we were down: fresh lease terms and last-seen times.
            self.sched.extend_all(now)
            for node in self.nodes.values():
                if node.state == "active":
                    node.last_seen_unix = max(node.last_seen_unix, now)
                    self._dirty_nodes.add(node.node_id)
            self.flush(now)

    # -- auth ------------------------------------------------------------------------------

    def authenticate(self, node_id: str, token: str) -> NodeRecord:
        node = self.nodes.get(node_id)
        if node is None:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, f"unknown node {node_id}: Join first")
        if node.state == "banned":
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED, f"node {node_id} is banned from this run"
            )
        if not node.token_hash or not hmac.compare_digest(node.token_hash, _hash_token(token)):
            raise ApiError(
                grpc.StatusCode.UNAUTHENTICATED,
                "session token does not match (expired by Leave or a newer Join): Join again",
            )
        return node

    # -- node lifecycle --------------------------------------------------------------------

    def join(
        self, public_key: bytes, info: dict[str, str], now: float, invite: str = ""
    ) -> tuple[NodeRecord, str]:
        """Admit (or re-admit) a node; `invite` admits a new key to an invite-only run."""
        node_id = node_id_of(public_key)
        if node_id in self.bans:
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED, f"node {node_id} is banned from this run"
            )
        need, have = self.spec.min_node_version, info["software_version"]
        try:
            too_old = Version(have) < Version(need)
        except InvalidVersion:
            too_old = True
        if too_old:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this run needs gpt5os >= {need} (you have {have or 'unknown'}): "
                "upgrade with `pip install -U gpt5os`",
            )
        token = secrets.token_urlsafe(24)
        node = self.nodes.get(node_id)
        kind = "rejoined" if node is not None else "joined"
        if node is None:
            node = NodeRecord(
                node_id=node_id, public_key=public_key, token_hash="", joined_unix=now
            )
        with self.store.tx():
            # first: a refused key (no or a spent invite) rolls back and changes nothing
            how = self.admission.admit(node_id, invite, now)
            node.token_hash = _hash_token(token)
            node.state = "active"
            node.last_seen_unix = now
            node.session_tokens = 0
            node.tokens_per_second = 0.0
            node.outer_round = 0  # this session's round: a returning node holds no state yet
            for key, value in info.items():
                setattr(node, key, value)
            self.store.put_node(node.row())
            about = f"{node.display_name or node_id} on {node.device}"
            self._event(now, kind, node_id, f"{about} ({how})" if how else about)
            self._write_events()
        self.nodes[node_id] = node
        self._touch(node)
        return node, token

    def heartbeat(self, node: NodeRecord, stats: dict[str, Any], now: float) -> list[LeaseInfo]:
        if node.state == "lost":  # came back before anyone noticed it left: welcome it back
            node.state = "active"
            self._event(now, "rejoined", node.node_id, "heartbeat after being lost")
        node.last_seen_unix = now
        node.tokens_per_second = stats["tokens_per_second"]
        node.session_tokens = stats["tokens_trained"]  # shown nowhere as credit (see complete)
        if stats["last_loss"] is not None:
            node.last_loss = stats["last_loss"]
        node.outer_round = max(node.outer_round, stats["outer_round"])
        if stats["dht_maddrs"]:
            node.dht_maddrs = stats["dht_maddrs"]
            self._recent_peers.pop(node.node_id, None)
            self._recent_peers[node.node_id] = None
            while len(self._recent_peers) > RECENT_PEERS_KEPT:
                self._recent_peers.popitem(last=False)
        node.sample(now)
        self._dirty_nodes.add(node.node_id)
        self._touch(node)
        return self.sched.extend(node.node_id, now)

    def leave(self, node: NodeRecord, reason: str, now: float) -> None:
        self._end_session(node, "left", now, reason or "left cleanly")

    def apply_ban(self, node_id: str, reason: str, now: float) -> None:
        self.bans[node_id] = reason
        node = self.nodes.get(node_id)
        if node is not None and node.state != "banned":
            self._end_session(node, "banned", now, reason or "banned by the maintainer")

    def lift_ban(self, node_id: str, now: float) -> None:
        """`gpt5os-coordinator unban`: the node may join again (its old session stays over)."""
        self.bans.pop(node_id, None)
        node = self.nodes.get(node_id)
        if node is not None and node.state == "banned":
            node.state = "left"
            self._touch(node)
        self._event(now, "unbanned", node_id, "unbanned by the maintainer: it may join again")
        with self.store.tx():
            if node is not None:
                self.store.put_node(node.row())
            self._write_events()

    def _end_session(self, node: NodeRecord, state: str, now: float, message: str) -> None:
        node.state = state
        if state != "lost":
            node.token_hash = ""
        node.tokens_per_second = 0.0
        released = self.sched.release_node(node.node_id)
        self._event(now, state, node.node_id, message)
        kind = "lease_expired" if state == "lost" else "lease_released"
        for lease in released:
            self._event(
                now,
                kind,
                node.node_id,
                f"shard {lease.shard.shard_id} back in the queue",
            )
        with self.store.tx():
            self.store.put_node(node.row())
            self._write_shards()
            self._write_events()
        self._dirty_nodes.discard(node.node_id)
        self._touch(node)

    # -- data ------------------------------------------------------------------------------

    def lease(self, node: NodeRecord, now: float) -> tuple[LeaseInfo | None, str, float]:
        """(lease, reason, retry_after_s); reason and retry_after only when not granted."""
        retry = self.config.heartbeat_seconds
        if self.paused:
            return None, "paused: the maintainer paused leasing; keep heartbeating", retry
        held = len(self.sched.leases_of(node.node_id))
        if held >= self.sched.max_leases_per_node:
            return None, f"you hold {held} leases already: complete one first", retry
        lease = self.sched.lease(node.node_id, now)
        if lease is None:
            return None, f"epoch {self.sched.epoch} drained: every shard is leased or done", retry
        with self.store.tx():
            self._write_shards()
        self.version += 1
        return lease, "", 0.0

    def validation_shards(self) -> list[pb.Lease]:
        """The held-out shards, in a stable order, for nodes to measure validation loss on.

        Built once (the shard definitions never change while serving): every Join hands them
        out, and sorting 10,000 definitions per Join made a join storm CPU-bound (issue 11)."""
        if self._validation_shards is None:
            self._validation_shards = [
                pb.Lease(
                    shard_id=d["shard_id"],
                    tokens=d["tokens"],
                    size_bytes=d["size_bytes"],
                    sha256=d["sha256"],
                )
                for d in sorted(self.shard_defs.values(), key=lambda d: d["shard_id"])
                if d["split"] == "val"
            ]
        return self._validation_shards

    def shard_for_fetch(self, node: NodeRecord, shard_id: str) -> dict[str, Any]:
        """The shard's definition if `node` may download it (train: holds the lease; val: any)."""
        d = self.shard_defs.get(shard_id)
        if d is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no shard {shard_id!r} in this run")
        if d["split"] == "train" and self.sched.holder(shard_id) != node.node_id:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"you do not hold a lease on shard {shard_id}: call LeaseShard first",
            )
        return d

    def complete(
        self, node: NodeRecord, shard_id: str, tokens: int, loss: float, now: float
    ) -> Completion:
        d = self.shard_defs.get(shard_id)
        if d is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no shard {shard_id!r} in this run")
        if d["split"] != "train":
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"shard {shard_id} is a validation shard: never leased",
            )
        result = self.sched.complete(node.node_id, shard_id, now)
        if not result.counted:
            return result
        node.shards_done += 1
        node.tokens_trained += int(d["tokens"])  # what we leased, not the reported `tokens`
        self._event(
            now, "shard_completed", node.node_id, f"shard {shard_id} (epoch {result.epoch})"
        )
        if result.new_epoch:
            self._event(now, "epoch_started", "", f"epoch {self.sched.epoch} started")
        with self.store.tx():
            self.store.add_completion(
                epoch=result.epoch,
                shard_id=shard_id,
                node_id=node.node_id,
                tokens_trained=tokens,
                mean_loss=loss,
                unix=now,
            )
            self.store.put_node(node.row())
            self._write_shards()
            if result.new_epoch:
                self.store.set_meta("epoch", self.sched.epoch)
            self._write_events()
        self._dirty_nodes.discard(node.node_id)
        self._touch(node)
        return result

    # -- rounds ----------------------------------------------------------------------------

    def report_round(self, node: NodeRecord, rep: dict[str, Any], now: float) -> None:
        r = rep["round"]
        if certify.report_conflicts(self.certified.get(r), rep["params_sha256"]):
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"round {r} is certified with a different global model "
                f"({self.certified[r].params_sha256[:12]}): this node must re-sync; report ignored",
            )
        agg = self.rounds.get(r)
        if agg is None:
            agg = self.rounds[r] = RoundAgg(round=r, first_unix=now)
            self._open_rounds.add(r)
        new = node.node_id not in agg.reports
        agg.reports[node.node_id] = dict(rep, node_id=node.node_id, unix=now)
        if new:
            node.rounds += 1
        node.outer_round = max(node.outer_round, r)
        to_finish = [self.rounds[o] for o in self._open_rounds if o < r]
        if agg.all_reported() and not agg.finished:
            to_finish.append(agg)
        for a in sorted(to_finish, key=lambda a: a.round):
            self._finish_round(a, now)
        self.version += 1
        agg.version = self.version
        with self.store.tx():
            self.store.put_report(agg.reports[node.node_id])
            for a in {a.round: a for a in (agg, *to_finish)}.values():
                self.store.put_round(a.row())
            self.store.put_node(node.row())
            self._write_events()
        self._dirty_nodes.discard(node.node_id)
        self._touch(node)

    def _finish_round(self, agg: RoundAgg, now: float) -> None:
        agg.finished_unix = now
        self._open_rounds.discard(agg.round)
        done = [a for a in self.rounds.values() if a.finished and a.loss_tokens is not None]
        agg.loss_tokens = sum(a.tokens for a in done if a.round < agg.round) + agg.tokens
        agg.loss = agg.mean_loss
        agg.val_loss = agg.mean_val_loss
        self._append_loss_points(agg)
        self.version += 1
        agg.version = self.version
        self._event(
            now,
            "round_finished",
            "",
            f"round {agg.round}: {len(agg.reports)} peers, {agg.tokens} tokens, loss {agg.loss:.4f}",
        )

    def _append_loss_points(self, agg: RoundAgg) -> None:
        if agg.loss_tokens is None or agg.loss is None:
            return
        self.loss_points.append((agg.round, agg.loss_tokens, agg.loss))
        if agg.val_loss is not None:
            self.val_points.append((agg.round, agg.loss_tokens, agg.val_loss))

    @property
    def outer_round(self) -> int:
        return max(self.rounds, default=0)

    # -- certified rounds ------------------------------------------------------------------

    def latest_certified(self) -> Certified | None:
        return self.certified[max(self.certified)] if self.certified else None

    def keeper_live(self, now: float) -> bool:
        return self.keeper_last_unix > 0 and now - self.keeper_last_unix <= certify.KEEPER_LIVE_S

    def keeper_report(self, rep: dict[str, Any], now: float) -> Certified | None:
        """Record a (verified) keeper report; its state becomes its round's certificate (a
        keeper's word overrides the nodes' majority). Returns the latest certificate."""
        self.keeper_last_unix = now
        if rep["dht_maddrs"]:
            self.keeper_maddrs = rep["dht_maddrs"]
        if rep["checkpoint_error"] and rep["checkpoint_error"] != self.keeper_checkpoint_error:
            self._event(now, "checkpoint_failed", "", f"keeper: {rep['checkpoint_error']}")
        self.keeper_checkpoint_error = rep["checkpoint_error"]
        self.keeper_checkpoint_round = rep["checkpoint_round"]
        if rep["hello"]:
            self._event(now, "keeper", "", "keeper started")
        cert = None
        if rep["params_sha256"]:
            r = rep["round"]
            self.keeper_last_round = r
            old = self.certified.get(r)
            if old is None or old.params_sha256 != rep["params_sha256"] or old.source != "keeper":
                cert = Certified(r, rep["tokens"], rep["params_sha256"], certify.KEEPER, now)
                self.certified[r] = cert
                if old is not None and old.params_sha256 != cert.params_sha256:
                    why = (
                        f"round {r}: the keeper's digest {cert.params_sha256[:12]} replaces the "
                        f"{old.source}'s {old.params_sha256[:12]}"
                    )
                else:
                    why = f"round {r} certified by the keeper ({cert.params_sha256[:12]})"
                self._event(now, "round_certified", "", why)
        with self.store.tx():
            if cert is not None:
                self.store.put_certified(cert.row())
            self.store.set_meta("keeper_last_unix", now)
            self.store.set_meta("keeper_last_round", self.keeper_last_round)
            self.store.set_meta("keeper_checkpoint_round", self.keeper_checkpoint_round)
            self._write_events()
        self.version += 1
        return self.latest_certified()

    def _certify_by_majority(self, now: float) -> bool:
        """Finished rounds the keeper did not certify fall back to the nodes' majority."""
        changed = False
        for agg in self.rounds.values():
            if (
                agg.round in self.certified
                or not agg.finished
                or not certify.majority_due(agg.finished_unix, self.keeper_last_unix, now)
            ):
                continue
            verdict = certify.majority(rep["params_sha256"] for rep in agg.reports.values())
            if verdict.digest is None:
                continue  # no majority (yet): a later report may make one
            tokens = sum(a.tokens for a in self.rounds.values() if a.round <= agg.round)
            cert = Certified(agg.round, tokens, verdict.digest, certify.MAJORITY, now)
            self.certified[agg.round] = cert
            self._event(
                now,
                "round_certified",
                "",
                f"round {agg.round} certified by the majority of nodes ({verdict.votes} of "
                f"{verdict.voters}): the keeper did not report it",
            )
            with self.store.tx():
                self.store.put_certified(cert.row())
                self._write_events()
            changed = True
        return changed

    def _continue_if_stuck(self, now: float) -> bool:
        """When nobody live holds the latest certified round (certify.continue_from) for
        STUCK_GRACE_S, the run continues from the keeper's round: the rounds after it are
        forgotten (records, reports, certificates), so the next node adopts the keeper's state
        and its rounds are numbered on from there."""
        latest = self.latest_certified()
        target = None
        if latest is not None:
            target = certify.continue_from(
                latest.round,
                self.keeper_live(now),
                self.keeper_last_round,
                [n.outer_round for n in self.nodes.values() if n.state == "active"],
            )
        kept = self.certified.get(target) if target is not None else None
        if kept is None or kept.source != certify.KEEPER:
            self._stuck_since = None
            return False
        if self._stuck_since is None:
            self._stuck_since = now
        if now - self._stuck_since < certify.STUCK_GRACE_S:
            return False
        self._stuck_since = None
        assert latest is not None and target is not None
        for r in [r for r in self.rounds if r > target]:
            del self.rounds[r]
            self._open_rounds.discard(r)
        for r in [r for r in self.certified if r > target]:
            del self.certified[r]
        self.loss_points = [p for p in self.loss_points if p[0] <= target]
        self.val_points = [p for p in self.val_points if p[0] <= target]
        self._event(
            now,
            "rounds_abandoned",
            "",
            f"no live node or keeper holds round {latest.round} (the keeper is at round {target}):"
            f" rounds {target + 1}-{latest.round} are abandoned and the run continues from the "
            f"keeper's round {target} ({kept.params_sha256[:12]})",
        )
        with self.store.tx():
            self.store.drop_rounds_after(target)
            self._write_events()
        return True

    # -- periodic work ---------------------------------------------------------------------

    def tick(self, now: float, *, flush: bool = True) -> None:
        """Expire leases, mark silent nodes lost, settle rounds, sample throughput, flush."""
        changed = False
        for lease in self.sched.expire(now):
            self._event(
                now,
                "lease_expired",
                lease.node_id,
                f"shard {lease.shard.shard_id} back in the queue",
            )
            changed = True
        if now - self._last_lost_check >= LOST_CHECK_EVERY_S:
            self._last_lost_check = now
            lost_after = LOST_AFTER_HEARTBEATS * self.config.heartbeat_seconds
            for node in [n for n in self.nodes.values() if n.state == "active"]:
                if now - node.last_seen_unix > lost_after:
                    self._end_session(
                        node, "lost", now, f"no heartbeat for {now - node.last_seen_unix:.0f} s"
                    )
        for r in sorted(self._open_rounds):
            agg = self.rounds[r]
            if not agg.finished and now - agg.first_unix >= ROUND_SETTLE_S:
                self._finish_round(agg, now)
                with self.store.tx():
                    self.store.put_round(agg.row())
                changed = True
        changed |= self._certify_by_majority(now)
        changed |= self._continue_if_stuck(now)
        if now - self._last_sample >= THROUGHPUT_EVERY_S:
            self._last_sample = now
            seq = self.throughput[-1][0] + 1 if self.throughput else 1
            self.throughput.append((seq, now, self.tokens_per_second()))
            self.store.put_throughput(now, self.tokens_per_second())
            self.version += 1
        if changed:
            self.version += 1
        if flush:
            self.flush(now)

    def flush(self, now: float, limit: int | None = None) -> bool:
        """Write batched heartbeat stats, lease extensions and events in one transaction.

        With `limit`, at most that many nodes' stats go in this transaction (the server calls
        it repeatedly, yielding to its event loop in between, so no RPC waits long behind a
        big flush); returns True while more remain.
        """
        if self.readonly:
            return False
        if limit is None or limit >= len(self._dirty_nodes):
            ids, self._dirty_nodes = self._dirty_nodes, set()
        else:
            ids = {self._dirty_nodes.pop() for _ in range(limit)}
        rows = [self.nodes[n].stats_row() for n in ids if n in self.nodes]
        if rows or self.sched.dirty or self._pending_events:
            with self.store.tx():
                if rows:
                    self.store.put_node_stats(rows)
                self._write_shards()
                self._write_events()
        return bool(self._dirty_nodes)

    def set_spec(self, spec: Any, now: float) -> None:
        """The maintainer changed the spec (`gpt5os-coordinator spec --set`): hand out the new
        one to joining nodes; running nodes see the new revision in their next HeartbeatResponse
        and log that a restart picks it up (node/heartbeat.py)."""
        if spec.revision == self.spec.revision:
            return
        self.spec = self.config.spec = spec
        self.spec_pb = spec.to_pb()
        self._event(now, "spec_changed", "", f"run spec revision {spec.revision}")
        self.flush(now)

    def poll_control(self, now: float) -> None:
        """Pick up `gpt5os-coordinator pause/resume/ban/unban`: they write to the store directly."""
        paused = self.store.get_meta("paused") == "1"
        if paused != self.paused:
            self.paused = paused
            self._event(now, "paused" if paused else "resumed", "", "by the maintainer")
            self.version += 1
        stored = self.store.bans()
        for node_id in [n for n in self.bans if n not in stored]:  # `unban`
            self.lift_ban(node_id, now)
        for node_id, reason in stored.items():
            if node_id not in self.bans or (
                node_id in self.nodes and self.nodes[node_id].state != "banned"
            ):
                self.apply_ban(node_id, reason, now)
        self.flush(now)

    # -- queries ---------------------------------------------------------------------------

    def tokens_per_second(self) -> float:
        return sum(n.tokens_per_second for n in self.nodes.values() if n.state == "active")

    def tokens_trained(self) -> int:
        return sum(n.tokens_trained for n in self.nodes.values())

    def initial_peers(self, own: list[str], exclude: str, now: float) -> list[str]:
        """The coordinator's DHT addresses, then recently seen nodes' addresses, newest first.

        O(1) per Join: heartbeats keep `_recent_peers` ordered by last report (see heartbeat).
        """
        peers = list(own) + [m for m in self.keeper_maddrs[:2] if m not in own]
        for node_id in reversed(self._recent_peers):
            if len(peers) >= INITIAL_PEERS_MAX + len(own):
                break
            node = self.nodes.get(node_id)
            if node is None or node.state != "active" or node_id == exclude:
                continue
            peers.extend(m for m in node.dht_maddrs[:2] if m not in peers)
        return peers[: INITIAL_PEERS_MAX + len(own)]

    def find_node(self, prefix: str) -> NodeRecord:
        if prefix in self.nodes:
            return self.nodes[prefix]
        hits = [n for nid, n in self.nodes.items() if nid.startswith(prefix)]
        if not hits:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no node {prefix!r} in this run")
        if len(hits) > 1:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node id prefix {prefix!r} matches {len(hits)} nodes",
            )
        return hits[0]

    # -- internals -------------------------------------------------------------------------

    def _touch(self, node: NodeRecord) -> None:
        self.version += 1
        node.version = self.version

    def _event(self, now: float, kind: str, node_id: str, message: str) -> None:
        ev = (self.next_event_id, now, kind, node_id, message)
        self.next_event_id += 1
        self.events.append(ev)
        self._pending_events.append(ev)
        self.version += 1

    def _write_events(self) -> None:
        if self._pending_events:
            self.store.put_events(self._pending_events)
            self._pending_events = []

    def _write_shards(self) -> None:
        if self.sched.dirty:
            self.store.put_shard_states(
                self.sched.states[s] for s in self.sched.dirty if s in self.sched.states
            )
            self.sched.dirty.clear()


class _Obj:
    def __init__(self, row: Any) -> None:
        self.__dict__.update(dict(row))


def open_swarm(run_dir: Path, config: RunConfig, *, now: float, readonly: bool = False) -> Swarm:
    from gpt5os.coordinator.store import DB_NAME

    return Swarm(
        config, Store(Path(run_dir) / DB_NAME, readonly=readonly), now=now, readonly=readonly
    )


__all__ = ["Swarm", "node_id_of", "open_swarm", "ShardRef"]
