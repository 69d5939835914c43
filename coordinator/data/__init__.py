"""The data pipeline: raw documents -> filtered, deduplicated, shuffled, tokenized shards.

Kept apart from the coordinator's serving code (server, scheduler, store): nothing here runs while
a run is served; `gpt5os-coordinator data prepare` writes a data directory (manifest.json and
shards/) that `init` and `serve` then only read. Modules, in the order a document meets them:
`sources` (reading), `filters` (quality, PII, exact dedup), `neardup` (MinHash LSH), `scan`
(pass 1, giving a `plan`), `workers` (the per-document work on N processes), `chunks` (the
tokenized documents between passes), `order` (held-out split, shuffle), `shards` and `state`
(atomic, resumable writing), `prepare` (the passes and stages, `options` its settings) and
`cli` (the `data` command group).
"""
