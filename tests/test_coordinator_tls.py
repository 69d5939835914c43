"""TLS to the coordinator (common/tls.py, common/channels.py): real servers, real clients.

A node pins the coordinator's self-signed certificate by its fingerprint and refuses any other;
a plaintext client to a TLS coordinator (and a pinned client to a plaintext one) gets one clear
line; a certificate signed by a CA the client trusts works without pinning; `init --tls`,
`serve`, `status` and the dashboard's source take the same options.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpt5os.common.channels import PLAINTEXT, ChannelError, Security, credentials
from gpt5os.common.tls import (
    TlsError,
    TlsFiles,
    fingerprint,
    make_self_signed,
    normalize_fingerprint,
)
from gpt5os.coordinator.server import CoordinatorServer, ServeError
from gpt5os.coordinator.testkit import ThreadedServer, make_data_dir, make_run
from gpt5os.dashboard.feed import CoordinatorSource, SourceError
from gpt5os.node.coordinator_client import CoordinatorClient, CoordinatorError
from gpt5os.node.identity import load_or_create_identity
from test_coordinator_cli import cli, start_serve, stop, tool, wait_line

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    make_run(run, n_train=2, n_val=1)
    return run


@pytest.fixture
def tls_server(run_dir: Path) -> Iterator[ThreadedServer]:
    served = ThreadedServer(run_dir, tls=make_self_signed(run_dir))
    yield served
    served.close()


def node_client(address: str, home: Path, security: Security) -> CoordinatorClient:
    return CoordinatorClient(address, load_or_create_identity(home), security=security)


def test_fingerprints_are_normalised_and_malformed_ones_refused() -> None:
    fp = "ab" * 32
    want = ":".join(["AB"] * 32)
    assert normalize_fingerprint(fp) == want
    assert normalize_fingerprint(f"sha256:{want.lower()}") == want
    for bad in ("", "AB:CD", "zz" * 32, "ab" * 33):
        with pytest.raises(TlsError, match="SHA-256 certificate fingerprint"):
            normalize_fingerprint(bad)
    with pytest.raises(ChannelError, match="not a SHA-256"):
        Security.from_options("nope")


def test_self_signed_key_is_private_and_served_fingerprint_matches(
    tls_server: ThreadedServer, run_dir: Path
) -> None:
    files = TlsFiles.of_run(run_dir)
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert tls_server.server.fingerprint == fingerprint(files.cert.read_bytes())
    with pytest.raises(TlsError, match="already exists"):
        make_self_signed(run_dir)


def test_node_joins_a_tls_coordinator_with_the_pinned_fingerprint(
    tls_server: ThreadedServer, tmp_path: Path
) -> None:
    security = Security.from_options(tls_server.server.fingerprint.replace(":", "").lower())
    client = node_client(tls_server.address, tmp_path / "home", security)
    try:
        session = client.join("cpu")
        assert session.node_id
        assert client.lease_shard().granted  # later calls go over the same TLS channel
    finally:
        client.close()


def test_node_refuses_a_coordinator_whose_certificate_does_not_match(
    tls_server: ThreadedServer, tmp_path: Path
) -> None:
    other = make_self_signed(tmp_path / "other")  # the certificate the node was told to expect
    security = Security.from_options(fingerprint(other.cert.read_bytes()))
    client = node_client(tls_server.address, tmp_path / "home", security)
    with pytest.raises(CoordinatorError) as err:
        client.join("cpu")
    message = str(err.value)
    assert "\n" not in message
    assert tls_server.server.fingerprint in message and "refusing to connect" in message
    assert not tls_server.server.swarm.nodes  # nothing reached the coordinator


def test_plaintext_client_to_tls_coordinator_gets_a_clear_error(
    tls_server: ThreadedServer, tmp_path: Path
) -> None:
    client = node_client(tls_server.address, tmp_path / "home", PLAINTEXT)
    with pytest.raises(CoordinatorError, match="uses TLS: pass --coordinator-fingerprint"):
        client.join("cpu")


def test_pinned_client_refuses_a_plaintext_coordinator(run_dir: Path, tmp_path: Path) -> None:
    served = ThreadedServer(run_dir)
    try:
        security = Security.from_options("AB" * 32)
        with pytest.raises(ChannelError, match="does not speak TLS"):
            credentials(served.address, security)
        client = node_client(served.address, tmp_path / "home", PLAINTEXT)
        assert client.join("cpu").node_id  # plaintext still works without options
        client.close()
    finally:
        served.close()


def test_a_key_others_can_read_is_refused_at_serve(run_dir: Path) -> None:
    files = make_self_signed(run_dir)
    os.chmod(files.key, 0o644)

    async def start() -> None:
        server = CoordinatorServer(run_dir, port=0, tls=files)
        try:
            await server.start()
        finally:
            await server.stop(0.1)

    with pytest.raises(ServeError, match="chmod 600"):
        asyncio.run(start())


async def test_dashboard_source_watches_a_tls_coordinator(tls_server: ThreadedServer) -> None:
    pinned = CoordinatorSource(
        tls_server.address, security=Security.from_options(tls_server.server.fingerprint)
    )
    try:
        first = await asyncio.wait_for(anext(pinned.watch()), 30)
        assert first.HasField("snapshot")
    finally:
        await pinned.close()
    plain = CoordinatorSource(tls_server.address)
    with pytest.raises(SourceError, match="uses TLS"):
        await anext(plain.watch())


def _ca_signed(tmp_path: Path) -> tuple[Path, TlsFiles]:
    """A private CA (as a system store would hold) and a server certificate it signed for
    localhost; the server's key is 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    files = TlsFiles(tmp_path / "server.crt", tmp_path / "server.key")
    files.cert.write_bytes(cert.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(files.key, 0o600)
    return ca_file, files


@pytest.mark.e2e
def test_cli_init_tls_serve_and_status_pin_or_trust_the_system_cas(tmp_path: Path) -> None:
    """`init --tls` then `serve` (it prints the fingerprint) and `status` with the pin; a
    CA-signed certificate (`serve --tls-cert/--tls-key`) works for `status --tls` when the CA is
    in the client's trust store (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH stands for the system's)."""
    data = tmp_path / "data"
    make_data_dir(data, n_train=2)
    run = tmp_path / "run"
    r = cli("init", "--dir", str(run), "--data", str(data), "--tls", "--tls-host", "10.1.2.3")
    assert r.returncode == 0, r.stderr
    files = TlsFiles.of_run(run)
    fp = fingerprint(files.cert.read_bytes())
    assert fp in r.stdout and files.key.stat().st_mode & 0o777 == 0o600
    proc, port_file = start_serve(run, "--no-dht", "--no-keeper")
    try:
        line = wait_line(proc, 60)
        assert f"fingerprint {fp}" in line
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        ok = cli("status", "--coordinator", address, "--coordinator-fingerprint", fp, "--json")
        assert ok.returncode == 0, ok.stderr
        wrong = cli("status", "--coordinator", address, "--coordinator-fingerprint", "00" * 32)
        assert wrong.returncode == 1 and "not the pinned" in wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        plain = cli("status", "--coordinator", address)
        assert plain.returncode == 1 and "uses TLS" in plain.stderr
    finally:
        code, err = stop(proc)
    assert code == 0, err

    ca_file, ca_signed = _ca_signed(tmp_path)
    proc, port_file = start_serve(
        run, "--no-dht", "--no-keeper", "--tls-cert", str(ca_signed.cert), "--tls-key",
        str(ca_signed.key),
    )  # fmt: skip
    try:
        wait_line(proc, 60)
        address = f"localhost:{port_file.read_text().strip()}"
        env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(ca_file)}
        trusted = subprocess.run(
            [tool("gpt5os-coordinator"), "status", "--coordinator", address, "--tls", "--json"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert trusted.returncode == 0, trusted.stderr
        untrusted = cli("status", "--coordinator", address, "--tls", "--timeout", "3")
        assert untrusted.returncode == 1, untrusted.stderr  # the CA is not in gRPC's own roots
    finally:
        code, err = stop(proc)
    assert code == 0, err
