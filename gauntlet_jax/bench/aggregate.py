"""`bench aggregate`: a node's outer step from P downloaded payloads, timed two ways.

Serial (the split as it was): decode and validate every payload, stack them, then the shared
outer step on the device (normalise, merge, IDCT, sign, apply: `protocol.outer.outer_step`).

Streamed (the nodes' path, `compress.streaming`): the payloads arrive one every `arrival_s`
seconds (default: the serial decode + stack time of one payload, the rate a single thread would
just keep up with) and each is decoded on `compress.decode_workers` threads straight into its row
of a preallocated stack. `after_last_arrival_s` is what follows the last arrival: its own decode
(and any still queued), the device transfer and the outer step — what a node adds to the window
once the put window closes."""

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
    DecodedPayload,
    PayloadStack,
    decode_payload,
    encode_payload,
    max_payload_bytes,
    stack_payloads,
)
from gauntlet_jax.compress.streaming import StreamingDecoder
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
    arrival_s = opts.arrival_s if opts.arrival_s is not None else (decode_s + stack_s) / n_peers
    workers = cfg.compress.decode_workers

    def streamed() -> list[float]:
        """(after the last arrival: rows in, then stacked + device; the whole window from the
        first arrival)."""
        start = time.perf_counter()
        stack = PayloadStack(plan, n_peers)  # before the first arrival: off the critical path
        with StreamingDecoder(plan, stack, cap, workers) as decoder:
            futures = []
            for uid, blob in enumerate(blobs):
                time.sleep(max(0.0, start + uid * arrival_s - time.perf_counter()))
                futures.append(decoder.submit(uid, uid, window, blob))
            last_arrival = time.perf_counter()
            results = [f.result() for f in futures]
        decoded_at = time.perf_counter()
        accepted = [r if isinstance(r, DecodedPayload) else None for r in results]
        idx, vals, mask = stack.stacked(accepted)
        jax.block_until_ready(outer.outer_step(params, idx, vals, mask, lr, cfg, plan))
        end = time.perf_counter()
        return [decoded_at - last_arrival, end - decoded_at, end - start]

    _, stream_rows = phase_times(streamed, opts.warmup, opts.repeats)
    tail_decode_s, tail_device_s, window_s = medians(stream_rows)
    after_last = statistics.median(r[0] + r[1] for r in stream_rows)
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
        arrival_s=arrival_s,
        decode_workers=workers,
        after_last_arrival_s=after_last,
        after_last_decode_s=tail_decode_s,
        after_last_device_s=tail_device_s,
        streamed_total_s=window_s,
        payload_bytes_total=payload_bytes,
        min_device_bytes=min_bytes,
        device_bandwidth_util=min_bytes / device_s / machine.copy_bytes_per_s,
        mesh=dict(mesh.shape),
    )
    return Measured(record, None)
