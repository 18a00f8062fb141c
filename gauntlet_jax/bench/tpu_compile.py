"""`python -m gauntlet_jax.bench.tpu_compile --config C --topology v5e:4x4` (the same as
`python -m gauntlet_jax.bench compile`): does this plan fit that TPU?

Ahead-of-time compilation for a named TPU topology on a CPU host: with `libtpu` installed
(`pip install "jax[tpu]==<the installed jax>"`), `jax.experimental.topologies` hands out
compile-only TPU devices (`bench.tpu_topology`); the config's mesh is built over them and the real
programs are lowered with abstract, sharded arguments and compiled by the TPU compiler. Nothing is
allocated and no TPU is needed. Prints one JSON object per program:

  grad   the miner's per-micro-batch gradient step (loss and gradient of one [B, T] batch added
         into the fp32 accumulator, as miner/loop.py does each micro-batch);
  score  the validator's scoring step (`validator.loss_delta.score_candidates`: K candidates'
         trial steps and their losses on own and random pages);
  outer  the shared outer step over a full gather set (`protocol.outer.outer_step`).

Per-device memory comes from the compiled program (`compiled.memory_analysis()`): arguments +
outputs + temporaries − donated (aliased) bytes, compared with the chip's HBM. FLOPs: XLA's count
for the compiled per-device program (`compiled.cost_analysis()`), which counts the body of a loop
once, not once per trip (the layer scan, micro-batch scans and candidate map are loops), so it is a
floor; and `model_flops`, the matmul FLOPs of the model passes the step runs (forward 2 per weight
per token plus attention scores and values over the full T×T, backward twice the forward), for the
whole step over all chips, the figure MFU is quoted against.

Topology names are those `get_topology_desc` accepts: "v5e:4x4", "v4:2x2x4", "v5p:2x2x1",
"v6e:2x2" (generation:chip grid). v4 and v5p use the megacore chip configuration (one JAX device per
chip, as on a real TPU VM).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from gauntlet_jax.bench.tpu_topology import GIB, libtpu_version, parse_topology, topology_devices
from gauntlet_jax.cli import run_guarded
from gauntlet_jax.config import Config, add_config_args, config_from_args
from gauntlet_jax.errors import ConfigError
from gauntlet_jax.model import grad, llama, sharding
from gauntlet_jax.node.placement import Placement
from gauntlet_jax.node.replica import plan_for
from gauntlet_jax.protocol import outer
from gauntlet_jax.validator.loss_delta import score_candidates

STEPS = ("grad", "score", "outer")


# ---------------------------------------------------------------------------------------------
# Analytic model FLOPs


def forward_flops_per_sequence(cfg: Any) -> int:
    """Matmul FLOPs of one forward pass over one [T] sequence (ModelConfig `cfg`)."""
    t, d, f, v = cfg.seq_len, cfg.d_model, cfg.d_mlp, cfg.vocab_size
    hd = llama.head_dim(cfg)
    q_o = 2 * d * cfg.n_heads * hd  # wq and wo
    kv = 2 * d * cfg.n_kv_heads * hd  # wk and wv
    mlp = 3 * d * f
    per_token = 2 * (cfg.n_layers * (q_o + kv + mlp) + d * v)
    attention = cfg.n_layers * 2 * 2 * t * t * cfg.n_heads * hd  # scores and values, full T×T
    return per_token * t + attention


# ---------------------------------------------------------------------------------------------
# The programs


def _abstract(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
    )


def lower_gradient_step(cfg: Config, mesh: Mesh) -> tuple[Any, int]:
    """(lowered program, model FLOPs) of the miner's gradient step on `mesh`."""
    m = cfg.model
    placement = Placement(m, plan_for(cfg), mesh)
    params = _abstract(llama.abstract_params(m), placement.params)
    shape = (cfg.data.batch_size, m.seq_len)
    tokens = jax.ShapeDtypeStruct(
        shape, jnp.int32, sharding=placement.spec(("batch", "seq"), shape)
    )
    step = jax.jit(
        functools.partial(grad.add_grad, cfg=m),
        out_shardings=(placement.params, placement.replicated),
        donate_argnums=0,
    )
    flops = 3 * forward_flops_per_sequence(m) * cfg.data.batch_size
    return step.lower(params, params, tokens), flops


def _payload_abstract(placement: Placement, n: int) -> tuple[Any, Any]:
    """Abstract idx/vals trees of `n` payloads stacked on a leading axis, placed as the node
    places them (`Placement.payloads`)."""
    idx_s, vals_s = placement.payloads(n)
    plan = placement.plan
    idx, vals = [], []
    for lp, i_s, v_s in zip(plan.leaves, plan.flatten(idx_s), plan.flatten(vals_s), strict=True):
        shape = (n, *lp.payload_shape)
        idx.append(jax.ShapeDtypeStruct(shape, lp.index_dtype, sharding=i_s))
        vals.append(jax.ShapeDtypeStruct(shape, jnp.float32, sharding=v_s))
    return plan.unflatten(idx), plan.unflatten(vals)


def lower_scoring_step(cfg: Config, mesh: Mesh, eval_batches: int) -> tuple[Any, int]:
    """(lowered program, model FLOPs) of the validator's scoring step: `uids_per_window`
    candidates, `eval_batches` own batches each and as many random batches."""
    m, v = cfg.model, cfg.validator
    k, n, b, t = v.uids_per_window, eval_batches, cfg.data.batch_size, m.seq_len
    placement = Placement(m, plan_for(cfg), mesh)
    params = _abstract(llama.abstract_params(m), placement.params)
    idx, vals = _payload_abstract(placement, k)

    def arg(shape: tuple[int, ...], logical: tuple[str, ...], dtype: Any) -> Any:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=placement.spec(logical, shape))

    lowered = score_candidates.lower(
        params,
        idx,
        vals,
        arg((k, n, b, t), ("peers", "micro", "batch", "seq"), jnp.int32),
        arg((k,), ("peers",), jnp.int32),
        arg((n, b, t), ("micro", "batch", "seq"), jnp.int32),
        arg((), (), jnp.int32),
        arg((), (), jnp.float32),
        model_cfg=m,
        plan=placement.plan,
        chunk=v.candidate_chunk,
    )
    # random before (n), and per candidate own before, own after, random after (3n).
    sequences = b * (n + k * 3 * n)
    return lowered, forward_flops_per_sequence(m) * sequences


def lower_outer_step(cfg: Config, mesh: Mesh) -> tuple[Any, int]:
    """(lowered program, 0) of the shared outer step over `gather_peers` payloads."""
    m = cfg.model
    placement = Placement(m, plan_for(cfg), mesh)
    p_shard = placement.params
    params = _abstract(llama.abstract_params(m), p_shard)
    p = cfg.protocol.gather_peers
    idx, vals = _payload_abstract(placement, p)
    mask = jax.ShapeDtypeStruct((p,), jnp.bool_, sharding=placement.replicated)
    lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=placement.replicated)
    plan = placement.plan
    step = jax.jit(
        lambda params, idx, vals, mask, lr: outer.outer_step(
            params, idx, vals, mask, lr, cfg, plan
        ),
        out_shardings=p_shard,
        donate_argnums=0,
    )
    return step.lower(params, idx, vals, mask, lr), 0


# ---------------------------------------------------------------------------------------------
# Reports


def _cost_flops(compiled: Any) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    value = cost.get("flops")
    return None if value is None else float(value)


def memory_report(compiled: Any, hbm_bytes: int) -> dict[str, Any]:
    """Per-device bytes of a compiled program and whether they fit in `hbm_bytes`."""
    mem = compiled.memory_analysis()
    parts = {
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes),
        "code_bytes": int(mem.generated_code_size_in_bytes),
    }
    total = (
        parts["argument_bytes"]
        + parts["output_bytes"]
        + parts["temp_bytes"]
        - parts["alias_bytes"]
        + parts["code_bytes"]
    )
    return {
        **parts,
        "total_bytes": total,
        "total_gib": round(total / GIB, 3),
        "hbm_gib": round(hbm_bytes / GIB, 3),
        "fraction_of_hbm": round(total / hbm_bytes, 4),
        "fits": total <= hbm_bytes,
    }


def compile_step(cfg: Config, topology: str, step: str, *, eval_batches: int = 2) -> dict[str, Any]:
    """Compiles one program (`step` in STEPS) for `topology` with the config's mesh; returns the
    report (memory per device against HBM, FLOPs, compile time) as a JSON-ready dict."""
    chip, _ = parse_topology(topology)
    devices = topology_devices(topology)
    mesh = sharding.make_mesh(cfg.mesh, devices)
    t0 = time.perf_counter()
    if step == "grad":
        lowered, model_flops = lower_gradient_step(cfg, mesh)
    elif step == "score":
        lowered, model_flops = lower_scoring_step(cfg, mesh, eval_batches)
    elif step == "outer":
        lowered, model_flops = lower_outer_step(cfg, mesh)
    else:
        raise ConfigError(f"unknown step {step!r}; valid: {', '.join(STEPS)}")
    compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    report: dict[str, Any] = {
        "config": cfg.name,
        "topology": topology,
        "step": step,
        "device_kind": devices[0].device_kind,
        "devices": len(devices),
        "hosts": len({d.process_index for d in devices}),
        "mesh": dict(mesh.shape),
        "memory_per_device": memory_report(compiled, chip.hbm_bytes),
        "xla_flops_per_device": _cost_flops(compiled),
        "model_flops": model_flops,
        "compile_s": round(seconds, 1),
        "jax": jax.__version__,
        "libtpu": libtpu_version(),
    }
    if step == "score":
        report["shapes"] = {
            "candidates": cfg.validator.uids_per_window,
            "eval_batches": eval_batches,
            "batch": cfg.data.batch_size,
            "seq_len": cfg.model.seq_len,
        }
    elif step == "grad":
        report["shapes"] = {"batch": cfg.data.batch_size, "seq_len": cfg.model.seq_len}
    else:
        report["shapes"] = {"gather_peers": cfg.protocol.gather_peers}
    return report


def add_compile_args(parser: argparse.ArgumentParser) -> None:
    """The flags of this command (shared with `bench compile`)."""
    add_config_args(parser)
    parser.add_argument(
        "--topology",
        action="append",
        required=True,
        help="TPU topology, e.g. v5e:4x4, v4:2x2x4, v5p:2x2x1, v6e:2x2 (repeatable)",
    )
    parser.add_argument(
        "--step",
        action="append",
        choices=STEPS,
        default=None,
        help="program(s) to compile (repeatable; default: grad and score)",
    )
    parser.add_argument(
        "--eval-batches",
        type=int,
        default=2,
        help="own (and random) batches per candidate in the scoring step",
    )


def run_compile(args: argparse.Namespace) -> int:
    """Compiles every (topology, step) asked for and prints one JSON line each; exit status 1
    when any program does not fit its chip's HBM."""
    cfg = config_from_args(args)
    all_fit = True
    for topology in args.topology:
        for step in args.step or ("grad", "score"):
            report = compile_step(cfg, topology, step, eval_batches=args.eval_batches)
            all_fit &= report["memory_per_device"]["fits"]
            print(json.dumps(report), flush=True)
    return 0 if all_fit else 1


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m gauntlet_jax.bench.tpu_compile"
) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    add_compile_args(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run_compile(args))


if __name__ == "__main__":
    sys.exit(main())
