"""Compile-checked TPU plans: the 1b2 validator scoring step, compiled ahead of time for a TPU
topology on this CPU host (libtpu), fits the chip's HBM with the mesh of configs/tpu-v5e-16.yaml;
every documented topology name is one libtpu knows.

Needs libtpu (`pip install "jax[tpu]==<jax version>"`, in the [dev] extra); skips without it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from gauntlet_jax.bench.tpu_compile import compile_step, forward_flops_per_sequence
from gauntlet_jax.bench.tpu_topology import (
    CHIPS,
    GIB,
    TopologyError,
    libtpu_problem,
    parse_topology,
    topology_devices,
)
from gauntlet_jax.cli import EX_CONFIG
from gauntlet_jax.config import load_config
from gauntlet_jax.model import llama

LIBTPU_PROBLEM = libtpu_problem()
needs_libtpu = pytest.mark.skipif(LIBTPU_PROBLEM is not None, reason=str(LIBTPU_PROBLEM))


def test_topology_names_parse_and_bad_ones_are_refused() -> None:
    chip, dims = parse_topology("v5e:4x4")
    assert (chip.generation, chip.hbm_bytes, dims) == ("v5e", 16 * GIB, (4, 4))
    assert parse_topology("v4:2x2x4")[1] == (2, 2, 4)
    for bad in ("v9:2x2", "v5e", "v5e:4xq", "v5e:0x4"):
        with pytest.raises(TopologyError):
            parse_topology(bad)


def test_model_flops_count_every_matmul() -> None:
    cfg = load_config("1b2").model
    t = cfg.seq_len
    embed = cfg.vocab_size * cfg.d_model
    # Every weight but the embedding table and norm scales is a matmul: 2 FLOPs per weight per
    # token; attention adds QKᵀ and AV over the full T×T per layer.
    matmul_weights = llama.count_params(cfg) - embed - cfg.d_model * (2 * cfg.n_layers + 1)
    attention = cfg.n_layers * 4 * t * t * cfg.d_model
    assert forward_flops_per_sequence(cfg) == 2 * matmul_weights * t + attention
    # 2 × 1.14e9 matmul weights × 2048 tokens + 0.55 TFLOP attention ≈ 5.2 TFLOP per sequence.
    assert math.isclose(forward_flops_per_sequence(cfg), 5.216e12, rel_tol=1e-3)


@needs_libtpu
def test_every_documented_topology_is_known_to_libtpu() -> None:
    for topology, chips in (("v5e:4x4", 16), ("v4:2x2x4", 16), ("v5p:2x2x1", 4), ("v6e:2x2", 4)):
        devices = topology_devices(topology)
        chip, _ = parse_topology(topology)
        assert len(devices) == chips
        assert {d.device_kind for d in devices} == {chip.device_kind}
    assert set(CHIPS) == {"v4", "v5e", "v5p", "v6e"}


# About 3 CPU-minutes: the TPU compiler's code grows with each chip's share of the model, and
# a 16-chip slice gives each chip the smallest share of the documented topologies. The miner's
# gradient step is the tight fit (about 72 % of a v5e chip's HBM; the scoring step about 20 %,
# docs/operators.md §12) and the cheaper compile of the two.
@pytest.mark.slow
@pytest.mark.timeout(1800)
@needs_libtpu
def test_1b2_gradient_step_fits_a_v5e_16_slice() -> None:
    cfg = load_config("tpu-v5e-16")
    # The same model as 1b2; remat is each config's own choice of how to run it.
    no_remat = {"remat": False, "remat_policy": "nothing"}
    assert replace(cfg.model, **no_remat) == replace(load_config("1b2").model, **no_remat)
    report = compile_step(cfg, "v5e:4x4", "grad")
    mem = report["memory_per_device"]
    assert report["device_kind"] == "TPU v5 lite" and report["devices"] == 16
    assert report["mesh"] == {"peers": 1, "data": 1, "fsdp": 2, "tensor": 8}
    assert mem["fits"], mem
    # The fp32 parameters alone are 4.8 GB: split over the 16 chips, every chip holds its
    # share as an argument; the saved activations need more room than that share.
    param_bytes = 4 * llama.count_params(cfg.model)
    assert mem["argument_bytes"] >= param_bytes / 16
    assert mem["temp_bytes"] > param_bytes / 16
    assert report["xla_flops_per_device"] > 0
    shapes = report["shapes"]
    assert report["model_flops"] == 3 * shapes["batch"] * forward_flops_per_sequence(cfg.model)


def test_bench_compile_refuses_an_unknown_topology(capsys: pytest.CaptureFixture[str]) -> None:
    from gauntlet_jax.bench import cli

    assert cli.main(["compile", "--config", "tiny", "--topology", "v9:2x2"]) == EX_CONFIG
    assert "v9" in capsys.readouterr().err


@needs_libtpu
def test_bench_compile_prints_memory_and_flops_per_program(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gauntlet_jax.bench import cli

    argv = ["compile", "--config", "tiny", "--topology", "v6e:2x2", "--step", "grad"]
    argv += ["--set", "mesh.fsdp=2", "--set", "mesh.tensor=2", "--set", "mesh.data=1"]
    assert cli.main(argv) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    report = json.loads(line)
    assert (report["step"], report["devices"], report["device_kind"]) == ("grad", 4, "TPU v6 lite")
    assert report["memory_per_device"]["fits"]
    assert 0 < report["memory_per_device"]["total_bytes"] < GIB
    assert report["model_flops"] > 0
