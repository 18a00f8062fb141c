"""The bench on 8 simulated devices: candidates spread over the peers axis, batches over data."""

from __future__ import annotations

import jax
import pytest

from gauntlet_jax.bench.measure import Options, probe_machine
from gauntlet_jax.bench.score import bench_score
from gauntlet_jax.bench.train import bench_train
from gauntlet_jax.config import load_config


@pytest.mark.multidevice
def test_score_and_train_use_every_device() -> None:
    cfg = load_config(
        "tiny",
        ["model.n_layers=1", "model.seq_len=32", "model.vocab_size=512", "data.batch_size=8"],
    )
    opts = Options(
        candidates=8, own_batches=1, random_batches=1, micro_batches=2, warmup=0, repeats=1
    )
    machine = probe_machine(peak_size=128)
    assert machine.device_count == jax.device_count() == 8
    score = bench_score(cfg, opts, machine).record
    assert score["mesh"] == {"peers": 8, "data": 1, "fsdp": 1, "tensor": 1}
    assert score["candidates"] == 8 and score["throughput"] > 0 and score["mfu"] > 0
    train = bench_train(cfg, opts, machine).record
    assert train["mesh"] == {"peers": 1, "data": 8, "fsdp": 1, "tensor": 1}
    assert train["device_count"] == 8 and train["throughput"] > 0
