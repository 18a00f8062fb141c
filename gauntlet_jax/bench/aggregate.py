"""`bench aggregate`: a node's outer step from P downloaded payloads, timed in three phases:
decode and validate the bytes, stack them, and the shared outer step on the device (normalise,
merge, IDCT, sign, apply: `protocol.outer.outer_step`)."""

from __future__ import annotations

import statistics
import time

import jax

from gauntlet_jax.bench.inputs import plan_of, random_payload
from gauntlet_jax.bench.measure import (
    Machine,
    Measured,
    Options,
    dct_flops,
    make_record,
    medians,
    phase_times,
)
from gauntlet_jax.compress.codec import (
    decode_payload,
    encode_payload,
    max_payload_bytes,
    stack_payloads,
)
from gauntlet_jax.config import Config
from gauntlet_jax.model import llama, sharding
from gauntlet_jax.protocol import outer


def bench_aggregate(cfg: Config, opts: Options, machine: Machine) -> Measured:
    """A node's outer step from P downloaded payloads: decode/validate, stack, merge and apply."""
    n_peers = opts.peers or cfg.protocol.gather_peers
    mesh = sharding.make_mesh(cfg.mesh)
    plan = plan_of(cfg)
    key = jax.random.key(opts.seed)
    params = sharding.init_sharded_params(cfg.model, key, mesh)
    window = 7
    blobs = []
    for uid in range(n_peers):
        idx, vals = random_payload(jax.random.fold_in(key, 1 + uid), plan)
        blobs.append(encode_payload(uid, window, idx, vals, plan))
    cap = min(cfg.compress.max_payload_bytes, max_payload_bytes(plan))
    lr = cfg.protocol.learning_rate

    def phases() -> list[float]:
        start = time.perf_counter()
        decoded = [
            decode_payload(blob, plan, expected_uid=uid, expected_window=window, max_bytes=cap)
            for uid, blob in enumerate(blobs)
        ]
        decoded_at = time.perf_counter()
        idx, vals, mask = stack_payloads(decoded, plan)
        stacked_at = time.perf_counter()
        jax.block_until_ready(outer.outer_step(params, idx, vals, mask, lr, cfg, plan))
        end = time.perf_counter()
        return [decoded_at - start, stacked_at - decoded_at, end - stacked_at]

    first, rows = phase_times(phases, opts.warmup, opts.repeats)
    totals = [sum(r) for r in rows]
    decode_s, stack_s, device_s = medians(rows)
    n = llama.count_params(cfg.model)
    payload_bytes = sum(len(blob) for blob in blobs)
    # Fewest bytes the device step must move: the payloads in, params read and written (fp32).
    min_bytes = 8.0 * n + payload_bytes
    record = make_record(
        "aggregate",
        cfg,
        machine,
        batch_shape=None,
        first_s=first,
        times=totals,
        throughput=1.0 / statistics.median(totals),
        unit="outer steps/s",
        flops=dct_flops(plan),  # the IDCT of the merged update
        peers=n_peers,
        decode_s=decode_s,
        stack_s=stack_s,
        device_s=device_s,
        payload_bytes_total=payload_bytes,
        min_device_bytes=min_bytes,
        device_bandwidth_util=min_bytes / device_s / machine.copy_bytes_per_s,
        mesh=dict(mesh.shape),
    )
    return Measured(record, None)
