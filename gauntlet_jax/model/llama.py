"""LLaMA-style decoder (HF `LlamaForCausalLM` semantics, GAUNTLET.md §8.1) in flax NNX.

The NNX module declares every parameter once: its shape, init and logical axes. Everything else
works on `Params`, the plain nested dict of arrays the module's state turns into, through pure
functions (`forward`, `loss_fn`, `loss_and_count`) that jit, vmap over a leading candidate axis and
shard without the module object.

Block weights are stacked: each has a leading axis of size n_layers (logical name "layers") and the
forward pass runs `lax.scan` over it, so compile time does not grow with depth. Per-layer matrices
stay 2-D with the layout (in, out), e.g. wq is (d_model, n_heads * head_dim), so the DCT compressor
can chunk the last two axes and treat "layers" as a batch axis.

Dtype policy: parameters are stored in `param_dtype` (fp32 master weights); matmuls and
activations run in `compute_dtype`; RMSNorm statistics, RoPE, softmax, logits and the loss are
fp32.

Parameter names (the keys of `Params`):
  embed (vocab, embed)               token embedding
  layers/attn_norm (layers, norm)    RMSNorm scale before attention
  layers/wq (layers, embed, heads)   query projection, heads = n_heads * head_dim
  layers/wk, layers/wv (layers, embed, kv_heads)
  layers/wo (layers, heads, embed)   attention output projection
  layers/mlp_norm (layers, norm)
  layers/w_gate, layers/w_up (layers, embed, mlp)   SwiGLU: down(silu(gate(x)) * up(x))
  layers/w_down (layers, mlp, embed)
  final_norm (norm,)
  lm_head (embed, vocab)             untied output projection
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gauntlet_jax.config import ModelConfig
from gauntlet_jax.errors import ConfigError

Params = dict[str, Any]
"""A nested dict of arrays (or ShapeDtypeStructs), keys as in the module docstring."""

LogicalAxes = tuple[str, ...]

ATTENTION_IMPLS = ("auto", "xla", "cudnn")


# ---------------------------------------------------------------------------------------------
# Config checks and derived sizes


def head_dim(cfg: ModelConfig) -> int:
    return cfg.d_model // cfg.n_heads


def check_config(cfg: ModelConfig) -> None:
    """Raises ConfigError for shapes the architecture cannot build."""
    if cfg.d_model % cfg.n_heads:
        raise ConfigError(f"model.d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}")
    if head_dim(cfg) % 2:
        raise ConfigError(f"model head_dim={head_dim(cfg)} must be even for RoPE")
    if cfg.n_kv_heads < 1 or cfg.n_heads % cfg.n_kv_heads:
        raise ConfigError(
            f"model.n_heads={cfg.n_heads} must be a multiple of n_kv_heads={cfg.n_kv_heads}"
        )
    if cfg.attention_impl not in ATTENTION_IMPLS:
        raise ConfigError(
            f"model.attention_impl={cfg.attention_impl!r}; valid: {', '.join(ATTENTION_IMPLS)}"
        )
    for name in ("param_dtype", "compute_dtype"):
        value = getattr(cfg, name)
        try:
            dtype = jnp.dtype(value)
        except TypeError as err:
            raise ConfigError(f"model.{name}={value!r} is not a dtype") from err
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ConfigError(f"model.{name}={value!r} is not a floating dtype")
    if cfg.remat_policy not in _REMAT_POLICIES:
        raise ConfigError(
            f"model.remat_policy={cfg.remat_policy!r}; valid: {', '.join(_REMAT_POLICIES)}"
        )
    if not 0 <= cfg.pad_id < cfg.vocab_size:
        raise ConfigError(f"model.pad_id={cfg.pad_id} outside the vocabulary [0, {cfg.vocab_size})")


# ---------------------------------------------------------------------------------------------
# The NNX module: declaration of every parameter (shape, init, logical axes)


def _param(
    init: Callable[..., jax.Array],
    key: jax.Array,
    shape: tuple[int, ...],
    axes: LogicalAxes,
    dtype: Any,
) -> nnx.Param:
    if len(shape) != len(axes):
        raise AssertionError(f"shape {shape} and logical axes {axes} differ in rank")
    return nnx.Param(init(key, shape, dtype), logical_axes=axes)


class Layers(nnx.Module):
    """All n_layers transformer blocks, each weight stacked along a leading "layers" axis."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs) -> None:
        n, d, f = cfg.n_layers, cfg.d_model, cfg.d_mlp
        q_out = cfg.n_heads * head_dim(cfg)
        kv_out = cfg.n_kv_heads * head_dim(cfg)
        dt = jnp.dtype(cfg.param_dtype)
        normal = jax.nn.initializers.normal(cfg.init_std)
        ones = jax.nn.initializers.ones
        self.attn_norm = _param(ones, rngs.params(), (n, d), ("layers", "norm"), dt)
        self.wq = _param(normal, rngs.params(), (n, d, q_out), ("layers", "embed", "heads"), dt)
        self.wk = _param(normal, rngs.params(), (n, d, kv_out), ("layers", "embed", "kv_heads"), dt)
        self.wv = _param(normal, rngs.params(), (n, d, kv_out), ("layers", "embed", "kv_heads"), dt)
        self.wo = _param(normal, rngs.params(), (n, q_out, d), ("layers", "heads", "embed"), dt)
        self.mlp_norm = _param(ones, rngs.params(), (n, d), ("layers", "norm"), dt)
        self.w_gate = _param(normal, rngs.params(), (n, d, f), ("layers", "embed", "mlp"), dt)
        self.w_up = _param(normal, rngs.params(), (n, d, f), ("layers", "embed", "mlp"), dt)
        self.w_down = _param(normal, rngs.params(), (n, f, d), ("layers", "mlp", "embed"), dt)


class Llama(nnx.Module):
    """LlamaForCausalLM-shaped decoder; `__call__` is the pure `forward` on this module's state."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs) -> None:
        check_config(cfg)
        self.cfg = cfg
        dt = jnp.dtype(cfg.param_dtype)
        normal = jax.nn.initializers.normal(cfg.init_std)
        v, d = cfg.vocab_size, cfg.d_model
        self.embed = _param(normal, rngs.params(), (v, d), ("vocab", "embed"), dt)
        self.layers = Layers(cfg, rngs=rngs)
        self.final_norm = _param(jax.nn.initializers.ones, rngs.params(), (d,), ("norm",), dt)
        self.lm_head = _param(normal, rngs.params(), (d, v), ("embed", "vocab"), dt)

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        return forward(nnx.to_pure_dict(nnx.state(self, nnx.Param)), tokens_BT, self.cfg)


# ---------------------------------------------------------------------------------------------
# Params: creation, shapes, logical axes, counts


def init_params(cfg: ModelConfig, key: jax.Array) -> Params:
    """Fresh parameters (normal(0, init_std) matrices, unit norm scales), in `param_dtype`."""
    return _init_jitted(cfg, key)


@functools.partial(jax.jit, static_argnums=0)
def _init_jitted(cfg: ModelConfig, key: jax.Array) -> Params:
    return nnx.to_pure_dict(nnx.state(Llama(cfg, rngs=nnx.Rngs(params=key)), nnx.Param))


@functools.cache
def _abstract_state(cfg: ModelConfig) -> nnx.State:
    model = nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(params=0)))
    return nnx.state(model, nnx.Param)


def abstract_params(cfg: ModelConfig) -> Params:
    """Params of jax.ShapeDtypeStruct (no allocation)."""
    return nnx.to_pure_dict(_abstract_state(cfg))


def param_logical_axes(cfg: ModelConfig) -> dict[str, Any]:
    """Logical axis names of every parameter: a nested dict like Params whose leaves are tuples.

    Tuples are pytree nodes, so map with the params tree first, where each tuple lines up with one
    array as a whole: `jax.tree.map(lambda p, axes: ..., params, param_logical_axes(cfg))`; or
    pass `is_leaf=lambda x: isinstance(x, tuple)` when this tree comes first. For a flat view see
    `logical_axes_leaves`.
    """
    return nnx.to_pure_dict(
        _abstract_state(cfg), extract_fn=lambda v: tuple(v.get_metadata()["logical_axes"])
    )


def path_name(path: tuple[Any, ...]) -> str:
    """'layers/wq' for a jax key path (DictKey / GetAttrKey / SequenceKey entries)."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def logical_axes_leaves(cfg: ModelConfig) -> dict[str, LogicalAxes]:
    """{'embed': ('vocab', 'embed'), 'layers/wq': ('layers', 'embed', 'heads'), ...}, in the
    flatten order of Params."""
    flat, _ = jax.tree_util.tree_flatten_with_path(abstract_params(cfg))
    axes = param_logical_axes(cfg)
    out = {}
    for path, _leaf in flat:
        node: Any = axes
        for entry in path:
            node = node[entry.key]
        out[path_name(path)] = node
    return out


def count_params(cfg: ModelConfig) -> int:
    """Number of parameters (from shapes only)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract_params(cfg)))


# ---------------------------------------------------------------------------------------------
# Pure forward pass and loss


def attention_implementation(cfg: ModelConfig) -> str:
    """'cudnn' (fused flash kernel) on GPU with a 16-bit compute dtype under 'auto', else 'xla'."""
    check_config(cfg)
    if cfg.attention_impl != "auto":
        return cfg.attention_impl
    half = jnp.dtype(cfg.compute_dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return "cudnn" if jax.default_backend() == "gpu" and half else "xla"


def _rms_norm(x_BTD: jax.Array, scale_D: jax.Array, eps: float, out_dtype: Any) -> jax.Array:
    x = x_BTD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)
    return (x * scale_D.astype(jnp.float32)).astype(out_dtype)


def _rope_tables(seq_len: int, dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape (T, dim/2) in fp32 (HF LlamaRotaryEmbedding frequencies)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles_TK = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.cos(angles_TK), jnp.sin(angles_TK)


def _apply_rope(x_BTNH: jax.Array, cos_TK: jax.Array, sin_TK: jax.Array) -> jax.Array:
    """HF convention: rotate the two halves of the head dimension (not interleaved pairs)."""
    x = x_BTNH.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    cos, sin = cos_TK[None, :, None, :], sin_TK[None, :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)


def _block(
    x_BTD: jax.Array,
    layer: dict[str, jax.Array],
    cos_TK: jax.Array,
    sin_TK: jax.Array,
    cfg: ModelConfig,
    impl: str,
) -> jax.Array:
    """One pre-norm block: x + attn(norm(x)); x + mlp(norm(x)). `layer` holds unstacked weights."""
    cdt = jnp.dtype(cfg.compute_dtype)
    b, t, _ = x_BTD.shape
    hd = head_dim(cfg)

    def proj(x: jax.Array, w: jax.Array) -> jax.Array:
        return jnp.einsum("btd,df->btf", x, w.astype(cdt))

    h_BTD = _rms_norm(x_BTD, layer["attn_norm"], cfg.norm_eps, cdt)
    q_BTNH = proj(h_BTD, layer["wq"]).reshape(b, t, cfg.n_heads, hd)
    k_BTKH = proj(h_BTD, layer["wk"]).reshape(b, t, cfg.n_kv_heads, hd)
    v_BTKH = proj(h_BTD, layer["wv"]).reshape(b, t, cfg.n_kv_heads, hd)
    q_BTNH = _apply_rope(q_BTNH, cos_TK, sin_TK)
    k_BTKH = _apply_rope(k_BTKH, cos_TK, sin_TK)
    # Grouped-query attention when n_kv_heads < n_heads: the kernel broadcasts K/V heads.
    attn_BTNH = jax.nn.dot_product_attention(
        q_BTNH, k_BTKH, v_BTKH, is_causal=True, implementation=impl
    )
    x_BTD = x_BTD + proj(attn_BTNH.reshape(b, t, cfg.n_heads * hd), layer["wo"]).astype(x_BTD.dtype)

    h_BTD = _rms_norm(x_BTD, layer["mlp_norm"], cfg.norm_eps, cdt)
    gate_BTF = jax.nn.silu(proj(h_BTD, layer["w_gate"]))
    up_BTF = proj(h_BTD, layer["w_up"])
    return x_BTD + proj(gate_BTF * up_BTF, layer["w_down"]).astype(x_BTD.dtype)


# `ModelConfig.remat_policy` → what `jax.checkpoint` saves of each block for the backward.
_REMAT_POLICIES = {
    "nothing": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def forward(params: Params, tokens_BT: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Logits (B, T, vocab) in fp32 for int tokens (B, T); position t sees tokens <= t only.

    Pure: jit it with `cfg` static, vmap it over a leading candidate axis of `params`.
    """
    check_config(cfg)
    impl = attention_implementation(cfg)
    cdt = jnp.dtype(cfg.compute_dtype)
    t = tokens_BT.shape[-1]
    cos_TK, sin_TK = _rope_tables(t, head_dim(cfg), cfg.rope_theta)

    x_BTD = jnp.take(params["embed"], tokens_BT, axis=0).astype(cdt)

    def step(x: jax.Array, layer: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        return _block(x, layer, cos_TK, sin_TK, cfg, impl), None

    if cfg.remat:
        step = jax.checkpoint(step, policy=_REMAT_POLICIES[cfg.remat_policy])
    x_BTD, _ = jax.lax.scan(step, x_BTD, params["layers"])

    x_BTD = _rms_norm(x_BTD, params["final_norm"], cfg.norm_eps, cdt)
    return _logits(x_BTD, params["lm_head"].astype(cdt))


@jax.custom_vjp
def _logits(x_BTD: jax.Array, w_DV: jax.Array) -> jax.Array:
    """x @ w with fp32 logits (the loss and the validator's loss deltas read them in fp32)."""
    return jnp.einsum("btd,dv->btv", x_BTD, w_DV, preferred_element_type=jnp.float32)


def _logits_fwd(x_BTD: jax.Array, w_DV: jax.Array) -> tuple[jax.Array, Any]:
    return _logits(x_BTD, w_DV), (x_BTD, w_DV)


def _logits_bwd(residuals: Any, g_BTV: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Backward in the operands' (compute) dtype. Left to autodiff, the fp32 logits cotangent
    makes both backward products fp32 (TF32 kernels on GPU: 4.9 % of a 1b2 train step on an
    H200, at half the bf16 rate). The cotangent is rounded to the compute dtype first, as bf16
    autocast does; a no-op with fp32 compute."""
    x_BTD, w_DV = residuals
    g_BTV = g_BTV.astype(x_BTD.dtype)
    dx = jnp.einsum("btv,dv->btd", g_BTV, w_DV, preferred_element_type=jnp.float32)
    dw = jnp.einsum("btd,btv->dv", x_BTD, g_BTV, preferred_element_type=jnp.float32)
    return dx.astype(x_BTD.dtype), dw.astype(w_DV.dtype)


_logits.defvjp(_logits_fwd, _logits_bwd)


def loss_and_count(
    params: Params, tokens_BT: jax.Array, cfg: ModelConfig
) -> tuple[jax.Array, jax.Array]:
    """(sum of next-token cross-entropies, number of counted targets), both fp32 scalars.

    Position t predicts token t+1. With `mask_pad_in_loss`, targets equal to `pad_id` (EOS in the
    reference) are not counted. Summing both parts over many batches gives an exact mean.
    """
    # The full sequence goes through (as the reference's HF model); the last logits are unused.
    logits_BTV = forward(params, tokens_BT, cfg)[:, :-1]
    targets_BT = tokens_BT[:, 1:]
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    if cfg.mask_pad_in_loss:
        keep_BT = (targets_BT != cfg.pad_id).astype(jnp.float32)
    else:
        keep_BT = jnp.ones(targets_BT.shape, jnp.float32)
    return jnp.sum(ce_BT * keep_BT), jnp.sum(keep_BT)


def loss_fn(params: Params, tokens_BT: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Mean next-token cross-entropy over counted targets (fp32 scalar); 0 when none count."""
    total, count = loss_and_count(params, tokens_BT, cfg)
    return total / jnp.maximum(count, 1.0)


def batches_loss_and_count(
    params: Params, batches_NBT: jax.Array, cfg: ModelConfig
) -> tuple[jax.Array, jax.Array]:
    """`loss_and_count` summed over N batches [N, B, T] with `lax.scan` (one batch in memory at a
    time); sum / count is the exact mean over every counted target."""

    def step(carry: tuple[jax.Array, jax.Array], tokens_BT: jax.Array) -> tuple[Any, None]:
        total, count = loss_and_count(params, tokens_BT, cfg)
        return (carry[0] + total, carry[1] + count), None

    zero = jnp.zeros((), jnp.float32)
    (total, count), _ = jax.lax.scan(step, (zero, zero), batches_NBT)
    return total, count
