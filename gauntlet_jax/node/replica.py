"""The shared model as every node holds it: θ, advanced one window at a time by the outer step
over the gather set's payloads. Miners and validators both own one, so both apply the protocol's
single outer step with the same padding, mask and learning rate — if they disagree by one ulp,
every sync check fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from gauntlet_jax.compress.codec import PayloadStack
from gauntlet_jax.compress.plan import CompressionPlan, make_plan
from gauntlet_jax.config import Config
from gauntlet_jax.model import llama
from gauntlet_jax.model.sharding import to_host
from gauntlet_jax.node.network import Fetched, pad_to
from gauntlet_jax.node.placement import Placement
from gauntlet_jax.protocol import outer
from gauntlet_jax.protocol.fingerprint import fingerprint
from gauntlet_jax.protocol.probes import gather_probes, probe_indices
from gauntlet_jax.protocol.schedule import outer_lr

log = logging.getLogger(__name__)


def plan_for(cfg: Config) -> CompressionPlan:
    """The compression plan of the configured model (shapes only; nothing is allocated)."""
    return make_plan(
        llama.abstract_params(cfg.model), llama.param_logical_axes(cfg.model), cfg.compress
    )


def node_placement(cfg: Config) -> Placement:
    """The node's mesh (`cfg.mesh` over every device of the job) and its shardings."""
    return Placement.build(cfg.model, plan_for(cfg), cfg.mesh)


def initial_params(cfg: Config, placement: Placement | None = None) -> llama.Params:
    """θ at the run's start window: every node initialises from the same public seed (the bits
    do not depend on the sharding: JAX's partitionable threefry)."""
    placement = node_placement(cfg) if placement is None else placement
    return placement.init_params(jax.random.key(cfg.train.seed))


_gather_probes = jax.jit(gather_probes)


@dataclass
class Replica:
    """θ before window `next_window`'s outer step (i.e. θ_{next_window}), on the node's mesh."""

    cfg: Config
    plan: CompressionPlan
    params: llama.Params
    next_window: int
    start_window: int
    placement: Placement
    # (the params it was computed from, θ's fingerprint): a lead validator needs it twice per
    # window (its aggregate's header, then the next window's sync check), each a pass over θ.
    _fingerprinted: tuple[llama.Params, str] | None = field(default=None, repr=False, compare=False)

    def lr(self, window: int) -> float:
        """α for the outer step of `window`: the schedule runs on global steps since the start."""
        return outer_lr(max(0, window - self.start_window), self.cfg.protocol)

    def new_stack(self) -> PayloadStack:
        """Empty stacked buffers for this window's gather set (`Network.fetch_payloads` fills
        them as the payloads arrive)."""
        return PayloadStack(self.plan, self.cfg.protocol.gather_peers)

    def gather_signs(
        self, fetched: Sequence[Fetched], stack: PayloadStack | None = None
    ) -> tuple[Any, np.ndarray]:
        """sign(A) of the gather set's valid payloads, padded to `gather_peers` for static
        shapes; returns (signs, mask of peers that counted). `stack`: the buffers the fetch
        decoded into (`new_stack`); rows already holding these payloads are not copied again."""
        payloads = [f.value if f.status == "ok" else None for f in fetched]
        padded = pad_to(payloads, self.cfg.protocol.gather_peers)
        idx, vals, mask = (self.new_stack() if stack is None else stack).stacked(padded)
        idx, vals = self.placement.place_payloads(idx, vals)
        placed_mask = self.placement.place_replicated(mask)
        return outer.aggregate_sign(idx, vals, placed_mask, self.cfg, self.plan), mask

    def apply_signs(self, window: int, signs: Any) -> None:
        """The outer step of `window` from its signs (on the mesh, or host arrays: an
        aggregate read back for catch-up)."""
        if window != self.next_window:
            raise ValueError(f"replica expects window {self.next_window}, got {window}")
        signs = self.placement.place_params(signs)
        self.params = outer.apply_sign(self.params, signs, self.lr(window), self.cfg)
        self.next_window = window + 1

    def apply_gathered(
        self, window: int, fetched: Sequence[Fetched], stack: PayloadStack | None = None
    ) -> tuple[Any, np.ndarray]:
        """The outer step of `window` from its gather set; returns (signs, mask)."""
        signs, mask = self.gather_signs(fetched, stack)
        self.apply_signs(window, signs)
        return signs, mask

    def probe_positions(self, window: int) -> Any:
        return probe_indices(
            window,
            self.cfg.data.seed,
            llama.abstract_params(self.cfg.model),
            self.cfg.validator.sync_probes,
        )

    def probes(self, window: int) -> np.ndarray:
        """θ's values at `window`'s public probe positions (published after that window)."""
        return to_host(_gather_probes(self.params, self.probe_positions(window)))

    def fingerprint(self) -> str:
        """θ's exact fingerprint (`protocol.fingerprint`), the same on every node that holds it;
        computed once per θ."""
        if self._fingerprinted is None or self._fingerprinted[0] is not self.params:
            self._fingerprinted = (self.params, fingerprint(self.params))
        return self._fingerprinted[1]
