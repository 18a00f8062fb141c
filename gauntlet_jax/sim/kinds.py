"""The peer kinds by name, and peer specifications: "honest:6,copycat:1,stale@2:1,sybil:3".

The behaviours are in `sim.peers` (the paper's adversaries) and `sim.adaptive` (attackers who
adapt, issue 17); this registry joins them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gauntlet_jax.errors import ConfigError
from gauntlet_jax.sim.adaptive import ADAPTIVE_KINDS
from gauntlet_jax.sim.peers import (
    Copycat,
    CopycatNoisy,
    FreeRider,
    Heavy,
    Honest,
    Late,
    Lazy,
    Malformed,
    Noise,
    Stale,
    Sybil,
)

KINDS: Mapping[str, type[Honest]] = {
    cls.kind: cls
    for cls in (
        Honest,
        Heavy,
        Copycat,
        CopycatNoisy,
        FreeRider,
        Noise,
        Lazy,
        Stale,
        Late,
        Malformed,
        Sybil,
        *ADAPTIVE_KINDS,
    )
}


_SPEC_ITEM = re.compile(r"(?P<kind>[a-z_]+)(?:@(?P<param>-?[0-9.]+))?(?::(?P<count>[0-9]+))?")


@dataclass(frozen=True)
class PeerGroup:
    kind: str
    count: int
    param: float | None = None


def parse_peers(spec: str) -> list[PeerGroup]:
    """ "honest:6,stale@2:1,noise" → groups (count defaults to 1). Unknown kinds are errors."""
    groups = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        m = _SPEC_ITEM.fullmatch(item)
        if m is None:
            raise ConfigError(f"peer spec item {item!r}: expected kind[@param][:count]")
        kind = m["kind"]
        if kind not in KINDS:
            raise ConfigError(f"unknown peer kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        count = int(m["count"]) if m["count"] is not None else 1
        if count < 1:
            raise ConfigError(f"peer spec item {item!r}: count must be ≥ 1")
        param = float(m["param"]) if m["param"] is not None else None
        groups.append(PeerGroup(kind, count, param))
    if not groups:
        raise ConfigError("peer spec is empty")
    return groups


def build_peers(groups: Sequence[PeerGroup], first_uid: int = 1) -> list[Honest]:
    """Behaviours with consecutive uids from `first_uid`, in spec order."""
    peers: list[Honest] = []
    uid = first_uid
    for g in groups:
        for i in range(g.count):
            peers.append(KINDS[g.kind](uid, g.param, i, g.count))
            uid += 1
    return peers


__all__ = ["KINDS", "PeerGroup", "build_peers", "parse_peers"]
