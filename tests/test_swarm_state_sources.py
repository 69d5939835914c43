"""Real processes: an admitted peer downloads state only from peers whose swarm token is valid
and names them (node/swarm.py's download_state): a stranger without a token and a peer serving
someone else's copied token are refused (logged once however often); an admitted peer's state
is adopted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import Proc, process_env, wait_for

WORKER = str(Path(__file__).with_name("state_source_worker.py"))
SERVERS = ("admitted", "stranger", "copied")
pytestmark = pytest.mark.timeout(300)


def test_state_is_taken_only_from_admitted_peers(tmp_path: Path) -> None:
    key_file = tmp_path / "coordinator_key.pem"
    key_file.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    env = process_env(tmp_path)
    procs: list[Proc] = []

    def worker(role: str, *extra: str) -> Proc:
        args = [sys.executable, WORKER, "--role", role, "--coordinator-key", str(key_file),
                "--out", str(tmp_path / f"{role}.json"), *extra]  # fmt: skip
        proc = Proc(args, tmp_path / f"{role}.log", env)
        procs.append(proc)
        return proc

    try:
        for role in SERVERS:
            worker(role)
        sources = {}
        for proc, role in zip(procs, SERVERS, strict=True):
            out = tmp_path / f"{role}.json"

            def ready(proc: Proc = proc, out: Path = out) -> bool:
                assert proc.alive(), proc.tail()
                return out.exists()

            wait_for(ready, 240, f"the {role} server")
            sources[role] = json.loads(out.read_text())
        (tmp_path / "sources.json").write_text(json.dumps(sources))
        fetch = worker("fetch", "--sources", str(tmp_path / "sources.json"))
        assert fetch.wait(timeout=180) == 0, fetch.tail()
        results = json.loads((tmp_path / "fetch.json").read_text())
        assert results == {
            "admitted": "adopted",
            "stranger": "refused",
            "copied": "refused",
            "stranger_again": ["refused"] * 3,
        }, fetch.tail()
        log = fetch.output()
        refusal = f"state from peer {sources['stranger']['peer']} refused: no swarm token"
        assert log.count(refusal) == 1, log  # 4 refusals, one line (common/log_limit.py)
        assert f"state from peer {sources['copied']['peer']} refused" in log
        assert "belongs to another peer" in log
    finally:
        for proc in procs:
            proc.stop()
