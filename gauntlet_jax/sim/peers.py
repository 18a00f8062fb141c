"""Adversarial peer behaviours, as transforms of what an honest miner would upload.

Each behaviour documents what it models. They plug into the real miner loop
(`miner.loop.Miner(payload_hook=...)`), so an adversary differs from an honest peer only in
the one thing it does wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from gauntlet_jax.compress.codec import encode_payload
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.model import llama
from gauntlet_jax.protocol.momentum import compress_tree

PayloadHook = Callable[[int, bytes], bytes | None]


def noise_hook(abstract: llama.Params, plan: CompressionPlan, uid: int, seed: int) -> PayloadHook:
    """noise: a well-formed pseudo-gradient of pure noise (random DCT top-k of a Gaussian tree).

    Models a peer that does no work but passes every format check; only the loss evaluation
    can tell it apart from an honest peer.
    """

    def hook(window: int, honest: bytes) -> bytes:
        del honest
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), uid), window)
        leaves, treedef = jax.tree.flatten(abstract)
        keys = jax.random.split(key, len(leaves))
        noise = jax.tree.unflatten(
            treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
        )
        idx, vals, _ = compress_tree(noise, plan, quantize=False)
        return encode_payload(uid, window, idx, jax.tree.map(np.asarray, vals), plan)

    return hook


BEHAVIOURS = ("honest", "noise")
