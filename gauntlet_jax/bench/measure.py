"""What every bench shares: its options, the machine's measured ceilings, timing, FLOP counts
and the JSON record.

Timing: a compile call, warm-up calls, then timed calls, each ended with `block_until_ready` so
the seconds cover the device work. Ceilings: a bf16 matrix product and a device-to-device copy,
measured in bursts in this same process, are what MFU and bandwidth use are quoted against. The
FLOP counting rules are in `gauntlet_jax.bench.cli`'s docstring (the command's `--help`).
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import Config
from gauntlet_jax.model import llama

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
    peers: int | None = None  # aggregate (default: protocol.gather_peers); window (default 20)
    arrival_s: float | None = None  # aggregate: seconds between arrivals; default: serial decode
    peer_noise: float | None = None  # window: noise on each peer's gradient; default: the bench's
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


def phase_times(
    phases: Callable[[], list[float]], warmup: int, repeats: int
) -> tuple[float, list[list[float]]]:
    """Runs `phases` (which returns its own per-phase seconds) once for compile, `warmup` times,
    then `repeats` timed times; returns (first call's total seconds, per-repeat phase lists)."""
    first = sum(phases())
    for _ in range(warmup):
        phases()
    return first, [phases() for _ in range(max(1, repeats))]


def medians(rows: list[list[float]]) -> list[float]:
    return [statistics.median(col) for col in zip(*rows, strict=True)]


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
