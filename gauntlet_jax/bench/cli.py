"""`python -m gauntlet_jax.bench {score,train,compress,aggregate,all,window} --config C`: timings
as JSON.

`python -m gauntlet_jax.bench compile --config C --topology v5e:4x4` compiles the programs for a TPU
topology on this host instead and prints their memory and FLOPs (`gauntlet_jax.bench.tpu_compile`).

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
             (normalise, merge, IDCT, sign, apply); then the same with simulated arrivals, each
             payload decoded on worker threads into a preallocated stack as it arrives
             (`after_last_arrival_s`: what follows the last arrival).
  window     one whole validator window (`Validator.process_window`) over a local chain and
             buckets holding `--peers` real miners' payloads and probes, the validator's own
             split of it (`gauntlet_jax.bench.window`); not part of `all`.

Devices: every local device joins one mesh. `score` puts the candidate axis on the mesh's `peers`
axis (the rest on `data`); the others use the configured mesh (batch over data/fsdp). Only jax,
flax, optax, numpy, pyyaml and safetensors are imported: no storage, chain or tokenizer modules,
so the benchmark runs on a bare accelerator image. Token batches are synthetic (uniform ids).
`window` is the exception: it runs the whole node (chain, storage, the configured corpus).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gauntlet_jax.bench.aggregate import bench_aggregate
from gauntlet_jax.bench.compress import bench_compress
from gauntlet_jax.bench.measure import Machine, Measured, Options, probe_machine, profile_call
from gauntlet_jax.bench.score import bench_score
from gauntlet_jax.bench.train import bench_train
from gauntlet_jax.cli import run_guarded
from gauntlet_jax.config import Config, add_config_args, config_from_args

KINDS = ("score", "train", "compress", "aggregate")
# Not in `all`: the whole node, on the configured corpus.
WHOLE_NODE_KINDS = ("window",)


def _bench_window(cfg: Config, opts: Options, machine: Machine) -> Measured:
    # Lazily: the chain, storage and tokenizer modules the other benches do without.
    from gauntlet_jax.bench.window import bench_window

    return bench_window(cfg, opts, machine)


BENCHES: dict[str, Callable[[Config, Options, Machine], Measured]] = {
    "score": bench_score,
    "train": bench_train,
    "compress": bench_compress,
    "aggregate": bench_aggregate,
    "window": _bench_window,
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
        from gauntlet_jax.bench import tpu_compile

        return tpu_compile.main(argv[1:], prog="python -m gauntlet_jax.bench compile")
    parser = argparse.ArgumentParser(
        prog="python -m gauntlet_jax.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "kind", choices=(*KINDS, "all", *WHOLE_NODE_KINDS), help="or `compile` (see above)"
    )
    add_config_args(parser)
    defaults = Options()
    parser.add_argument("--candidates", type=int, default=None, help="score: K candidates")
    parser.add_argument("--chunk", type=int, default=None, help="score: candidates per vmap")
    parser.add_argument("--own-batches", type=int, default=defaults.own_batches)
    parser.add_argument("--random-batches", type=int, default=defaults.random_batches)
    parser.add_argument(
        "--micro-batches",
        type=int,
        default=defaults.micro_batches,
        help="train: micro-batches accumulated; window: each peer's micro-batches",
    )
    parser.add_argument(
        "--peers",
        type=int,
        default=None,
        help="aggregate: payloads merged; window: miners in the bucket (default 20)",
    )
    parser.add_argument(
        "--arrival-s",
        type=float,
        default=None,
        help="aggregate: seconds between simulated arrivals (default: one serial decode)",
    )
    parser.add_argument(
        "--peer-noise",
        type=float,
        default=None,
        help="window: Gaussian noise on each peer's gradient, × each tensor's RMS (default 1; "
        "0 = the miners' payloads as they are)",
    )
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
    for name in ("arrival_s", "peer_noise"):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    opts = Options(
        candidates=args.candidates,
        chunk=args.chunk,
        own_batches=args.own_batches,
        random_batches=args.random_batches,
        micro_batches=args.micro_batches,
        peers=args.peers,
        arrival_s=args.arrival_s,
        peer_noise=args.peer_noise,
        warmup=args.warmup,
        repeats=args.repeats,
        peak_size=args.peak_size,
        seed=args.seed,
        profile=args.profile,
    )
    kinds = KINDS if args.kind == "all" else (args.kind,)
    return run_guarded(lambda: run(kinds, config_from_args(args), opts) and None)
