"""Loss deltas of K candidate pseudo-gradients as one jitted vmap (GAUNTLET.md §3.3).

For each candidate p the validator takes a trial step θ'_p = θ − β·sign(IDCT(scatter(I_p, V_p)))
from its current parameters θ and measures the loss before and after on the peer's own pages and on
the window's shared random pages. The reference copies the model per candidate and loops; here the
candidate is an array axis: `vmap` over candidates inside a `lax.map` over chunks of
`candidate_chunk`, so memory holds one chunk of trial parameters at a time and the whole window is
one compiled program. The random "before" loss is shared by every candidate and computed once.

Batches arrive padded to a few static counts (`static_batch_count`: powers of two) with the
number of real ones beside them, so the number of batches a window's pages yield triggers at
most a handful of compiles over a validator's life, and padding costs no compute: each loss loop
stops at its real count.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import ModelConfig
from gauntlet_jax.model import llama
from gauntlet_jax.protocol.outer import single_peer_sign


class LossDeltas(NamedTuple):
    """Mean losses, fp32. Per-candidate arrays are [K]; `random_before` is a scalar."""

    own_before: jax.Array
    own_after: jax.Array
    random_before: jax.Array
    random_after: jax.Array

    def own_improvement(self) -> np.ndarray:
        """Relative loss drop on the peer's own pages: (before − after) / before."""
        before = np.asarray(self.own_before, np.float64)
        return (before - np.asarray(self.own_after, np.float64)) / np.maximum(before, 1e-12)

    def random_improvement(self) -> np.ndarray:
        """Relative loss drop on the window's random pages: the LossScore fed into OpenSkill."""
        before = float(self.random_before)
        return (before - np.asarray(self.random_after, np.float64)) / max(before, 1e-12)


def mean_loss(
    params: llama.Params, batches_NBT: jax.Array, n_valid: jax.Array, cfg: ModelConfig
) -> jax.Array:
    """Exact token-mean cross-entropy over the first `n_valid` of the N batches (the rest are
    padding and are not computed; under vmap, not past the largest count of the batch)."""

    def body(i: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        total, count = llama.loss_and_count(params, batches_NBT[i], cfg)
        return carry[0] + total, carry[1] + count

    batches_NBT = jnp.asarray(batches_NBT)
    zero = jnp.zeros((), jnp.float32)
    n = jnp.clip(n_valid, 0, batches_NBT.shape[0])
    total, count = jax.lax.fori_loop(0, n, body, (zero, zero))
    return total / jnp.maximum(count, 1.0)


def trial_params(params: llama.Params, signs: Any, beta: jax.Array) -> llama.Params:
    """θ − β·sign: the validator's single-peer evaluation step (no weight decay, as reference)."""
    return jax.tree.map(lambda p, s: p - beta * s.astype(p.dtype), params, signs)


def for_compute(params: llama.Params, cfg: ModelConfig) -> llama.Params:
    """The parameters as the forward pass consumes them: every matrix cast once to the compute
    dtype (the forward casts each one there anyway), norm scales kept (RMSNorm reads them in
    fp32). Losses are unchanged; each scored batch stops re-reading fp32 weights to cast them,
    and K candidates' trial weights take half the memory with bf16 compute."""
    cdt = jnp.dtype(cfg.compute_dtype)
    return jax.tree.map(
        lambda p, axes: p if "norm" in axes else p.astype(cdt),
        params,
        llama.param_logical_axes(cfg),
    )


def _pad_leading(tree: Any, to: int) -> Any:
    def pad(x: jax.Array) -> jax.Array:
        extra = to - x.shape[0]
        return jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1)) if extra else x

    return jax.tree.map(pad, tree)


@functools.partial(jax.jit, static_argnames=("model_cfg", "plan", "chunk", "normalise"))
def score_candidates(
    params: llama.Params,
    idx: Any,
    vals: Any,
    own_KNBT: jax.Array,
    own_counts_K: jax.Array,
    random_NBT: jax.Array,
    random_count: jax.Array,
    beta: jax.Array,
    *,
    model_cfg: ModelConfig,
    plan: CompressionPlan,
    chunk: int,
    normalise: str = "chunk",
) -> LossDeltas:
    """Loss before/after the trial step for K candidates at once.

    `idx`/`vals` are the candidates' decoded payloads stacked on a leading K axis (as
    `compress.codec.stack_payloads` builds them); `own_KNBT` holds each candidate's own batches,
    the first `own_counts_K[k]` of them real (`pad_batches`), and the first `random_count` of
    `random_NBT` are the random pages' batches.
    `normalise` is `protocol.normalise`: the trial sign is the outer step's over one peer.
    """
    k = own_KNBT.shape[0]
    chunk = max(1, min(chunk, k))
    n_chunks = -(-k // chunk)
    current = for_compute(params, model_cfg)
    random_before = mean_loss(current, random_NBT, random_count, model_cfg)

    def one(c_idx: Any, c_vals: Any, own_NBT: jax.Array, own_n: jax.Array) -> Any:
        trial = trial_params(params, single_peer_sign(c_idx, c_vals, plan, normalise), beta)
        trial = for_compute(trial, model_cfg)
        return (
            mean_loss(current, own_NBT, own_n, model_cfg),
            mean_loss(trial, own_NBT, own_n, model_cfg),
            mean_loss(trial, random_NBT, random_count, model_cfg),
        )

    per_candidate = (idx, vals, own_KNBT, own_counts_K)
    chunked = jax.tree.map(
        lambda x: x.reshape((n_chunks, chunk, *x.shape[1:])),
        _pad_leading(per_candidate, n_chunks * chunk),
    )
    own_before, own_after, random_after = jax.tree.map(
        lambda x: x.reshape(-1)[:k], jax.lax.map(lambda xs: jax.vmap(one)(*xs), chunked)
    )
    return LossDeltas(own_before, own_after, random_before, random_after)


def static_batch_count(n: int) -> int:
    """The padded batch count for n real batches: the next power of two. A window's pages yield
    a count that varies with its documents' lengths; padding to powers of two bounds the
    compiled programs by log2 of the largest count, where every new count would compile."""
    if n < 1:
        raise ValueError(f"static_batch_count needs at least one batch, got {n}")
    return 1 << (n - 1).bit_length()


def pad_batches(batches: list[np.ndarray], n_batches: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacks per-candidate [n_i, B, T] batch arrays into [K, n_batches, B, T] plus each one's
    count of real batches, int32 [K]. Batches beyond `n_batches` are dropped; missing ones are
    zero padding."""
    if not batches:
        raise ValueError("pad_batches needs at least one candidate")
    _, b, t = batches[0].shape
    out = np.zeros((len(batches), n_batches, b, t), np.int32)
    counts = np.zeros(len(batches), np.int32)
    for i, arr in enumerate(batches):
        n = min(n_batches, arr.shape[0])
        out[i, :n] = arr[:n]
        counts[i] = n
    return out, counts
