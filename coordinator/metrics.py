"""Prometheus metrics of one coordinator, on their own registry (several servers per process in
tests must not collide in the global one). Gauges are refreshed from the Swarm once per tick;
RPC counters and latencies are recorded by the server around every call.
"""

from __future__ import annotations

from typing import Any

from gpt5os.coordinator.records import NODE_STATES
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.nodes = Gauge("gpt5os_nodes", "Nodes by state", ["state"], registry=r)
        self.shards = Gauge(
            "gpt5os_shards", "Training shards of the epoch by state", ["state"], registry=r
        )
        self.tokens = Gauge("gpt5os_tokens_trained", "Swarm tokens trained", registry=r)
        self.tps = Gauge("gpt5os_tokens_per_second", "Swarm tokens per second", registry=r)
        self.rounds = Gauge("gpt5os_outer_round", "Highest outer round reported", registry=r)
        self.epoch = Gauge("gpt5os_epoch", "Current data epoch", registry=r)
        self.rpcs = Counter("gpt5os_rpc", "RPCs answered", ["method", "code"], registry=r)
        self.latency = Histogram(
            "gpt5os_rpc_seconds", "RPC latency", ["method"], buckets=_BUCKETS, registry=r
        )
        self._http: Any = None

    def serve(self, port: int, host: str) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def refresh(self, sw: Any) -> None:
        counts = {s: 0 for s in NODE_STATES}
        for n in sw.nodes.values():
            counts[n.state] = counts.get(n.state, 0) + 1
        for state, c in counts.items():
            self.nodes.labels(state).set(c)
        for state, c in sw.sched.counts().items():
            if state != "total":
                self.shards.labels(state).set(c)
        self.tokens.set(sw.tokens_trained())
        self.tps.set(sw.tokens_per_second())
        self.rounds.set(sw.outer_round)
        self.epoch.set(sw.sched.epoch)
