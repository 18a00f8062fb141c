"""The first-order screen: every active peer's LossScore on random pages, estimated.

The exact LossScore of peer p is the relative drop of the random pages' loss under the trial step
θ' = θ − β·s_p (s_p = the peer's trial sign, `single_peer_sign`). To first order in β,

    L(θ − β·s_p) − L(θ) ≈ −β·⟨∇L_random(θ), s_p⟩,

so one gradient of the random pages per window, shared by every peer, and one inner product per
peer estimate every peer's score: `random_gradient` once, then `screen_candidates` per chunk of
peers (one compiled program for the chunk size, the peer axis vmapped, as the exact scoring).

The screen is a float estimate (the reduction order of ⟨g, s⟩ is the compiler's): it only picks
which peers get the exact evaluation and is never rated (docs/protocol.md, "Scoring every peer").
Nothing every node must agree on depends on it: s_p is the exact integer trial sign, θ is not
changed, and the exact path (`loss_delta.score_candidates`) is untouched.

Only the random-pages score is screened, not the own-vs-random comparison: the own side needs the
peer's own pages, and a directional derivative there (`jax.jvp` of the loss along s_p, batched
over peers) costs a forward and a tangent pass over the peer's own batches, about what the exact
own-pages evaluation costs (two forwards); it would not make the screen cheaper than exact.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import ModelConfig
from gauntlet_jax.model import llama
from gauntlet_jax.model.grad import accumulate_grads
from gauntlet_jax.protocol.outer import single_peer_sign


def random_gradient(
    params: llama.Params,
    random_NBT: jax.Array,
    model_cfg: ModelConfig,
    n_valid: jax.Array | int | None = None,
) -> tuple[llama.Params, jax.Array]:
    """(∇L_random(θ), L_random(θ)): the mean of the first `n_valid` random batches' gradients
    and losses (all when None; the rest is padding, not computed). The miner's accumulation,
    so memory holds one micro-batch's activations."""
    return accumulate_grads(params, random_NBT, model_cfg, n_valid)


@functools.partial(jax.jit, static_argnames=("plan", "normalise"))
def screen_candidates(
    grad: llama.Params,
    loss: jax.Array,
    idx: Any,
    vals: Any,
    beta: jax.Array,
    *,
    plan: CompressionPlan,
    normalise: str = "chunk",
) -> jax.Array:
    """Estimated relative loss drop on the random pages, β·⟨g, s_p⟩ / L, for K candidates [K].

    `idx`/`vals` are decoded payloads stacked on a leading K axis (`stack_payloads`); `grad`,
    `loss` come from `random_gradient`. A non-finite gradient gives non-finite estimates.
    """

    def one(c_idx: Any, c_vals: Any) -> jax.Array:
        signs = single_peer_sign(c_idx, c_vals, plan, normalise)
        dots = [
            jnp.vdot(g.astype(jnp.float32), s.astype(jnp.float32))
            for g, s in zip(jax.tree.leaves(grad), jax.tree.leaves(signs), strict=True)
        ]
        return beta * jnp.sum(jnp.stack(dots)) / loss

    return jax.vmap(one)(idx, vals)
