"""Network namespaces for real-process tests and benchmarks (root only).

`Net.create(n)` makes `n` namespaces, each joined by a veth pair to one bridge on the host that
holds `host_ip` (where a coordinator and its keeper listen); processes run in namespace `i`
through `net.wrap(i, args)`. Each node's traffic crosses its own veth: `bytes(i)` reads the
counters (bench/swarm.py), `shape` limits the link to 100 Mbit/s with `tc tbf` (netem, which
would add delay, is missing from this kernel), and `cut(i)` / `restore(i)` take the link down
and up again: a partition, while the node's processes keep running (tests/test_e2e_faults.py).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

RATE = "100mbit"


# -- the network: one namespace per node on a bridge, or the shared loopback -------------------


@dataclass
class Net:
    """Network namespaces `ns[i]` with address `ips[i]`, joined by veth pairs to a bridge that
    holds `host_ip` (the coordinator and its keeper listen there)."""

    tag: str
    host_ip: str
    ips: list[str]
    namespaces: list[str]
    host_veths: list[str]
    bridge: str

    @classmethod
    def loopback(cls, n: int) -> Net:
        return cls("", "127.0.0.1", ["127.0.0.1"] * n, [""] * n, [""] * n, "")

    @property
    def measured(self) -> bool:
        return bool(self.bridge)

    @classmethod
    def create(cls, n: int, wan: bool = False) -> Net:
        pid = os.getpid() % 100000
        subnet = f"10.213.{pid % 250}"
        net = cls(
            tag=f"g5b{pid}",
            host_ip=f"{subnet}.1",
            ips=[f"{subnet}.{10 + i}" for i in range(n)],
            namespaces=[f"g5b{pid}n{i}" for i in range(n)],
            host_veths=[f"g5b{pid}h{i}" for i in range(n)],
            bridge=f"g5b{pid}",
        )
        try:
            net._up(wan)
        except BaseException:
            net.close()
            raise
        return net

    def _up(self, wan: bool) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for ns, veth, ip in zip(self.namespaces, self.host_veths, self.ips, strict=True):
            inner = f"{veth}x"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", veth, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", inner)
            sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if wan:  # the node's download (host side egress) and upload (its own egress)
                tbf = ["root", "tbf", "rate", RATE, "burst", "64kb", "latency", "100ms"]
                sh("tc", "qdisc", "add", "dev", veth, *tbf)
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", inner, *tbf)

    def wrap(self, i: int, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[i], *args] if self.measured else args

    def bytes(self, i: int) -> tuple[int, int] | None:
        """(sent, received) by node i so far: the host-side veth's rx and tx counters."""
        if not self.measured:
            return None
        stats = Path("/sys/class/net") / self.host_veths[i] / "statistics"
        return int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text())

    def cut(self, i: int) -> None:
        """Partition node i from everyone: its veth goes down (its processes keep running)."""
        sh("ip", "link", "set", self.host_veths[i], "down")

    def restore(self, i: int) -> None:
        sh("ip", "link", "set", self.host_veths[i], "up")

    def close(self) -> None:
        for ns in self.namespaces:
            if ns:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def sh(*args: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")


def available() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip`), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None
