"""A warm pytest for mutation testing: one server imports the heavy libraries once and forks a
fresh child per mutant; cosmic-ray's test command is a tiny client that asks for one run.

On a loaded 2-core machine a cold `python -m pytest` spends seconds importing pytest's plugins,
grpc, protobuf and hypothesis before the first test; a fork of a process that already holds them
starts in milliseconds. The child imports gpt5os.coordinator.* itself, from the files on disk
(which cosmic-ray just mutated): the server never imports them.

    python bench/mutation_runner.py --serve SOCKET -- -x -q tests/test_x.py   # long-lived
    python -S bench/mutation_runner.py --client SOCKET                       # one test run
"""

from __future__ import annotations

import os
import signal
import socket
import sys

CHILD_LIMIT_S = 50  # below cosmic-ray's per-mutant timeout: a looping mutant counts as killed


def serve(path: str, pytest_args: list[str]) -> None:
    sys.dont_write_bytecode = True  # a mutant and the original may share a size and an mtime
    import _hypothesis_pytestplugin  # noqa: F401 - warm imports, shared by every child
    import grpc  # noqa: F401
    import hypothesis  # noqa: F401
    import pytest
    import pytest_asyncio  # noqa: F401
    import pytest_timeout  # noqa: F401
    from gpt5os.proto import pb  # noqa: F401 - generated code, never mutated

    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen()
        print(f"mutation runner ready on {path}", flush=True)
        while True:
            conn, _ = srv.accept()
            pid = os.fork()
            if pid == 0:
                srv.close()
                conn.close()
                signal.alarm(CHILD_LIMIT_S)
                fd = os.open(os.devnull, os.O_WRONLY)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os._exit(int(pytest.main(pytest_args)))
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            try:
                conn.sendall(bytes([code & 0xFF if code >= 0 else 1]))
            except OSError:  # the client was killed on timeout
                pass
            conn.close()


def client(path: str) -> int:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        data = s.recv(1)
    return data[0] if data else 3


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        rest = sys.argv[3:]
        serve(sys.argv[2], rest[1:] if rest[:1] == ["--"] else rest)
    elif sys.argv[1] == "--client":
        raise SystemExit(client(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
