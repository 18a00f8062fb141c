"""`bench train`: the miner's gradient accumulation (`model.grad.accumulate_grads`) over M
micro-batches of B × T tokens."""

from __future__ import annotations

import statistics
from typing import Any

import jax
import numpy as np

from gauntlet_jax.bench.inputs import random_tokens
from gauntlet_jax.bench.measure import (
    Machine,
    Measured,
    Options,
    forward_flops_per_token,
    make_record,
    time_calls,
)
from gauntlet_jax.config import Config
from gauntlet_jax.model import grad, sharding


def bench_train(cfg: Config, opts: Options, machine: Machine) -> Measured:
    """The miner's accumulated gradient over M micro-batches of B × T tokens."""
    m_batches, b, t = opts.micro_batches, cfg.data.batch_size, cfg.model.seq_len
    mesh = sharding.make_mesh(cfg.mesh)
    params = sharding.init_sharded_params(cfg.model, jax.random.key(opts.seed), mesh)
    rng = np.random.default_rng(opts.seed)
    batches = sharding.shard_batch(random_tokens(rng, (m_batches, b, t), cfg), mesh, batch_axis=1)

    def run() -> Any:
        return grad.accumulate_grads(params, batches, cfg.model)

    first, times, (_, loss) = time_calls(run, opts.warmup, opts.repeats)
    if not np.isfinite(float(loss)):
        raise FloatingPointError("train: non-finite loss")
    tokens = m_batches * b * t
    flops = 3.0 * forward_flops_per_token(cfg) * tokens
    record = make_record(
        "train",
        cfg,
        machine,
        batch_shape=(b, t),
        first_s=first,
        times=times,
        throughput=tokens / statistics.median(times),
        unit="tokens/s",
        flops=flops,
        micro_batches=m_batches,
        tokens=tokens,
        remat=cfg.model.remat,
        mesh=dict(mesh.shape),
    )
    return Measured(record, run)
