"""Runs a few exact outer steps in a fresh process (XLA_FLAGS from its caller) and prints one JSON
line of digests: the aggregate signs', the trial sign's and θ's bits (with and without weight
decay) and θ's fingerprint. `tests/test_exact_across_layouts.py` compares the lines of processes
with 1 device, 8 simulated devices (θ sharded fsdp 2 × tensor 4, the payloads' peer axis over all
8) and other XLA CPU flags.

    python tests/exact_worker.py INPUTS.pkl [--shard]

INPUTS.pkl (`write_inputs`) holds θ's starting values and every window's payloads as host arrays:
inputs, drawn once, so that only the outer step runs under each process's flags.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gauntlet_jax.bench.inputs import plan_of, random_like_params, random_payload
from gauntlet_jax.config import MeshConfig, load_config
from gauntlet_jax.model import sharding
from gauntlet_jax.protocol import outer
from gauntlet_jax.protocol.fingerprint import fingerprint

PEERS = 8
WINDOWS = 3
LR = 4e-4


def _digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def write_inputs(path: Path) -> None:
    """θ's starting values and WINDOWS windows of PEERS payloads (top-k of Gaussian
    pseudo-gradients), as host arrays."""
    cfg = load_config("tiny")
    plan = plan_of(cfg)
    theta = jax.device_get(random_like_params(jax.random.key(0), cfg.model))
    payloads = [
        [jax.device_get(random_payload(jax.random.key(1000 * w + p), plan)) for p in range(PEERS)]
        for w in range(WINDOWS)
    ]
    path.write_bytes(pickle.dumps({"theta": theta, "payloads": payloads}))


def main(inputs: Path, shard: bool) -> dict:
    cfg = load_config("tiny")
    cfg_wd = load_config("tiny", ["protocol.weight_decay=0.1"])
    plan = plan_of(cfg)
    drawn = pickle.loads(inputs.read_bytes())
    theta = drawn["theta"]
    if shard:
        mesh = sharding.make_mesh(MeshConfig(peers=1, data=1, fsdp=2, tensor=4))
        theta = sharding.shard_params(theta, cfg.model, mesh)
        assert len(theta["embed"].sharding.device_set) == 8
        by_peer = NamedSharding(
            jax.sharding.Mesh(np.array(jax.devices()), ("p",)), PartitionSpec("p")
        )
        place = lambda t: jax.device_put(t, by_peer)  # noqa: E731
    else:
        place = jax.device_put
    theta_wd = theta
    out: dict = {"devices": jax.device_count(), "windows": []}
    for window in range(WINDOWS):
        payloads = drawn["payloads"][window]
        idx = place(jax.tree.map(lambda *x: np.stack(x), *[p[0] for p in payloads]))
        vals = place(jax.tree.map(lambda *x: np.stack(x), *[p[1] for p in payloads]))
        mask = np.ones(PEERS, bool)
        mask[window % PEERS] = False
        signs = outer.aggregate_sign(idx, vals, mask, cfg, plan)
        trial = outer.single_peer_sign(*payloads[0], plan)
        theta = outer.apply_sign(theta, signs, LR, cfg)
        theta_wd = outer.apply_sign(theta_wd, signs, LR, cfg_wd)
        out["windows"].append(
            {
                "signs": _digest(signs),
                "trial": _digest(trial),
                "theta": _digest(theta),
                "theta_wd": _digest(theta_wd),
                "fingerprint": fingerprint(theta),
                "fingerprint_wd": fingerprint(theta_wd),
            }
        )
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), "--shard" in sys.argv[2:])))
