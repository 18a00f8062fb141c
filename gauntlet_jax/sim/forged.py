"""Forged payloads: what a peer uploads instead of honest work, built at the byte level.

- `noise_hook`: a well-formed pseudo-gradient of pure noise; the simulator's `noise` peer and the
  live miner's `--behaviour noise` (`BEHAVIOURS`) both upload it;
- `corrupt_payload`: an honest payload with exactly one fault (`MALFORMED_FAULTS`), what the
  simulator's `malformed` peer uploads to probe the validator's input checks.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import numpy as np
import safetensors.numpy

from gauntlet_jax.compress.codec import encode_payload
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.miner.loop import PayloadHook
from gauntlet_jax.model import llama
from gauntlet_jax.protocol.momentum import compress_tree

# Behaviours the live miner offers (`python -m gauntlet_jax.mine --behaviour`).
BEHAVIOURS = ("honest", "noise")


@functools.partial(jax.jit, static_argnames=("plan",))
def _noise_arrays(key: jax.Array, plan: CompressionPlan) -> tuple[Any, Any]:
    """DCT top-k (idx, vals) of a standard Gaussian tree shaped like the model (one program)."""
    keys = jax.random.split(key, len(plan.leaves))
    noise = plan.unflatten(
        [jax.random.normal(k, lp.shape) for k, lp in zip(keys, plan.leaves, strict=True)]
    )
    idx, vals, _ = compress_tree(noise, plan, quantize=False)
    return idx, vals


def noise_hook(abstract: llama.Params, plan: CompressionPlan, uid: int, seed: int) -> PayloadHook:
    """noise: a well-formed pseudo-gradient of pure noise (random DCT top-k of a Gaussian tree).

    Models a peer that does no work but passes every format check; only the loss evaluation
    can tell it apart from an honest peer. (`abstract` is unused: the plan holds the shapes.)
    """
    del abstract

    def hook(window: int, honest: bytes) -> bytes:
        del honest
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), uid), window)
        idx, vals = _noise_arrays(key, plan)
        return encode_payload(
            uid, window, jax.tree.map(np.asarray, idx), jax.tree.map(np.asarray, vals), plan
        )

    return hook


# Faults the malformed peer rotates through, one per window.
MALFORMED_FAULTS = (
    "wrong_shape",
    "index_out_of_range",
    "nan_value",
    "duplicate_index",
    "wrong_uid",
    "oversized",
    "garbage",
)


def _split_payload(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    n = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + n]).get("__metadata__", {})
    return dict(safetensors.numpy.load(data)), dict(metadata)


def corrupt_payload(
    data: bytes, fault: str, plan: CompressionPlan, cap: int, rng: np.random.Generator
) -> bytes:
    """An honest payload with exactly one fault (see `MALFORMED_FAULTS`)."""
    if fault == "garbage":
        return rng.bytes(len(data))
    if fault == "oversized":
        return data + b"\0" * (cap - len(data) + 1)
    tensors, metadata = _split_payload(data)
    lp = plan.leaves[0]
    idx, vals = tensors[f"{lp.name}.idx"].copy(), tensors.get(f"{lp.name}.vals")
    if fault == "wrong_shape":
        tensors[f"{lp.name}.idx"] = np.concatenate([idx, idx[..., :1]], axis=-1)
    elif fault == "index_out_of_range":
        idx.reshape(-1)[0] = lp.chunk_elems
        tensors[f"{lp.name}.idx"] = idx
    elif fault == "duplicate_index":
        flat = idx.reshape(-1, lp.k)
        flat[0, 1] = flat[0, 0]
        tensors[f"{lp.name}.idx"] = idx
    elif fault == "nan_value":
        if vals is None:
            raise ValueError("nan_value needs a float payload (compress.quantize off)")
        vals = vals.copy()
        vals.reshape(-1)[0] = np.nan
        tensors[f"{lp.name}.vals"] = vals
    elif fault == "wrong_uid":
        metadata["uid"] = str(int(metadata["uid"]) + 1)
    else:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(MALFORMED_FAULTS)}")
    return safetensors.numpy.save(tensors, metadata=metadata)


__all__ = ["BEHAVIOURS", "MALFORMED_FAULTS", "corrupt_payload", "noise_hook"]
