"""`python -m gauntlet_jax.bench {score,train,compress,aggregate,all} --config C`: timings as JSON.

`python -m gauntlet_jax.bench compile --config C --topology v5e:4x4` compiles the programs for a TPU
topology on this host instead and prints their memory and FLOPs (`gauntlet_jax.tpu_compile`).

Each measurement prints one JSON line: what was measured, the config, the devices, the batch shape,
the median seconds of the timed runs (after a compile run and warm-up runs, each ended with
`block_until_ready`), throughput, MFU and peak device memory.

MFU is quoted against a bf16 matrix-product rate this same process measures (an 8192³ product on
an accelerator; 512³ on CPU, where the figure only keeps the field alive). Counted FLOPs:
  forward  2·P·tokens + 2·T·(n_heads·head_dim)·n_layers·tokens   (causal attention: half of QKᵀ, AV)
  train    3 × forward (backward = 2 × forward)
where P counts the parameters used in matrix products: all but the embedding table, which is a
gather. Work the kernels do besides (the validator's IDCT/sign per candidate, RMSNorm, softmax) is
not counted, so MFU is a lower bound.

What runs:
  score      the validator's jitted vmap (`validator.loss_delta.score_candidates`) over K candidates
             already downloaded (decoded payload arrays on the device), each with `own_batches` own
             batches, plus the window's `random_batches` shared random batches of B × T tokens.
             Forwards: 1 random-before + K × (own-before + own-after + random-after).
  train      the miner's gradient accumulation (`model.grad.accumulate_grads`) over M micro-batches.
  compress   momentum update + DCT + top-k (`protocol.momentum.momentum_step`) + wire encoding.
  aggregate  decode and validate P peers' payload bytes, stack, and the shared outer step
             (normalise, merge, IDCT, sign, apply).

Devices: every local device joins one mesh. `score` puts the candidate axis on the mesh's `peers`
axis (the rest on `data`); the others use the configured mesh (batch over data/fsdp). Only jax,
flax, optax, numpy, pyyaml and safetensors are imported: no storage, chain or tokenizer modules,
so the benchmark runs on a bare accelerator image. Token batches are synthetic (uniform ids).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gauntlet_jax.compress.codec import (
    decode_payload,
    encode_payload,
    max_payload_bytes,
    stack_payloads,
)
from gauntlet_jax.compress.plan import CompressionPlan, make_plan
from gauntlet_jax.config import Config, MeshConfig, add_config_args, config_from_args
from gauntlet_jax.model import grad, llama, sharding
from gauntlet_jax.protocol import outer
from gauntlet_jax.protocol.momentum import compress_tree, momentum_step
from gauntlet_jax.validator.loss_delta import score_candidates

KINDS = ("score", "train", "compress", "aggregate")

# The validator's evaluation sizes (GAUNTLET.md §3.3): batches per candidate and shared random ones.
OWN_BATCHES = 5
RANDOM_BATCHES = 5
# Matrix-product size for the peak rate: the 8192³ on accelerators, smaller on CPU.
ACCEL_PEAK_SIZE = 8192
CPU_PEAK_SIZE = 512
# Device-to-device copy for the memory-bandwidth ceiling.
ACCEL_COPY_BYTES = 2 * 1024**3
CPU_COPY_BYTES = 16 * 1024**2


@dataclasses.dataclass(frozen=True)
class Options:
    """Sizes and repetitions of one bench invocation (CLI flags)."""

    candidates: int | None = None  # default: validator.candidate_chunk
    chunk: int | None = None  # candidates per vmap; default: validator.candidate_chunk
    own_batches: int = OWN_BATCHES
    random_batches: int = RANDOM_BATCHES
    micro_batches: int = 4
    peers: int | None = None  # aggregate; default: protocol.gather_peers
    warmup: int = 1
    repeats: int = 5
    peak_size: int | None = None
    seed: int = 0
    profile: str | None = None  # score/train: trace one more call into DIR/<kind>


class Machine(NamedTuple):
    """The devices and the ceilings measured on them in this process."""

    platform: str
    device_kind: str
    device_count: int
    peak_flops: float  # bf16 matrix product, FLOP/s
    peak_size: int
    copy_bytes_per_s: float  # device-to-device copy, bytes read + written per second


class Measured(NamedTuple):
    """A bench's record, and its device call when one call is worth profiling (score, train)."""

    record: dict[str, Any]
    device_call: Callable[[], Any] | None


# ---------------------------------------------------------------------------------------------
# Timing and ceilings


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, list[float], Any]:
    """(first call's seconds incl. compile, timed runs' seconds, last result). Every call is
    synchronised with block_until_ready, so the times cover the device work."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    for _ in range(warmup):
        out = jax.block_until_ready(fn())
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, times, out


def profile_call(fn: Callable[[], Any], log_dir: str | None) -> None:
    """One more synchronised call under the JAX profiler (a trace for XProf/TensorBoard)."""
    if log_dir:
        with jax.profiler.trace(log_dir):
            jax.block_until_ready(fn())


def _burst_rate(fn: Callable[[], Any], work: float, per_burst: int = 10, bursts: int = 5) -> float:
    """`work` per call / the median per-call time of bursts of `per_burst` calls dispatched
    back to back and synchronised once: per-call dispatch latency (≈ 0.1–0.3 ms through JAX,
    a fifth of an 8192³ product on an H200) stays out of the ceiling."""

    def burst() -> Any:
        out = None
        for _ in range(per_burst):
            out = fn()
        return out

    _, times, _ = time_calls(burst, warmup=1, repeats=bursts)
    return work * per_burst / statistics.median(times)


def measure_matmul_peak(n: int) -> float:
    """bf16 n×n×n product rate in FLOP/s on the default device (random operands)."""
    ka, kb = jax.random.split(jax.random.key(1))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.bfloat16))
    return _burst_rate(lambda: matmul(a, b), 2.0 * n**3)


def measure_copy_bandwidth(n_bytes: int) -> float:
    """Device memory bandwidth: bytes read + written per second by an elementwise pass."""
    x = jnp.ones((n_bytes // 4,), jnp.float32)
    scale = jax.jit(lambda v: v * 1.0001)
    return _burst_rate(lambda: scale(x), 2.0 * x.size * 4)


def probe_machine(peak_size: int | None = None) -> Machine:
    devices = jax.devices()
    platform = devices[0].platform
    accel = platform != "cpu"
    n = peak_size or (ACCEL_PEAK_SIZE if accel else CPU_PEAK_SIZE)
    return Machine(
        platform=platform,
        device_kind=devices[0].device_kind,
        device_count=len(devices),
        peak_flops=measure_matmul_peak(n),
        peak_size=n,
        copy_bytes_per_s=measure_copy_bandwidth(ACCEL_COPY_BYTES if accel else CPU_COPY_BYTES),
    )


def peak_memory_bytes() -> int | None:
    """Largest `peak_bytes_in_use` over the local devices (a process-wide peak); None where the
    backend keeps no statistics (CPU)."""
    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


# ---------------------------------------------------------------------------------------------
# FLOP counts


def matmul_params(cfg: Config) -> int:
    """Parameters that take part in matrix products: all but the embedding table (a gather)."""
    m = cfg.model
    return llama.count_params(m) - m.vocab_size * m.d_model


def forward_flops_per_token(cfg: Config) -> float:
    """2·P plus causal attention (QKᵀ and AV over T/2 keys on average) per token of a sequence."""
    m = cfg.model
    attention = 2.0 * m.seq_len * m.n_heads * llama.head_dim(m) * m.n_layers
    return 2.0 * matmul_params(cfg) + attention


def dct_flops(plan: CompressionPlan) -> float:
    """FLOPs of one chunked DCT (or IDCT) of every leaf: 2·c per element for each chunked axis."""
    return float(sum(lp.n_params * 2 * sum(lp.chunks) for lp in plan.leaves))


# ---------------------------------------------------------------------------------------------
# Records


def make_record(
    what: str,
    cfg: Config,
    machine: Machine,
    *,
    batch_shape: Sequence[int] | None,
    first_s: float,
    times: Sequence[float],
    throughput: float,
    unit: str,
    flops: float,
    **extra: Any,
) -> dict[str, Any]:
    """One JSON-able measurement: the fields every bench line carries, then `extra`."""
    median = statistics.median(times)
    return {
        "what": what,
        "config": cfg.name,
        "platform": machine.platform,
        "device_kind": machine.device_kind,
        "device_count": machine.device_count,
        "batch_shape": list(batch_shape) if batch_shape is not None else None,
        "median_s": median,
        "times_s": [round(t, 6) for t in times],
        "first_call_s": first_s,
        "throughput": throughput,
        "unit": unit,
        "flops": flops,
        "tflops_per_s": flops / median / 1e12,
        # The peak is one device's; the work is spread over all of them.
        "mfu": flops / median / (machine.peak_flops * machine.device_count),
        "peak_tflops_per_s": machine.peak_flops / 1e12,
        "peak_matmul": f"bf16 {machine.peak_size}^3 product measured in this run",
        "copy_gb_per_s": machine.copy_bytes_per_s / 1e9,
        "peak_bytes_in_use": peak_memory_bytes(),
        "params": llama.count_params(cfg.model),
        "compute_dtype": cfg.model.compute_dtype,
        "attention": llama.attention_implementation(cfg.model),
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# Inputs


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
def _random_like_params(key: jax.Array, cfg: Any) -> Any:
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


# ---------------------------------------------------------------------------------------------
# Benchmarks


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
    own_w = on_peers(np.ones((k, n_own), np.float32), ("peers", None))
    rand = on_peers(random_tokens(rng, (n_rand, b, t), cfg), (None, "data", None))
    rand_w = on_peers(np.ones((n_rand,), np.float32), (None,))
    beta = jnp.float32(cfg.validator.eval_lr_factor * cfg.protocol.learning_rate)

    def run() -> Any:
        return score_candidates(
            params,
            idx,
            vals,
            own,
            own_w,
            rand,
            rand_w,
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


def _phase_times(
    phases: Callable[[], list[float]], warmup: int, repeats: int
) -> tuple[float, list[list[float]]]:
    """Runs `phases` (which returns its own per-phase seconds) once for compile, `warmup` times,
    then `repeats` timed times; returns (first call's total seconds, per-repeat phase lists)."""
    first = sum(phases())
    for _ in range(warmup):
        phases()
    return first, [phases() for _ in range(max(1, repeats))]


def _medians(rows: list[list[float]]) -> list[float]:
    return [statistics.median(col) for col in zip(*rows, strict=True)]


def bench_compress(cfg: Config, opts: Options, machine: Machine) -> Measured:
    """A miner's end-of-window work: momentum update, DCT, top-k, and the payload bytes."""
    mesh = sharding.make_mesh(cfg.mesh)
    shardings = sharding.param_shardings(cfg.model, mesh)
    plan = plan_of(cfg)
    key = jax.random.key(opts.seed)
    grads = jax.device_put(_random_like_params(jax.random.fold_in(key, 1), cfg.model), shardings)
    m = jax.device_put(_random_like_params(jax.random.fold_in(key, 2), cfg.model), shardings)
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

    first, rows = _phase_times(phases, opts.warmup, opts.repeats)
    totals = [sum(r) for r in rows]
    device_s, encode_s = _medians(rows)
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

    first, rows = _phase_times(phases, opts.warmup, opts.repeats)
    totals = [sum(r) for r in rows]
    decode_s, stack_s, device_s = _medians(rows)
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


BENCHES: dict[str, Callable[[Config, Options, Machine], Measured]] = {
    "score": bench_score,
    "train": bench_train,
    "compress": bench_compress,
    "aggregate": bench_aggregate,
}


def run(kinds: Sequence[str], cfg: Config, opts: Options) -> list[dict[str, Any]]:
    """Measures the machine's ceilings once, then each bench in `kinds`; prints and returns the
    records (one JSON line each, flushed as it is made)."""
    machine = probe_machine(opts.peak_size)
    records = []
    for kind in kinds:
        measured = BENCHES[kind](cfg, opts, machine)
        print(json.dumps(measured.record), flush=True)
        records.append(measured.record)
        # After the line is out: a profiler fault or hang cannot cost the measurement.
        if measured.device_call is not None:
            profile_call(measured.device_call, opts.profile and f"{opts.profile}/{kind}")
    return records


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compile"]:
        # Lazily: only this subcommand needs libtpu.
        from gauntlet_jax import tpu_compile

        return tpu_compile.main(argv[1:], prog="python -m gauntlet_jax.bench compile")
    parser = argparse.ArgumentParser(
        prog="python -m gauntlet_jax.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=(*KINDS, "all"), help="or `compile` (see above)")
    add_config_args(parser)
    defaults = Options()
    parser.add_argument("--candidates", type=int, default=None, help="score: K candidates")
    parser.add_argument("--chunk", type=int, default=None, help="score: candidates per vmap")
    parser.add_argument("--own-batches", type=int, default=defaults.own_batches)
    parser.add_argument("--random-batches", type=int, default=defaults.random_batches)
    parser.add_argument("--micro-batches", type=int, default=defaults.micro_batches)
    parser.add_argument("--peers", type=int, default=None, help="aggregate: payloads merged")
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--peak-size", type=int, default=None, help="n of the n³ peak product")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="score/train: trace one extra call to DIR/<kind>",
    )
    args = parser.parse_args(argv)
    for name in ("candidates", "chunk", "peers", "peak_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("own_batches", "random_batches", "micro_batches", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    opts = Options(
        candidates=args.candidates,
        chunk=args.chunk,
        own_batches=args.own_batches,
        random_batches=args.random_batches,
        micro_batches=args.micro_batches,
        peers=args.peers,
        warmup=args.warmup,
        repeats=args.repeats,
        peak_size=args.peak_size,
        seed=args.seed,
        profile=args.profile,
    )
    kinds = KINDS if args.kind == "all" else (args.kind,)
    run(kinds, config_from_args(args), opts)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
