"""Where documents come from: text files, directories, .jsonl, gzip of either, and `stdlib`.

`iter_documents(inputs)` turns the command line's INPUT... into one ordered stream of
`RawDocument`s. The order is a pure function of the inputs (directories are walked in sorted
order), because the data pipeline is deterministic and resumes by re-reading the same stream:
the N-th document of one run is the N-th document of the next.

Bad input raises `DataSourceError` with a message a person can act on (which file, which line,
what to do); the CLI prints it as one line. Nothing here knows about filters or tokens.
"""

from __future__ import annotations

import gzip
import json
import os
import sysconfig
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

STDLIB = "stdlib"  # the literal input word for the interpreter's standard library sources

# Folders of the standard library that are not library source worth training on: test suites,
# third-party installs, the IDLE app and the turtle demos, bytecode caches.
_STDLIB_SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "turtledemo",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "__phello__",
    }
)
# Machine-specific generated modules (paths and compiler flags of this build).
_STDLIB_SKIP_PREFIXES = ("_sysconfigdata",)


class DataSourceError(Exception):
    """An input cannot be read as documents; the message says which and what to do."""


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One document as read: `source` names where it came from (stable across machines for
    `stdlib`, the input path as given otherwise; `path:line` for .jsonl lines)."""

    source: str
    data: bytes


def iter_documents(inputs: list[str], *, field: str = "text") -> Iterator[RawDocument]:
    """Yield every document of `inputs`, in order; raises DataSourceError on unusable input."""
    for spec in inputs:
        if spec == STDLIB:
            yield from _iter_stdlib()
            continue
        path = Path(spec)
        if path.is_dir():
            yield from _iter_directory(path, field)
        elif path.is_file():
            yield from _iter_file(path, str(path), field)
        elif path.exists():
            raise DataSourceError(f"{spec}: not a regular file or directory")
        else:
            raise DataSourceError(
                f"{spec}: no such file or directory (give text files, directories, "
                f".jsonl, .gz or the word {STDLIB!r})"
            )


def check_inputs(inputs: list[str]) -> None:
    """Fail fast, before any work, when an input path does not exist."""
    if not inputs:
        raise DataSourceError(f"no inputs given (give paths or the word {STDLIB!r})")
    for spec in inputs:
        if spec != STDLIB and not Path(spec).exists():
            raise DataSourceError(
                f"{spec}: no such file or directory (give text files, directories, "
                f".jsonl, .gz or the word {STDLIB!r})"
            )


def stdlib_root() -> Path:
    """The running interpreter's standard library folder (the base one, also inside a venv)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The standard library's non-test .py sources, sorted by their path inside the library."""
    root = stdlib_root()
    if not root.is_dir():
        raise DataSourceError(f"stdlib: the standard library folder {root} does not exist")
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith(_STDLIB_SKIP_PREFIXES):
                full = Path(dirpath) / name
                found.append((full.relative_to(root).as_posix(), full))
    found.sort()
    return [p for _, p in found]


def _iter_stdlib() -> Iterator[RawDocument]:
    root = stdlib_root()
    for path in stdlib_files():
        source = f"{STDLIB}:{path.relative_to(root).as_posix()}"
        yield RawDocument(source, _read_bytes(path, source))


def _iter_directory(root: Path, field: str) -> Iterator[RawDocument]:
    """Every regular file under `root`, recursively, sorted by relative path; hidden files and
    folders (names starting with '.', e.g. .git) are skipped. Symlinked folders are not followed
    (no loops); binary files are read and left to the quality filters to drop and count."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if full.is_file():
                found.append((full.relative_to(root).as_posix(), full))
    found.sort()
    for _, full in found:
        yield from _iter_file(full, str(full), field)


def _iter_file(path: Path, source: str, field: str) -> Iterator[RawDocument]:
    name = path.name.lower()
    is_gzip = name.endswith(".gz")
    if name.endswith((".jsonl", ".jsonl.gz")):
        yield from _iter_jsonl(path, source, field, is_gzip)
    else:
        yield RawDocument(source, _read_bytes(path, source, is_gzip))


def _read_bytes(path: Path, source: str, is_gzip: bool = False) -> bytes:
    with _open(path, source, is_gzip) as f:
        return _guarded(source, f.read)


def _iter_jsonl(path: Path, source: str, field: str, is_gzip: bool) -> Iterator[RawDocument]:
    """One document per non-blank line: the string value of `field` in that line's object.
    Read line by line, so a multi-GB .jsonl never sits in memory whole."""
    with _open(path, source, is_gzip) as f:
        lineno = 0
        while line := _guarded(source, f.readline):
            lineno += 1
            if line.strip():
                yield _jsonl_document(line, f"{source}:{lineno}", field)


def _open(path: Path, source: str, is_gzip: bool) -> BinaryIO:
    try:
        return gzip.open(path, "rb") if is_gzip else open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise DataSourceError(f"{source}: cannot read ({e.strerror or e})") from None


def _guarded(source: str, read: Callable[[], bytes]) -> bytes:
    """Run one read, turning I/O and gzip errors into one actionable DataSourceError."""
    try:
        return read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataSourceError(f"{source}: not a valid gzip file ({e})") from None
    except OSError as e:
        raise DataSourceError(f"{source}: cannot read ({e.strerror or e})") from None


def _jsonl_document(line: bytes, where: str, field: str) -> RawDocument:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataSourceError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DataSourceError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if field not in obj:
        keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
        raise DataSourceError(
            f"{where}: no field {field!r} (fields: {keys}); pick one with --field NAME"
        )
    value = obj[field]
    if not isinstance(value, str):
        raise DataSourceError(f"{where}: field {field!r} is {type(value).__name__}, not a string")
    return RawDocument(where, value.encode("utf-8", errors="surrogatepass"))
