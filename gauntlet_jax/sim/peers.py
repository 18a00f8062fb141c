"""Peer behaviours: honest and adversarial, each differing from an honest miner in one thing.

A behaviour answers four questions the simulator (`sim/run.py`) asks every window:

- does the peer train, on which tokens, with how many micro-batches, and on which θ (`lag`)?
  Training peers are rows of one vmapped inner step (`protocol.honest.peer_updates`);
- when does it upload, in seconds after the put window opens (`upload_delay`)?
- what does it upload (`payload`), given its own trained payload and what it can see?

Everything else (probes, the outer step, the validator) is the real code path. The kinds:

| kind            | models                                                                   |
|-----------------|--------------------------------------------------------------------------|
| honest          | a miner following the protocol: its assigned pages, on time              |
| heavy@f         | an honest miner with f× the compute: f× the micro-batches (Figure 2)     |
| copycat@u       | re-uploads peer u's payload (default: the first honest peer), re-encoded |
|                 | with its own uid, after u's upload: the paper's peer copying             |
| copycat_noisy@s | the same with Gaussian noise of s× each tensor's RMS added to the values |
| free_rider      | uploads the previous window's aggregate, compressed: no work at all      |
| noise           | a well-formed pseudo-gradient of pure noise (passes every format check)  |
| lazy            | trains honestly but on random pages instead of its assigned ones         |
| stale@L         | desynchronised: skipped L outer steps, so it trains on and publishes     |
|                 | θ_{w−L} (default L = 4, beyond the sync threshold of 3)                  |
| late            | honest work uploaded after the put window has closed                     |
| malformed       | its honest payload broken in a rotating way: wrong shape, index out of   |
|                 | range, NaN, duplicate index, someone else's uid, oversized, garbage      |
| sybil           | one operator's compute split over the group's uids: an honest peer's     |
|                 | micro-batches shared out (4 over 3 uids → 2, 1, 1)                       |

The payloads the noise and malformed peers upload are forged in `sim.forged`, which the live
miner's `--behaviour noise` also uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import numpy as np

from gauntlet_jax.compress.codec import decode_payload, encode_payload
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import Config
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.data.pages import batches_for, random_batches
from gauntlet_jax.errors import ConfigError, InvalidPayload
from gauntlet_jax.model import llama
from gauntlet_jax.protocol.momentum import compress_tree
from gauntlet_jax.sim.forged import MALFORMED_FAULTS, corrupt_payload, noise_hook

# Seeds of the lazy peer's "random" pages: outside the validator's range (1000 … 10⁷), so a lazy
# peer never happens to train on the validator's random pages.
LAZY_SEED_BASE = 1 << 31


# ---------------------------------------------------------------------------------------------
# What a behaviour can see when it uploads


@dataclass
class UploadContext:
    """One window's view for building an upload.

    `uploaded`: payload bytes already in buckets this window (copycats read them); `last_signs`:
    sign(A) of the previous window as the network applied it (the free-rider's "aggregate"),
    None in the first window; `cap`: the largest payload a receiver reads.
    """

    window: int
    cfg: Config
    plan: CompressionPlan
    abstract: llama.Params
    cap: int
    honest_uids: Sequence[int]
    uploaded: dict[int, bytes] = field(default_factory=dict)
    last_signs: Any = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    # Share of the weights the validator last posted, by uid, and this window's gather set (what
    # a sleeper watches); `cache`: scratch shared by one window's colluders.
    weights: Mapping[int, float] = field(default_factory=dict)
    gather: Sequence[int] = ()
    cache: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Behaviours


class Honest:
    """honest: trains on its assigned pages with the full compute budget, uploads on time."""

    kind: ClassVar[str] = "honest"
    trains: ClassVar[bool] = True
    # Copycats upload after the peers they copy; everyone else first.
    copies: ClassVar[bool] = False
    # What the parameter after "@" means, and its default (None = takes none).
    param_default: ClassVar[float | None] = None

    def __init__(self, uid: int, param: float | None, index: int, group_size: int) -> None:
        self.uid = uid
        self.param = self.param_default if param is None else param
        self.index = index
        self.group_size = group_size
        if self.param_default is None and param is not None:
            raise ConfigError(f"peer kind {self.kind!r} takes no @parameter")

    @property
    def lag(self) -> int:
        """How many outer steps behind the network this peer's θ is."""
        return 0

    def micro_batches(self, cfg: Config) -> int:
        return cfg.train.max_micro_batches

    def training_batches(self, corpus: TokenCorpus, cfg: Config, window: int) -> np.ndarray:
        """[n, B, T]: the tokens this peer trains on in `window` (its first micro_batches)."""
        return batches_for(corpus, self.uid, window, cfg)

    def upload_delay(self, cfg: Config, rng: np.random.Generator) -> float:
        """Seconds after the put window opens (t_min) at which the upload lands."""
        return float(rng.uniform(0.05, 0.4)) * cfg.protocol.put_window_s

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        """What goes into the bucket for `ctx.window` (None = nothing)."""
        return own


class Heavy(Honest):
    """heavy@f: an honest peer with f times the compute (more micro-batches of its own pages).
    The paper's Figure 2 "peer processing more data"."""

    kind = "heavy"
    param_default = 2.0

    def micro_batches(self, cfg: Config) -> int:
        return max(1, round(cfg.train.max_micro_batches * float(self.param)))


class Lazy(Honest):
    """lazy: does the work, but on random pages rather than its assigned ones (saves fetching
    its pages, or trains on whatever it has). Its update helps everyone's data equally, so the
    own-vs-random test gives b = ±1 at random and its BMA stays near 0."""

    kind = "lazy"

    def training_batches(self, corpus: TokenCorpus, cfg: Config, window: int) -> np.ndarray:
        return random_batches(corpus, cfg, LAZY_SEED_BASE + self.uid, window)


class Stale(Honest):
    """stale@L: desynchronised. It skipped L outer steps, so it trains on θ_{w−L} and publishes
    θ_{w+1−L} as its probes: the sync score and slash are meant to catch it."""

    kind = "stale"
    param_default = 4.0

    @property
    def lag(self) -> int:
        return int(self.param)


class Late(Honest):
    """late: honest work uploaded after the put window has closed (a slow uploader, or one that
    waits to see others' uploads first); counts as missing everywhere."""

    kind = "late"

    def upload_delay(self, cfg: Config, rng: np.random.Generator) -> float:
        return cfg.protocol.put_window_s + 1.0 + float(rng.uniform(0.0, 1.0))


class Sybil(Honest):
    """sybil: one operator's compute split over the `sybil:n` uids: an honest peer's
    micro-batches shared out (M // n each, the first M mod n get one more), each uid training on
    its own pages. The convex reward (c = 2) is meant to make splitting pay less than one peer."""

    kind = "sybil"

    def micro_batches(self, cfg: Config) -> int:
        total = cfg.train.max_micro_batches
        share = total // self.group_size + (1 if self.index < total % self.group_size else 0)
        return max(1, share)


class Malformed(Honest):
    """malformed: trains honestly but its upload is broken, a different way each window
    (`MALFORMED_FAULTS`): a buggy or hostile miner probing the validator's input checks. It must
    never stop a node, and must never earn weight."""

    kind = "malformed"

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        if own is None:
            return None
        fault = MALFORMED_FAULTS[ctx.window % len(MALFORMED_FAULTS)]
        return corrupt_payload(own, fault, ctx.plan, ctx.cap, ctx.rng)


class Copycat(Honest):
    """copycat@u: does no work; re-uploads peer u's payload of the same window (default: the
    first honest peer) under its own uid (re-encoded, so the header is valid), after u's upload.
    Defences: the put window, the index-overlap slash of the later uploader, and the own-vs-random
    test (the copy fits u's pages, not the copier's)."""

    kind = "copycat"
    trains = False
    copies = True
    param_default = -1.0  # -1 = the first honest peer

    def victim(self, ctx: UploadContext) -> int | None:
        if self.param is not None and self.param >= 0:
            return int(self.param)
        return ctx.honest_uids[0] if ctx.honest_uids else None

    def noise_scale(self) -> float:
        return 0.0

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        victim = self.victim(ctx)
        data = ctx.uploaded.get(victim) if victim is not None else None
        if data is None:
            return None  # nothing to copy (the victim uploaded nothing valid this window)
        try:
            decoded = decode_payload(
                data, ctx.plan, expected_uid=victim, expected_window=ctx.window, max_bytes=ctx.cap
            )
        except InvalidPayload:
            return None
        vals = decoded.vals
        scale = self.noise_scale()
        if scale > 0:
            vals = jax.tree.map(
                lambda v: (
                    v + scale * np.sqrt(np.mean(v * v)) * ctx.rng.standard_normal(v.shape)
                ).astype(np.float32),
                vals,
            )
        return encode_payload(self.uid, ctx.window, decoded.idx, vals, ctx.plan)

    def upload_delay(self, cfg: Config, rng: np.random.Generator) -> float:
        # After every on-time honest upload (at most 0.4 of the put window), still on time.
        return float(rng.uniform(0.45, 0.6)) * cfg.protocol.put_window_s


class CopycatNoisy(Copycat):
    """copycat_noisy@s: a copycat that adds Gaussian noise of s × each tensor's RMS (default
    0.1) to the copied values, hoping to look different; the indices are still the victim's."""

    kind = "copycat_noisy"
    param_default = 0.1

    def victim(self, ctx: UploadContext) -> int | None:
        return ctx.honest_uids[0] if ctx.honest_uids else None

    def noise_scale(self) -> float:
        return float(self.param)


class FreeRider(Honest):
    """free_rider: does no work; uploads the previous window's aggregate sign(A), compressed like
    a pseudo-gradient (DCT top-k). It points where the network just went, so it looks useful to
    the loss test, but it fits no assigned pages: the own-vs-random test should keep its BMA ≈ 0."""

    kind = "free_rider"
    trains = False

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        if ctx.last_signs is None:
            return None
        return self.encode_dense(
            jax.tree.map(lambda s: np.asarray(s, np.float32), ctx.last_signs), ctx
        )

    def encode_dense(self, dense: Any, ctx: UploadContext) -> bytes:
        """A dense parameter-shaped tree, DCT top-k compressed into this peer's payload."""
        idx, vals, _ = compress_tree(dense, ctx.plan, quantize=False)
        return encode_payload(
            self.uid,
            ctx.window,
            jax.tree.map(np.asarray, idx),
            jax.tree.map(np.asarray, vals),
            ctx.plan,
        )


class Noise(Honest):
    """noise: no work; a well-formed pseudo-gradient of pure noise (see `noise_hook`)."""

    kind = "noise"
    trains = False

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        seed = ctx.cfg.train.seed
        return noise_hook(ctx.abstract, ctx.plan, self.uid, seed)(ctx.window, b"")


# Kinds that do honest work with their whole compute (the "honest" side of the weight share).
HONEST_KINDS = frozenset({"honest", "heavy"})


__all__ = [
    "HONEST_KINDS",
    "LAZY_SEED_BASE",
    "Copycat",
    "CopycatNoisy",
    "FreeRider",
    "Heavy",
    "Honest",
    "Late",
    "Lazy",
    "Malformed",
    "Noise",
    "Stale",
    "Sybil",
    "UploadContext",
]
