"""Attackers who adapt: peers that try to pass the Gauntlet rather than ignore it (issue 17).

| kind              | models                                                                  |
|-------------------|-------------------------------------------------------------------------|
| alie@z            | "a little is enough" / inner-product manipulation, several colluding     |
|                   | uids: each uploads its own honest payload pushed z honest standard      |
|                   | deviations against the honest mean, coefficient by coefficient (its own |
|                   | indices, so nothing looks copied), to bias the aggregate while staying  |
|                   | inside the honest spread                                                |
| echo@s            | no work: the previous window's public aggregate sign(A) plus Gaussian   |
|                   | noise of s (the aggregate is ±1, so s is relative to its RMS),          |
|                   | compressed like a pseudo-gradient                                       |
| sleeper@w         | honest until rated high (its share of the posted weights ≥ w), then,    |
|                   | while rated high and in the gather set, its honest payload sign-flipped |
| sleeper_noise@w   | the same, but a pure-noise payload once awake                           |
| data_skipper@f    | trains with its whole compute, but a fraction f of its micro-batches on |
|                   | random pages instead of its assigned ones (f = 1: all, as `lazy`)       |

What each sees is `UploadContext`: the payloads already uploaded this window (the colluders
upload after the honest peers, still inside the put window), the last aggregate, the weights the
validator last posted, and this window's gather set.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from gauntlet_jax.compress.codec import DecodedPayload, decode_payload, encode_payload
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import Config
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.data.pages import batches_for
from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.sim.forged import noise_hook
from gauntlet_jax.sim.peers import Copycat, FreeRider, Honest, Lazy, UploadContext


def _decode(data: bytes, uid: int, ctx: UploadContext) -> DecodedPayload | None:
    try:
        return decode_payload(
            data, ctx.plan, expected_uid=uid, expected_window=ctx.window, max_bytes=ctx.cap
        )
    except InvalidPayload:
        return None


def unit_chunks(vals: np.ndarray) -> np.ndarray:
    """Each chunk's k values over their L2 norm: what the merge normalises every peer to."""
    norm = np.sqrt(np.sum(vals.astype(np.float64) ** 2, axis=-1, keepdims=True))
    return np.where(norm > 0, vals / np.maximum(norm, 1e-30), 0.0)


def dense_chunks(idx: np.ndarray, units: np.ndarray, chunk_elems: int) -> np.ndarray:
    """[n_chunks, chunk_elems] float64 with each chunk's values at its indices, zero elsewhere."""
    k = idx.shape[-1]
    out = np.zeros((idx.size // k, chunk_elems))
    np.put_along_axis(out, idx.reshape(-1, k).astype(np.int64), units.reshape(-1, k), axis=-1)
    return out


def honest_spread(
    payloads: list[DecodedPayload], plan: CompressionPlan
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per leaf, the mean and standard deviation over `payloads` of every DCT coefficient of the
    chunk-normalised pseudo-gradients (a coefficient a peer did not send counts as 0), each
    [n_chunks, chunk_elems]: the spread an ALIE attacker hides in."""
    out = []
    for j, lp in enumerate(plan.leaves):
        dense = np.stack(
            [
                dense_chunks(
                    np.asarray(plan.flatten(p.idx)[j]),
                    unit_chunks(np.asarray(plan.flatten(p.vals)[j])),
                    lp.chunk_elems,
                )
                for p in payloads
            ]
        )
        out.append((dense.mean(axis=0), dense.std(axis=0)))
    return out


def alie_values(
    own: DecodedPayload,
    spread: list[tuple[np.ndarray, np.ndarray]],
    z: float,
    plan: CompressionPlan,
) -> Any:
    """The ALIE shift of `own`'s values: at each of its indices, its normalised value moved by
    z·σ against sign(μ) of that coefficient (the direction that shrinks or flips the aggregate),
    back on `own`'s chunk scale. Indices are `own`'s: nothing is copied."""
    out = []
    for lp, idx, vals, (mu, sd) in zip(
        plan.leaves, plan.flatten(own.idx), plan.flatten(own.vals), spread, strict=True
    ):
        idx, vals = np.asarray(idx), np.asarray(vals)
        k = lp.k
        flat_idx = idx.reshape(-1, k).astype(np.int64)
        mu_at = np.take_along_axis(mu, flat_idx, axis=-1).reshape(idx.shape)
        sd_at = np.take_along_axis(sd, flat_idx, axis=-1).reshape(idx.shape)
        norm = np.sqrt(np.sum(vals.astype(np.float64) ** 2, axis=-1, keepdims=True))
        shifted = unit_chunks(vals) - z * sd_at * np.sign(mu_at)
        out.append((shifted * norm).astype(np.float32))
    return plan.unflatten(out)


class Alie(Honest):
    """alie@z: one of a colluding group (every `alie` uid of the run). Each trains honestly,
    waits for the honest uploads (like a copycat, still on time), estimates the honest spread
    from every valid payload it sees (its own group's included), and uploads its own payload
    shifted by z·σ against the mean (`alie_values`). Default z = 1: inside the spread."""

    kind = "alie"
    copies = True
    param_default = 1.0
    upload_delay = Copycat.upload_delay

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        if own is None:
            return None
        mine = _decode(own, self.uid, ctx)
        if mine is None:
            return None
        spread = ctx.cache.get("alie_spread")
        if spread is None:
            seen = [_decode(d, u, ctx) for u, d in ctx.uploaded.items()]
            group = [p for p in seen if p is not None] + [mine]
            spread = ctx.cache["alie_spread"] = honest_spread(group, ctx.plan)
        vals = alie_values(mine, spread, float(self.param), ctx.plan)
        return encode_payload(self.uid, ctx.window, mine.idx, vals, ctx.plan)


class Echo(FreeRider):
    """echo@s: does no work; uploads last window's public aggregate sign(A) plus Gaussian noise
    of s (default 0.5) per coordinate, DCT top-k compressed: the noise makes two echoes pick
    different indices, so the overlap check does not pair them."""

    kind = "echo"
    param_default = 0.5

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        if ctx.last_signs is None:
            return None
        scale = float(self.param)
        noisy = jax.tree.map(
            lambda s: (
                np.asarray(s, np.float32) + scale * ctx.rng.standard_normal(np.shape(s))
            ).astype(np.float32),
            ctx.last_signs,
        )
        return self.encode_dense(noisy, ctx)


class Sleeper(Honest):
    """sleeper@w: honest (its own pages, on time) until rated high, meaning its share of the
    weights the validator last posted is ≥ w (default 0.05); then, in every window it is both
    rated high and in the gather set, it uploads its honest payload with every value negated.
    Rated low again, it trains honestly to climb back (the adaptive cycle)."""

    kind = "sleeper"
    param_default = 0.05

    def awake(self, ctx: UploadContext) -> bool:
        return ctx.weights.get(self.uid, 0.0) >= float(self.param) and self.uid in ctx.gather

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        if own is None or not self.awake(ctx):
            return own
        return self.attack(own, ctx)

    def attack(self, own: bytes, ctx: UploadContext) -> bytes | None:
        mine = _decode(own, self.uid, ctx)
        if mine is None:
            return own
        flipped = jax.tree.map(lambda v: -np.asarray(v), mine.vals)
        return encode_payload(self.uid, ctx.window, mine.idx, flipped, ctx.plan)


class SleeperNoise(Sleeper):
    """sleeper_noise@w: a sleeper whose awake payload is pure noise (`forged.noise_hook`)."""

    kind = "sleeper_noise"

    def attack(self, own: bytes, ctx: UploadContext) -> bytes | None:
        hook = noise_hook(ctx.abstract, ctx.plan, self.uid, ctx.cfg.train.seed)
        return hook(ctx.window, own)


class DataSkipper(Lazy):
    """data_skipper@f: full compute, but the first round(f·n) of its n micro-batches come from
    random pages (default f = 1: all of them, which is the `lazy` peer); a partial skipper hopes
    its own pages still show in the own-vs-random test."""

    kind = "data_skipper"
    param_default = 1.0

    def training_batches(self, corpus: TokenCorpus, cfg: Config, window: int) -> np.ndarray:
        own = batches_for(corpus, self.uid, window, cfg)
        skipped = super().training_batches(corpus, cfg, window)
        n = min(self.micro_batches(cfg), len(own), len(skipped))
        cut = round(float(self.param) * n)
        return np.concatenate([skipped[:cut], own[cut:n]])


ADAPTIVE_KINDS = (Alie, Echo, Sleeper, SleeperNoise, DataSkipper)

__all__ = [
    "ADAPTIVE_KINDS",
    "Alie",
    "DataSkipper",
    "Echo",
    "Sleeper",
    "SleeperNoise",
    "alie_values",
    "honest_spread",
]
