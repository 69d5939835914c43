"""Reading documents: every input format, order, and the errors a person sees."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from gpt5os.coordinator.data.sources import (
    DataSourceError,
    check_inputs,
    iter_documents,
    stdlib_files,
    stdlib_root,
)


def docs(inputs: list[str], **kw) -> list[tuple[str, bytes]]:
    return [(d.source, d.data) for d in iter_documents(inputs, **kw)]


def test_text_file_is_one_document(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_bytes(b"hello\nworld\n")
    assert docs([str(p)]) == [(str(p), b"hello\nworld\n")]


def test_directory_is_walked_recursively_in_sorted_order_skipping_hidden(tmp_path: Path) -> None:
    for rel in ["b.txt", "a/z.txt", "a/b/c.txt", "A.txt", ".git/config", "a/.hidden"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    got = [s for s, _ in docs([str(tmp_path)])]
    assert got == [str(tmp_path / r) for r in ["A.txt", "a/b/c.txt", "a/z.txt", "b.txt"]]


def test_jsonl_field_and_gzip_variants(tmp_path: Path) -> None:
    lines = [{"text": "one", "body": "uno"}, {"text": "two", "body": "dos"}]
    raw = "\n".join(json.dumps(x) for x in lines) + "\n\n"  # a blank line is skipped
    (tmp_path / "d.jsonl").write_text(raw)
    (tmp_path / "d2.jsonl.gz").write_bytes(gzip.compress(raw.encode()))
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(b"zipped text"))
    j, jz, tz = (str(tmp_path / n) for n in ["d.jsonl", "d2.jsonl.gz", "t.txt.gz"])
    assert docs([j]) == [(f"{j}:1", b"one"), (f"{j}:2", b"two")]
    assert docs([jz], field="body") == [(f"{jz}:1", b"uno"), (f"{jz}:2", b"dos")]
    assert docs([tz]) == [(tz, b"zipped text")]
    # Inside a directory the same suffix rules apply.
    assert [d[1] for d in docs([str(tmp_path)])] == [b"one", b"two", b"one", b"two", b"zipped text"]


def test_stdlib_lists_sorted_non_test_sources() -> None:
    files = stdlib_files()
    rels = [f.relative_to(stdlib_root()).as_posix() for f in files]
    assert len(rels) > 300 and rels == sorted(rels)
    assert "json/decoder.py" in rels
    for rel in rels:
        parts = rel.split("/")
        assert rel.endswith(".py")
        assert not {"test", "tests", "idlelib", "site-packages", "__pycache__"} & set(parts)
    first = next(iter_documents(["stdlib"]))
    assert first.source == f"stdlib:{rels[0]}" and first.data == files[0].read_bytes()


@pytest.mark.parametrize(
    ("content", "field", "message"),
    [
        (
            b'{"body": "x"}\n',
            "text",
            "d.jsonl:1: no field 'text' (fields: body); pick one with --field",
        ),
        (b'{"text": "x"}\n{oops\n', "text", "d.jsonl:2: not valid JSON"),
        (b"[1, 2]\n", "text", "d.jsonl:1: expected a JSON object"),
        (b'{"text": null}\n', "text", "field 'text' is NoneType, not a string"),
    ],
)
def test_bad_jsonl_names_file_and_line(
    tmp_path: Path, content: bytes, field: str, message: str
) -> None:
    (tmp_path / "d.jsonl").write_bytes(content)
    with pytest.raises(DataSourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        docs([str(tmp_path / "d.jsonl")], field=field)


def test_missing_path_and_corrupt_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="nope: no such file or directory"):
        check_inputs(["stdlib", str(tmp_path / "nope")])
    with pytest.raises(DataSourceError, match="no inputs given"):
        check_inputs([])
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(DataSourceError, match="bad.gz: not a valid gzip file"):
        docs([str(bad)])
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"text": "a"}\n' * 1000)[:-20])
    with pytest.raises(DataSourceError, match="cut.jsonl.gz: not a valid gzip file"):
        docs([str(truncated)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "secret.txt"
    p.write_text("x")
    p.chmod(0)
    with pytest.raises(DataSourceError, match="secret.txt: cannot read"):
        docs([str(p)])


def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(DataSourceError, match="fifo: not a regular file or directory"):
        docs([str(fifo)])
