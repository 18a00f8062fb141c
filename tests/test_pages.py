"""Page assignment (determinism, independence, held-out exclusion) and packing into batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gauntlet_jax.config import DataConfig, load_config, with_overrides
from gauntlet_jax.data.corpus import TokenCorpus, open_corpus
from gauntlet_jax.data.pages import (
    assigned_pages,
    assigned_pages_many,
    batches_for,
    heldout_batches,
    num_page_starts,
    pack_pages,
    random_batches,
    validator_random_pages,
)
from gauntlet_jax.data.shard_writer import prepare_shards
from gauntlet_jax.data.tokenizer import load_tokenizer
from gauntlet_jax.errors import DataError

REPO = Path(__file__).resolve().parent.parent
# A synthetic corpus size for the statistics: 1961 possible page starts.
STATS_DOCS = 2000
STATS_CFG = DataConfig(pages_per_window=6, docs_per_page=8, heldout_docs=32)


# ---- assignment ----------------------------------------------------------------------------


def test_golden_values():
    """Pins the algorithm: a JAX upgrade that changed fold_in would reassign every page."""
    cfg = DataConfig()
    assert assigned_pages(1, 0, 10_000, cfg).tolist() == [6829, 6943, 5500, 2793, 8843, 5532]
    assert assigned_pages(1, 1, 10_000, cfg).tolist() == [9328, 3374, 4767, 7499, 1693, 734]
    assert validator_random_pages(7, 10_000, cfg, 123456).tolist() == [
        7275,
        5655,
        7586,
        8520,
        4336,
        5645,
    ]


def test_same_assignment_in_another_process_whatever_its_jax_flags():
    cases = [(0, 0), (3, 17), (255, 123_456), (2**32 - 1, 2**32 - 1)]
    code = (
        "import json, jax; from gauntlet_jax.config import DataConfig; "
        "from gauntlet_jax.data.pages import assigned_pages, validator_random_pages; "
        "cfg = DataConfig(seed=42); "
        f"out = [assigned_pages(u, w, 50_000, cfg).tolist() for u, w in {cases!r}]; "
        "out.append(validator_random_pages(9, 50_000, cfg, 777).tolist()); "
        "print(json.dumps([jax.config.jax_default_prng_impl, jax.config.jax_enable_x64, out]))"
    )
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        # Flags that change jax.random's other outputs must not change the assignment.
        "JAX_DEFAULT_PRNG_IMPL": "rbg",
        "JAX_ENABLE_X64": "1",
        "JAX_THREEFRY_PARTITIONABLE": "0",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    impl, x64, theirs = json.loads(result.stdout)
    assert (impl, x64) == ("rbg", True)  # the flags did take effect there
    cfg = DataConfig(seed=42)
    ours = [assigned_pages(u, w, 50_000, cfg).tolist() for u, w in cases]
    ours.append(validator_random_pages(9, 50_000, cfg, 777).tolist())
    assert theirs == ours


def test_batched_assignment_equals_one_by_one():
    uids, windows = [0, 1, 2, 1], [5, 5, 5, 6]
    many = assigned_pages_many(uids, windows, STATS_DOCS, STATS_CFG)
    assert many.shape == (4, 6) and many.dtype == np.int64
    for row, (u, w) in zip(many, zip(uids, windows, strict=True), strict=True):
        assert row.tolist() == assigned_pages(u, w, STATS_DOCS, STATS_CFG).tolist()


@pytest.fixture(scope="module")
def grid():
    """Page starts of 50 uids × 50 windows: int64 [uid, window, page]."""
    n_uids = n_windows = 50
    uids = np.repeat(np.arange(n_uids), n_windows)
    windows = np.tile(np.arange(n_windows), n_uids)
    pages = assigned_pages_many(uids, windows, STATS_DOCS, STATS_CFG)
    return pages.reshape(n_uids, n_windows, STATS_CFG.pages_per_window)


def _shared_fraction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For sets a[..., i] and b[..., j]: whether each a element appears in b ([..., i] bool)."""
    return (a[..., :, None] == b[..., None, :]).any(-1)


def test_overlap_between_uids_and_windows_is_what_uniform_sampling_predicts(grid):
    n_uids, _, n = grid.shape
    starts = num_page_starts(STATS_DOCS, STATS_CFG)
    # P(a given page start of one set appears among the n independent uniform draws of another).
    p = 1 - (1 - 1 / starts) ** n

    # Distinct uids, same window: every ordered pair.
    u, v = np.nonzero(~np.eye(n_uids, dtype=bool))
    shared = _shared_fraction(grid[u], grid[v])  # [pair, window, page]
    expected = shared.size * p
    # Each unordered pair is counted twice, so the variance is about twice the binomial one.
    sigma = np.sqrt(2 * shared.size * p * (1 - p))
    assert abs(shared.sum() - expected) < 5 * sigma, (shared.mean(), p)

    # Same uid, adjacent windows.
    adjacent = _shared_fraction(grid[:, :-1], grid[:, 1:])
    expected = adjacent.size * p
    sigma = np.sqrt(adjacent.size * p * (1 - p))
    assert abs(adjacent.sum() - expected) < 5 * sigma, (adjacent.mean(), p)
    # A uid's pages are not just shifted or repeated between windows either.
    assert not np.array_equal(grid[:, :-1], grid[:, 1:])


def test_page_starts_are_uniform_over_the_allowed_range(grid):
    starts = num_page_starts(STATS_DOCS, STATS_CFG)
    counts = np.bincount(grid.reshape(-1) * 20 // starts, minlength=20)
    assert counts.size == 20
    assert stats.chisquare(counts).pvalue > 1e-4


def test_validator_stream_is_apart_from_uid_streams():
    """A validator seed equal to a uid does not reproduce that uid's pages."""
    ids = np.arange(200)
    own = assigned_pages_many(ids, np.full(200, 3), STATS_DOCS, STATS_CFG)
    rand = np.stack([validator_random_pages(3, STATS_DOCS, STATS_CFG, int(i)) for i in ids[:40]])
    same = _shared_fraction(rand, own[:40]).mean()
    p = 1 - (1 - 1 / num_page_starts(STATS_DOCS, STATS_CFG)) ** 6
    assert same < 10 * p
    # And different validator seeds give different pages.
    assert len({tuple(r) for r in rand.tolist()}) == 40


def test_held_out_documents_are_never_assigned():
    # Only 3 possible starts: 40 docs, 30 held out, pages of 8 → starts 0, 1, 2.
    cfg = DataConfig(pages_per_window=6, docs_per_page=8, heldout_docs=30)
    assert num_page_starts(40, cfg) == 3
    pages = assigned_pages_many(np.arange(100), np.arange(100), 40, cfg)
    assert set(pages.reshape(-1).tolist()) == {0, 1, 2}
    rand = np.stack([validator_random_pages(w, 40, cfg, 5) for w in range(50)])
    assert set(rand.reshape(-1).tolist()) == {0, 1, 2}
    # On a larger corpus no page reaches into the last heldout_docs documents.
    pages = assigned_pages_many(np.arange(500), np.arange(500), STATS_DOCS, STATS_CFG)
    last_doc = pages + STATS_CFG.docs_per_page - 1
    assert last_doc.max() < STATS_DOCS - STATS_CFG.heldout_docs
    assert pages.min() >= 0


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="too small"):
        assigned_pages(0, 0, 39, DataConfig(docs_per_page=8, heldout_docs=32))
    with pytest.raises(DataError, match=r"uid/seed must be in \[0, 2\*\*32\)"):
        assigned_pages(-1, 0, STATS_DOCS, STATS_CFG)
    with pytest.raises(DataError, match="window"):
        assigned_pages(0, 2**32, STATS_DOCS, STATS_CFG)
    with pytest.raises(DataError, match=r"data\.seed"):
        assigned_pages(0, 0, STATS_DOCS, DataConfig(seed=2**31))
    with pytest.raises(DataError, match="docs_per_page"):
        assigned_pages(0, 0, STATS_DOCS, DataConfig(docs_per_page=0))


# ---- packing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tok):
    """40 documents of 5–40 tokens (BOS … EOS), in shards of ~150 tokens."""
    rng = np.random.default_rng(0)
    words = [
        "sweet",
        "love",
        "remember'd",
        "such",
        "wealth",
        "brings",
        "that",
        "then",
        "I",
        "scorn",
        "to",
        "change",
        "my",
        "state",
        "with",
        "kings",
    ]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 30)))) for _ in range(40)]
    out = tmp_path_factory.mktemp("pack")
    prepare_shards(texts, tok, out, shard_tokens=150, progress=False)
    return TokenCorpus(out)


def test_pack_layout(corpus):
    starts = [7, 2, 20]
    stream = np.concatenate([corpus.docs(s, 4) for s in starts]).astype(np.int32)
    seq_len, batch = 16, 3
    batches = pack_pages(corpus, starts, seq_len, batch, docs_per_page=4)
    n = stream.size // (seq_len * batch)
    assert n >= 1 and batches.shape == (n, batch, seq_len) and batches.dtype == np.int32
    # Pages in the given order, rows cut from the stream, the remainder dropped.
    np.testing.assert_array_equal(batches.reshape(-1), stream[: n * batch * seq_len])
    # Every document boundary in the packed tokens is an EOS followed by a BOS.
    flat = batches.reshape(-1)
    eos = np.flatnonzero(flat[:-1] == corpus.eos_id)
    assert eos.size > 0 and np.all(flat[eos + 1] == corpus.bos_id)
    assert flat[0] == corpus.bos_id


def test_partial_batches_are_dropped_and_empty_ones_refused(corpus):
    tokens = corpus.docs(0, 10).size
    seq_len = 8
    rows = tokens // seq_len
    batch = max(1, rows // 2 - 1)
    assert pack_pages(corpus, [0], seq_len, batch, docs_per_page=10).shape[0] == rows // batch
    with pytest.raises(DataError, match=rf"10 documents, {tokens} tokens\) fill no batch of"):
        pack_pages(corpus, [0], seq_len, rows + 1, docs_per_page=10)


def test_long_documents_are_cut_keeping_their_eos(corpus):
    lengths = corpus.doc_lengths(0, 6)
    cap = int(np.sort(lengths)[2])  # some documents are longer than this, some are not
    assert (lengths > cap).any() and (lengths <= cap).any()
    batches = pack_pages(corpus, [0], 1, 1, docs_per_page=6, max_doc_tokens=cap)
    expected = np.concatenate(
        [
            d if d.size <= cap else np.append(d[: cap - 1], corpus.eos_id)
            for d in map(corpus.doc, range(6))
        ]
    )
    np.testing.assert_array_equal(batches.reshape(-1), expected)


# ---- the convenience functions on the demo corpus ---------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg = load_config("tiny", [f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])
    return cfg, open_corpus(cfg.data, progress=False)


def test_batches_for_is_the_uids_pages_packed(demo):
    cfg, corpus = demo
    batches = batches_for(corpus, 5, 11, cfg)
    assert batches.shape[1:] == (cfg.data.batch_size, cfg.model.seq_len)
    assert batches.shape[0] >= 4 and batches.dtype == np.int32
    assert batches.min() >= 0 and batches.max() < cfg.model.vocab_size
    starts = assigned_pages(5, 11, corpus.num_docs, cfg.data)
    expected = pack_pages(
        corpus,
        starts,
        cfg.model.seq_len,
        cfg.data.batch_size,
        docs_per_page=cfg.data.docs_per_page,
        max_doc_tokens=cfg.data.max_doc_tokens,
    )
    np.testing.assert_array_equal(batches, expected)
    np.testing.assert_array_equal(batches, batches_for(corpus, 5, 11, cfg))
    assert not np.array_equal(batches[:1], batches_for(corpus, 6, 11, cfg)[:1])
    assert not np.array_equal(batches[:1], batches_for(corpus, 5, 12, cfg)[:1])


def test_random_and_heldout_batches(demo):
    cfg, corpus = demo
    rand = random_batches(corpus, cfg, seed=424242, window=11)
    np.testing.assert_array_equal(rand, random_batches(corpus, cfg, seed=424242, window=11))
    assert not np.array_equal(rand[:1], random_batches(corpus, cfg, seed=424243, window=11)[:1])
    held = heldout_batches(corpus, cfg)
    n_held = cfg.data.heldout_docs
    stream = corpus.docs(corpus.num_docs - n_held, n_held)
    per_batch = cfg.data.batch_size * cfg.model.seq_len
    assert held.shape[0] == stream.size // per_batch
    np.testing.assert_array_equal(held.reshape(-1), stream[: held.size])


def test_model_must_fit_the_corpus(demo):
    cfg, corpus = demo
    with pytest.raises(DataError, match=r"model\.vocab_size 1000 < the corpus.s vocabulary 32000"):
        batches_for(corpus, 0, 0, with_overrides(cfg, ["model.vocab_size=1000"]))
    with pytest.raises(DataError, match=r"model\.pad_id 0 is not the corpus.s EOS 2"):
        random_batches(corpus, with_overrides(cfg, ["model.pad_id=0"]), 1, 0)
    with pytest.raises(DataError, match="fill no batch"):
        heldout_batches(corpus, with_overrides(cfg, ["data.heldout_docs=1", "data.batch_size=64"]))
