"""The token-shard format: the layout of a corpus directory and the checks on its manifest.

Layout of a corpus directory (format version 1):

    manifest.json        written last, so its presence marks a complete corpus
    doc_offsets.npy      int64 [num_docs + 1]: document d is tokens [off[d], off[d+1]) of the
                         corpus's token stream (the shards concatenated in order)
    tokens-00000.npy …   uint16 (vocab ≤ 65,535) or uint32 token ids; each shard holds whole
                         documents, each document stored as BOS … EOS

Every file is a plain .npy array (read with allow_pickle=False) and the manifest is JSON, so a
corpus fetched from anywhere can be checked before use. The manifest records each file's size
and SHA-256. A manifest field that fails a check raises `DataError` naming the corpus and the
fault.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from gauntlet_jax.errors import DataError

FORMAT_NAME = "gauntlet-jax-token-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DOC_INDEX_NAME = "doc_offsets.npy"
MAX_MANIFEST_BYTES = 16 << 20
TOKEN_DTYPES = ("uint16", "uint32")

_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every token id."""
    if vocab_size <= 0:
        raise DataError(f"vocab size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def shard_name(index: int) -> str:
    return f"tokens-{index:05d}.npy"


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as the bytes of a .npy file (no pickle)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def require(cond: bool, where: Path | str, fault: str) -> None:
    """Raises `DataError("corpus WHERE: FAULT")` unless `cond`."""
    if not cond:
        raise DataError(f"corpus {where}: {fault}")


def int_field(manifest: dict[str, Any], key: str, where: Path | str, minimum: int = 0) -> int:
    """Manifest field `key`, which must be an integer ≥ `minimum` (not a bool)."""
    value = manifest.get(key)
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        where,
        f"manifest field {key!r} must be an integer ≥ {minimum}, got {value!r}",
    )
    return int(value)


def file_field(value: Any, where: Path | str, what: str) -> str:
    """A file name from the manifest, which must be a plain name (no path, no dot first)."""
    require(
        isinstance(value, str) and bool(_SAFE_FILE_NAME.match(value)),
        where,
        f"{what} must be a plain file name, got {value!r}",
    )
    return str(value)


__all__ = [
    "DOC_INDEX_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "TOKEN_DTYPES",
    "file_field",
    "int_field",
    "npy_bytes",
    "require",
    "shard_name",
    "token_dtype",
]
