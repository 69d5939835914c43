"""`prepare`: inputs -> filtered, deduplicated, tokenized shards with a manifest; resumable.

Two passes over the inputs:

1. **Scan** (cheap, no tokenizer): read every document, normalize, filter, dedup and decide its
   split. The result is a `Plan`: one verdict byte per document read, the digest of each kept
   document, the counts for the report and a fingerprint of the inputs' content.
2. **Write** (the slow part, the tokenizer runs at ~3 MB/s): read the same stream again and
   tokenize only the kept documents into the train and val `ShardWriter`s.

The split of a document is decided by its own hash (sha256 of its normalized text), so it does
not depend on the order documents arrive in or on which other documents exist; only when the
hash rule gives no validation document at all (tiny corpora) is the lowest-hash document moved
to validation, so a split that asked for validation data gets some.

Resume: after every shard its position is appended to a journal (see data_state.py).
A rerun with the same inputs and options scans again, checks the fingerprint, and continues from
the saved positions; the result is byte-identical to an uninterrupted run. Different inputs or
options are refused unless `force` (which starts over). The manifest holds no timestamps, so
preparing twice gives identical bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from gpt5os.coordinator.data import state as data_state
from gpt5os.coordinator.data.filters import (
    FILTER_NAMES,
    DocumentFilter,
    FilterConfig,
    decode,
    digest_of,
    normalize,
)
from gpt5os.coordinator.data.shards import (
    SHARDS_DIR,
    TOKEN_NP_DTYPE,
    ShardWriter,
    SplitState,
)
from gpt5os.coordinator.data.sources import DataSourceError, check_inputs, iter_documents
from gpt5os.coordinator.manifest import MANIFEST_NAME, Manifest, load_manifest, save_manifest
from gpt5os.model.tokenizer import END_OF_DOCUMENT, TOKENIZER_NAME, load_tokenizer
from tqdm import tqdm

TRAIN, VAL = "train", "val"
_DROPPED, _TRAIN, _VAL = 0, 1, 2  # verdict codes in Plan.verdicts
_DIGEST_BYTES = 16


class PrepareError(Exception):
    """prepare cannot go on (directory holds other data, nothing left after filters, ...)."""


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    """Everything besides the inputs that decides the output bytes; recorded in the manifest's
    report and in the resume state, so a rerun can tell whether it may continue."""

    shard_tokens: int = 65536
    val_fraction: float = 0.01
    field: str = "text"
    max_documents: int | None = None
    max_bytes: int | None = None
    filters: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    tokenizer: str = TOKENIZER_NAME

    def validate(self) -> None:
        if self.shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1, got {self.shard_tokens}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("max_documents", "max_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class Plan:
    """The scan's result: what to tokenize, and the counts for the report."""

    # one verdict code per document read, and _DIGEST_BYTES per kept document
    verdicts: bytearray = dataclasses.field(default_factory=bytearray)
    digests: bytearray = dataclasses.field(default_factory=bytearray)
    bytes_read: int = 0
    bytes_kept: int = 0
    dropped: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(FILTER_NAMES, 0)
    )
    fingerprint: str = ""

    @property
    def documents_read(self) -> int:
        return len(self.verdicts)

    def count(self, code: int) -> int:
        return self.verdicts.count(code)


def split_of(digest: bytes, val_fraction: float) -> int:
    """A document's split from its own hash: stable whatever else is in the corpus."""
    return _VAL if int.from_bytes(digest[:8], "big") < val_fraction * 2**64 else _TRAIN


def scan(inputs: list[str], options: PrepareOptions, *, progress: bool = False) -> Plan:
    """Pass 1: read, filter, dedup and split every document; no tokenizer."""
    plan = Plan()
    doc_filter = DocumentFilter(options.filters)
    fingerprint = hashlib.sha256()
    kept = 0
    lowest: tuple[bytes, int] | None = None  # (digest, ordinal) of the lowest-hash kept doc
    highest: tuple[bytes, int] | None = None
    with tqdm(desc="scan", unit=" docs", disable=None if progress else True, leave=False) as bar:
        for ordinal, doc in enumerate(iter_documents(inputs, field=options.field)):
            fingerprint.update(doc.source.encode("utf-8", "surrogatepass") + b"\0")
            fingerprint.update(hashlib.sha256(doc.data).digest())
            plan.bytes_read += len(doc.data)
            verdict = doc_filter.check(doc.data)
            bar.update(1)
            if verdict.dropped_by is not None:
                plan.dropped[verdict.dropped_by] += 1
                plan.verdicts.append(_DROPPED)
                continue
            plan.verdicts.append(split_of(verdict.digest, options.val_fraction))
            plan.digests += verdict.digest[:_DIGEST_BYTES]
            plan.bytes_kept += len(doc.data)
            kept += 1
            if lowest is None or verdict.digest < lowest[0]:
                lowest = (verdict.digest, ordinal)
            if highest is None or verdict.digest > highest[0]:
                highest = (verdict.digest, ordinal)
            if (options.max_documents is not None and kept >= options.max_documents) or (
                options.max_bytes is not None and plan.bytes_kept >= options.max_bytes
            ):
                break
    # Tiny corpora: make sure each split that should exist does (needs two kept documents).
    if kept >= 2 and options.val_fraction > 0 and lowest and highest:
        if plan.count(_VAL) == 0:
            plan.verdicts[lowest[1]] = _VAL
        if plan.count(_TRAIN) == 0:
            plan.verdicts[highest[1]] = _TRAIN
    fingerprint.update(str(len(plan.verdicts)).encode())
    plan.fingerprint = fingerprint.hexdigest()
    return plan


def prepare(
    inputs: list[str],
    out_dir: Path,
    *,
    shard_tokens: int = 65536,
    val_fraction: float = 0.01,
    field: str = "text",
    max_documents: int | None = None,
    max_bytes: int | None = None,
    progress: bool = True,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """Prepare `inputs` into `out_dir` (manifest.json + shards/*.bin) and return the manifest.

    :param inputs: text files, directories (recursively, sorted), .jsonl (one document per line,
        its `field` value), gzip of either (.gz, .jsonl.gz), or the word "stdlib".
    :param shard_tokens: tokens per shard (the last shard of each split may be shorter).
    :param val_fraction: share of documents held out for validation, chosen by document hash.
    :param max_documents: stop after this many documents passed the filters (small demos/tests).
    :param max_bytes: stop once the kept documents reach this many bytes (as read).
    :param progress: show tqdm bars on stderr (only when it is a terminal).
    :param force: discard whatever `out_dir` holds from an earlier, different prepare.
    :param log: called with one-line notes (resuming, already prepared).
    :raises DataSourceError: an input is missing, unreadable or malformed.
    :raises PrepareError: `out_dir` holds other data, or nothing is left after the filters.

    Example::

        manifest = prepare(["stdlib"], Path("run/data"), max_documents=50, progress=False)
        print(manifest.report["tokens"]["total"], len(manifest.train), len(manifest.val))
    """
    options = PrepareOptions(
        shard_tokens=shard_tokens,
        val_fraction=val_fraction,
        field=field,
        max_documents=max_documents,
        max_bytes=max_bytes,
    )
    options.validate()
    note = log or (lambda _msg: None)
    check_inputs(inputs)
    out_dir = Path(out_dir)
    plan = scan(inputs, options, progress=progress)
    if not plan.count(_TRAIN) and not plan.count(_VAL):
        raise PrepareError(_nothing_left_message(plan))
    key = {"inputs": list(inputs), "options": options.to_dict(), "fingerprint": plan.fingerprint}

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepareError(f"{out_dir}: cannot create the output directory ({e})") from None
    if force:
        _clear(out_dir)
    state = _resume_state(out_dir, key)
    if state is None:
        existing = _existing_manifest(out_dir, key)
        if existing is not None:
            note(f"{out_dir} already holds this data (same inputs and options); nothing to do")
            return existing
        state = {TRAIN: SplitState(), VAL: SplitState()}
    else:
        done = sum(len(s.shards) for s in state.values())
        note(f"resuming an interrupted prepare in {out_dir}: {done} shards already written")
    (out_dir / SHARDS_DIR).mkdir(exist_ok=True)
    for tmp in (out_dir / SHARDS_DIR).glob("*.tmp"):
        tmp.unlink()
    _write(inputs, out_dir, options, plan, key, state, progress)
    manifest = Manifest(
        tokenizer=options.tokenizer,
        shard_tokens=options.shard_tokens,
        shards=state[TRAIN].shards + state[VAL].shards,
        report=_report(key, plan, state),
    )
    save_manifest(out_dir, manifest)
    data_state.remove(out_dir)
    return manifest


def _write(
    inputs: list[str],
    out_dir: Path,
    options: PrepareOptions,
    plan: Plan,
    key: dict,
    state: dict[str, SplitState],
    progress: bool,
) -> None:
    """Pass 2: tokenize kept documents into the writers, saving the resume state per shard."""

    def save_state(split: str, split_state: SplitState) -> None:
        data_state.append(out_dir, split, split_state)

    writers = {
        code: ShardWriter(
            split=name,
            out_dir=out_dir,
            shard_tokens=options.shard_tokens,
            state=state[name],
            on_shard=save_state,
        )
        for code, name in ((_TRAIN, TRAIN), (_VAL, VAL))
    }
    if not any(s.shards for s in state.values()):
        data_state.start(out_dir, key)  # from here on a rerun knows our inputs and options
    # load_tokenizer() and load_tokenizer(TOKENIZER_NAME) are separate cache entries: call it
    # the way other in-process users do, so the ~2.4 s vocabulary load happens once.
    if options.tokenizer == TOKENIZER_NAME:
        tokenizer = load_tokenizer()
    else:
        tokenizer = load_tokenizer(options.tokenizer)
    n_read = plan.documents_read
    kept_index = -1
    with tqdm(
        total=plan.bytes_kept,
        desc="tokenize",
        unit="B",
        unit_scale=True,
        disable=None if progress else True,
    ) as bar:
        for ordinal, doc in enumerate(iter_documents(inputs, field=options.field)):
            if ordinal >= n_read:
                break
            code = plan.verdicts[ordinal]
            if code == _DROPPED:
                continue
            kept_index += 1
            writer = writers[code]
            if writer.wants(ordinal):
                text = normalize(decode(doc.data))
                expected = plan.digests[
                    kept_index * _DIGEST_BYTES : (kept_index + 1) * _DIGEST_BYTES
                ]
                if digest_of(text)[:_DIGEST_BYTES] != expected:
                    raise PrepareError(f"{doc.source} changed while being prepared; run again")
                ids = tokenizer.encode_bytes(text.encode("utf-8"))
                tokens = np.empty(len(ids) + 1, dtype=TOKEN_NP_DTYPE)
                tokens[:-1] = ids
                tokens[-1] = END_OF_DOCUMENT
                writer.add(ordinal, tokens, doc.source)
            bar.update(len(doc.data))
        else:
            if ordinal + 1 < n_read:  # the stream got shorter since the scan
                raise PrepareError("the inputs changed while being prepared; run again")
    for writer in writers.values():
        writer.finish(n_read)


def _report(key: dict, plan: Plan, state: dict[str, SplitState]) -> dict:
    tokens = {name: sum(s.tokens for s in st.shards) for name, st in state.items()}
    return {
        **key,
        "documents": {
            "read": plan.documents_read,
            "kept": plan.count(_TRAIN) + plan.count(_VAL),
            TRAIN: plan.count(_TRAIN),
            VAL: plan.count(_VAL),
        },
        "bytes": {"read": plan.bytes_read, "kept": plan.bytes_kept},
        "dropped": dict(plan.dropped),
        "tokens": {**tokens, "total": sum(tokens.values())},
        "shards": {name: len(st.shards) for name, st in state.items()},
    }


def _nothing_left_message(plan: Plan) -> str:
    if not plan.documents_read:
        return "the inputs hold no documents"
    dropped = ", ".join(f"{k} {v}" for k, v in plan.dropped.items() if v)
    return (
        f"no documents left after the filters: read {plan.documents_read}, "
        f"dropped {dropped}; give more or other inputs"
    )


def _resume_state(out_dir: Path, key: dict) -> dict[str, SplitState] | None:
    """The saved progress when it belongs to these inputs and options; refuse otherwise."""
    try:
        saved = data_state.saved_key(out_dir)
    except data_state.StateError as e:
        raise PrepareError(f"{e}; pass --force to start over in {out_dir}") from None
    if saved is None:
        return None
    if saved != key:
        raise PrepareError(
            f"{out_dir} holds an interrupted prepare of other {_what_differs(saved, key)}; "
            "rerun with the same ones to resume, or pass --force to start over"
        )
    return data_state.load(out_dir)


def _existing_manifest(out_dir: Path, key: dict) -> Manifest | None:
    """A finished prepare of the same inputs and options, or None when the directory is free."""
    if not (out_dir / MANIFEST_NAME).is_file():
        if any((out_dir / SHARDS_DIR).glob("*.bin")):
            raise PrepareError(
                f"{out_dir / SHARDS_DIR} holds shard files but no manifest or resume state; "
                "pass --force to replace them, or choose another --out"
            )
        return None
    try:
        manifest = load_manifest(out_dir)
    except (ValueError, TypeError, KeyError) as e:
        raise PrepareError(
            f"{out_dir / MANIFEST_NAME} is unreadable ({e}); pass --force to replace it"
        ) from None
    saved = {k: manifest.report.get(k) for k in key}
    if saved != key:
        raise PrepareError(
            f"{out_dir} already holds data prepared from other {_what_differs(saved, key)}; "
            "pass --force to replace it, or choose another --out"
        )
    return manifest


def _what_differs(saved: dict, key: dict) -> str:
    if saved.get("inputs") != key["inputs"]:
        return "inputs"
    if saved.get("options") != key["options"]:
        old, new = saved.get("options") or {}, key["options"]
        names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "options (" + ", ".join(names) + ")"
    return "input contents (the files changed)"


def _clear(out_dir: Path) -> None:
    """--force: remove what an earlier prepare left (only our own files)."""
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    data_state.remove(out_dir)
    shards = out_dir / SHARDS_DIR
    if shards.is_dir():
        shutil.rmtree(shards)


def format_report(manifest: Manifest) -> str:
    """A few human lines summarizing a prepare (the CLI prints them)."""
    r = manifest.report
    docs, dropped, tokens, shards = r["documents"], r["dropped"], r["tokens"], r["shards"]
    drops = ", ".join(f"{k} {dropped.get(k, 0)}" for k in FILTER_NAMES)
    return "\n".join(
        [
            f"documents: read {docs['read']}, kept {docs['kept']} "
            f"(train {docs[TRAIN]}, val {docs[VAL]})",
            f"dropped: {drops}",
            f"tokens: {tokens['total']:,} (train {tokens[TRAIN]:,}, val {tokens[VAL]:,}); "
            f"bytes kept {r['bytes']['kept']:,} of {r['bytes']['read']:,}",
            f"shards: train {shards[TRAIN]}, val {shards[VAL]} "
            f"of {manifest.shard_tokens} tokens ({manifest.tokenizer})",
        ]
    )


__all__ = [
    "DataSourceError",
    "Plan",
    "PrepareError",
    "PrepareOptions",
    "format_report",
    "prepare",
    "scan",
]
