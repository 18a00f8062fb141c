"""One process of the two-host miner test (tests/test_multihost.py): one window of a miner on an
8-device mesh, through the miner's own code (`Miner.train`, `make_payload`, `upload`).

    python tests/multihost_miner_worker.py --root DIR --window W [--config C] [--set k=v ...]

The local chain and buckets live under DIR (the test creates the chain). Multi-host settings come
from the JAX_* environment variables; only the leader is given the hotkey secret, so a follower
that touched the chain would fail. The leader prints one JSON line: micro-batches, loss, bytes
uploaded and the rows of each batch its devices held.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax

from gauntlet_jax.config import load_config
from gauntlet_jax.model.sharding import process_rows
from gauntlet_jax.node import multihost


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--window", type=int, required=True)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    cfg = load_config(args.config, args.set)
    multihost.maybe_initialize(cfg.mesh)

    # Imported after the join: nothing may touch a device before it.
    from gauntlet_jax.chain import open_chain
    from gauntlet_jax.data.corpus import open_corpus
    from gauntlet_jax.miner.loop import Miner
    from gauntlet_jax.node.startup import Node, new_replica
    from gauntlet_jax.protocol.momentum import init_momentum

    chain = multihost.leader_opened(lambda: open_chain(cfg.chain), ("hotkey",))
    node = Node.connect(cfg, "miner", chain)
    miner = Miner(cfg, node, open_corpus(cfg.data, progress=False))
    miner.replica = new_replica(cfg, 0, miner.placement)
    miner.momentum = init_momentum(miner.replica.params)
    t0 = time.perf_counter()
    grads, n_batches, loss = miner.train(args.window, deadline=math.inf)
    uploaded = miner.upload(args.window, miner.make_payload(args.window, grads))
    seconds = time.perf_counter() - t0
    shape = (cfg.data.batch_size, cfg.model.seq_len)
    rows = process_rows(miner.placement.spec(("batch", "seq"), shape), shape)
    report = {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "uid": node.uid,
        "micro_batches": n_batches,
        "loss": loss,
        "uploaded": uploaded,
        "rows": [rows.start, rows.stop],
        "params_sharded_over": len(miner.replica.params["embed"].sharding.device_set),
        "device_kind": jax.devices()[0].device_kind,
        "window_s_with_compile": round(seconds, 1),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
