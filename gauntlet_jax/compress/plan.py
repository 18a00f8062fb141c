"""The static compression plan: how every parameter leaf is chunked and how much of it is sent.

Computed once from the abstract parameters, their logical axes and the `CompressConfig`, then passed
as a static (hashable) argument to every jitted compression function, so per-leaf Python decisions
happen at trace time only. Leading axes named in `BATCH_AXES` (the stacked "layers" axis) are batch
axes: each layer's matrix is chunked on its own, exactly as the reference chunks each layer's tensor
(GAUNTLET.md §1.4), never flattened into one tall matrix.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from gauntlet_jax.config import CompressConfig

# Leading logical axes that stack independent tensors (scanned layers).
BATCH_AXES = frozenset({"layers"})

# int16 indices hold chunk offsets below 2**15; larger chunks fall back to int32.
_INT16_LIMIT = 2**15


@dataclass(frozen=True)
class LeafPlan:
    """How one parameter leaf is compressed.

    shape: the full parameter shape; n_batch: leading batch axes; chunks: chunk size per remaining
    (in-block) axis, 1 or 2 of them; grid: number of chunks per in-block axis; k: values kept per
    chunk; name: the dotted path ("layers.attn.wq") used on the wire.
    """

    name: str
    shape: tuple[int, ...]
    n_batch: int
    chunks: tuple[int, ...]
    grid: tuple[int, ...]
    k: int

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.shape[: self.n_batch]

    @property
    def chunk_elems(self) -> int:
        """Entries of one chunk (c² for matrices, c for vectors): indices lie in [0, chunk_elems)."""
        return math.prod(self.chunks)

    @property
    def n_chunks(self) -> int:
        """Chunks in the whole leaf, batch axes included."""
        return math.prod(self.batch_shape) * math.prod(self.grid)

    @property
    def payload_shape(self) -> tuple[int, ...]:
        """Shape of this leaf's idx and vals arrays: batch + chunk grid + (k,)."""
        return (*self.batch_shape, *self.grid, self.k)

    @property
    def coeff_shape(self) -> tuple[int, ...]:
        """Shape of the chunked DCT coefficients: batch + grid + chunk axes."""
        return (*self.batch_shape, *self.grid, *self.chunks)

    @property
    def index_dtype(self) -> np.dtype:
        return np.dtype(np.int16) if self.chunk_elems <= _INT16_LIMIT else np.dtype(np.int32)

    @property
    def n_values(self) -> int:
        return self.n_chunks * self.k

    @property
    def n_params(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class CompressionPlan:
    """Per-leaf plans in `jax.tree.leaves` order of the parameter pytree, plus its treedef."""

    treedef: Any
    leaves: tuple[LeafPlan, ...]
    chunk: int
    topk: int
    signature: str

    def unflatten(self, leaves: list[Any]) -> Any:
        return self.treedef.unflatten(leaves)

    def flatten(self, tree: Any) -> list[Any]:
        """Leaves of a tree shaped like the parameters (in plan order)."""
        return self.treedef.flatten_up_to(tree)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(leaf.name for leaf in self.leaves)


def largest_divisor_at_most(size: int, target: int) -> int:
    """The chunk size of an axis: the largest divisor of `size` that is ≤ `target`."""
    for c in range(min(size, target), 0, -1):
        if size % c == 0:
            return c
    raise ValueError(f"axis of size {size} has no divisor ≤ {target}")


def _n_batch_axes(axes: Any) -> int:
    if axes is None:
        return 0
    n = 0
    for name in axes:
        if name not in BATCH_AXES:
            break
        n += 1
    return n


def _leaf_plan(name: str, shape: tuple[int, ...], axes: Any, cfg: CompressConfig) -> LeafPlan:
    if axes is not None and len(tuple(axes)) != len(shape):
        raise ValueError(f"{name}: logical axes {axes} do not match shape {shape}")
    n_batch = _n_batch_axes(axes)
    block_dims = shape[n_batch:]
    if len(block_dims) not in (1, 2):
        raise ValueError(
            f"{name}: shape {shape} has {len(block_dims)} non-batch axes; the chunked DCT "
            "handles vectors and matrices only"
        )
    chunks = tuple(largest_divisor_at_most(s, cfg.chunk) for s in block_dims)
    grid = tuple(s // c for s, c in zip(block_dims, chunks, strict=True))
    k = max(1, min(cfg.topk, math.prod(chunks)))
    return LeafPlan(name=name, shape=shape, n_batch=n_batch, chunks=chunks, grid=grid, k=k)


def _signature(leaves: tuple[LeafPlan, ...], cfg: CompressConfig) -> str:
    desc = {
        "chunk": cfg.chunk,
        "topk": cfg.topk,
        "leaves": [[lp.name, list(lp.shape), lp.n_batch, list(lp.chunks), lp.k] for lp in leaves],
    }
    digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()
    return digest[:32]


def make_plan(abstract_params: Any, logical_axes: Any, cfg: CompressConfig) -> CompressionPlan:
    """Builds the plan from abstract (or concrete) params and their logical-axes tree.

    `logical_axes` has the params' structure with a tuple of axis names per leaf (or None).
    """
    if cfg.chunk < 1 or cfg.topk < 1:
        raise ValueError(f"chunk and topk must be ≥ 1, got {cfg.chunk}, {cfg.topk}")
    with_path, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
    axes_leaves = treedef.flatten_up_to(logical_axes)
    leaves = tuple(
        _leaf_plan(
            jax.tree_util.keystr(path, simple=True, separator="."),
            tuple(int(s) for s in leaf.shape),
            axes,
            cfg,
        )
        for (path, leaf), axes in zip(with_path, axes_leaves, strict=True)
    )
    names = [lp.name for lp in leaves]
    if len(set(names)) != len(names):
        raise ValueError(f"parameter names collide: {names}")
    return CompressionPlan(
        treedef=treedef,
        leaves=leaves,
        chunk=cfg.chunk,
        topk=cfg.topk,
        signature=_signature(leaves, cfg),
    )


# Bytes of one leaf's 8-bit quantisation parameters on the wire: shift, scale, 256-entry lookup.
_QUANT_BYTES_PER_TENSOR = 4 + 4 + 256 * 4


def payload_stats(plan: CompressionPlan) -> dict[str, float | int]:
    """Sizes of one pseudo-gradient upload (tensor data only; the header adds a few KB)."""
    n_values = sum(lp.n_values for lp in plan.leaves)
    n_params = sum(lp.n_params for lp in plan.leaves)
    idx_bytes = sum(lp.n_values * lp.index_dtype.itemsize for lp in plan.leaves)
    n_tensors = sum(math.prod(lp.batch_shape) for lp in plan.leaves)
    return {
        "n_params": n_params,
        "n_chunks": sum(lp.n_chunks for lp in plan.leaves),
        "n_values": n_values,
        "fraction_sent": n_values / n_params if n_params else 0.0,
        "bytes_fp32": idx_bytes + 4 * n_values,
        "bytes_8bit": idx_bytes + n_values + _QUANT_BYTES_PER_TENSOR * n_tensors,
    }
