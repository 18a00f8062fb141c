"""Tokenize text into token shards: `python -m gauntlet_jax.prepare_data`.

    python -m gauntlet_jax.prepare_data --config 1b2 --input data/*.parquet --out corpora/fw
    python -m gauntlet_jax.prepare_data --config 1b2 --input data/ --out gs://my-data/fw
    python -m gauntlet_jax.prepare_data --demo                # the Shakespeare demo, into the cache

Inputs are streamed, never loaded whole (except a .txt read as one document):
  *.txt[.gz]      one document per file, or one per blank-line-separated block (--split-blank-lines,
                  optionally merged up to --min-chars)
  *.jsonl[.gz]    one JSON object per line; the document is its --text-field (default "text")
  *.parquet       the --text-field column, read in record batches
A directory input contributes its files with those suffixes, in sorted order. The tokenizer is
data.tokenizer (default: the SentencePiece model in mistral-common). A bucket --out (gs://…) is
written through the storage layer with the config's storage credentials, manifest last.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from gauntlet_jax.cli import exit_code
from gauntlet_jax.config import StorageConfig, add_config_args, config_from_args
from gauntlet_jax.data.demo_corpus import demo_documents, merge_blocks, prepare_demo
from gauntlet_jax.data.shard_format import MANIFEST_NAME
from gauntlet_jax.data.shard_writer import DEFAULT_SHARD_TOKENS, is_bucket_url, prepare_shards
from gauntlet_jax.data.tokenizer import load_tokenizer
from gauntlet_jax.errors import DataError, GauntletError, ObjectNotFound, StorageError
from gauntlet_jax.storage.base import open_bucket

TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet",)
KNOWN_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
PARQUET_BATCH_ROWS = 1024


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _paragraphs(lines: Iterator[str]) -> Iterator[str]:
    """Blank-line-separated blocks of a line stream."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line.rstrip("\r\n"))
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def read_txt(path: Path, *, split_blank_lines: bool, min_chars: int) -> Iterator[str]:
    """One document per file, or its blank-line blocks merged to ≥ `min_chars`."""
    try:
        with _open_text(path) as f:
            if split_blank_lines:
                yield from merge_blocks(_paragraphs(f), min_chars)
            else:
                yield f.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc


def read_jsonl(path: Path, *, text_field: str) -> Iterator[str]:
    """The `text_field` string of each JSON line."""
    with _open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc})") from exc
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{path}:{number}: no string field {text_field!r}")
            yield text


def read_parquet(path: Path, *, text_field: str) -> Iterator[str]:
    """The `text_field` column, one record batch at a time (null values are skipped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    if text_field not in parquet.schema_arrow.names:
        raise DataError(
            f"{path}: no column {text_field!r} (columns: {', '.join(parquet.schema_arrow.names)})"
        )
    column_type = parquet.schema_arrow.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise DataError(f"{path}: column {text_field!r} has type {column_type}, expected string")
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield text


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files named, plus the known-suffix files under each directory named (sorted)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.name.endswith(KNOWN_SUFFIXES)
            )
            if not found:
                raise DataError(f"{path}: no {', '.join(KNOWN_SUFFIXES)} files inside")
            files.extend(found)
        elif path.is_file():
            if not path.name.endswith(KNOWN_SUFFIXES):
                raise DataError(
                    f"{path}: unknown input type (expected {', '.join(KNOWN_SUFFIXES)})"
                )
            files.append(path)
        else:
            raise DataError(f"input {item!r} does not exist")
    return files


def iter_documents(
    files: Sequence[Path], *, text_field: str, split_blank_lines: bool, min_chars: int
) -> Iterator[str]:
    """Every document of every input file, in order."""
    for path in files:
        if path.name.endswith(TEXT_SUFFIXES):
            yield from read_txt(path, split_blank_lines=split_blank_lines, min_chars=min_chars)
        elif path.name.endswith(JSONL_SUFFIXES):
            yield from read_jsonl(path, text_field=text_field)
        else:
            yield from read_parquet(path, text_field=text_field)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gauntlet_jax.prepare_data",
        description="Tokenize text (txt, jsonl, parquet) into token shards for data.shards.",
    )
    add_config_args(parser)
    parser.add_argument("--input", nargs="+", default=[], metavar="PATH", help="files or folders")
    parser.add_argument(
        "--out", default="", help="output directory or bucket URL (gs://…) for a new corpus"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="prepare the Shakespeare demo corpus (into data.cache_dir unless --out is given)",
    )
    parser.add_argument("--text-field", default="text", help="jsonl field / parquet column")
    parser.add_argument(
        "--split-blank-lines",
        action="store_true",
        help=".txt: one document per blank-line-separated block instead of per file",
    )
    parser.add_argument(
        "--min-chars",
        type=int,
        default=0,
        help="with --split-blank-lines: merge blocks until a document has this many characters",
    )
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _holds_corpus(out: str | Path, storage: StorageConfig) -> bool:
    if not isinstance(out, str):
        return (out / MANIFEST_NAME).exists()
    try:
        open_bucket(out, storage).head(MANIFEST_NAME)
    except ObjectNotFound:
        return False
    except StorageError as e:
        raise DataError(f"cannot check {out} for an existing corpus: {e}") from e
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        tokenizer = load_tokenizer(cfg.data.tokenizer)
        started = time.perf_counter()
        progress = not args.no_progress
        if args.demo and args.input:
            raise DataError("--demo and --input are exclusive")
        if args.demo and not args.out:
            out = prepare_demo(cfg.data.cache_dir, tokenizer, progress=progress)
            manifest = json.loads((out / "manifest.json").read_text())
        else:
            if not args.out:
                raise DataError("--out is required (a directory for the new corpus)")
            if args.demo:
                documents, source = demo_documents(), "shakespeare (demo)"
            else:
                if not args.input:
                    raise DataError("give --input files/folders, or --demo")
                files = expand_inputs(args.input)
                documents = iter_documents(
                    files,
                    text_field=args.text_field,
                    split_blank_lines=args.split_blank_lines,
                    min_chars=args.min_chars,
                )
                source = ", ".join(str(f) for f in files[:3]) + (" …" if len(files) > 3 else "")
            out = args.out if is_bucket_url(args.out) else Path(args.out).expanduser()
            if _holds_corpus(out, cfg.storage):
                raise DataError(f"{out} already holds a corpus; choose a new --out")
            manifest = prepare_shards(
                documents,
                tokenizer,
                out,
                args.shard_tokens,
                source=source,
                progress=progress,
                storage=cfg.storage,
            )
    except GauntletError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    elapsed = time.perf_counter() - started
    size = sum(s["bytes"] for s in manifest["shards"])
    print(
        f"{out}: {manifest['num_docs']:,} documents, {manifest['num_tokens']:,} tokens "
        f"({manifest['dtype']}), {len(manifest['shards'])} shard(s), {size:,} bytes, "
        f"{elapsed:.1f} s; use it with --set data.shards={out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
