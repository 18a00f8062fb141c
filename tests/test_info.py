"""`python -m gauntlet_jax.info`: exact figures from shapes only."""

from __future__ import annotations

import json

from gauntlet_jax import info
from gauntlet_jax.config import load_config


def test_info_for_the_papers_model(capsys) -> None:
    info.main(["--config", "1b2"])
    out = json.loads(capsys.readouterr().out)
    assert out["config"] == "1b2"
    assert out["parameters"] == 1_204_881_408
    assert out["param_bytes"] == {"fp32": 4 * 1_204_881_408, "bf16": 2 * 1_204_881_408}
    groups = out["parameter_groups"]
    assert groups["embed"] == groups["head"] == 32000 * 2048
    assert groups["per_layer"] == 4 * 2048 * 2048 + 3 * 2048 * 8192 + 2 * 2048
    assert (
        groups["embed"] + groups["layers"] + groups["final_norm"] + groups["head"]
        == (out["parameters"])
    )


def test_info_follows_overrides() -> None:
    cfg = load_config("tiny", ["model.n_layers=3", "model.n_kv_heads=2"])
    out = info.model_info(cfg)
    assert out["model"]["n_layers"] == 3
    assert out["parameter_groups"]["per_layer"] == (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 256 + 128)
