"""Request shape checks (coordinator/validate.py) as pure functions: each bound, at and past it.

The gRPC tests show that a refused request changes nothing; these pin each limit exactly, so
an off-by-one in a bound fails here in milliseconds (and in `make mutation`).
"""

from __future__ import annotations

import math

import grpc
import pytest
from gpt5os.coordinator import validate as v
from gpt5os.coordinator.records import ApiError
from gpt5os.proto import pb

NODE = "0123456789abcdef0123"


def refused(fn, *args, **kw) -> str:
    with pytest.raises(ApiError) as e:
        fn(*args, **kw)
    assert e.value.code is grpc.StatusCode.INVALID_ARGUMENT
    return e.value.message


def test_text_bounds() -> None:
    assert v.text("", "f") == ""
    assert v.text("x" * v.MAX_TEXT, "f") == "x" * v.MAX_TEXT
    assert refused(v.text, "x" * (v.MAX_TEXT + 1), "f") == "f: is 257 characters long; at most 256"
    assert refused(v.text, "", "f", required=True) == "f: is required"
    assert v.text("abc", "f", limit=3) == "abc"
    refused(v.text, "abcd", "f", limit=3)


def test_number_bounds() -> None:
    assert v.number(0.0, "n") == 0.0 and v.number(1e15, "n") == 1e15
    assert isinstance(v.number(3, "n"), float)
    assert "between 0 and 1e+15" in refused(v.number, 1.0000001e15, "n")
    assert "got -1" in refused(v.number, -1.0, "n")
    assert v.number(-1.0, "n", low=-1.0) == -1.0
    assert v.number(5.0, "n", high=5.0) == 5.0
    refused(v.number, 5.5, "n", high=5.0)
    for bad in (math.nan, math.inf, -math.inf):
        assert "finite" in refused(v.number, bad, "n")


def test_node_id_and_auth() -> None:
    assert v.node_id(NODE) == NODE
    for bad in (NODE[:-1], NODE + "0", NODE.upper(), "g" * 20, ""):
        assert "20 lowercase hex" in refused(v.node_id, bad)
    assert v.auth(pb.NodeAuth(node_id=NODE, session_token="t")) == (NODE, "t")
    assert refused(v.auth, pb.NodeAuth(node_id=NODE)).startswith("auth.session_token")
    assert refused(v.auth, pb.NodeAuth(node_id="x", session_token="t")).startswith("auth.node_id")
    long = "t" * (v.MAX_TOKEN + 1)
    refused(v.auth, pb.NodeAuth(node_id=NODE, session_token=long))
    assert v.auth(pb.NodeAuth(node_id=NODE, session_token="t" * v.MAX_TOKEN))[1] == "t" * 128


def test_join() -> None:
    info = pb.NodeInfo(software_version="0.1.0", device="cpu", hostname="h", display_name="n")
    key, got = v.join(pb.JoinRequest(public_key=b"k" * 32, info=info))
    assert key == b"k" * 32 and isinstance(key, bytes)
    assert got == {
        "software_version": "0.1.0",
        "device": "cpu",
        "hostname": "h",
        "display_name": "n",
    }
    for size in (0, 31, 33):
        assert "32-byte" in refused(v.join, pb.JoinRequest(public_key=b"k" * size, info=info))
    no_version = pb.NodeInfo(device="cpu")
    refused(v.join, pb.JoinRequest(public_key=b"k" * 32, info=no_version))
    for field, limit in (("software_version", 64), ("display_name", 64), ("hostname", 256)):
        ok = pb.NodeInfo(software_version="0.1.0")
        setattr(ok, field, "1" * limit)
        v.join(pb.JoinRequest(public_key=b"k" * 32, info=ok))
        setattr(ok, field, "1" * (limit + 1))
        assert field in refused(v.join, pb.JoinRequest(public_key=b"k" * 32, info=ok))


def test_stats() -> None:
    maddr = "/ip4/1.2.3.4/tcp/1/p2p/Qm"
    got = v.stats(
        pb.NodeStats(
            tokens_per_second=5, tokens_trained=7, last_loss=2.5, outer_round=3, dht_maddrs=[maddr]
        )
    )
    assert got == {
        "tokens_per_second": 5.0,
        "tokens_trained": 7,
        "last_loss": 2.5,
        "outer_round": 3,
        "dht_maddrs": [maddr],
    }
    assert v.stats(pb.NodeStats())["last_loss"] is None  # 0 = nothing trained yet
    assert v.stats(pb.NodeStats(dht_maddrs=[maddr] * v.MAX_MADDRS))["dht_maddrs"] == [maddr] * 16
    refused(v.stats, pb.NodeStats(dht_maddrs=[maddr] * (v.MAX_MADDRS + 1)))
    assert "multiaddr" in refused(v.stats, pb.NodeStats(dht_maddrs=["ip4/1.2.3.4"]))
    v.stats(pb.NodeStats(dht_maddrs=["/" + "x" * (v.MAX_MADDR_LEN - 1)]))
    refused(v.stats, pb.NodeStats(dht_maddrs=["/" + "x" * v.MAX_MADDR_LEN]))
    assert v.stats(pb.NodeStats(last_loss=1e6))["last_loss"] == 1e6
    assert "stats.last_loss" in refused(v.stats, pb.NodeStats(last_loss=1.5e6))
    assert "stats.last_loss" in refused(v.stats, pb.NodeStats(last_loss=-0.5))
    assert v.stats(pb.NodeStats(tokens_per_second=1e12))["tokens_per_second"] == 1e12
    assert "tokens_per_second" in refused(v.stats, pb.NodeStats(tokens_per_second=2e12))
    assert "tokens_per_second" in refused(v.stats, pb.NodeStats(tokens_per_second=math.nan))


def test_shard_id() -> None:
    assert v.shard_id("train-00001") == "train-00001"
    assert v.shard_id("s" * v.MAX_SHARD_ID) == "s" * 128
    refused(v.shard_id, "s" * (v.MAX_SHARD_ID + 1))
    assert refused(v.shard_id, "") == "shard_id: is required"


def report_req(**kw) -> pb.ReportRoundRequest:
    base = dict(round=1, peer_node_ids=[NODE], tokens=10, mean_loss=2.0, duration_s=3.0)
    return pb.ReportRoundRequest(**{**base, **kw})


def test_report() -> None:
    got = v.report(
        report_req(averaging_s=1.5, params_sha256="a" * 64, val_loss=4.0, group_tokens=30)
    )
    assert got == {
        "round": 1,
        "peer_node_ids": [NODE],
        "tokens": 10,
        "mean_loss": 2.0,
        "duration_s": 3.0,
        "averaging_s": 1.5,
        "params_sha256": "a" * 64,
        "val_loss": 4.0,
        "group_tokens": 30,
    }
    assert (
        v.report(report_req())["val_loss"] is None and v.report(report_req())["params_sha256"] == ""
    )
    assert v.report(report_req(val_loss=0.0))["val_loss"] == 0.0  # set to zero is not unset
    assert "numbered from 1" in refused(v.report, report_req(round=0))
    assert "twice" in refused(v.report, report_req(peer_node_ids=[NODE, NODE]))
    assert "peer_node_ids[]" in refused(v.report, report_req(peer_node_ids=["nope"]))
    assert "params_sha256" in refused(v.report, report_req(params_sha256="A" * 64))
    assert "params_sha256" in refused(v.report, report_req(params_sha256="a" * 63))
    assert "val_loss" in refused(v.report, report_req(val_loss=2e6))
    assert "mean_loss" in refused(v.report, report_req(mean_loss=math.inf))
    assert v.report(report_req(duration_s=1e7, averaging_s=1e7))["duration_s"] == 1e7
    assert "duration_s" in refused(v.report, report_req(duration_s=1.1e7))
    assert "averaging_s" in refused(v.report, report_req(averaging_s=1.1e7))


def test_report_peer_limit(monkeypatch) -> None:
    monkeypatch.setattr(v, "MAX_PEERS", 2)
    ids = [f"{i:020x}" for i in range(3)]
    assert v.report(report_req(peer_node_ids=ids[:2]))["peer_node_ids"] == ids[:2]
    assert "at most 2 peers" in refused(v.report, report_req(peer_node_ids=ids))


def test_min_interval() -> None:
    assert v.min_interval(0, 1.0) == 1.0
    assert v.min_interval(0.01, 1.0) == 0.1 and v.min_interval(2.0, 1.0) == 2.0
    assert v.min_interval(3600.0, 1.0) == 3600.0
    refused(v.min_interval, 3601.0, 1.0)
    refused(v.min_interval, -1.0, 1.0)


def test_exact_published_limits() -> None:
    """The limits as numbers (not via the constants), at and just past each bound."""
    ok_maddr, long_maddr = "/" + "x" * 511, "/" + "x" * 512
    assert v.stats(pb.NodeStats(dht_maddrs=[ok_maddr]))["dht_maddrs"] == [ok_maddr]
    message = refused(v.stats, pb.NodeStats(dht_maddrs=[long_maddr]))
    assert repr(long_maddr[:60]) in message and repr(long_maddr[:61]) not in message
    assert v.number(1e15, "n") == 1e15
    refused(v.number, 1e15 + 1, "n")
    assert v.stats(pb.NodeStats(last_loss=0.5))["last_loss"] == 0.5
    refused(v.stats, pb.NodeStats(last_loss=1_000_000.5))
    refused(v.stats, pb.NodeStats(tokens_per_second=1e12 + 1))
    for field in ("mean_loss", "val_loss"):
        assert v.report(report_req(**{field: 1e6}))[field] == 1e6
        assert field in refused(v.report, report_req(**{field: 1_000_000.5}))
    for field in ("duration_s", "averaging_s"):
        assert field in refused(v.report, report_req(**{field: 10_000_000.5}))
    assert v.report(report_req(round=2))["round"] == 2


def test_peer_list_limit_is_ten_thousand() -> None:
    ids = [f"{i:020x}" for i in range(10_001)]
    assert len(v.report(report_req(peer_node_ids=ids[:10_000]))["peer_node_ids"]) == 10_000
    assert "at most 10000 peers" in refused(v.report, report_req(peer_node_ids=ids))
    assert len(v.report(report_req(peer_node_ids=ids[:300]))["peer_node_ids"]) == 300
