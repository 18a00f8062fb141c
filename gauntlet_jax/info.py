"""`python -m gauntlet_jax.info --config C`: model size figures for sizing hardware, as JSON.

Computed from shapes only (jax.eval_shape): nothing is allocated, so it runs for any config on
any machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import jax

from gauntlet_jax.cli import run_guarded
from gauntlet_jax.compress.plan import make_plan, payload_stats
from gauntlet_jax.config import Config, add_config_args, config_from_args
from gauntlet_jax.model import llama

BYTES_PER_PARAM = {"fp32": 4, "bf16": 2}


def param_groups(cfg: Config) -> dict[str, int]:
    """Parameter counts per group: embed, layers (all blocks), per_layer, final_norm, head."""
    shapes = llama.abstract_params(cfg.model)

    def size(tree: Any) -> int:
        return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))

    return {
        "embed": size(shapes["embed"]),
        "layers": size(shapes["layers"]),
        "per_layer": size(shapes["layers"]) // cfg.model.n_layers,
        "final_norm": size(shapes["final_norm"]),
        "head": size(shapes["lm_head"]),
    }


def model_info(cfg: Config) -> dict[str, Any]:
    """The figures `info` prints. Other parts extend this dict (e.g. the payload size once the
    compressor exists) by adding keys here."""
    n = llama.count_params(cfg.model)
    m = cfg.model
    return {
        "config": cfg.name,
        "model": {
            "vocab_size": m.vocab_size,
            "d_model": m.d_model,
            "n_layers": m.n_layers,
            "n_heads": m.n_heads,
            "n_kv_heads": m.n_kv_heads,
            "head_dim": llama.head_dim(m),
            "d_mlp": m.d_mlp,
            "seq_len": m.seq_len,
            "compute_dtype": m.compute_dtype,
        },
        "parameters": n,
        "parameter_groups": param_groups(cfg),
        "param_bytes": {name: n * width for name, width in BYTES_PER_PARAM.items()},
        # One pseudo-gradient upload (DCT chunk + top-k, GAUNTLET.md §1.4).
        "payload": payload_stats(
            make_plan(llama.abstract_params(m), llama.param_logical_axes(m), cfg.compress)
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gauntlet_jax.info", description=__doc__)
    add_config_args(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: print(json.dumps(model_info(config_from_args(args)), indent=2)))


if __name__ == "__main__":
    sys.exit(main())
