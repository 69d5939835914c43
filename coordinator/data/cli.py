"""`gpt5os-coordinator data ...`: prepare a corpus into shards, check prepared shards.

The `data` group is added to the coordinator's CLI (`main.add_command(data)`); it also runs on
its own as `python -m gpt5os.coordinator.data.cli`. Importing it loads neither torch nor the
tokenizer (the tokenizer loads only once inputs have been checked). Every failure a person can
fix ends as one `Error: ...` line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import click
from gpt5os.coordinator.data.prepare import (
    DEFAULT_VAL_TOKENS,
    STAGES,
    PrepareError,
    format_report,
    prepare,
)
from gpt5os.coordinator.data.sources import DataSourceError
from gpt5os.coordinator.manifest import load_manifest


@click.group()
def data() -> None:
    """Prepare training data: text -> filtered, tokenized shards with a manifest."""


@data.command("prepare")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for manifest.json and shards/ (created when missing).",
)
@click.option("--shard-tokens", type=click.IntRange(min=1), default=65536, show_default=True)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.01,
    show_default=True,
    help="Share of documents held out for validation (chosen by document hash).",
)
@click.option(
    "--val-tokens",
    type=click.IntRange(min=0),
    default=DEFAULT_VAL_TOKENS,
    show_default=True,
    help="Hold out at least this many tokens (up to half the corpus); the default suffices for "
    "every preset's default --val-batches.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seeds the order documents are packed in (recorded in the manifest).",
)
@click.option(
    "--near-dup/--no-near-dup",
    default=True,
    show_default=True,
    help="Drop near-duplicates (MinHash LSH, Jaccard >= 0.8 on word 5-grams).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes for cleaning, MinHash and tokenizing; the output is the same for any number.",
)
@click.option(
    "--stage",
    type=click.Choice(STAGES),
    default="all",
    show_default=True,
    help="Run one pass as its own job (scan, then tokenize per --task, then pack); see README.",
)
@click.option("--task", type=click.IntRange(min=0), default=0, help="With --stage tokenize.")
@click.option("--tasks", type=click.IntRange(min=1), default=1, help="With --stage tokenize.")
@click.option("--field", default="text", show_default=True, help="The text field of .jsonl lines.")
@click.option(
    "--max-documents", type=click.IntRange(min=1), help="Stop after this many kept documents."
)
@click.option(
    "--max-bytes", type=click.IntRange(min=1), help="Stop once kept documents reach this size."
)
@click.option("--force", is_flag=True, help="Replace data an earlier, different prepare left.")
@click.option("--progress/--no-progress", default=True, help="Progress bars (on a terminal).")
@click.argument("inputs", nargs=-1, required=True)
def prepare_cmd(
    out_dir: Path,
    shard_tokens: int,
    val_fraction: float,
    val_tokens: int,
    seed: int,
    near_dup: bool,
    workers: int,
    stage: str,
    task: int,
    tasks: int,
    field: str,
    max_documents: int | None,
    max_bytes: int | None,
    force: bool,
    progress: bool,
    inputs: tuple[str, ...],
) -> None:
    """Tokenize INPUT... into shards under --out.

    INPUT is a text file, a directory (its files, recursively, in sorted order), a .jsonl file
    (one document per line, its --field value), gzip of either (.gz), or the word `stdlib`
    (this Python's standard library sources). Documents failing the quality filters, exact
    and near duplicates are dropped and counted; emails and public IP addresses are masked;
    documents are packed in a seeded random order. An interrupted run resumes when the same
    command is run again (with any --workers).
    """
    started = time.monotonic()
    try:
        manifest = prepare(
            list(inputs),
            out_dir,
            shard_tokens=shard_tokens,
            val_fraction=val_fraction,
            val_tokens=val_tokens,
            seed=seed,
            near_dup=near_dup,
            workers=workers,
            stage=stage,
            task=task,
            tasks=tasks,
            field=field,
            max_documents=max_documents,
            max_bytes=max_bytes,
            progress=progress,
            force=force,
            log=lambda msg: click.echo(msg, err=True),
        )
    except (DataSourceError, PrepareError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{out_dir}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted; run the same command again to resume where it stopped"
        ) from None
    if manifest is None:  # a --stage that writes no manifest
        click.echo(f"stage {stage} done in {time.monotonic() - started:.1f} s")
        return
    click.echo(format_report(manifest))
    click.echo(f"wrote {out_dir} in {time.monotonic() - started:.1f} s")


@data.command("verify")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
def verify_cmd(data_dir: Path) -> None:
    """Check every shard of DATA_DIR against its manifest (size and sha256)."""
    try:
        manifest = load_manifest(data_dir)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as e:
        raise click.ClickException(str(e)) from None
    bad: list[str] = []
    for shard in manifest.shards:
        path = data_dir / shard.path
        try:
            blob = path.read_bytes()
        except OSError as e:
            bad.append(f"{shard.shard_id}: {e.strerror or e}")
            continue
        if len(blob) != shard.size_bytes or hashlib.sha256(blob).hexdigest() != shard.sha256:
            bad.append(f"{shard.shard_id}: size or sha256 differs from the manifest")
    if bad:
        for line in bad[:20]:
            click.echo(line, err=True)
        raise click.ClickException(
            f"{len(bad)} of {len(manifest.shards)} shards are damaged; prepare the data again"
        )
    click.echo(f"ok: {len(manifest.shards)} shards match {data_dir / 'manifest.json'}")


if __name__ == "__main__":
    data()
