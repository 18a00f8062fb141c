from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gauntlet_jax.bench.cli import KINDS, main
from gauntlet_jax.bench.inputs import plan_of
from gauntlet_jax.bench.measure import dct_flops, forward_flops_per_token, matmul_params
from gauntlet_jax.bench.score import score_mesh_config
from gauntlet_jax.config import load_config

# Small enough that the four compiles dominate; the CLI path is the one CI keeps alive.
SMALL = [
    "--set",
    "model.n_layers=1",
    "--set",
    "model.seq_len=32",
    "--set",
    "data.batch_size=2",
    "--candidates",
    "2",
    "--own-batches",
    "2",
    "--random-batches",
    "2",
    "--micro-batches",
    "2",
    "--peers",
    "3",
    "--warmup",
    "0",
    "--repeats",
    "2",
    "--peak-size",
    "128",
]

COMMON_FIELDS = {
    "what",
    "config",
    "platform",
    "device_kind",
    "device_count",
    "batch_shape",
    "median_s",
    "times_s",
    "first_call_s",
    "throughput",
    "unit",
    "flops",
    "tflops_per_s",
    "mfu",
    "peak_tflops_per_s",
    "peak_matmul",
    "copy_gb_per_s",
    "peak_bytes_in_use",
    "params",
    "jax",
    "date",
}
POSITIVE = ("median_s", "first_call_s", "throughput", "flops", "tflops_per_s", "mfu")


def test_bench_all_prints_one_complete_json_line_per_kind() -> None:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-m", "gauntlet_jax.bench", "all", "--config", "tiny", *SMALL],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["what"] for r in records] == list(KINDS)
    by_kind = {r["what"]: r for r in records}
    for r in records:
        assert set(r) >= COMMON_FIELDS, COMMON_FIELDS - set(r)
        assert r["config"] == "tiny" and r["device_count"] == 1 and r["platform"] == "cpu"
        for name in (*POSITIVE, "peak_tflops_per_s", "copy_gb_per_s"):
            assert r[name] > 0, (r["what"], name, r[name])
        assert len(r["times_s"]) == 2 and all(x > 0 for x in r["times_s"])
        assert r["peak_matmul"] == "bf16 128^3 product measured in this run"
    score = by_kind["score"]
    assert score["unit"] == "candidates/s" and score["candidates"] == 2
    assert score["batch_shape"] == [2, 32] and score["forwards"] == 7
    # 1 random-before pass of 2 batches, then per candidate 2 own (before, after) + 2 random.
    assert score["tokens"] == 2 * 32 * (2 + 2 * (2 * 2 + 2))
    assert score["throughput"] == pytest.approx(2 / score["median_s"])
    train = by_kind["train"]
    assert train["unit"] == "tokens/s" and train["tokens"] == 2 * 2 * 32
    assert train["throughput"] == pytest.approx(train["tokens"] / train["median_s"])
    compress = by_kind["compress"]
    assert compress["payload_bytes"] > 0 and compress["device_s"] > 0 and compress["encode_s"] > 0
    aggregate = by_kind["aggregate"]
    assert aggregate["peers"] == 3
    for phase in ("decode_s", "stack_s", "device_s"):
        assert aggregate[phase] > 0
    assert aggregate["median_s"] >= aggregate["device_s"]
    # Streamed: what follows the last arrival is part of the whole streamed window.
    assert 0 < aggregate["after_last_arrival_s"] < aggregate["streamed_total_s"]
    assert aggregate["after_last_device_s"] > 0 and aggregate["arrival_s"] > 0


def test_flop_count_of_the_1b2_model() -> None:
    cfg = load_config("1b2")
    # 1,204,881,408 parameters, of which the 32000 × 2048 embedding table is a gather.
    assert matmul_params(cfg) == 1_204_881_408 - 32000 * 2048
    attention = 2 * 2048 * 8 * 256 * 16  # causal QKᵀ and AV, per token, all layers
    assert forward_flops_per_token(cfg) == 2 * (1_204_881_408 - 32000 * 2048) + attention


def test_dct_flops_count_both_chunk_axes() -> None:
    cfg = load_config("1b2")
    plan = plan_of(cfg)
    matrices = sum(lp.n_params for lp in plan.leaves if len(lp.chunks) == 2)
    vectors = sum(lp.n_params for lp in plan.leaves if len(lp.chunks) == 1)
    assert dct_flops(plan) == 256 * matrices + 128 * vectors


@pytest.mark.parametrize(
    ("devices", "candidates", "peers", "data"),
    [(1, 8, 1, 1), (8, 8, 8, 1), (8, 4, 4, 2), (8, 3, 1, 8), (2, 8, 2, 1)],
)
def test_score_mesh_puts_candidates_on_the_peers_axis(
    devices: int, candidates: int, peers: int, data: int
) -> None:
    mesh = score_mesh_config(devices, candidates)
    assert (mesh.peers, mesh.data, mesh.fsdp, mesh.tensor) == (peers, data, 1, 1)


@pytest.mark.parametrize(
    "flag", ["--repeats=0", "--candidates=0", "--warmup=-1", "--peer-noise=-1"]
)
def test_cli_rejects_nonsense_sizes(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--config", "tiny", flag])
    assert exit_info.value.code == 2
    assert "must be" in capsys.readouterr().err
