"""A real, small filesystem for tests of full-disk behaviour: a tmpfs mounted by root.

Where the tests are not root (or the kernel refuses the mount) the test is skipped visibly; the
logic is also covered by tests that inject an OSError.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(parent: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` under `parent`; unmounted when the block ends, even on failure."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs (the injected-OSError tests cover the logic)")
    mnt = Path(parent) / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        gc.collect()  # a writer that failed may still hold its file open (torch.save does)
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)  # detach it all the same
