"""TPU topologies on a host without a TPU: the chips we know (HBM, JAX's device kind), whether
a usable libtpu is installed, and the compile-only devices `jax.experimental.topologies` hands out
for a topology name ("v5e:4x4": generation:chip grid; v4 and v5p in the megacore chip
configuration, one JAX device per chip as on a real TPU VM).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import jax

from gauntlet_jax.errors import ConfigError, GauntletError

GIB = 1 << 30


@dataclass(frozen=True)
class Chip:
    """A TPU generation: its name in topology strings, JAX's device_kind and HBM per chip."""

    generation: str
    device_kind: str
    hbm_bytes: int
    chip_config: str  # get_topology_desc's chip_config_name


CHIPS: dict[str, Chip] = {
    c.generation: c
    for c in (
        Chip("v4", "TPU v4", 32 * GIB, "megacore"),
        Chip("v5e", "TPU v5 lite", 16 * GIB, "default"),
        Chip("v5p", "TPU v5", 95 * GIB, "megacore"),
        Chip("v6e", "TPU v6 lite", 32 * GIB, "default"),
    )
}


# libtpu reads these at start-up. On a CPU host, without them it queries a metadata server that is
# not there and logs errors about worker hostnames; with them it starts quietly. Several processes
# may load it at once (tests, a second compile) instead of failing on its lock file.
_LIBTPU_ENV = {
    "TPU_SKIP_MDS_QUERY": "1",
    "TPU_ACCELERATOR_TYPE": "v5litepod-1",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
}


class TopologyError(ConfigError):
    """A topology name is malformed or libtpu cannot describe it."""


class LibtpuMissing(GauntletError):
    """libtpu is not installed (or not the version jax needs): no TPU topology to compile for."""


def libtpu_version() -> str | None:
    """The installed libtpu's version, or None when it is absent."""
    from importlib import metadata

    for dist in ("libtpu", "libtpu-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def libtpu_problem() -> str | None:
    """Why no TPU topology can be compiled for here, or None: libtpu missing, or not the version
    the installed jax's `[tpu]` extra asks for (a mismatched pair may crash or compile wrongly)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    installed = libtpu_version()
    if installed is None:
        return f'libtpu is not installed: pip install "jax[tpu]=={jax.__version__}"'
    for text in metadata.requires("jax") or ():
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if (
            req.name == "libtpu"
            and req.marker is not None
            and req.marker.evaluate({"extra": "tpu"})
        ) and not req.specifier.contains(installed, prereleases=True):
            return (
                f"libtpu {installed} does not match jax {jax.__version__}, whose [tpu] extra "
                f'needs libtpu{req.specifier}: pip install "jax[tpu]=={jax.__version__}"'
            )
    return None


def parse_topology(topology: str) -> tuple[Chip, tuple[int, ...]]:
    """ "v5e:4x4" → (the v5e Chip, (4, 4))."""
    generation, _, grid = topology.partition(":")
    chip = CHIPS.get(generation)
    if chip is None:
        raise TopologyError(
            f"topology {topology!r}: unknown TPU generation {generation!r}; known: "
            f"{', '.join(CHIPS)}"
        )
    try:
        dims = tuple(int(x) for x in grid.split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise TopologyError(f"topology {topology!r}: expected GENERATION:AxB[xC], e.g. v5e:4x4")
    return chip, dims


def topology_devices(topology: str) -> list[jax.Device]:
    """Compile-only TPU devices of a topology (needs libtpu, not a TPU)."""
    chip, dims = parse_topology(topology)
    problem = libtpu_problem()
    if problem is not None:
        raise LibtpuMissing(f"cannot compile for {topology}: {problem}")
    for key, value in _LIBTPU_ENV.items():
        os.environ.setdefault(key, value)
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(topology, "tpu", chip_config_name=chip.chip_config)
    except (jax.errors.JaxRuntimeError, RuntimeError, ValueError) as e:
        raise TopologyError(f"libtpu cannot describe topology {topology!r}: {e}") from e
    devices = list(desc.devices)
    if len(devices) != math.prod(dims) or devices[0].device_kind != chip.device_kind:
        raise TopologyError(
            f"topology {topology!r}: libtpu gave {len(devices)} × {devices[0].device_kind!r}, "
            f"expected {math.prod(dims)} × {chip.device_kind!r}"
        )
    return devices
