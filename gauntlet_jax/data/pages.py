"""Deterministic per-(uid, window) page assignment and packing into token batches
(GAUNTLET.md §4.1, §3.2).

A page is `docs_per_page` consecutive documents. Each window a peer is assigned
`pages_per_window` page starts, drawn uniformly (with replacement, as the reference) from the
documents that are not held out. The draw is a pure function of (data.seed, uid, window), so
anyone can recompute any peer's pages, and it differs per uid and per window.

Randomness: a counter-based JAX PRNG instead of the reference's numpy PCG64. The key path is

    key(data.seed, threefry2x32) → fold_in(stream) → fold_in(uid | validator seed)
        → fold_in(window) → fold_in(page index)

and a page start is the key's two 32-bit words as one 64-bit integer modulo the number of
possible starts (bias ≤ starts / 2⁶⁴). Only `fold_in` and `key_data` are used, both pure
threefry hashes, so the result does not depend on `jax_threefry_partitionable`, on the default
PRNG implementation, on the device, or on any global RNG state. It is computed on the host CPU.
Miners' and the validator's random pages use different stream tags, so a validator seed equal to
some uid never reproduces that uid's pages.

Packing follows the reference: documents (BOS … EOS) are cut to `data.max_doc_tokens` tokens (the
reference tokenizes with max_length 2048 = its seq_len; a cut document keeps a final EOS),
concatenated page after page, cut into `seq_len`-token rows (EOS stays as the separator), and the
rows grouped into batches; a trailing partial row and a trailing partial batch are dropped. A page
set too small for one full batch raises `DataError` with the numbers, so the config gets fixed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import jax
import numpy as np

from gauntlet_jax.config import Config, DataConfig
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.errors import DataError

# Stream tags (ASCII "PEER", "RAND") keep miners' and the validator's draws apart.
STREAM_PEER = 0x50454552
STREAM_VALIDATOR_RANDOM = 0x52414E44
_UINT32_LIMIT = 1 << 32


def _check_u32(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{what} must be an integer, got {value!r}")
    if not 0 <= int(value) < _UINT32_LIMIT:
        raise DataError(f"{what} must be in [0, 2**32), got {value}")
    return int(value)


def num_train_docs(num_docs: int, cfg: DataConfig) -> int:
    """Documents that pages may cover: all but the last `cfg.heldout_docs`."""
    return num_docs - cfg.heldout_docs


def num_page_starts(num_docs: int, cfg: DataConfig) -> int:
    """How many distinct page starts exist (a page must fit before the held-out documents)."""
    if cfg.docs_per_page < 1 or cfg.pages_per_window < 1 or cfg.heldout_docs < 0:
        raise DataError(
            f"data config needs docs_per_page ≥ 1, pages_per_window ≥ 1, heldout_docs ≥ 0; got "
            f"{cfg.docs_per_page}, {cfg.pages_per_window}, {cfg.heldout_docs}"
        )
    starts = num_train_docs(num_docs, cfg) - cfg.docs_per_page + 1
    if starts < 1:
        raise DataError(
            f"corpus of {num_docs} documents is too small for pages of {cfg.docs_per_page} "
            f"documents with {cfg.heldout_docs} held out"
        )
    return starts


@functools.cache
def _host_device() -> jax.Device | None:
    """This host's CPU (in a multi-host job, a device of this process), where deriving a few keys
    is cheapest; None when JAX_PLATFORMS disables it
    (threefry gives the same bits on every backend)."""
    try:
        return jax.local_devices(backend="cpu")[0]
    except RuntimeError:
        return None


# Keys are derived in fixed-size chunks so the kernel compiles once per process, whatever the
# number of (id, window, page) triples asked for.
_KEY_CHUNK = 512


@jax.jit
def _page_key_words(
    seed: jax.Array, stream: jax.Array, idents: jax.Array, windows: jax.Array, pages: jax.Array
) -> jax.Array:
    """uint32 [C, 2]: key words of fold_in(…(key(seed), stream), ident, window, page) per triple."""
    root = jax.random.fold_in(jax.random.key(seed, impl="threefry2x32"), stream)

    def one(ident: jax.Array, window: jax.Array, page: jax.Array) -> jax.Array:
        key = jax.random.fold_in(jax.random.fold_in(root, ident), window)
        return jax.random.key_data(jax.random.fold_in(key, page))

    return jax.vmap(one)(idents, windows, pages)


def _draw_page_starts(
    stream: int, idents: Sequence[int], windows: Sequence[int], num_docs: int, cfg: DataConfig
) -> np.ndarray:
    """int64 [M, pages_per_window] page starts for each (ident, window) pair."""
    starts = num_page_starts(num_docs, cfg)
    seed = _check_u32(cfg.seed, "data.seed")
    if seed >= 1 << 31:
        raise DataError(f"data.seed must be in [0, 2**31), got {seed}")
    ids = np.array([_check_u32(i, "uid/seed") for i in idents], dtype=np.uint32)
    wins = np.array([_check_u32(w, "window") for w in windows], dtype=np.uint32)
    if ids.ndim != 1 or ids.shape != wins.shape:
        raise DataError(f"ids {ids.shape} and windows {wins.shape} must be equal-length lists")
    n = cfg.pages_per_window
    triples = ids.size * n
    padded = -(-triples // _KEY_CHUNK) * _KEY_CHUNK
    flat = [np.zeros(padded, dtype=np.uint32) for _ in range(3)]
    flat[0][:triples] = np.repeat(ids, n)
    flat[1][:triples] = np.repeat(wins, n)
    flat[2][:triples] = np.tile(np.arange(n, dtype=np.uint32), ids.size)
    device = _host_device()
    words = np.empty((padded, 2), dtype=np.uint32)
    with jax.default_device(device) if device is not None else contextlib.nullcontext():
        for lo in range(0, padded, _KEY_CHUNK):
            chunk = [f[lo : lo + _KEY_CHUNK] for f in flat]
            words[lo : lo + _KEY_CHUNK] = np.asarray(
                _page_key_words(np.int32(seed), np.uint32(stream), *chunk)
            )
    wide = words[:triples].astype(np.uint64)
    draws = (wide[:, 0] << np.uint64(32)) | wide[:, 1]
    return (draws % np.uint64(starts)).astype(np.int64).reshape(ids.size, n)


def assigned_pages(uid: int, window: int, num_docs: int, cfg: DataConfig) -> np.ndarray:
    """int64 [pages_per_window]: the page start documents assigned to `uid` in `window`."""
    return _draw_page_starts(STREAM_PEER, [uid], [window], num_docs, cfg)[0]


def assigned_pages_many(
    uids: Sequence[int], windows: Sequence[int], num_docs: int, cfg: DataConfig
) -> np.ndarray:
    """int64 [M, pages_per_window]: `assigned_pages` for each (uids[m], windows[m]) in one call."""
    return _draw_page_starts(STREAM_PEER, uids, windows, num_docs, cfg)


def validator_random_pages(window: int, num_docs: int, cfg: DataConfig, seed: int) -> np.ndarray:
    """int64 [pages_per_window]: the validator's random pages for `window` from its public
    per-window `seed` (GAUNTLET.md §3.2); a stream apart from every uid's."""
    return _draw_page_starts(STREAM_VALIDATOR_RANDOM, [seed], [window], num_docs, cfg)[0]


def _truncate_documents(tokens: np.ndarray, lengths: np.ndarray, max_tokens: int) -> np.ndarray:
    """Each document cut to its first `max_tokens - 1` tokens plus its final EOS."""
    if max_tokens < 2:
        raise DataError(f"max_doc_tokens must be ≥ 2 (BOS … EOS), got {max_tokens}")
    if lengths.size == 0 or int(lengths.max()) <= max_tokens:
        return tokens
    doc_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(tokens.size, dtype=np.int64) - doc_start
    last = np.repeat(lengths - 1, lengths)
    return tokens[(position < max_tokens - 1) | (position == last)]


def pack_documents(
    corpus: TokenCorpus,
    ranges: Sequence[tuple[int, int]],
    seq_len: int,
    batch_size: int,
    *,
    max_doc_tokens: int | None = None,
    what: str = "pages",
) -> np.ndarray:
    """int32 [n_batches, batch_size, seq_len] from document ranges (start, count), in order."""
    if seq_len < 1 or batch_size < 1:
        raise DataError(f"seq_len and batch_size must be ≥ 1, got {seq_len}, {batch_size}")
    pieces = []
    for start, count in ranges:
        tokens = corpus.docs(int(start), int(count))
        if max_doc_tokens is not None:
            tokens = _truncate_documents(
                tokens, corpus.doc_lengths(int(start), int(count)), max_doc_tokens
            )
        pieces.append(tokens)
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    per_batch = seq_len * batch_size
    n_batches = stream.size // per_batch
    if n_batches == 0:
        raise DataError(
            f"{what} ({sum(c for _, c in ranges)} documents, {stream.size} tokens) fill no batch of "
            f"{batch_size} × {seq_len} = {per_batch} tokens; use more or longer documents "
            "(data.pages_per_window, data.docs_per_page, data.heldout_docs) or smaller batches"
        )
    batches = (
        stream[: n_batches * per_batch].astype(np.int32).reshape(n_batches, batch_size, seq_len)
    )
    if int(batches.max()) >= corpus.vocab_size:
        raise DataError(
            f"corpus {corpus.root}: token id {int(batches.max())} ≥ vocab_size {corpus.vocab_size}"
        )
    return batches


def pack_pages(
    corpus: TokenCorpus,
    page_starts: Sequence[int] | np.ndarray,
    seq_len: int,
    batch_size: int,
    *,
    docs_per_page: int,
    max_doc_tokens: int | None = None,
) -> np.ndarray:
    """int32 [n_batches, batch_size, seq_len]: the pages' documents concatenated in the order
    given, cut into rows, grouped into batches; trailing partial row/batch dropped."""
    ranges = [(int(s), docs_per_page) for s in np.asarray(page_starts).reshape(-1)]
    return pack_documents(corpus, ranges, seq_len, batch_size, max_doc_tokens=max_doc_tokens)


def check_compatible(corpus: TokenCorpus, cfg: Config) -> None:
    """The model can embed every token and masks the corpus's EOS as its pad (GAUNTLET.md §3.2)."""
    if cfg.model.vocab_size < corpus.vocab_size:
        raise DataError(
            f"model.vocab_size {cfg.model.vocab_size} < the corpus's vocabulary {corpus.vocab_size} "
            f"({corpus.tokenizer_name})"
        )
    if cfg.model.mask_pad_in_loss and cfg.model.pad_id != corpus.eos_id:
        raise DataError(
            f"model.pad_id {cfg.model.pad_id} is not the corpus's EOS {corpus.eos_id}; the "
            "reference pads with EOS, so set model.pad_id to it"
        )


def batches_for(corpus: TokenCorpus, uid: int, window: int, cfg: Config) -> np.ndarray:
    """int32 [n, data.batch_size, model.seq_len]: peer `uid`'s assigned data for `window`."""
    check_compatible(corpus, cfg)
    starts = assigned_pages(uid, window, corpus.num_docs, cfg.data)
    ranges = [(int(s), cfg.data.docs_per_page) for s in starts]
    return pack_documents(
        corpus,
        ranges,
        cfg.model.seq_len,
        cfg.data.batch_size,
        max_doc_tokens=cfg.data.max_doc_tokens or None,
        what=f"pages of uid {uid} in window {window}",
    )


def random_batches(corpus: TokenCorpus, cfg: Config, seed: int, window: int) -> np.ndarray:
    """int32 [n, data.batch_size, model.seq_len]: the validator's random data for `window`."""
    check_compatible(corpus, cfg)
    starts = validator_random_pages(window, corpus.num_docs, cfg.data, seed)
    ranges = [(int(s), cfg.data.docs_per_page) for s in starts]
    return pack_documents(
        corpus,
        ranges,
        cfg.model.seq_len,
        cfg.data.batch_size,
        max_doc_tokens=cfg.data.max_doc_tokens or None,
        what=f"validator random pages (seed {seed}) in window {window}",
    )


def heldout_batches(corpus: TokenCorpus, cfg: Config) -> np.ndarray:
    """int32 [n, data.batch_size, model.seq_len]: the held-out documents (the corpus's last
    `data.heldout_docs`), never assigned to anyone."""
    check_compatible(corpus, cfg)
    count = cfg.data.heldout_docs
    if count < 1 or count > corpus.num_docs:
        raise DataError(f"data.heldout_docs must be in [1, {corpus.num_docs}], got {count}")
    return pack_documents(
        corpus,
        [(corpus.num_docs - count, count)],
        cfg.model.seq_len,
        cfg.data.batch_size,
        max_doc_tokens=cfg.data.max_doc_tokens or None,
        what="held-out documents",
    )
