"""LLaMA model: parameter shapes and counts, an independent numpy reference forward, causal and
pad masking, GQA, dtype policy, remat, vmap over candidates."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gauntlet_jax.config import ModelConfig, load_config
from gauntlet_jax.errors import ConfigError
from gauntlet_jax.model import llama

SMALL = ModelConfig(
    vocab_size=97,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=4,
    d_mlp=48,
    seq_len=12,
    compute_dtype="float32",
    pad_id=2,
)


# Jitted once per config and shared by the tests (compilation dominates their run time).
forward = jax.jit(llama.forward, static_argnums=2)
loss_fn = jax.jit(llama.loss_fn, static_argnums=2)
loss_and_count = jax.jit(llama.loss_and_count, static_argnums=2)
value_and_grad = jax.jit(jax.value_and_grad(llama.loss_fn), static_argnums=2)


def small(**changes: object) -> ModelConfig:
    return dataclasses.replace(SMALL, **changes)


def perturbed_params(cfg: ModelConfig, seed: int = 0) -> llama.Params:
    """Init plus noise on the norm scales, so a reference that ignored them would disagree."""
    params = llama.init_params(cfg, jax.random.key(seed))
    leaves = llama.logical_axes_leaves(cfg)
    keys = iter(jax.random.split(jax.random.key(seed + 1), len(leaves)))

    def bump(path, x):
        key = next(keys)
        if llama.path_name(path).endswith("norm"):
            return x + 0.3 * jax.random.normal(key, x.shape)
        return x * 5.0  # larger weights: attention patterns far from uniform

    return jax.tree_util.tree_map_with_path(bump, params)


def tokens(cfg: ModelConfig, shape: tuple[int, int], seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), shape, 0, cfg.vocab_size, dtype=jnp.int32)


def reference_logits(params: llama.Params, tokens_BT: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """HF LlamaForCausalLM written out in float64 numpy, one head at a time."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    b, t = tokens_BT.shape
    n, k, hd = cfg.n_heads, cfg.n_kv_heads, cfg.d_model // cfg.n_heads
    inv_freq = 1.0 / cfg.rope_theta ** (np.arange(0, hd, 2) / hd)
    angles = np.arange(t)[:, None] * inv_freq[None, :]
    emb = np.concatenate([angles, angles], axis=-1)
    cos, sin = np.cos(emb)[None, :, None, :], np.sin(emb)[None, :, None, :]

    def rope(x):
        rotated = np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], axis=-1)
        return x * cos + rotated * sin

    def norm(x, w):
        return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + cfg.norm_eps) * w

    causal = np.tril(np.ones((t, t), bool))
    x = p["embed"][tokens_BT]
    for layer in range(cfg.n_layers):
        w = {name: value[layer] for name, value in p["layers"].items()}
        h = norm(x, w["attn_norm"])
        q = rope((h @ w["wq"]).reshape(b, t, n, hd))
        kk = rope((h @ w["wk"]).reshape(b, t, k, hd))
        v = (h @ w["wv"]).reshape(b, t, k, hd)
        out = np.zeros((b, t, n, hd))
        for head in range(n):
            kv = head // (n // k)
            s = np.einsum("btd,bsd->bts", q[:, :, head], kk[:, :, kv]) / math.sqrt(hd)
            s = np.where(causal, s, -np.inf)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            out[:, :, head] = np.einsum("bts,bsd->btd", s / s.sum(-1, keepdims=True), v[:, :, kv])
        x = x + out.reshape(b, t, n * hd) @ w["wo"]
        h = norm(x, w["mlp_norm"])
        gate = h @ w["w_gate"]
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w["w_up"])) @ w["w_down"]
    return norm(x, p["final_norm"]) @ p["lm_head"]


def reference_loss(logits_BTV: np.ndarray, tokens_BT: np.ndarray, cfg: ModelConfig):
    logits = logits_BTV[:, :-1]
    targets = tokens_BT[:, 1:]
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    ce = logz - np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    keep = targets != cfg.pad_id if cfg.mask_pad_in_loss else np.ones_like(targets, bool)
    return ce[keep].sum(), keep.sum()


# ---------------------------------------------------------------------------------------------


def test_1b2_parameter_count_is_the_papers() -> None:
    cfg = load_config("1b2").model
    assert llama.count_params(cfg) == 1_204_881_408
    shapes = llama.abstract_params(cfg)
    assert isinstance(shapes["embed"], jax.ShapeDtypeStruct)
    assert shapes["embed"].shape == (32000, 2048)
    assert shapes["lm_head"].shape == (2048, 32000)
    assert shapes["layers"]["wq"].shape == (16, 2048, 2048)
    assert shapes["layers"]["w_down"].shape == (16, 8192, 2048)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))


def test_params_are_a_plain_dict_with_logical_axes_on_every_leaf() -> None:
    cfg = small(n_kv_heads=2)
    params = llama.init_params(cfg, jax.random.key(0))
    assert type(params) is dict and type(params["layers"]) is dict
    assert list(params) == sorted(params)
    axes = llama.param_logical_axes(cfg)
    ranks = jax.tree.map(lambda p, a: (p.ndim, len(a)), params, axes)
    for p_rank, a_rank in jax.tree.leaves(ranks, is_leaf=lambda x: isinstance(x, tuple)):
        assert p_rank == a_rank
    flat = llama.logical_axes_leaves(cfg)
    assert list(flat) == [
        llama.path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)
    ]
    assert all(v[0] == "layers" for k, v in flat.items() if k.startswith("layers/"))
    assert flat["layers/wk"] == ("layers", "embed", "kv_heads")
    assert params["layers"]["wk"].shape == (2, 32, 16)
    assert params["layers"]["wq"].shape == (2, 32, 32)


def test_init_is_deterministic_and_hf_like() -> None:
    cfg = load_config("tiny").model
    a = llama.init_params(cfg, jax.random.key(3))
    b = llama.init_params(cfg, jax.random.key(3))
    c = llama.init_params(cfg, jax.random.key(4))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a["layers"]["wq"], c["layers"]["wq"])
    np.testing.assert_array_equal(a["final_norm"], 1.0)
    np.testing.assert_array_equal(a["layers"]["attn_norm"], 1.0)
    assert abs(float(jnp.std(a["embed"])) - cfg.init_std) < 1e-3
    # Stacked layers are initialised independently.
    assert not np.allclose(a["layers"]["w_up"][0], a["layers"]["w_up"][1])


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_forward_matches_numpy_reference(n_kv_heads: int) -> None:
    cfg = small(n_kv_heads=n_kv_heads)
    params = perturbed_params(cfg)
    toks = tokens(cfg, (2, cfg.seq_len))
    logits = forward(params, toks, cfg)
    assert logits.shape == (2, cfg.seq_len, cfg.vocab_size) and logits.dtype == jnp.float32
    want = reference_logits(params, np.asarray(toks), cfg)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def test_gqa_equals_mha_with_repeated_kv_heads() -> None:
    gqa = small(n_kv_heads=2)
    mha = small(n_kv_heads=4)
    params = perturbed_params(gqa)
    hd = gqa.d_model // gqa.n_heads

    def repeat_heads(w):  # (L, D, K*hd) -> (L, D, N*hd), head n uses kv head n // (N/K)
        lyr, d, _ = w.shape
        return jnp.repeat(w.reshape(lyr, d, 2, hd), 2, axis=2).reshape(lyr, d, 4 * hd)

    mha_params = jax.tree.map(lambda x: x, params)
    mha_params["layers"] = dict(params["layers"])
    for name in ("wk", "wv"):
        mha_params["layers"][name] = repeat_heads(params["layers"][name])
    toks = tokens(gqa, (2, gqa.seq_len))
    np.testing.assert_allclose(
        forward(params, toks, gqa), forward(mha_params, toks, mha), rtol=1e-5, atol=1e-5
    )


def test_causal_future_tokens_do_not_change_earlier_logits() -> None:
    cfg = small()
    params = perturbed_params(cfg)
    toks = tokens(cfg, (1, cfg.seq_len))
    changed = toks.at[0, 7].set((toks[0, 7] + 1) % cfg.vocab_size)
    a, b = forward(params, toks, cfg), forward(params, changed, cfg)
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])


def test_loss_matches_hand_computed_ce_and_masks_pad_targets() -> None:
    cfg = small()
    params = perturbed_params(cfg)
    toks = np.array(tokens(cfg, (2, cfg.seq_len)))
    toks[0, 3] = toks[1, 5] = toks[1, 9] = cfg.pad_id  # three pad targets
    toks[0, 0] = cfg.pad_id  # an input-only position: never a target, must not matter
    ref_logits = reference_logits(params, toks, cfg)

    total, count = loss_and_count(params, jnp.asarray(toks), cfg)
    want_total, want_count = reference_loss(ref_logits, toks, cfg)
    assert int(count) == want_count == 2 * (cfg.seq_len - 1) - 3
    np.testing.assert_allclose(float(total), want_total, rtol=1e-4)
    np.testing.assert_allclose(
        float(loss_fn(params, jnp.asarray(toks), cfg)), want_total / want_count, rtol=1e-4
    )

    unmasked = small(mask_pad_in_loss=False)
    total_all, count_all = loss_and_count(params, jnp.asarray(toks), unmasked)
    want_all, _ = reference_loss(ref_logits, toks, unmasked)
    assert int(count_all) == 2 * (cfg.seq_len - 1)
    np.testing.assert_allclose(float(total_all), want_all, rtol=1e-4)
    assert float(total_all) > float(total)


def test_all_pad_targets_count_nothing() -> None:
    cfg = small()
    params = llama.init_params(cfg, jax.random.key(0))
    toks = jnp.full((2, cfg.seq_len), cfg.pad_id, jnp.int32).at[:, 0].set(5)
    total, count = loss_and_count(params, toks, cfg)
    assert float(total) == 0.0 and float(count) == 0.0
    assert float(loss_fn(params, toks, cfg)) == 0.0


def test_fresh_model_loss_is_log_vocab() -> None:
    cfg = load_config("tiny").model
    params = llama.init_params(cfg, jax.random.key(0))
    loss = loss_fn(params, tokens(cfg, (2, 32)), cfg)
    assert abs(float(loss) - math.log(cfg.vocab_size)) < 0.05


def test_bf16_compute_is_close_to_fp32() -> None:
    cfg = small()
    bf16 = small(compute_dtype="bfloat16")
    params = llama.init_params(cfg, jax.random.key(0))
    toks = tokens(cfg, (4, cfg.seq_len))
    lo32 = forward(params, toks, cfg)
    lo16 = forward(params, toks, bf16)
    assert lo16.dtype == jnp.float32  # logits in fp32 whatever the compute dtype
    assert float(jnp.max(jnp.abs(lo16 - lo32))) < 0.05 * float(jnp.max(jnp.abs(lo32)))
    l32, g32 = value_and_grad(params, toks, cfg)
    l16, g16 = value_and_grad(params, toks, bf16)
    np.testing.assert_allclose(float(l16), float(l32), rtol=1e-2)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))
    a, b = (jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)]) for g in (g32, g16))
    assert float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b))) > 0.99


@pytest.mark.parametrize("policy", ["nothing", "dots"])
def test_remat_gives_same_loss_and_grads(policy: str) -> None:
    cfg = small()
    params = perturbed_params(cfg)
    toks = tokens(cfg, (2, cfg.seq_len))
    plain = value_and_grad(params, toks, cfg)
    remat = value_and_grad(params, toks, small(remat=True, remat_policy=policy))
    exact = [
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat), strict=True)
    ]
    # Rematerialising recomputes the same ops: on CPU the gradient is the same to the bit.
    assert all(exact), f"{len(exact) - sum(exact)} of {len(exact)} leaves differ"


def test_vmap_over_a_candidate_axis_of_params() -> None:
    cfg = small()
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs), *(llama.init_params(cfg, jax.random.key(s)) for s in range(3))
    )
    toks = tokens(cfg, (2, cfg.seq_len))
    losses = jax.jit(jax.vmap(llama.loss_fn, in_axes=(0, None, None)), static_argnums=2)(
        stacked, toks, cfg
    )
    for i in range(3):
        one = jax.tree.map(lambda x, i=i: x[i], stacked)
        np.testing.assert_allclose(losses[i], loss_fn(one, toks, cfg), rtol=1e-5)


def test_nnx_module_call_equals_functional_forward() -> None:
    from flax import nnx

    cfg = small()
    model = llama.Llama(cfg, rngs=nnx.Rngs(params=jax.random.key(0)))
    toks = tokens(cfg, (1, cfg.seq_len))
    np.testing.assert_allclose(
        nnx.jit(lambda m, x: m(x))(model, toks),
        forward(llama.init_params(cfg, jax.random.key(0)), toks, cfg),
        rtol=1e-5,
        atol=1e-6,
    )


def test_attention_implementation_choice() -> None:
    assert llama.attention_implementation(small(attention_impl="xla")) == "xla"
    assert llama.attention_implementation(small(attention_impl="cudnn")) == "cudnn"
    auto = llama.attention_implementation(small(attention_impl="auto", compute_dtype="bfloat16"))
    assert auto == ("cudnn" if jax.default_backend() == "gpu" else "xla")
    assert llama.attention_implementation(small(attention_impl="auto")) == "xla"  # fp32


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attention_impl": "flash"}, "attention_impl"),
        ({"n_kv_heads": 3}, "n_kv_heads"),
        ({"d_model": 30}, "n_heads"),
        ({"compute_dtype": "int8"}, "compute_dtype"),
        ({"pad_id": 1000}, "pad_id"),
    ],
)
def test_bad_model_configs_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        llama.abstract_params(small(**changes))
