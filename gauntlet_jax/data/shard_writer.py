"""Writing token shards: tokenizing documents into a corpus (`prepare_shards`), through one seam.

Writing goes through `FileSink.put(name, data)`: a local directory, or a bucket
(`gs://bucket/prefix`, through `gauntlet_jax.storage`). Each file appears whole or not at all and
the manifest goes last (`data.shard_format`), so a reader never sees a partial corpus.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from gauntlet_jax.config import StorageConfig
from gauntlet_jax.data.shard_format import (
    DOC_INDEX_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    npy_bytes,
    shard_name,
    token_dtype,
)
from gauntlet_jax.data.tokenizer import Tokenizer
from gauntlet_jax.errors import DataError, StorageError
from gauntlet_jax.storage.base import Bucket, open_bucket

DEFAULT_SHARD_TOKENS = 1 << 27  # 128 Mi tokens: 256 MiB per uint16 shard
# Documents tokenized per native SentencePiece call while preparing shards.
ENCODE_BATCH_DOCS = 1024


class FileSink(Protocol):
    """Where a corpus's files go. `put` must make `name` appear whole or not at all."""

    def put(self, name: str, data: bytes) -> None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class LocalDirSink:
    """Files in a local directory, each written to a temporary name, fsynced, then renamed."""

    root: Path

    def put(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; corpora are public data
            os.replace(tmp, self.root / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def describe(self) -> str:
        return str(self.root)


@dataclass(frozen=True)
class BucketSink:
    """Objects in a bucket (`gs://bucket/prefix`, `file:///path`): each put is atomic there."""

    bucket: Bucket

    def put(self, name: str, data: bytes) -> None:
        try:
            self.bucket.put(name, data)
        except StorageError as e:
            raise DataError(f"cannot write {name} to {self.bucket.url}: {e}") from e

    def describe(self) -> str:
        return self.bucket.url


def is_bucket_url(location: str | Path) -> bool:
    """Whether `location` is a bucket URL (gs://…, file://…) rather than a local path."""
    return "://" in str(location)


def open_corpus_bucket(url: str, storage: StorageConfig | None) -> Bucket:
    """The bucket at `url` for a corpus; a bad URL or missing credentials is a `DataError`."""
    try:
        return open_bucket(url, storage or StorageConfig())
    except StorageError as e:
        raise DataError(f"corpus {url}: {e}") from e


def open_sink(out: str | Path, storage: StorageConfig | None = None) -> FileSink:
    """The sink for an output location: a local directory, or a bucket URL (gs://…, file://…)
    written through the storage layer with `storage`'s credentials and timeouts."""
    if is_bucket_url(out):
        return BucketSink(open_corpus_bucket(str(out), storage))
    return LocalDirSink(Path(str(out)).expanduser())


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def built_in_place(final: Path) -> Iterator[Path]:
    """A fresh temporary directory beside `final` to write a corpus into, renamed to `final`
    when the block ends. Safe when several processes race: each builds in its own directory and
    the first rename wins; the others find `final` complete and use it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    tmp.chmod(0o755)
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same corpus first (its directory is non-empty).
            if not (final / MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_shards(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    *,
    source: str = "",
    progress: bool = True,
    storage: StorageConfig | None = None,
) -> dict[str, Any]:
    """Tokenizes `documents` (streamed; each stored as BOS … EOS) into token shards under
    `out_dir` (a directory or a bucket URL, `open_sink`) and returns the manifest. Blank
    documents are skipped. A shard is closed at the first document boundary at or after
    `shard_tokens` tokens, so no document spans shards."""
    if shard_tokens <= 0:
        raise DataError(f"shard_tokens must be positive, got {shard_tokens}")
    sink = open_sink(out_dir, storage)
    dtype = token_dtype(tokenizer.vocab_size)
    shards: list[dict[str, Any]] = []
    pending: list[np.ndarray] = []
    pending_tokens = 0
    doc_lengths: list[np.ndarray] = []
    skipped = 0

    def flush() -> None:
        nonlocal pending, pending_tokens
        tokens = np.concatenate(pending)
        data = npy_bytes(tokens)
        name = shard_name(len(shards))
        sink.put(name, data)
        shards.append(
            {
                "file": name,
                "num_tokens": int(tokens.size),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        pending, pending_tokens = [], 0

    bar = tqdm(desc=f"tokenizing {source or 'documents'}", unit=" doc", disable=not progress)
    with bar:
        for batch in _batched(documents, ENCODE_BATCH_DOCS):
            texts = [t for t in batch if t.strip()]
            skipped += len(batch) - len(texts)
            if not texts:
                continue
            encoded = tokenizer.encode_documents(texts)
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            flat = np.fromiter(
                itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum())
            )
            if flat.min() < 0 or flat.max() >= tokenizer.vocab_size:
                raise DataError(
                    f"tokenizer {tokenizer.name} produced ids outside [0, {tokenizer.vocab_size})"
                )
            doc_lengths.append(lengths)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            first = 0  # first document of this batch not yet in `pending`
            while first < len(encoded):
                # Close the shard after the first document that brings it to `shard_tokens`.
                filled = pending_tokens + (starts[first + 1 :] - starts[first])
                last = first + int(np.searchsorted(filled, shard_tokens, side="left"))
                stop = min(last + 1, len(encoded))
                pending.append(flat[starts[first] : starts[stop]].astype(dtype))
                pending_tokens += int(starts[stop] - starts[first])
                if pending_tokens >= shard_tokens:
                    flush()
                first = stop
            bar.update(len(batch))
            bar.set_postfix(tokens=f"{sum(s['num_tokens'] for s in shards) + pending_tokens:,}")
        if pending:
            flush()

    if not shards:
        raise DataError(f"no documents to write to {sink.describe()} ({skipped} blank skipped)")
    lengths_all = np.concatenate(doc_lengths)
    offsets = np.zeros(lengths_all.size + 1, dtype=np.int64)
    np.cumsum(lengths_all, out=offsets[1:])
    index_data = npy_bytes(offsets)
    sink.put(DOC_INDEX_NAME, index_data)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "vocab_size": int(tokenizer.vocab_size),
        "bos_id": int(tokenizer.bos_id),
        "eos_id": int(tokenizer.eos_id),
        "dtype": dtype.name,
        "tokenizer": {"name": tokenizer.name, "sha256": tokenizer.sha256},
        "num_docs": int(lengths_all.size),
        "num_tokens": int(offsets[-1]),
        "skipped_blank_docs": skipped,
        "source": source,
        "doc_index": DOC_INDEX_NAME,
        "doc_index_sha256": hashlib.sha256(index_data).hexdigest(),
        "shards": shards,
    }
    sink.put(MANIFEST_NAME, json.dumps(manifest, indent=2).encode())
    return manifest


__all__ = [
    "DEFAULT_SHARD_TOKENS",
    "BucketSink",
    "FileSink",
    "LocalDirSink",
    "built_in_place",
    "is_bucket_url",
    "open_corpus_bucket",
    "open_sink",
    "prepare_shards",
]
