"""`prepare`: inputs -> filtered, deduplicated, shuffled, tokenized shards with a manifest.

Three passes over the inputs:

1. **Scan** (no tokenizer): read every document; workers clean it (quality filters, PII masking)
   and compute its digest and MinHash; the main process, in reading order, drops exact and near
   duplicates (the first copy read is kept) and applies --max-documents/--max-bytes. The result
   is a `Plan`: one verdict byte per document read, the digest of each kept document, the counts
   for the report and a fingerprint of the inputs' content.
2. **Tokenize** (the slow part, ~3 MB/s per worker): read the same stream again; workers tokenize
   the kept documents, chunk by chunk, into a spill folder (chunks.py).
3. **Pack**: choose the held-out documents and a seeded packing order per split (order.py), then
   cut each split's documents, in that order, into shards (shards.py).

Resume: chunks are files written atomically, and after every shard its position is appended to a
journal (state.py). A rerun with the same inputs and options scans again, checks the fingerprint,
tokenizes only missing chunks and packs on from the saved positions; the result is byte-identical
to an uninterrupted run, for any --workers. Different inputs or options are refused unless
`force` (which starts over). The manifest holds no timestamps, so preparing twice gives
identical bytes.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from gpt5os.coordinator.data import chunks
from gpt5os.coordinator.data import state as data_state
from gpt5os.coordinator.data.filters import FILTER_NAMES
from gpt5os.coordinator.data.neardup import NearDupConfig
from gpt5os.coordinator.data.options import DEFAULT_VAL_TOKENS, PrepareOptions
from gpt5os.coordinator.data.order import choose_validation, hash_keys, packing_order
from gpt5os.coordinator.data.plan import DROPPED, Plan, load_plan, remove_plan, save_plan
from gpt5os.coordinator.data.scan import scan
from gpt5os.coordinator.data.shards import SHARDS_DIR, ShardWriter, SplitState
from gpt5os.coordinator.data.sources import (
    DataSourceError,
    check_inputs,
    iter_documents,
)
from gpt5os.coordinator.data.workers import (
    DIGEST_BYTES,
    ChangedInput,
    WorkerConfig,
    Workers,
    tokenize_chunk,
)
from gpt5os.coordinator.manifest import MANIFEST_NAME, Manifest, load_manifest, save_manifest
from tqdm import tqdm

log = logging.getLogger(__name__)

TRAIN, VAL = "train", "val"
STAGES = ("all", "scan", "tokenize", "pack")


class PrepareError(Exception):
    """prepare cannot go on (directory holds other data, nothing left after filters, ...)."""


def prepare(
    inputs: list[str],
    out_dir: Path,
    *,
    shard_tokens: int = 65536,
    val_fraction: float = 0.01,
    val_tokens: int = DEFAULT_VAL_TOKENS,
    seed: int = 0,
    near_dup: bool = True,
    field: str = "text",
    max_documents: int | None = None,
    max_bytes: int | None = None,
    workers: int = 1,
    stage: str = "all",
    task: int = 0,
    tasks: int = 1,
    progress: bool = True,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Manifest | None:
    """Prepare `inputs` into `out_dir` (manifest.json + shards/*.bin) and return the manifest.

    :param inputs: text files, directories (recursively, sorted), .jsonl (one document per line,
        its `field` value), gzip of either (.gz, .jsonl.gz), or the word "stdlib".
    :param shard_tokens: tokens per shard (the last shard of each split may be shorter).
    :param val_fraction: share of documents held out for validation, chosen by document hash.
    :param val_tokens: hold out at least this many tokens (up to half the corpus); the default
        suffices for every preset's default `--val-batches` (see order.py).
    :param seed: seeds the packing order of documents (recorded in the manifest's options).
    :param near_dup: drop near-duplicates (MinHash LSH, Jaccard >= 0.8 on word 5-grams).
    :param max_documents: stop after this many documents passed the filters (small demos/tests).
    :param max_bytes: stop once the kept documents reach this many bytes (as read).
    :param workers: processes for the per-document work; the output is the same for any number.
    :param stage: "all" (the default), or one pass for running them as separate jobs: "scan"
        writes the plan, "tokenize" the chunks `task`, `task + tasks`, ... (one job per task,
        on machines sharing `out_dir`), "pack" the shards and manifest once all chunks exist.
        The result is byte-identical to "all". Only "all" and "pack" return the manifest.
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
        val_tokens=val_tokens,
        seed=seed,
        field=field,
        max_documents=max_documents,
        max_bytes=max_bytes,
        near_dup=NearDupConfig(enabled=near_dup),
    )
    options.validate()
    note = log or (lambda _msg: None)
    check_inputs(inputs)
    out_dir = Path(out_dir)
    if stage not in STAGES:
        raise PrepareError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    if not 0 <= task < tasks:
        raise PrepareError(f"need 0 <= task < tasks, got task {task} of {tasks}")
    config = WorkerConfig(options.filters, options.near_dup, options.tokenizer)
    tokens_dir = out_dir / chunks.TOKENS_DIR
    with Workers(workers, config) as pool:
        if stage in ("all", "scan"):
            plan = scan(inputs, options, pool, progress=progress)
            if not plan.documents_kept:
                raise PrepareError(_nothing_left_message(plan))
            key = _key(inputs, options, plan)
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
                    note(
                        f"{out_dir} already holds this data (same inputs and options); nothing to do"
                    )
                    return existing
                _clear_spill(out_dir)
                data_state.start(out_dir, key)  # from here on a rerun knows our inputs and options
                state = {TRAIN: SplitState(), VAL: SplitState()}
            else:
                done = sum(len(s.shards) for s in state.values())
                note(f"resuming an interrupted prepare in {out_dir}: {done} shards already written")
            save_plan(out_dir, plan)
            if stage == "scan":
                note(
                    f"scanned: {plan.documents_kept} of {plan.documents_read} documents kept, "
                    f"{len(plan.chunk_starts)} chunks to tokenize; next: --stage tokenize"
                )
                return None
        else:
            plan, key = _staged_plan(inputs, options, out_dir)
            state = data_state.load(out_dir)
        tokens_dir.mkdir(exist_ok=True)
        if stage in ("all", "tokenize"):
            try:
                _tokenize(inputs, options, plan, pool, tokens_dir, progress, task=task, tasks=tasks)
            except ChangedInput as e:
                raise PrepareError(str(e)) from None
            if stage == "tokenize":
                return None
    n_chunks = len(plan.chunk_starts)
    missing = [c for c in range(n_chunks) if not chunks.is_done(tokens_dir, c)]
    if missing:
        raise PrepareError(
            f"{len(missing)} of {n_chunks} chunks are not tokenized yet (chunk {missing[0]} "
            "first): run --stage tokenize for every --task before --stage pack"
        )
    reader = chunks.ChunkReader(tokens_dir, n_chunks)
    held = choose_validation(
        hash_keys(bytes(plan.digests), DIGEST_BYTES),
        reader.lengths,
        val_fraction=options.val_fraction,
        val_tokens=options.val_tokens,
    )
    (out_dir / SHARDS_DIR).mkdir(exist_ok=True)
    for tmp in (out_dir / SHARDS_DIR).glob("*.tmp"):
        tmp.unlink()
    for split, mask in ((TRAIN, ~held), (VAL, held)):
        order = packing_order(np.flatnonzero(mask), seed=options.seed, split=split)
        _pack(out_dir, split, order, reader, plan.sources, options, state[split])
    manifest = Manifest(
        tokenizer=options.tokenizer,
        shard_tokens=options.shard_tokens,
        shards=state[TRAIN].shards + state[VAL].shards,
        report=_report(key, plan, state, held_out=int(held.sum())),
    )
    val_tokens_held = manifest.report["tokens"][VAL]
    if val_tokens_held < options.val_tokens:
        note(
            f"the validation split holds {val_tokens_held:,} tokens, fewer than --val-tokens "
            f"{options.val_tokens:,} (it may take at most half the corpus): give more data"
        )
    save_manifest(out_dir, manifest)
    data_state.remove(out_dir)
    _clear_spill(out_dir)
    return manifest


def _key(inputs: list[str], options: PrepareOptions, plan: Plan) -> dict:
    """What a prepared directory (and its resume state) is for: compared on every rerun."""
    return {"inputs": list(inputs), "options": options.to_dict(), "fingerprint": plan.fingerprint}


def _staged_plan(inputs: list[str], options: PrepareOptions, out_dir: Path) -> tuple[Plan, dict]:
    """The plan `--stage scan` wrote, checked against these inputs and options."""
    try:
        saved = data_state.saved_key(out_dir)
        plan = load_plan(out_dir)
    except (data_state.StateError, OSError, ValueError, KeyError, TypeError) as e:
        raise PrepareError(f"{out_dir}: the scan's plan is unreadable ({e}); scan again") from None
    if saved is None or plan is None:
        raise PrepareError(f"{out_dir} holds no scan: run `data prepare --stage scan` first")
    key = _key(inputs, options, plan)
    if saved != key:
        raise PrepareError(
            f"{out_dir} was scanned from other {_what_differs(saved, key)}; give the same "
            "inputs and options to every stage"
        )
    return plan, key


def _tokenize(
    inputs: list[str],
    options: PrepareOptions,
    plan: Plan,
    pool: Workers,
    tokens_dir: Path,
    progress: bool,
    *,
    task: int = 0,
    tasks: int = 1,
) -> None:
    """Pass 2: tokenize the kept documents of this task's chunks (chunk % tasks == task) into
    chunk files, skipping chunks already done."""
    bar = tqdm(
        total=plan.bytes_kept,
        desc="tokenize",
        unit="B",
        unit_scale=True,
        disable=None if progress else True,
    )
    todo = {
        c for c in range(task, len(plan.chunk_starts), tasks) if not chunks.is_done(tokens_dir, c)
    }

    def work() -> Iterator[tuple[int, list[bytes], list[bytes], str]]:
        chunk, end = -1, 0  # the chunk being collected, and its end (a kept index)
        datas: list[bytes] = []
        digests: list[bytes] = []
        kept, n_read = 0, plan.documents_read
        for ordinal, doc in enumerate(iter_documents(inputs, field=options.field)):
            if ordinal >= n_read:
                break
            if plan.verdicts[ordinal] == DROPPED:
                continue
            if kept == end:  # the next chunk starts here
                chunk += 1
                end = plan.chunk_range(chunk)[1]
            if chunk in todo:
                datas.append(doc.data)
                digests.append(bytes(plan.digests[kept * DIGEST_BYTES : (kept + 1) * DIGEST_BYTES]))
            kept += 1
            bar.update(len(doc.data))
            if kept == end and datas:
                yield (chunk, datas, digests, str(tokens_dir))
                datas, digests = [], []
        if kept < plan.documents_kept:  # the stream got shorter since the scan
            raise ChangedInput("the inputs changed while being prepared; run again")

    with bar:
        for _tokens in pool.map(tokenize_chunk, work()):
            pass


def _pack(
    out_dir: Path,
    split: str,
    order: np.ndarray,
    reader: chunks.ChunkReader,
    sources: list[str],
    options: PrepareOptions,
    state: SplitState,
) -> None:
    """Pass 3 for one split: its documents, in packing order, cut into shards. The position in
    `order` is the writer's ordinal, so a resumed run continues where the journal says."""
    writer = ShardWriter(
        split=split,
        out_dir=out_dir,
        shard_tokens=options.shard_tokens,
        state=state,
        on_shard=lambda name, st: data_state.append(out_dir, name, st),
    )
    for position in range(state.next_doc, len(order)):
        doc = int(order[position])
        writer.add(position, np.asarray(reader.tokens(doc)), sources[doc])
    writer.finish(len(order))


def _report(key: dict, plan: Plan, state: dict[str, SplitState], *, held_out: int) -> dict:
    tokens = {name: sum(s.tokens for s in st.shards) for name, st in state.items()}
    return {
        **key,
        "documents": {
            "read": plan.documents_read,
            "kept": plan.documents_kept,
            TRAIN: plan.documents_kept - held_out,
            VAL: held_out,
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
    _clear_spill(out_dir)
    shards = out_dir / SHARDS_DIR
    if shards.is_dir():
        shutil.rmtree(shards)


def _clear_spill(out_dir: Path) -> None:
    """The tokenized chunks and the plan: needed only until the manifest is written."""
    remove_plan(out_dir)
    spill = out_dir / chunks.TOKENS_DIR
    if spill.is_dir():
        shutil.rmtree(spill)


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
