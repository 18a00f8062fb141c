"""The simulated peers' inner steps: every training peer's payload of a window.

The peers train as one jitted `vmap` over a peer axis (`protocol.honest.peer_updates`), one call
per distinct θ: every synchronised peer shares θ_w, a stale peer holds θ_{w−L}, so peers are
grouped by their lag. Each group keeps its stacked error-feedback momenta between windows.

The peer axis can be sharded over devices (`shard_peers=True`, several devices): the stacked
batches and momenta are placed with a `peers` mesh axis and XLA partitions the vmapped step; θ is
replicated. With one device it is a plain vmap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from gauntlet_jax.compress.codec import encode_payload
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import Config
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.protocol.honest import peer_updates, stack_peer_batches
from gauntlet_jax.protocol.momentum import init_momentum
from gauntlet_jax.sim.peers import Honest


class PeerTraining:
    """The training peers grouped by lag, their momenta, and the mesh their axis lives on."""

    def __init__(
        self,
        cfg: Config,
        peers: Sequence[Honest],
        params: Any,
        plan: CompressionPlan,
        *,
        shard_peers: bool,
    ) -> None:
        self.cfg = cfg
        self.plan = plan
        self.groups: dict[int, list[Honest]] = {}
        for p in peers:
            if p.trains:
                self.groups.setdefault(p.lag, []).append(p)
        self.mesh = _peer_mesh() if shard_peers else None
        zeros = init_momentum(params)
        self.momentum = {
            lag: self._place(self._stacked(zeros, len(group))) for lag, group in self.groups.items()
        }

    def _stacked(self, zeros: Any, n: int) -> Any:
        """`n` peers' zero momenta stacked on a leading peer axis (padded to the mesh)."""
        return jax.tree.map(lambda x: jnp.zeros((self._padded(n), *x.shape), x.dtype), zeros)

    def _padded(self, n: int) -> int:
        if self.mesh is None:
            return n
        d = self.mesh.size
        return -(-n // d) * d

    def _place(self, tree: Any) -> Any:
        """Peer-axis arrays onto the `peers` mesh axis (a no-op on one device)."""
        if self.mesh is None:
            return tree
        sharding = NamedSharding(self.mesh, P("peers"))
        return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)

    def payloads(
        self,
        window: int,
        theta_at: Callable[[int], Any],
        corpus: TokenCorpus,
        lr: Any,
        step: int,
    ) -> tuple[dict[int, bytes], dict[int, float]]:
        """Every training peer's encoded payload of `window` and its training loss, by uid:
        one vmapped inner step per group, on θ_{window − lag} (`theta_at`)."""
        cfg = self.cfg
        payloads: dict[int, bytes] = {}
        losses: dict[int, float] = {}
        for lag, group in self.groups.items():
            batches = [
                p.training_batches(corpus, cfg, window)[: p.micro_batches(cfg)] for p in group
            ]
            micro = max(p.micro_batches(cfg) for p in group)
            stacked, n_valid = stack_peer_batches(batches, micro)
            pad = self._padded(len(group)) - len(group)
            if pad:
                stacked = np.concatenate([stacked, np.zeros((pad, *stacked.shape[1:]), np.int32)])
                n_valid = np.concatenate([n_valid, np.zeros(pad, np.int32)])
            result, loss_P = peer_updates(
                theta_at(window - lag),
                self.momentum[lag],
                self._place(jnp.asarray(stacked)),
                self._place(jnp.asarray(n_valid)),
                lr,
                step,
                cfg,
                self.plan,
            )
            self.momentum[lag] = result.m
            idx, vals = jax.tree.map(np.asarray, result.idx), jax.tree.map(np.asarray, result.vals)
            quant = None if result.quant is None else jax.tree.map(np.asarray, result.quant)
            loss_rows = np.asarray(loss_P)
            for i, p in enumerate(group):
                row = _row(i)
                payloads[p.uid] = encode_payload(
                    p.uid,
                    window,
                    jax.tree.map(row, idx),
                    jax.tree.map(row, vals),
                    self.plan,
                    None if quant is None else jax.tree.map(row, quant),
                )
                losses[p.uid] = float(loss_rows[i])
        return payloads, losses


def _peer_mesh() -> jax.sharding.Mesh | None:
    n = jax.device_count()
    if n < 2:
        return None
    return jax.make_mesh((n,), ("peers",), axis_types=(AxisType.Auto,))


def _row(i: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x[i]


__all__ = ["PeerTraining"]
