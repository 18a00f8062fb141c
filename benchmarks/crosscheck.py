"""Does every backend of this machine compute the same θ? The outer step's sign aggregate, the
elementwise step (with and without weight decay), the validator's trial sign and θ's fingerprint,
for the same host payloads on each backend, window after window; prints JSON lines with the number
of differing coordinates (the protocol needs 0 everywhere).

    python benchmarks/crosscheck.py --config 150m --peers 15 --windows 20
    python benchmarks/crosscheck.py --config 1b2 --peers 15 --windows 2

Payloads are top-k of Gaussian pseudo-gradients, drawn on the accelerator (fast) and copied to
the host, so every backend gets the same bytes; θ starts from the same host values and is advanced on each backend by its own
outer steps, so a difference would compound as it would in a real network.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.bench.inputs import plan_of, random_like_params, random_payload
from gauntlet_jax.config import load_config
from gauntlet_jax.protocol import outer
from gauntlet_jax.protocol.fingerprint import fingerprint


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _bits(x: jax.Array) -> jax.Array:
    """x's bit pattern (so -0.0 differs from 0.0 and a NaN equals itself), as unsigned integers."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
    return x


@jax.jit
def _differing_on_device(a, b) -> jax.Array:
    counts = [
        jnp.sum(_bits(x) != _bits(y), dtype=jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return sum(counts)


def _differing(reference, other, device) -> int:
    """Coordinates whose bits differ; counted on `device` (at 1b2 a host comparison of four θ
    copies costs more than the outer step itself)."""
    return int(
        _differing_on_device(jax.device_put(reference, device), jax.device_put(other, device))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="150m")
    parser.add_argument("--peers", type=int, default=15)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--lr", type=float, default=4e-4)
    args = parser.parse_args()
    backends = sorted({d.platform for d in jax.devices()} | {"cpu"})
    devices = {b: jax.devices(b)[0] for b in backends}
    # Payload bytes are inputs, not results: draw them where it is fast (at 1b2 the CPU's top-k of
    # 15 peers takes minutes), then hand every backend the same host copy.
    maker = devices[next((b for b in backends if b != "cpu"), "cpu")]
    cfg = load_config(args.config)
    cfg_wd = load_config(args.config, ["protocol.weight_decay=0.1"])
    plan = plan_of(cfg)
    with jax.default_device(devices["cpu"]):
        theta0 = _host(random_like_params(jax.random.key(0), cfg.model))
    theta = {b: jax.device_put(theta0, devices[b]) for b in backends}
    theta_wd = dict(theta)
    for window in range(args.windows):
        start = time.perf_counter()
        with jax.default_device(maker):
            payloads = [
                _host(random_payload(jax.random.key(1000 * window + p), plan))
                for p in range(args.peers)
            ]
        idx = jax.tree.map(lambda *x: np.stack(x), *[p[0] for p in payloads])
        vals = jax.tree.map(lambda *x: np.stack(x), *[p[1] for p in payloads])
        payloads_s = time.perf_counter() - start
        mask = np.ones(args.peers, bool)
        mask[-1] = window % 2 == 0  # a masked-out peer every other window
        out, seconds = {}, {}
        for b in backends:
            with jax.default_device(devices[b]):
                start = time.perf_counter()
                signs = jax.block_until_ready(outer.aggregate_sign(idx, vals, mask, cfg, plan))
                seconds[b] = time.perf_counter() - start
                trial = outer.single_peer_sign(
                    jax.tree.map(lambda x: x[0], idx), jax.tree.map(lambda x: x[0], vals), plan
                )
                theta[b] = outer.apply_sign(theta[b], signs, args.lr, cfg)
                theta_wd[b] = outer.apply_sign(theta_wd[b], signs, args.lr, cfg_wd)
                out[b] = {
                    "signs": signs,
                    "trial": trial,
                    "theta": theta[b],
                    "theta_wd": theta_wd[b],
                    "fingerprint": fingerprint(theta[b]),
                    "fingerprint_wd": fingerprint(theta_wd[b]),
                }
                seconds[f"{b}_window"] = time.perf_counter() - start
        ref = out["cpu"]
        for b in backends:
            if b == "cpu":
                continue
            start = time.perf_counter()
            differs = {
                f"{name}_differs": _differing(ref[key], out[b][key], devices[b])
                for name, key in (
                    ("aggregate", "signs"),
                    ("trial_sign", "trial"),
                    ("theta", "theta"),
                    ("theta_weight_decay", "theta_wd"),
                )
            }
            seconds["compare"] = time.perf_counter() - start
            record = {
                "config": args.config,
                "peers": args.peers,
                "window": window,
                "backend": b,
                "n_params": int(sum(x.size for x in jax.tree.leaves(ref["theta"]))),
                **differs,
                "fingerprint_equal": ref["fingerprint"] == out[b]["fingerprint"]
                and ref["fingerprint_wd"] == out[b]["fingerprint_wd"],
                "fingerprint": out[b]["fingerprint"],
                "aggregate_s": {k: round(v, 4) for k, v in seconds.items() if k in backends},
                "phase_s": {k: round(v, 3) for k, v in seconds.items() if k not in backends},
                "payloads_s": round(payloads_s, 3),
            }
            print(json.dumps(record), flush=True)
    if len(backends) == 1:
        print(json.dumps({"note": "only the CPU backend is present; nothing to compare"}))


if __name__ == "__main__":
    main()
