"""Pass 1 of a prepare: read every document, clean it, drop exact and near duplicates.

Workers clean each document (quality filters, PII masking) and compute its digest and MinHash;
this process decides, in reading order, which copy of a duplicate stays (the first one read),
applies --max-documents/--max-bytes and cuts the kept documents into tokenize chunks. The result
is a `Plan` (plan.py). No tokenizer here.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from itertools import islice

from gpt5os.coordinator.data import chunks
from gpt5os.coordinator.data.filters import DUPLICATE, NEAR_DUPLICATE
from gpt5os.coordinator.data.neardup import NearDupIndex
from gpt5os.coordinator.data.options import PrepareOptions
from gpt5os.coordinator.data.plan import DROPPED, KEPT, Plan
from gpt5os.coordinator.data.sources import RawDocument, iter_documents
from gpt5os.coordinator.data.workers import Scanned, Workers, scan_batch
from tqdm import tqdm

SCAN_BATCH = 64  # documents per scan task


def _batched(docs: Iterator[RawDocument], size: int) -> Iterator[list[RawDocument]]:
    while batch := list(islice(docs, size)):
        yield batch


def scan(
    inputs: list[str], options: PrepareOptions, workers: Workers, *, progress: bool = False
) -> Plan:
    """Pass 1: read, clean, dedup (exact and near) every document; no tokenizer."""
    plan = Plan()
    seen: set[bytes] = set()
    near = NearDupIndex(options.near_dup) if options.near_dup.enabled else None
    fingerprint = hashlib.sha256()
    batches = _batched(iter_documents(inputs, field=options.field), SCAN_BATCH)
    # the batch's documents travel with their results: tee them through a side list
    in_flight: deque[list[RawDocument]] = deque()

    def tasks() -> Iterator[list[bytes]]:
        for batch in batches:
            in_flight.append(batch)
            yield [doc.data for doc in batch]

    done = False
    chunk_docs, chunk_bytes = 0, 0  # the current tokenize chunk (see chunks.py)
    with tqdm(desc="scan", unit=" docs", disable=None if progress else True, leave=False) as bar:
        for results in workers.map(scan_batch, tasks()):
            batch = in_flight.popleft()
            for doc, scanned in zip(batch, results, strict=True):
                fingerprint.update(doc.source.encode("utf-8", "surrogatepass") + b"\0")
                fingerprint.update(hashlib.sha256(doc.data).digest())
                plan.bytes_read += len(doc.data)
                verdict = _decide(scanned, seen, near)
                plan.verdicts.append(DROPPED if verdict else KEPT)
                if verdict:
                    plan.dropped[verdict] += 1
                    continue
                if (
                    not plan.chunk_starts
                    or chunk_docs >= chunks.CHUNK_DOCS
                    or (chunk_bytes >= chunks.CHUNK_BYTES)
                ):
                    plan.chunk_starts.append(plan.documents_kept)
                    chunk_docs, chunk_bytes = 0, 0
                chunk_docs += 1
                chunk_bytes += len(doc.data)
                plan.digests += scanned.digest
                plan.sources.append(doc.source)
                plan.bytes_kept += len(doc.data)
                if (
                    options.max_documents is not None
                    and plan.documents_kept >= options.max_documents
                ) or (options.max_bytes is not None and plan.bytes_kept >= options.max_bytes):
                    done = True
                    break
            bar.update(len(batch))
            if done:
                break
    fingerprint.update(str(len(plan.verdicts)).encode())
    plan.fingerprint = fingerprint.hexdigest()
    return plan


def _decide(scanned: Scanned, seen: set[bytes], near: NearDupIndex | None) -> str | None:
    """The filter that drops this document, in reading order (the first copy stays)."""
    if scanned.dropped_by is not None:
        return scanned.dropped_by
    if scanned.digest in seen:
        return DUPLICATE
    seen.add(scanned.digest)
    if near is not None and near.is_near_duplicate(scanned.minhash):
        return NEAR_DUPLICATE
    return None
