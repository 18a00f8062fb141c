"""The compression plan: chunk sizes, batch axes, k, names, signature and payload sizes."""

from __future__ import annotations

import pytest
from _pytrees import AXES, SHAPES, abstract_params, plan_for

from gauntlet_jax.compress.plan import largest_divisor_at_most, make_plan, payload_stats
from gauntlet_jax.config import CompressConfig


def test_largest_divisor() -> None:
    assert largest_divisor_at_most(2048, 64) == 64
    assert largest_divisor_at_most(32000, 64) == 64
    assert largest_divisor_at_most(96, 64) == 48
    assert largest_divisor_at_most(97, 64) == 1
    assert largest_divisor_at_most(10, 64) == 10


def test_leaf_plans() -> None:
    plan = plan_for()
    by_name = {lp.name: lp for lp in plan.leaves}
    assert set(by_name) == {"embed", "layers.w", "layers.norm", "final_norm"}
    w = by_name["layers.w"]
    assert (w.n_batch, w.chunks, w.grid, w.k) == (1, (64, 64), (2, 1), 32)
    assert w.payload_shape == (3, 2, 1, 32)
    assert w.coeff_shape == (3, 2, 1, 64, 64)
    emb = by_name["embed"]
    assert (emb.n_batch, emb.chunks, emb.grid) == (0, (48, 64), (2, 1))
    norm = by_name["layers.norm"]
    assert (norm.n_batch, norm.chunks, norm.grid, norm.k) == (1, (64,), (1,), 32)
    # k is clamped to the chunk's size.
    small = plan_for(CompressConfig(chunk=4, topk=32))
    assert {lp.name: lp.k for lp in small.leaves}["final_norm"] == 4


def test_signature_and_hashable() -> None:
    a, b = plan_for(), plan_for()
    assert a == b and hash(a) == hash(b) and a.signature == b.signature
    assert plan_for(CompressConfig(topk=16)).signature != a.signature
    other = dict(SHAPES, final_norm=(128,))
    assert plan_for(shapes=other).signature != a.signature


def test_rejects_mismatched_axes_and_rank3() -> None:
    with pytest.raises(ValueError, match="logical axes"):
        make_plan(abstract_params(), dict(AXES, final_norm=("a", "b")), CompressConfig())
    shapes = dict(SHAPES, cube=(4, 4, 4))
    axes = dict(AXES, cube=("a", "b", "c"))
    with pytest.raises(ValueError, match="non-batch axes"):
        make_plan(abstract_params(shapes), axes, CompressConfig())


def _llama_1b2_shapes() -> tuple[dict, dict]:
    """The paper's model (GAUNTLET.md §8.1) with stacked layers, written out by hand."""
    v, d, f, n = 32000, 2048, 8192, 16
    shapes = {
        "embed": (v, d),
        "layers": {
            "attn_norm": (n, d),
            "wq": (n, d, d),
            "wk": (n, d, d),
            "wv": (n, d, d),
            "wo": (n, d, d),
            "mlp_norm": (n, d),
            "w_gate": (n, d, f),
            "w_up": (n, d, f),
            "w_down": (n, f, d),
        },
        "final_norm": (d,),
        "lm_head": (d, v),
    }
    axes = {
        "embed": ("vocab", "embed"),
        "layers": {
            k: ("layers", *(("embed",) if len(s) == 2 else ("embed", "mlp")))
            for k, s in shapes["layers"].items()
        },
        "final_norm": ("embed",),
        "lm_head": ("embed", "vocab"),
    }
    return shapes, axes


def test_payload_stats_1b2_matches_reference() -> None:
    shapes, axes = _llama_1b2_shapes()
    stats = payload_stats(make_plan(abstract_params(shapes), axes, CompressConfig()))
    assert stats["n_params"] == 1_204_881_408
    assert stats["n_chunks"] == 294_144 + 1_056
    assert stats["n_values"] == 9_446_400
    assert stats["bytes_fp32"] == 9_446_400 * 6  # ≈ 56.7 MB
    # int16 + uint8 = 28.34 MB, plus one 1 KB lookup table per layer tensor.
    assert 28.3e6 < stats["bytes_8bit"] < 28.5e6


def test_info_reports_the_payload_of_the_real_model() -> None:
    from gauntlet_jax.config import load_config
    from gauntlet_jax.info import model_info

    payload = model_info(load_config("1b2"))["payload"]
    assert payload["n_values"] == 9_446_400
    assert payload["bytes_fp32"] == 56_678_400
    assert 28.3e6 < payload["bytes_8bit"] < 28.5e6
