"""Corpora in buckets: a corpus at a `gs://…` (or `file://…`) URL downloaded once into the
cache and checked against its manifest on the way, then read like any local corpus.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from gauntlet_jax.config import StorageConfig
from gauntlet_jax.data.shard_format import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    TOKEN_DTYPES,
    file_field,
    int_field,
    require,
)
from gauntlet_jax.data.shard_writer import LocalDirSink, built_in_place, open_corpus_bucket
from gauntlet_jax.errors import DataError, StorageError
from gauntlet_jax.storage.base import Bucket

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
    require(
        size is None or size == len(data),
        url,
        f"{name} is {len(data)} bytes but the manifest says {size}",
    )
    if digest is not None:
        require(
            isinstance(digest, str) and bool(_SHA256_HEX.match(digest)),
            url,
            f"manifest hash of {name} is not a SHA-256 hex digest",
        )
        require(
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
    bucket = open_corpus_bucket(url, storage)
    raw = _download(bucket, url, MANIFEST_NAME, MAX_MANIFEST_BYTES, {})
    cache = Path(cache_dir).expanduser() / CORPUS_CACHE
    final = cache / hashlib.sha256(raw).hexdigest()[:32]
    if (final / MANIFEST_NAME).is_file():
        return final
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"corpus {url}: {MANIFEST_NAME} is not valid JSON: {exc}") from exc
    require(isinstance(manifest, dict), url, "manifest is not a JSON object")
    dtype_name = manifest.get("dtype")
    require(dtype_name in TOKEN_DTYPES, url, f"dtype {dtype_name!r} is not supported")
    itemsize = np.dtype(str(dtype_name)).itemsize
    num_docs = int_field(manifest, "num_docs", url, minimum=1)
    shards = manifest.get("shards")
    require(isinstance(shards, list) and len(shards) > 0, url, "no shards in the manifest")
    index_name = file_field(manifest.get("doc_index"), url, "doc_index")
    wanted = [
        (
            index_name,
            (num_docs + 1) * 8 + _NPY_HEADER_CAP,
            {"sha256": manifest.get("doc_index_sha256")},
        )
    ]
    for i, entry in enumerate(shards):
        require(isinstance(entry, dict), url, f"shards[{i}] is not an object")
        name = file_field(entry.get("file"), url, f"shards[{i}].file")
        count = int_field(entry, "num_tokens", url, minimum=1)
        wanted.append((name, count * itemsize + _NPY_HEADER_CAP, entry))
    require(
        len({name for name, _, _ in wanted}) == len(wanted), url, "file names repeat in manifest"
    )
    total = sum(cap for _, cap, _ in wanted)
    with (
        built_in_place(final) as tmp,
        tqdm(
            total=total, desc=f"downloading {url}", unit="B", unit_scale=True, disable=not progress
        ) as bar,
    ):
        sink = LocalDirSink(tmp)
        for name, cap, entry in wanted:
            data = _download(bucket, url, name, cap, entry)
            sink.put(name, data)
            bar.update(len(data))
        sink.put(MANIFEST_NAME, raw)  # last: its presence marks a complete corpus
    return final


__all__ = ["CORPUS_CACHE", "fetch_corpus"]
