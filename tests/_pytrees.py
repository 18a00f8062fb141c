"""Hand-made parameter pytrees for compression/protocol tests (no model needed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress.plan import CompressionPlan, make_plan
from gauntlet_jax.config import CompressConfig

# A vocab-like axis of 96 (chunk 48), stacked layers with a matrix and a vector, a plain vector.
SHAPES = {
    "embed": (96, 64),
    "layers": {"w": (3, 128, 64), "norm": (3, 64)},
    "final_norm": (64,),
}
AXES = {
    "embed": ("vocab", "embed"),
    "layers": {"w": ("layers", "mlp", "embed"), "norm": ("layers", "embed")},
    "final_norm": ("embed",),
}


def _is_shape(x: object) -> bool:
    return isinstance(x, tuple) and all(isinstance(s, int) for s in x)


def abstract_params(shapes: dict = SHAPES) -> dict:
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes, is_leaf=_is_shape)


def plan_for(
    cfg: CompressConfig | None = None, shapes: dict = SHAPES, axes: dict = AXES
) -> CompressionPlan:
    return make_plan(abstract_params(shapes), axes, cfg or CompressConfig())


def random_tree(seed: int, shapes: dict = SHAPES, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: (scale * rng.standard_normal(s)).astype(np.float32), shapes, is_leaf=_is_shape
    )
