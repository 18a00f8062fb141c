"""One process of the multi-host test (tests/test_multihost.py): the validator's scoring step and
the shared outer step on a mesh over every process's devices.

    python tests/multihost_worker.py --out DIR --num-processes N --process-id I --port P \
        --decision JSON

With N > 1 the processes join on 127.0.0.1:P (`gauntlet_jax.node.multihost.maybe_initialize`).
Every process builds the same inputs (θ from the public seed, payloads compressed from seeded
noise), loads only its own rows of each token batch, takes the step parameters from the leader's
`--decision` (the followers' own argument is ignored, as a follower never reads the chain), and
the leader alone writes DIR/result.json: the losses and a hash of θ after the outer step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gauntlet_jax.config import MeshConfig, with_overrides
from gauntlet_jax.model.sharding import (
    global_array,
    global_batch,
    global_tree,
    process_rows,
    to_host,
)
from gauntlet_jax.node import multihost

# The mesh: 8 devices as data 2 × fsdp 2 × tensor 2. The data axis is outermost, so with two
# processes of 4 devices each host holds one half of every batch.
MESH = {"peers": 1, "data": 2, "fsdp": 2, "tensor": 2}
K, N, B = 3, 2, 4  # candidates, batches per candidate, sequences per batch
GATHER = 4


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--decision", required=True, help="JSON the leader decides from")
    args = parser.parse_args()

    mesh_cfg = MeshConfig(
        **MESH,
        distributed="on" if args.num_processes > 1 else "off",
        coordinator=f"127.0.0.1:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    joined = multihost.maybe_initialize(mesh_cfg)

    # Imported after the join: nothing may touch a device before it.
    from gauntlet_jax.config import load_config
    from gauntlet_jax.model import llama, sharding
    from gauntlet_jax.node.replica import plan_for
    from gauntlet_jax.protocol import outer
    from gauntlet_jax.protocol.momentum import compress_tree
    from gauntlet_jax.validator.loss_delta import score_candidates

    cfg = with_overrides(load_config("tiny"), ["model.seq_len=32"])
    plan = plan_for(cfg)
    mesh = sharding.make_mesh(mesh_cfg)
    decision = multihost.broadcast_from_leader(json.loads(args.decision))

    # θ from the public seed, initialised straight into its shards across both hosts.
    params = sharding.init_sharded_params(cfg.model, jax.random.key(cfg.train.seed), mesh)

    # Payloads every node would download alike: here compressed from seeded noise on this
    # process's own first device, then placed on the global mesh.
    host_params = llama.abstract_params(cfg.model)
    payloads = []
    for seed in range(max(K, GATHER)):
        noise = jax.tree.map(
            lambda a, s=seed: jax.random.normal(jax.random.key(100 + s), a.shape), host_params
        )
        idx, vals, _ = compress_tree(noise, plan, quantize=False)
        payloads.append((to_host(idx), to_host(vals)))
    replicated = NamedSharding(mesh, PartitionSpec())

    def stacked(n: int, part: int) -> object:
        tree = jax.tree.map(lambda *xs: np.stack(xs), *[p[part] for p in payloads[:n]])
        return global_tree(tree, jax.tree.map(lambda _: replicated, tree))

    # Token batches: each host reads only its rows of the batch axis.
    rng = np.random.default_rng(7)
    t = cfg.model.seq_len
    own_full = rng.integers(3, cfg.model.vocab_size, (K, N, B, t)).astype(np.int32)
    rand_full = rng.integers(3, cfg.model.vocab_size, (N, B, t)).astype(np.int32)
    own_sharding = sharding.batch_sharding(mesh, batch_axis=2)
    rand_sharding = sharding.batch_sharding(mesh, batch_axis=1)
    own_rows = process_rows(own_sharding, own_full.shape, axis=2)
    rand_rows = process_rows(rand_sharding, rand_full.shape, axis=1)
    own = global_batch(own_full[:, :, own_rows], own_sharding, own_full.shape, 2)
    rand = global_batch(rand_full[:, rand_rows], rand_sharding, rand_full.shape, 1)
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "local_devices": jax.local_device_count(),
                "devices": jax.device_count(),
                "own_rows": [own_rows.start, own_rows.stop],
                "random_rows": [rand_rows.start, rand_rows.stop],
                "decision": decision,
            }
        ),
        flush=True,
    )

    own_n = global_array(np.full(K, N, np.int32), replicated)
    rand_n = global_array(np.int32(N), replicated)
    deltas = score_candidates(
        params,
        stacked(K, 0),
        stacked(K, 1),
        own,
        own_n,
        rand,
        rand_n,
        jnp.float32(decision["beta"]),
        model_cfg=cfg.model,
        plan=plan,
        chunk=2,
    )
    losses = to_host(deltas._asdict())

    mask = np.array(decision["mask"], bool)
    new_params = outer.outer_step(
        params, stacked(GATHER, 0), stacked(GATHER, 1), mask, decision["lr"], cfg, plan
    )
    digest = hashlib.sha256()
    moved = 0
    for old, new in zip(
        jax.tree.leaves(to_host(params)),
        jax.tree.leaves(to_host(new_params)),
        strict=True,
    ):
        digest.update(np.ascontiguousarray(new).tobytes())
        moved += int(np.sum(old != new))
    multihost.sync("results")
    if multihost.is_leader():
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "joined": joined,
            "processes": jax.process_count(),
            "devices": jax.device_count(),
            "params_sharded_over": len(params["embed"].sharding.device_set),
            "losses": {k: np.asarray(v, np.float64).tolist() for k, v in losses.items()},
            "outer_sha256": digest.hexdigest(),
            "outer_moved": moved,
        }
        (args.out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
