"""`bench score`: the validator's jitted vmap (`validator.loss_delta.score_candidates`) over K
downloaded candidates, the candidate axis on the mesh's `peers` axis."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gauntlet_jax.bench.inputs import plan_of, random_payload, random_tokens
from gauntlet_jax.bench.measure import (
    Machine,
    Measured,
    Options,
    forward_flops_per_token,
    make_record,
    time_calls,
)
from gauntlet_jax.config import Config, MeshConfig
from gauntlet_jax.model import sharding
from gauntlet_jax.validator.loss_delta import score_candidates


def score_mesh_config(n_devices: int, candidates: int) -> MeshConfig:
    """Candidates over the `peers` axis (as many devices as divide K), the rest over `data`."""
    peers = math.gcd(n_devices, candidates)
    return MeshConfig(peers=peers, data=n_devices // peers, fsdp=1, tensor=1)


def _spec_if_divides(mesh: Any, shape: Sequence[int], spec: Sequence[Any]) -> PartitionSpec:
    """`spec`, with any axis whose size its mesh axis does not divide left replicated."""
    out = []
    for size, axis in zip(shape, spec, strict=True):
        out.append(axis if axis is None or size % mesh.shape[axis] == 0 else None)
    return PartitionSpec(*out)


def bench_score(cfg: Config, opts: Options, machine: Machine) -> Measured:
    """K candidates' loss deltas in one call of the validator's jitted vmap."""
    k = opts.candidates or cfg.validator.candidate_chunk
    chunk = opts.chunk or cfg.validator.candidate_chunk
    b, t = cfg.data.batch_size, cfg.model.seq_len
    n_own, n_rand = opts.own_batches, opts.random_batches
    mesh = sharding.make_mesh(score_mesh_config(machine.device_count, k))
    plan = plan_of(cfg)
    key = jax.random.key(opts.seed)
    params = sharding.init_sharded_params(cfg.model, key, mesh)

    def on_peers(x: Any, spec: Sequence[Any]) -> jax.Array:
        return jax.device_put(x, NamedSharding(mesh, _spec_if_divides(mesh, x.shape, spec)))

    # Candidates already downloaded: decoded payloads stacked on K, each candidate's on its
    # device of the peers axis.
    payloads = [random_payload(jax.random.fold_in(key, 1 + i), plan) for i in range(k)]
    idx, vals = jax.tree.map(lambda *xs: jnp.stack(xs), *payloads)
    idx = jax.tree.map(lambda x: on_peers(x, ("peers",) + (None,) * (x.ndim - 1)), idx)
    vals = jax.tree.map(lambda x: on_peers(x, ("peers",) + (None,) * (x.ndim - 1)), vals)
    del payloads
    rng = np.random.default_rng(opts.seed)
    own = on_peers(random_tokens(rng, (k, n_own, b, t), cfg), ("peers", None, "data", None))
    own_n = on_peers(np.full(k, n_own, np.int32), ("peers",))
    rand = on_peers(random_tokens(rng, (n_rand, b, t), cfg), (None, "data", None))
    rand_n = on_peers(np.int32(n_rand), ())
    beta = jnp.float32(cfg.validator.eval_lr_factor * cfg.protocol.learning_rate)

    def run() -> Any:
        return score_candidates(
            params,
            idx,
            vals,
            own,
            own_n,
            rand,
            rand_n,
            beta,
            model_cfg=cfg.model,
            plan=plan,
            chunk=chunk,
        )

    first, times, deltas = time_calls(run, opts.warmup, opts.repeats)
    if not np.all(np.isfinite(np.asarray(deltas.random_after))):
        raise FloatingPointError("score: non-finite losses")
    tokens = b * t * (n_rand + k * (2 * n_own + n_rand))
    flops = forward_flops_per_token(cfg) * tokens
    record = make_record(
        "score",
        cfg,
        machine,
        batch_shape=(b, t),
        first_s=first,
        times=times,
        throughput=k / statistics.median(times),
        unit="candidates/s",
        flops=flops,
        candidates=k,
        chunk=min(chunk, k),
        own_batches=n_own,
        random_batches=n_rand,
        forwards=1 + 3 * k,
        tokens=tokens,
        mesh=dict(mesh.shape),
    )
    return Measured(record, run)
