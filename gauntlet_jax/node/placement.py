"""Where a node's arrays live on its mesh: one host's devices, or a pod slice's over every host.

- θ, momentum and gradients: sharded as the rules table says (`model/sharding.py`).
- Payloads stacked on a peer axis: each chunk-grid dim split like its parameter's dim (grid row i
  covers parameter rows 64i…64i+63), so each chip scatters and inverse-transforms only the chunks
  of its own shard of θ instead of every chip decoding whole payloads.
- Token batches: the batch axis over ("data", "fsdp"); each host supplies only the rows its own
  devices hold (`global_batch`).
- Per-peer weights, masks, scalars: replicated.

Every process of a multi-host job holds the same host values for payloads and scalars (the
leader's reads reach all of them), so placing them is `jax.make_array_from_callback` over each
process's own shards. `bench.tpu_compile` compiles the node's programs with these same shardings, so its
memory figures are what the node uses.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import MeshConfig, ModelConfig
from gauntlet_jax.model import llama, sharding
from gauntlet_jax.model.sharding import global_array, global_batch, process_rows

# A payload's last axis (the k values of a chunk) is never split.
PAYLOAD_RULES = MappingProxyType({**sharding.LOGICAL_AXIS_RULES, "topk": None})


@dataclass(frozen=True, eq=False)
class Placement:
    """The mesh of one node and the sharding of everything it puts on it."""

    model: ModelConfig
    plan: CompressionPlan
    mesh: Mesh

    @classmethod
    def build(
        cls,
        model: ModelConfig,
        plan: CompressionPlan,
        mesh_cfg: MeshConfig,
        devices: Sequence[jax.Device] | None = None,
    ) -> Placement:
        """The mesh from `mesh_cfg` over `devices` (default: every device of the job)."""
        return cls(model, plan, sharding.make_mesh(mesh_cfg, devices))

    # -- shardings ----------------------------------------------------------------------------

    @functools.cached_property
    def params(self) -> Any:
        """A tree like Params of NamedSharding."""
        return sharding.param_shardings(self.model, self.mesh)

    @functools.cached_property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def spec(self, logical: Sequence[str], shape: Sequence[int]) -> NamedSharding:
        """The sharding of an array whose dims have these logical names."""
        return NamedSharding(
            self.mesh, sharding.logical_to_spec(logical, shape, self.mesh, PAYLOAD_RULES)
        )

    def payloads(self, n: int) -> tuple[Any, Any]:
        """(idx, vals) trees of NamedSharding for `n` payloads stacked on a leading axis."""
        axes_of = llama.logical_axes_leaves(self.model)
        out = []
        for lp in self.plan.leaves:
            shape = (n, *lp.payload_shape)
            logical = ("peers", *axes_of[lp.name.replace(".", "/")], "topk")
            out.append(
                NamedSharding(
                    self.mesh,
                    sharding.logical_to_spec(logical, shape, self.mesh, PAYLOAD_RULES, lp.name),
                )
            )
        tree = self.plan.unflatten(out)
        return tree, tree

    # -- placing host values ------------------------------------------------------------------

    def init_params(self, key: jax.Array) -> llama.Params:
        """θ initialised straight into its shards (no full copy on one device)."""
        return sharding.init_sharded_params(self.model, key, self.mesh)

    def place_params(self, tree: Any) -> Any:
        """A Params-shaped tree (θ, signs) from host arrays every process holds alike; leaves
        already on the mesh stay where they are."""
        return jax.tree.map(_place, tree, self.params)

    def place_payloads(self, idx: Any, vals: Any) -> tuple[Any, Any]:
        """Stacked payload trees (`codec.stack_payloads`) onto the mesh."""
        n = self.plan.flatten(idx)[0].shape[0]
        idx_s, vals_s = self.payloads(n)
        return jax.tree.map(_place, idx, idx_s), jax.tree.map(_place, vals, vals_s)

    def place_replicated(self, value: Any) -> jax.Array:
        """A small host array (mask, weights, a scalar) on every device."""
        return _place(np.asarray(value), self.replicated)

    def place_tokens(self, tokens: np.ndarray, logical: Sequence[str]) -> jax.Array:
        """A token array whose dims have these logical names (one of them "batch"), from this
        host's copy of it: only the rows of the batch axis this host's devices hold are sent."""
        shape = tuple(tokens.shape)
        target = self.spec(logical, shape)
        axis = list(logical).index("batch")
        rows = process_rows(target, shape, axis)
        local = np.ascontiguousarray(np.take(tokens, np.arange(rows.start, rows.stop), axis=axis))
        return global_batch(local, target, shape, axis)


def _place(value: Any, target: NamedSharding) -> jax.Array:
    if isinstance(value, jax.Array):
        # Already on devices: a no-op when laid out as wanted, else a device-side resharding.
        return value if value.sharding == target else jax.device_put(value, target)
    return global_array(np.asarray(value), target)
