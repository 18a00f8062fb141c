"""Reading a token corpus: `TokenCorpus` memory-maps and validates one, `open_corpus` opens the
configured one: a directory, a bucket URL fetched into the cache once (`data.corpus_fetch`), or
the embedded demo corpus (`data.demo_corpus`).

`TokenCorpus` validates the manifest, the index and a sample of document boundaries and raises
`DataError` naming the fault, so a corpus fetched from anywhere is checked before use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gauntlet_jax.config import DataConfig, StorageConfig
from gauntlet_jax.data.corpus_fetch import fetch_corpus
from gauntlet_jax.data.demo_corpus import prepare_demo
from gauntlet_jax.data.shard_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    TOKEN_DTYPES,
    file_field,
    int_field,
    require,
)
from gauntlet_jax.data.shard_writer import is_bucket_url
from gauntlet_jax.data.tokenizer import file_sha256, load_tokenizer, resolve_tokenizer_path
from gauntlet_jax.errors import DataError

# Documents whose BOS/EOS positions are checked when a corpus is opened (evenly spaced).
BOUNDARY_SAMPLE = 1024


def _load_npy(path: Path, where: Path, dtype: np.dtype, length: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"corpus {where}: {what} {path.name} is missing")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"corpus {where}: {what} {path.name} is not a valid .npy file: {exc}"
        ) from exc
    require(
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
        require(
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
        require(isinstance(manifest, dict), self.root, "manifest is not a JSON object")
        self.manifest: dict[str, Any] = manifest
        self._validate_header()
        self._open_files()
        self._check_boundaries()

    def _validate_header(self) -> None:
        m, where = self.manifest, self.root
        require(
            m.get("format") == FORMAT_NAME,
            where,
            f"format is {m.get('format')!r}, expected {FORMAT_NAME!r}",
        )
        require(
            m.get("version") == FORMAT_VERSION,
            where,
            f"format version {m.get('version')!r} is not supported (this code reads {FORMAT_VERSION})",
        )
        self.vocab_size = int_field(m, "vocab_size", where, minimum=1)
        self.bos_id = int_field(m, "bos_id", where)
        self.eos_id = int_field(m, "eos_id", where)
        for key, value in (("bos_id", self.bos_id), ("eos_id", self.eos_id)):
            require(value < self.vocab_size, where, f"{key} {value} ≥ vocab_size {self.vocab_size}")
        self.num_docs = int_field(m, "num_docs", where, minimum=1)
        self.num_tokens = int_field(m, "num_tokens", where, minimum=2)
        dtype_name = m.get("dtype")
        require(
            dtype_name in TOKEN_DTYPES,
            where,
            f"dtype must be uint16 or uint32, got {dtype_name!r}",
        )
        self.dtype = np.dtype(str(dtype_name))
        require(
            self.vocab_size - 1 <= np.iinfo(self.dtype).max,
            where,
            f"vocab_size {self.vocab_size} does not fit dtype {self.dtype}",
        )
        tok = m.get("tokenizer")
        require(
            isinstance(tok, dict)
            and isinstance(tok.get("sha256"), str)
            and isinstance(tok.get("name"), str),
            where,
            "manifest field 'tokenizer' must be {name: str, sha256: str}",
        )
        self.tokenizer_name = str(tok["name"])
        self.tokenizer_sha256 = str(tok["sha256"])
        shards = m.get("shards")
        require(
            isinstance(shards, list) and len(shards) > 0,
            where,
            "manifest field 'shards' must be a non-empty list",
        )
        self._shard_entries: list[tuple[str, int]] = []
        for i, entry in enumerate(shards):
            require(isinstance(entry, dict), where, f"shards[{i}] is not an object")
            name = file_field(entry.get("file"), where, f"shards[{i}].file")
            count = int_field(entry, "num_tokens", where, minimum=1)
            self._shard_entries.append((name, count))
        total = sum(c for _, c in self._shard_entries)
        require(
            total == self.num_tokens,
            where,
            f"shards hold {total} tokens but num_tokens is {self.num_tokens}",
        )

    def _open_files(self) -> None:
        where = self.root
        index_name = file_field(self.manifest.get("doc_index"), where, "doc_index")
        offsets = _load_npy(
            where / index_name, where, np.dtype(np.int64), self.num_docs + 1, "document index"
        )
        self.offsets = np.asarray(offsets)
        require(
            int(self.offsets[0]) == 0,
            where,
            f"document index starts at {int(self.offsets[0])}, not 0",
        )
        require(
            int(self.offsets[-1]) == self.num_tokens,
            where,
            f"document index ends at {int(self.offsets[-1])}, not num_tokens {self.num_tokens}",
        )
        # Every document holds at least BOS and EOS.
        short = np.flatnonzero(np.diff(self.offsets) < 2)
        require(
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
            require(
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


__all__ = ["BOUNDARY_SAMPLE", "TokenCorpus", "open_corpus"]
