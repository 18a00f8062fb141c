"""Copies in the miner's compiled gradient step (issue 18, part 1): for each variant, the count of
copy-like ops in the optimised HLO of `model.grad.accumulate_grads` and the measured tokens/s.

    python -m benchmarks.miner_copies --config configs/1b2.yaml --micro-batches 4 [--repeats 3]

Variants are config overrides of the same model (`model.remat=false` is the shipped 1b2 step);
add more with `--variant NAME=key=value[,key=value]`. Each variant prints one JSON line: the
op counts (`copy`, `copy-start`, `dynamic-update-slice` whose update is a broadcast, and every
`dynamic-update-slice`), the compiled program's bytes of temporaries, and tokens/s (median of
`--repeats` synchronised calls after one warm-up). Every variant after the first also reports how
many gradient coordinates (and whether the loss) differ from the first variant's on the same
backend, and the largest absolute difference: how far remat moves what a miner sends. On CPU
the counts are of the CPU program; run it on the GPU for the GPU's.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Sequence

import jax
import numpy as np

from gauntlet_jax.bench.inputs import random_tokens
from gauntlet_jax.config import load_config
from gauntlet_jax.model import grad, sharding

DEFAULT_VARIANTS = {
    "shipped": (),
    "remat": ("model.remat=true",),
    "remat_dots": ("model.remat=true", "model.remat_policy=dots"),
}
_OP = re.compile(r"=\s*\S+\s+([a-z-]+)\(")


def hlo_op_counts(hlo_text: str) -> dict[str, int]:
    """Copy-like ops of an optimised HLO module's text (fusions counted by their own kind)."""
    ops = _OP.findall(hlo_text)
    broadcast_dus = len(re.findall(r"dynamic-update-slice\([^)]*broadcast", hlo_text))
    return {
        "copy": ops.count("copy"),
        "copy_start": ops.count("copy-start"),
        "dynamic_update_slice": ops.count("dynamic-update-slice"),
        "dynamic_update_slice_of_broadcast": broadcast_dus,
        "fusion": ops.count("fusion"),
        "instructions": len(ops),
    }


def gradient_difference(reference: tuple, other: tuple) -> dict:
    """How far `other` = (grads, loss) is from `reference`: differing coordinates, on device."""
    ref_leaves, other_leaves = jax.tree.leaves(reference[0]), jax.tree.leaves(other[0])
    differing = sum(
        int(jax.numpy.sum(a != b)) for a, b in zip(ref_leaves, other_leaves, strict=True)
    )
    max_abs = max(
        float(jax.numpy.max(jax.numpy.abs(a - b)))
        for a, b in zip(ref_leaves, other_leaves, strict=True)
    )
    return {
        "grad_coordinates": sum(a.size for a in ref_leaves),
        "grad_differing": differing,
        "grad_max_abs_diff": max_abs,
        "loss_identical": bool(reference[1] == other[1]),
    }


def measure(config: str, overrides: Sequence[str], micro: int, repeats: int) -> tuple[dict, tuple]:
    """(the variant's record, its (grads, loss) for comparison with the other variants)."""
    cfg = load_config(config, overrides)
    mesh = sharding.make_mesh(cfg.mesh)
    params = sharding.init_sharded_params(cfg.model, jax.random.key(0), mesh)
    shape = (micro, cfg.data.batch_size, cfg.model.seq_len)
    batches = sharding.shard_batch(
        random_tokens(np.random.default_rng(0), shape, cfg), mesh, batch_axis=1
    )
    count = jax.numpy.asarray(micro, jax.numpy.int32)
    compiled = grad._accumulate_grads.lower(params, batches, cfg.model, count).compile()
    memory = compiled.memory_analysis()
    counts = hlo_op_counts(compiled.as_text())
    output = jax.block_until_ready(compiled(params, batches, count))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, batches, count))
        times.append(time.perf_counter() - start)
    record = {
        "config": config,
        "overrides": list(overrides),
        "device": jax.devices()[0].device_kind,
        "tokens_per_s": micro * shape[1] * shape[2] / statistics.median(times),
        "times_s": times,
        "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        **counts,
    }
    return record, output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.miner_copies", description=__doc__)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES")
    args = parser.parse_args(argv)
    variants = dict(DEFAULT_VARIANTS)
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        variants[name] = tuple(o for o in rest.split(",") if o)
    reference = None
    for name, overrides in variants.items():
        record, output = measure(args.config, overrides, args.micro_batches, args.repeats)
        if reference is None:
            reference = output
        else:
            record.update(gradient_difference(reference, output))
        del output
        print(json.dumps({"variant": name, **record}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
