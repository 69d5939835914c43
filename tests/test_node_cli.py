"""`gpt5os-node` answers bad input with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from e2e_support import process_env, tool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("gpt5os-node"), "join", "--home", str(tmp_path / "home"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(tmp_path),
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize("address", ["no-port-here", "host:notaport", "host:70000"])
def test_malformed_coordinator_address(tmp_path: Path, address: str) -> None:
    _assert_one_clear_line(_join(tmp_path, "--coordinator", address), "HOST:PORT")


def test_coordinator_that_does_not_answer(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    _assert_one_clear_line(_join(tmp_path, "--coordinator", address), "cannot reach", address)


def test_cuda_asked_for_without_a_gpu(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = _join(tmp_path, "--coordinator", "127.0.0.1:1", "--device", "cuda")
    _assert_one_clear_line(result, "--device")


def test_generate_with_a_missing_checkpoint(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            tool("gpt5os-node"),
            "generate",
            "--checkpoint",
            str(tmp_path / "nope.safetensors"),
            "--prompt",
            "hi",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _assert_one_clear_line(result, "not found")


def test_generate_streams_a_continuation_from_a_checkpoint(tmp_path: Path) -> None:
    import torch
    from gpt5os.model import RWKV7, ModelConfig, save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "small.safetensors"
    save_checkpoint(RWKV7(ModelConfig(n_layer=1, n_embd=64)), checkpoint)
    result = subprocess.run(
        [tool("gpt5os-node"), "generate", "--checkpoint", str(checkpoint), "--prompt", "def fib(n):",
         "--max-tokens", "8", "--temperature", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == greedy_reference(checkpoint, "def fib(n):", 8) + "\n"


def greedy_reference(checkpoint: Path, prompt: str, max_tokens: int) -> str:
    """Temperature 0 by hand: the argmax of a full forward over the whole sequence, each step."""
    import torch
    from gpt5os.model import load_checkpoint, load_tokenizer

    model, tokenizer = load_checkpoint(checkpoint).eval(), load_tokenizer()
    seq = tokenizer.encode(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            token = int(model(torch.tensor([seq]))[0, -1].argmax())
            if token == 0:  # end of document
                break
            out.append(token)
            seq.append(token)
    return tokenizer.decode_bytes(out).decode("utf-8", errors="replace")
