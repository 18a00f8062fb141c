"""Synthetic inputs of the benches: the compression plan, random payloads, parameter-shaped noise
and uniform token ids (no tokenizer or data files, so a bare accelerator image runs them)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress.plan import CompressionPlan, make_plan
from gauntlet_jax.config import Config
from gauntlet_jax.model import llama
from gauntlet_jax.protocol.momentum import compress_tree


def plan_of(cfg: Config) -> CompressionPlan:
    return make_plan(
        llama.abstract_params(cfg.model), llama.param_logical_axes(cfg.model), cfg.compress
    )


@functools.partial(jax.jit, static_argnames=("plan",))
def random_payload(key: jax.Array, plan: CompressionPlan) -> tuple[Any, Any]:
    """(idx, vals) of a pseudo-gradient: DCT + top-k of a Gaussian parameter-shaped tree."""
    keys = jax.random.split(key, len(plan.leaves))
    noise = [
        jax.random.normal(k, lp.shape, jnp.float32) for k, lp in zip(keys, plan.leaves, strict=True)
    ]
    idx, vals, _ = compress_tree(plan.unflatten(noise), plan, False)
    return idx, vals


@functools.partial(jax.jit, static_argnames=("cfg",))
def random_like_params(key: jax.Array, cfg: Any) -> Any:
    shapes = llama.abstract_params(cfg)
    leaves, treedef = jax.tree.flatten(shapes)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [
            jax.random.normal(k, s.shape, jnp.float32) * 1e-3
            for k, s in zip(keys, leaves, strict=True)
        ]
    )


def random_tokens(rng: np.random.Generator, shape: Sequence[int], cfg: Config) -> np.ndarray:
    return rng.integers(0, cfg.model.vocab_size, size=tuple(shape), dtype=np.int32)
