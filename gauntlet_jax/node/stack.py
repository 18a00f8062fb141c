"""The software stack a node computes θ with, logged at start and published with its probes.

Every node must compute the same θ to the bit, and the exact outer step is built to be bit-exact
across backends, but a peer on another jax/jaxlib is the first thing to suspect when its θ
fingerprint differs: the validator warns once per peer and stack (`StackWarnings`)."""

from __future__ import annotations

import logging
import platform
from importlib import metadata

import jax

from gauntlet_jax import __version__
from gauntlet_jax.protocol.probes import MAX_STACK_CHARS

log = logging.getLogger(__name__)

# Distributions whose version decides the numbers; a missing one reads "-".
STACK_PACKAGES = ("jax", "jaxlib", "flax", "optax")


def stack_versions() -> dict[str, str]:
    """gauntlet-jax, jax, jaxlib, flax, optax, python and the default backend's platform."""
    out = {"gauntlet-jax": __version__}
    for name in STACK_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    out["python"] = platform.python_version()
    out["backend"] = jax.default_backend()
    return out


def stack_string(versions: dict[str, str] | None = None) -> str:
    """The versions as one `name=version` line (what goes into the probes header)."""
    versions = stack_versions() if versions is None else versions
    return " ".join(f"{k}={v}" for k, v in versions.items())


def parse_stack(text: str) -> dict[str, str]:
    """A stack line back into its fields; malformed parts are dropped (it is a peer's text)."""
    out = {}
    for part in text[:MAX_STACK_CHARS].split():
        name, sep, version = part.partition("=")
        if sep and name and version:
            out[name] = version
    return out


def stack_differences(own: dict[str, str], peer: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Fields whose versions differ, as name → (ours, theirs); the backend is not compared
    (CPU, GPU and TPU nodes compute the same θ by construction)."""
    names = (set(own) | set(peer)) - {"backend"}
    return {
        n: (own.get(n, "-"), peer.get(n, "-"))
        for n in sorted(names)
        if own.get(n, "-") != peer.get(n, "-")
    }


class StackWarnings:
    """Warns once per (peer, stack) when a peer's published stack differs from this node's."""

    def __init__(self, own: dict[str, str] | None = None) -> None:
        self.own = stack_versions() if own is None else own
        self._seen: dict[int, str] = {}

    def check(self, uid: int, published: str | None) -> dict[str, tuple[str, str]]:
        """The differences of `uid`'s stack (empty when equal or unpublished); logs a warning
        the first time a peer shows a given differing stack."""
        if not published:
            return {}
        diff = stack_differences(self.own, parse_stack(published))
        if diff and self._seen.get(uid) != published:
            log.warning(
                "peer %d runs another stack than this node (%s): θ may not match to the bit; "
                "install the lock file's versions (requirements/)",
                uid,
                ", ".join(f"{n} {ours} here, {theirs} there" for n, (ours, theirs) in diff.items()),
            )
        self._seen[uid] = published
        return diff
