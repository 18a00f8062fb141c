"""`bench compress`: a miner's end-of-window work, timed in two phases: the device step
(momentum update, DCT, top-k: `protocol.momentum.momentum_step`) and the wire encoding."""

from __future__ import annotations

import statistics
import time

import jax

from gauntlet_jax.bench.inputs import plan_of, random_like_params
from gauntlet_jax.bench.measure import (
    Machine,
    Measured,
    Options,
    dct_flops,
    make_record,
    medians,
    phase_times,
)
from gauntlet_jax.compress.codec import encode_payload
from gauntlet_jax.config import Config
from gauntlet_jax.model import llama, sharding
from gauntlet_jax.protocol.momentum import momentum_step


def bench_compress(cfg: Config, opts: Options, machine: Machine) -> Measured:
    """A miner's end-of-window work: momentum update, DCT, top-k, and the payload bytes."""
    mesh = sharding.make_mesh(cfg.mesh)
    shardings = sharding.param_shardings(cfg.model, mesh)
    plan = plan_of(cfg)
    key = jax.random.key(opts.seed)
    grads = jax.device_put(random_like_params(jax.random.fold_in(key, 1), cfg.model), shardings)
    m = jax.device_put(random_like_params(jax.random.fold_in(key, 2), cfg.model), shardings)
    lr = cfg.protocol.learning_rate
    sizes: list[int] = []

    def phases() -> list[float]:
        start = time.perf_counter()
        result = jax.block_until_ready(momentum_step(m, grads, lr, 1, cfg, plan))
        mid = time.perf_counter()
        data = encode_payload(0, 1, result.idx, result.vals, plan, result.quant)
        end = time.perf_counter()
        sizes.append(len(data))
        return [mid - start, end - mid]

    first, rows = phase_times(phases, opts.warmup, opts.repeats)
    totals = [sum(r) for r in rows]
    device_s, encode_s = medians(rows)
    n = llama.count_params(cfg.model)
    # Fewest bytes the device step must move: read grads and m, write m (fp32).
    min_bytes = 12.0 * n
    record = make_record(
        "compress",
        cfg,
        machine,
        batch_shape=None,
        first_s=first,
        times=totals,
        throughput=1.0 / statistics.median(totals),
        unit="payloads/s",
        flops=2.0 * dct_flops(plan),  # DCT, and the IDCT of what was sent (error feedback)
        device_s=device_s,
        encode_s=encode_s,
        payload_bytes=sizes[-1],
        quantize=cfg.compress.quantize,
        min_device_bytes=min_bytes,
        device_bandwidth_util=min_bytes / device_s / machine.copy_bytes_per_s,
        mesh=dict(mesh.shape),
    )
    return Measured(record, None)
