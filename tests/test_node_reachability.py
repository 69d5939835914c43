"""The reachability check (node/reachability.py, coordinator/reachability.py) against a real
coordinator on loopback: an open port is reached and greeted with the node's nonce, a closed one
is reported with why, and the coordinator probes nobody but the caller."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from gpt5os.coordinator.reachability import caller_host
from gpt5os.coordinator.testkit import KEYRING, ThreadedServer, make_run, sync_channel
from gpt5os.node.coordinator_client import CoordinatorClient
from gpt5os.node.identity import load_or_create_identity
from gpt5os.node.reachability import network_mode, split_listen
from gpt5os.proto import pb, pb_grpc


@pytest.fixture
def joined(tmp_path: Path):
    make_run(tmp_path / "run", n_train=2, n_val=1)
    served = ThreadedServer(tmp_path / "run")
    client = CoordinatorClient(served.address, load_or_create_identity(tmp_path / "home"))
    client.join("cpu")
    yield served, client
    client.close()
    served.close()


def test_split_listen_and_caller_host() -> None:
    assert split_listen("/ip4/127.0.0.1/tcp/0") == ("ip4", "127.0.0.1", 0)
    assert split_listen("/ip6/::1/tcp/4000") == ("ip6", "::1", 4000)
    with pytest.raises(ValueError, match="--dht-listen"):
        split_listen("/dns4/example.org/tcp/1")
    assert caller_host("ipv4:10.0.0.5:41234") == "10.0.0.5"
    assert caller_host("ipv6:[::1]:41234") == "::1"
    assert caller_host("unix:/tmp/x") is None


def test_a_node_the_coordinator_can_reach_runs_as_a_full_peer(joined) -> None:
    _, client = joined
    mode = network_mode(client, "/ip4/127.0.0.1/tcp/0")
    assert not mode.client_mode
    _, host, port = split_listen(mode.listen)
    assert host == "127.0.0.1" and port > 0  # the probed port is the one hivemind will use
    assert f"the coordinator reached 127.0.0.1:{port}" in mode.describe()
    with socket.socket() as s:  # the temporary listener is gone: hivemind can bind the port
        s.bind(("127.0.0.1", port))
    forwarded = network_mode(client, "/ip4/127.0.0.1/tcp/0", announce_host="203.0.113.7")
    assert forwarded.announce == [f"/ip4/203.0.113.7/tcp/{split_listen(forwarded.listen)[2]}"]


def test_forced_client_mode_skips_the_probe(joined) -> None:
    served, client = joined
    mode = network_mode(client, "/ip4/127.0.0.1/tcp/0", client_mode=True)
    assert mode.client_mode and "client mode through relays (--client-mode)" in mode.describe()


def test_a_closed_port_is_unreachable_and_strangers_may_not_ask(joined) -> None:
    served, client = joined
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, not listening: connections are refused
        reply = client.probe_reachability(closed)
    assert not reply.reachable and "no connection to 127.0.0.1" in reply.error
    KEYRING.add(client.identity.private_key)  # signed as the node: refused for what it asks
    with sync_channel(served.address) as channel:
        stub = pb_grpc.CoordinatorStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ProbeReachability(
                pb.ProbeReachabilityRequest(
                    auth=pb.NodeAuth(node_id=client.session.node_id, session_token="forged"),
                    port=closed,
                ),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            stub.ProbeReachability(
                pb.ProbeReachabilityRequest(auth=client._auth(), port=70000), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
