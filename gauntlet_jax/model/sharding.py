"""Device mesh and the one table that maps logical axes to mesh axes.

Every parameter declares logical axes (llama.py); `LOGICAL_AXIS_RULES` maps each logical name to
mesh axes. The mesh always has the four axes `MESH_AXES` (sizes from MeshConfig, size 1 where
unused), so one rules table serves 1 CPU, simulated CPU devices, GPUs and TPU slices alike.

Fallback: a tensor dimension whose size does not divide the product of its mesh axes is left
replicated along that dimension (for a tuple of mesh axes, the longest prefix that divides is
used). Tiny configs (e.g. 4 kv-heads × 16 dims on a tensor axis of 8) therefore still run,
just with less sharding; a real config's dims divide and shard as the table says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec, Sharding

from gauntlet_jax.config import MeshConfig, ModelConfig
from gauntlet_jax.errors import ConfigError, DistributedError
from gauntlet_jax.model import llama

MESH_AXES: tuple[str, ...] = ("peers", "data", "fsdp", "tensor")
"""Outermost to innermost: the tensor axis gets the closest devices (most traffic)."""

MeshAxes = str | tuple[str, ...] | None

LOGICAL_AXIS_RULES: Mapping[str, MeshAxes] = MappingProxyType(
    {
        # Candidate / peer axis of stacked params (validator, simulator).
        "peers": "peers",
        # Batch dimension of token batches; a leading micro-batch axis stays whole.
        "batch": ("data", "fsdp"),
        "micro": None,
        # Stacked-layer axis: scanned over, so never split.
        "layers": None,
        # Weights: FSDP along the model dimension, tensor-parallel along the wide one.
        "vocab": "tensor",
        "embed": "fsdp",
        "heads": "tensor",
        "kv_heads": "tensor",
        "mlp": "tensor",
        "norm": None,
        "seq": None,
    }
)


class ShardingRulesError(ConfigError):
    """A rules table or mesh configuration cannot shard a tensor (names the tensor and fault)."""


# ---------------------------------------------------------------------------------------------
# Mesh


def make_mesh(mesh_cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Mesh with axes MESH_AXES sized from config; the one axis set to -1 takes the rest."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    sizes = {name: getattr(mesh_cfg, name) for name in MESH_AXES}
    bad = {k: v for k, v in sizes.items() if v == 0 or v < -1}
    if bad:
        raise ShardingRulesError(f"mesh sizes must be >= 1 or -1, got {bad}")
    fill = [k for k, v in sizes.items() if v == -1]
    if len(fill) > 1:
        raise ShardingRulesError(f"at most one mesh axis may be -1, got {fill}")
    known = math.prod(v for v in sizes.values() if v != -1)
    if fill:
        if n % known:
            raise ShardingRulesError(
                f"mesh sizes {sizes}: the fixed axes ({known} devices) do not divide the "
                f"{n} available devices"
            )
        sizes[fill[0]] = n // known
    elif known != n:
        raise ShardingRulesError(
            f"mesh sizes {sizes} use {known} devices but {n} are available; "
            "set one axis to -1 or change the sizes"
        )
    shape = tuple(sizes[name] for name in MESH_AXES)
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


# ---------------------------------------------------------------------------------------------
# Logical axes -> PartitionSpec


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(
    logical: Sequence[str],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = LOGICAL_AXIS_RULES,
    name: str = "tensor",
) -> PartitionSpec:
    """PartitionSpec for one tensor. Refuses rules that put one mesh axis on two of its dims;
    leaves a dim replicated where its size does not divide its mesh axes (module docstring)."""
    if len(logical) != len(shape):
        raise ShardingRulesError(f"{name}: logical axes {tuple(logical)} vs shape {tuple(shape)}")
    wanted = []
    for axis in logical:
        if axis not in rules:
            raise ShardingRulesError(
                f"{name}: logical axis {axis!r} has no rule; known: {', '.join(sorted(rules))}"
            )
        wanted.append(_as_tuple(rules[axis]))
    used = [m for axes in wanted for m in axes]
    clashes = sorted({m for m in used if used.count(m) > 1})
    if clashes:
        raise ShardingRulesError(
            f"{name}: rules map several dims of {tuple(logical)} to mesh axis {clashes[0]!r}"
        )
    spec: list[MeshAxes] = []
    for size, axes in zip(shape, wanted, strict=True):
        axes = tuple(m for m in axes if m in mesh.shape)
        while axes and size % math.prod(mesh.shape[m] for m in axes):
            axes = axes[:-1]
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def tree_shardings(
    abstract_tree: Any,
    logical_tree: Any,
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = LOGICAL_AXIS_RULES,
) -> Any:
    """NamedShardings for a tree of arrays/ShapeDtypeStructs given a same-shaped tree of logical
    axis tuples (llama.param_logical_axes)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_tree)
    axes_flat = treedef.flatten_up_to(logical_tree)
    return treedef.unflatten(
        [
            NamedSharding(mesh, logical_to_spec(axes, leaf.shape, mesh, rules, llama.path_name(p)))
            for (p, leaf), axes in zip(flat, axes_flat, strict=True)
        ]
    )


def param_shardings(
    cfg: ModelConfig, mesh: Mesh, rules: Mapping[str, MeshAxes] = LOGICAL_AXIS_RULES
) -> Any:
    """A tree like Params of NamedSharding, as the rules table says."""
    return tree_shardings(llama.abstract_params(cfg), llama.param_logical_axes(cfg), mesh, rules)


def candidate_shardings(
    cfg: ModelConfig,
    mesh: Mesh,
    n_candidates: int,
    rules: Mapping[str, MeshAxes] = LOGICAL_AXIS_RULES,
) -> Any:
    """Shardings for params stacked along a leading candidate axis (logical name "peers")."""
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((n_candidates, *a.shape), a.dtype),
        llama.abstract_params(cfg),
    )
    logical = jax.tree.map(
        lambda _, axes: ("peers", *axes), llama.abstract_params(cfg), llama.param_logical_axes(cfg)
    )
    return tree_shardings(abstract, logical, mesh, rules)


def shard_params(
    params: llama.Params,
    cfg: ModelConfig,
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = LOGICAL_AXIS_RULES,
) -> llama.Params:
    """Places (or reshards) params on the mesh as the rules table says."""
    return jax.device_put(params, param_shardings(cfg, mesh, rules))


def init_sharded_params(cfg: ModelConfig, key: jax.Array, mesh: Mesh) -> llama.Params:
    """Initialises params directly into their shards (no full copy on one device)."""
    init = jax.jit(llama.init_params, static_argnums=0, out_shardings=param_shardings(cfg, mesh))
    return init(cfg, key)


def _dict_path(path: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(e.key) for e in path if isinstance(e, jax.tree_util.DictKey))


def shardings_like(tree: Any, shardings: Any) -> Any:
    """Shardings for a tree that mirrors Params inside (e.g. optax state: mu and nu hold a copy
    of the params tree). A leaf whose dict-key path ends with a parameter's path and has its
    shape gets that parameter's sharding; anything else (step counts, scalars) is replicated."""
    by_path: dict[tuple[str, ...], NamedSharding] = {}
    for path, sharding in jax.tree_util.tree_flatten_with_path(shardings)[0]:
        by_path[_dict_path(path)] = sharding
    if not by_path:
        raise ShardingRulesError("shardings_like: empty shardings tree")
    mesh = next(iter(by_path.values())).mesh
    replicated = NamedSharding(mesh, PartitionSpec())
    longest = max(len(k) for k in by_path)

    def pick(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        keys = _dict_path(path)
        shape = getattr(leaf, "shape", ())
        for n in range(min(longest, len(keys)), 0, -1):
            sharding = by_path.get(keys[-n:])
            if sharding is not None and _fits(sharding, shape):
                return sharding
        return replicated

    return jax.tree_util.tree_map_with_path(pick, tree)


def _fits(sharding: NamedSharding, shape: tuple[int, ...]) -> bool:
    spec = tuple(sharding.spec)
    if len(spec) > len(shape):
        return False
    for size, axes in zip(shape, spec, strict=False):
        if size % math.prod(sharding.mesh.shape[m] for m in _as_tuple(axes)):
            return False
    return True


def shard_like(tree: Any, shardings: Any) -> Any:
    """Places a Params-mirroring tree (optimizer state) like the params (`shardings_like`)."""
    return jax.device_put(tree, shardings_like(tree, shardings))


# ---------------------------------------------------------------------------------------------
# Batches


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Batch dimension (axis `batch_axis`) split over ('data', 'fsdp'); other dims replicated."""
    spec = [None] * batch_axis + [_as_tuple(LOGICAL_AXIS_RULES["batch"])]
    return NamedSharding(mesh, PartitionSpec(*spec))


def shard_batch(x: Any, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
    """Places a token batch with its batch axis split over ('data', 'fsdp'); a batch size that
    does not divide falls back as params do (module docstring)."""
    shape = tuple(x.shape)
    logical = ["micro"] * batch_axis + ["batch"] + ["seq"] * (len(shape) - batch_axis - 1)
    spec = logical_to_spec(logical, shape, mesh, name="batch")
    return jax.device_put(x, NamedSharding(mesh, spec))


# ---------------------------------------------------------------------------------------------
# Arrays on a mesh that spans hosts (each process supplies and reads back only its own shards)


def global_array(value: Any, sharding: Sharding) -> jax.Array:
    """A global array from a host value every process holds in full (θ from the public seed, a
    downloaded payload): each process supplies only the shards of its own devices."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def global_tree(tree: Any, shardings: Any) -> Any:
    """`global_array` over a pytree with a matching tree of shardings."""
    return jax.tree.map(global_array, tree, shardings)


def process_rows(sharding: Sharding, global_shape: tuple[int, ...], axis: int = 0) -> slice:
    """The rows along `axis` of a global array that this process's devices hold: the slice of
    the global batch this host loads. All of them when the axis is not split across hosts."""
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map(global_shape).values():
        piece = index[axis] if index is not None and axis < len(index) else slice(None)
        start, stop, _ = piece.indices(global_shape[axis])
        starts.append(start)
        stops.append(stop)
    lo, hi = min(starts), max(stops)
    covered = np.zeros(hi - lo, bool)
    for start, stop in zip(starts, stops, strict=True):
        covered[start - lo : stop - lo] = True
    if not covered.all():
        raise DistributedError(
            f"this process's rows of axis {axis} ({sorted(set(zip(starts, stops, strict=True)))}) "
            "are not contiguous; order the mesh so each host holds one block of the batch"
        )
    return slice(lo, hi)


def global_batch(
    local_rows: np.ndarray, sharding: Sharding, global_shape: tuple[int, ...], axis: int = 0
) -> jax.Array:
    """The global batch from this host's rows (`process_rows`) of it."""
    rows = process_rows(sharding, global_shape, axis)
    expected = rows.stop - rows.start
    if local_rows.shape[axis] != expected:
        raise DistributedError(
            f"this process holds rows {rows.start}:{rows.stop} of axis {axis} ({expected}), "
            f"but {local_rows.shape[axis]} were given"
        )
    return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)


def to_host(tree: Any) -> Any:
    """Every leaf as a full numpy array in every process (an all-gather across hosts when the
    array spans them; a plain device-to-host copy otherwise)."""

    def one(x: Any) -> np.ndarray:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:  # every device holds all of it: no traffic needed
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)
