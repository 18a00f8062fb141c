"""GCS-backed runs on the emulator (fake-gcs-server): token shards written to and read from a
bucket, and a short miner + validator network whose payloads, shared objects, checkpoints (Orbax)
and token shards all live in gs://, nothing in local run directories but logs and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gcs_emulator import FakeGcs, FaultProxy, tensorstore_env

from gauntlet_jax.cli import EX_CONFIG
from gauntlet_jax.config import DataConfig, StorageConfig, load_config
from gauntlet_jax.data.corpus import TokenCorpus, open_corpus
from gauntlet_jax.data.corpus_fetch import CORPUS_CACHE, fetch_corpus
from gauntlet_jax.data.demo_corpus import demo_documents
from gauntlet_jax.data.shard_format import MANIFEST_NAME
from gauntlet_jax.data.shard_writer import prepare_shards
from gauntlet_jax.data.tokenizer import load_tokenizer
from gauntlet_jax.errors import DataError
from gauntlet_jax.node.metrics import read_records
from gauntlet_jax.storage.base import open_bucket
from gauntlet_jax.storage.checkpoint import CheckpointStore

pytest_plugins = ["gcs_fixtures"]

DOCS = 300  # of the demo corpus: enough pages for the tiny config, quick to tokenize


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("")


def _docs(n: int = DOCS) -> list[str]:
    out = []
    for doc in demo_documents():
        out.append(doc)
        if len(out) == n:
            return out
    return out


def test_shards_round_trip_through_a_bucket_and_are_fetched_once(
    fake_gcs: FakeGcs, gcs_proxy: FaultProxy, tok, tmp_path: Path
) -> None:
    url = f"gs://{fake_gcs.new_bucket()}/corpora/demo"
    docs = _docs(120)
    manifest = prepare_shards(docs, tok, url, shard_tokens=4000, progress=False)
    assert len(manifest["shards"]) > 1 and all("sha256" in s for s in manifest["shards"])
    local = tmp_path / "local"
    prepare_shards(docs, tok, local, shard_tokens=4000, progress=False)

    cache = tmp_path / "cache"
    corpus = open_corpus(DataConfig(shards=url, cache_dir=str(cache)), progress=False)
    reference = TokenCorpus(local)
    assert corpus.num_docs == reference.num_docs == len(docs)
    for d in (0, 57, len(docs) - 1):
        np.testing.assert_array_equal(corpus.doc(d), reference.doc(d))
    assert corpus.root.parent == cache / CORPUS_CACHE
    # Memory-mapped from the cache, not held in memory.
    assert isinstance(corpus._shards[0], np.memmap)

    # A second open reads the manifest only.
    gcs_proxy.media_bytes_served = 0
    again = fetch_corpus(url, cache, progress=False)
    assert again == corpus.root
    assert gcs_proxy.media_bytes_served <= (corpus.root / MANIFEST_NAME).stat().st_size


def test_a_tampered_or_oversized_shard_is_refused(
    fake_gcs: FakeGcs, gcs_proxy: FaultProxy, tok, tmp_path: Path
) -> None:
    name = fake_gcs.new_bucket()
    url = f"gs://{name}/c"
    manifest = prepare_shards(_docs(40), tok, url, shard_tokens=2000, progress=False)
    bucket = open_bucket(url, StorageConfig())
    shard = manifest["shards"][0]["file"]
    data = bytearray(bucket.get(shard, max_bytes=None))
    data[-1] ^= 0xFF  # same size, one token changed
    bucket.put(shard, bytes(data))
    with pytest.raises(DataError, match="does not match its SHA-256"):
        fetch_corpus(url, tmp_path / "cache", progress=False)
    bucket.put(shard, bytes(data) + b"\0" * 8192)  # longer than the manifest allows
    with pytest.raises(DataError, match=shard):
        fetch_corpus(url, tmp_path / "cache", progress=False)
    # Nothing half-downloaded is left to be mistaken for a corpus.
    assert not any((tmp_path / "cache" / CORPUS_CACHE).glob(f"*/{MANIFEST_NAME}"))
    with pytest.raises(DataError, match=MANIFEST_NAME):
        fetch_corpus(f"gs://{name}/nothing-here", tmp_path / "cache", progress=False)


def test_prepare_data_cli_writes_to_a_bucket_and_refuses_to_overwrite(
    fake_gcs: FakeGcs, gcs_proxy: FaultProxy, tmp_path: Path
) -> None:
    text = tmp_path / "in.txt"
    text.write_text("\n\n".join(_docs(30)))
    url = f"gs://{fake_gcs.new_bucket()}/cli"
    cmd = [sys.executable, "-m", "gauntlet_jax.prepare_data", "--config", "tiny"]
    cmd += ["--input", str(text), "--split-blank-lines", "--out", url, "--no-progress"]
    env = {**os.environ, **tensorstore_env(fake_gcs.url)}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert f"data.shards={url}" in first.stdout
    names = {o.name for o in open_bucket(url, StorageConfig()).list()}
    assert {MANIFEST_NAME, "doc_offsets.npy", "tokens-00000.npy"} <= names
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == EX_CONFIG and "already holds a corpus" in second.stderr


@pytest.mark.slow
@pytest.mark.wallclock
def test_miner_and_validator_run_entirely_on_gcs(
    fake_gcs: FakeGcs, gcs_proxy: FaultProxy, tok, tmp_path: Path
) -> None:
    # This process reaches the emulator through the (fault-free) proxy; the nodes directly.
    bucket = fake_gcs.new_bucket()
    env = {**os.environ, **tensorstore_env(fake_gcs.url)}
    root = tmp_path / "run"
    overrides = [
        f"run.out_dir={root}",
        f"storage.bucket=gs://{bucket}/nodes/{{hotkey}}",
        f"storage.checkpoint_dir=gs://{bucket}/checkpoints/{{hotkey}}",
        f"data.shards=gs://{bucket}/corpus",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"chain.url=sqlite:///{tmp_path / 'chain.db'}",
        "chain.block_time_s=1.0",
        "protocol.blocks_per_window=8",
        "protocol.put_window_s=4.0",
        "protocol.checkpoint_every=2",
        "protocol.start_delay_windows=1",  # the miners are ready before the validator starts
        "validator.windows_per_weights=2",
        "run.tensorboard=false",
    ]
    cfg = load_config("tiny", overrides)
    # The shards: written to the bucket by the library's writer, read back by every node.
    prepare_shards(_docs(), tok, cfg.data.shards, progress=False)

    cmd = [sys.executable, "-m", "gauntlet_jax.localnet", "--config", "tiny", "--miners", "2"]
    cmd += ["--windows", "4"]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((root / "logs").glob("*.log"))
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs

    # Every node's objects are in the emulator's bucket: both miners' pseudo-gradients and
    # probes, the lead validator's start window, gather sets and aggregates.
    objects = [o.name for o in open_bucket(f"gs://{bucket}", StorageConfig()).list()]
    for node in ("miner1", "miner2", "validator"):
        assert any(n.startswith(f"nodes/{node}/") for n in objects), (node, objects)
    miner_objects = [n for n in objects if n.startswith("nodes/miner")]
    assert sum("gradient" in n for n in miner_objects) >= 4, miner_objects
    assert any("aggregate" in n for n in objects if n.startswith("nodes/validator/")), objects
    # Nothing went to local bucket or checkpoint directories.
    assert not (root / "buckets").exists() and not (root / "checkpoints").exists()

    # Checkpoints went to gs:// through Orbax and restore from there.
    saved = [n for n in objects if n.startswith("checkpoints/")]
    assert saved, objects
    nodes_with_ckpt = {n.split("/")[1] for n in saved}
    for node in sorted(nodes_with_ckpt):
        with CheckpointStore(f"gs://{bucket}/checkpoints/{node}", keep=3) as store:
            windows = store.windows()
            assert windows, node
            ckpt = store.restore(windows[-1])
            assert ckpt.window == windows[-1]
            assert ckpt.params["embed"].shape == (cfg.model.vocab_size, cfg.model.d_model)

    # The shards were fetched from the bucket into the cache, once, and the validator scored the
    # miners on pages read from them.
    cached = list((tmp_path / "cache" / CORPUS_CACHE).glob(f"*/{MANIFEST_NAME}"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text())["num_docs"] == DOCS
    records = read_records(root / "validator-validator" / "metrics.jsonl")
    evaluated = [r for r in records if r.get("kind") == "peer" and r.get("evaluated")]
    assert {r["uid"] for r in evaluated} == {1, 2}
    assert all(np.isfinite(r["loss_before_random"]) for r in evaluated)
