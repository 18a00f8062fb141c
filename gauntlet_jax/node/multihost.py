"""Multi-host JAX: joining the job, who leads, and moving data onto a mesh that spans hosts.

On a TPU pod slice every worker runs the same command. `maybe_initialize` joins them into one JAX
job (`jax.distributed.initialize`) before anything touches a device, so `jax.devices()` lists the
chips of every host and one mesh spans them all. The rules of the multi-host program:

- every process runs the same jitted programs on the same global shapes (SPMD);
- inputs every process can compute alike (θ from the public seed, payloads from public buckets)
  are placed with `global_array`: each process supplies only the shards its own devices hold;
- token batches are per-host: `process_rows` says which rows of the global batch this host's
  devices hold, the host loads just those, and `global_batch` assembles the global array
  (`jax.make_array_from_process_local_data`);
- only the leader (process 0) talks to the chain and writes state and payloads. Every process
  runs the same node loop (the same Python control flow, hence the same programs in the same
  order); whatever the outside world says — a chain query, a bucket read, the wall clock, a stop
  signal — is asked by the leader alone and handed to every process (`leader_call`,
  `leader_opened`, `leader_time`, `LeaderEvent`), so all of them take the same decisions;
- results come back to every host with `to_host` (an all-gather when the array spans hosts).

Single-process runs take the same paths at no cost: every helper degrades to the local case.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from gauntlet_jax.config import MeshConfig
from gauntlet_jax.errors import DistributedError

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
# TPU chips on this host's PCI bus mean a Cloud TPU VM: Google's vendor id and the TPU device
# ids (v3, v4, v5p, v5e, v6e, TPU7x; as jax/_src/hardware_utils.py). Google's other PCI devices
# (the gVNIC network card of any GCE VM) have other device ids.
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = frozenset({"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"})
_PCI_DEVICES = Path("/sys/bus/pci/devices")
# Environment variables that name a multi-host TPU job: comma-separated worker lists (GKE, some
# queued-resource set-ups) and the multislice coordinator.
_TPU_WORKER_LISTS = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")
_MULTISLICE = "MEGASCALE_COORDINATOR_ADDRESS"
# Cap on a broadcast decision: they are small JSON documents (uids, a window, a flag).
MAX_DECISION_BYTES = 1 << 20
# Broadcast buffers are padded to a power of two of at least this size: the broadcast compiles
# once per buffer shape, so a few dozen shapes serve every size up to a payload's.
_MIN_BROADCAST_BYTES = 1 << 10
# Largest object the leader can hand to the others in one broadcast (int32 length).
MAX_BROADCAST_BYTES = (1 << 31) - 1

T = TypeVar("T")


def _int_env(env: Mapping[str, str], key: str) -> int | None:
    raw = env.get(key, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as e:
        raise DistributedError(f"{key}={raw!r} is not an integer") from e


def tpu_chips_on_host(pci_root: Path = _PCI_DEVICES) -> int:
    """Google accelerator chips on this host's PCI bus (0 off Cloud TPU VMs)."""
    if not pci_root.is_dir():
        return 0
    count = 0
    for vendor in pci_root.glob("*/vendor"):
        try:
            if vendor.read_text().strip() != _GOOGLE_PCI_VENDOR:
                continue
            device = (vendor.parent / "device").read_text().strip()
        except OSError:
            continue
        count += device in _TPU_PCI_DEVICES
    return count


def pod_detected(env: Mapping[str, str] | None = None, pci_root: Path = _PCI_DEVICES) -> str:
    """Why this process should join a multi-host job under `distributed: auto`, or "" when
    nothing says it should: an explicit coordinator, a list of several TPU workers, a multislice
    coordinator, or TPU chips on this host (a Cloud TPU VM, whose workers JAX finds through the
    metadata server; a single-host VM then joins a job of one, which costs nothing)."""
    env = os.environ if env is None else env
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS is set"
    for key in _TPU_WORKER_LISTS:
        hosts = [h for h in env.get(key, "").split(",") if h.strip()]
        if len(hosts) > 1:
            return f"{key} names {len(hosts)} workers"
    if env.get(_MULTISLICE):
        return f"{_MULTISLICE} is set"
    chips = tpu_chips_on_host(pci_root)
    if chips:
        return f"{chips} TPU chips on this host"
    return ""


def initialize_args(mesh_cfg: MeshConfig, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for `jax.distributed.initialize`: config first, then JAX_* env vars;
    what neither gives is left to JAX's cluster detection."""
    env = os.environ if env is None else env
    coordinator = mesh_cfg.coordinator or env.get("JAX_COORDINATOR_ADDRESS", "")
    num = (
        mesh_cfg.num_processes if mesh_cfg.num_processes > 0 else _int_env(env, "JAX_NUM_PROCESSES")
    )
    pid = mesh_cfg.process_id if mesh_cfg.process_id >= 0 else _int_env(env, "JAX_PROCESS_ID")
    if num is not None and num < 1:
        raise DistributedError(f"mesh.num_processes must be ≥ 1, got {num}")
    if pid is not None and num is not None and not 0 <= pid < num:
        raise DistributedError(f"mesh.process_id {pid} is outside [0, {num})")
    args: dict[str, Any] = {}
    if coordinator:
        if ":" not in coordinator:
            raise DistributedError(f"mesh.coordinator {coordinator!r} must be host:port")
        args["coordinator_address"] = coordinator
        if num is None or pid is None:
            raise DistributedError(
                "an explicit coordinator needs mesh.num_processes and mesh.process_id "
                "(or JAX_NUM_PROCESSES and JAX_PROCESS_ID)"
            )
    if num is not None:
        args["num_processes"] = num
    if pid is not None:
        args["process_id"] = pid
    return args


def maybe_initialize(
    mesh_cfg: MeshConfig, env: Mapping[str, str] | None = None, pci_root: Path = _PCI_DEVICES
) -> bool:
    """Joins the multi-host job when `mesh.distributed` says so; True when this process is part
    of one (already or now). Call before anything touches a JAX device.

    "off": never. "on": always (coordinator, process count and id from the config, the JAX_*
    env vars, or JAX's cluster detection). "auto": when `pod_detected` finds a reason.
    """
    mode = mesh_cfg.distributed
    if mode not in MODES:
        raise DistributedError(f"mesh.distributed={mode!r}; valid: {', '.join(MODES)}")
    if mode == "off":
        return False
    if jax.distributed.is_initialized():
        return True
    if mode == "auto":
        reason = pod_detected(env, pci_root)
        if not reason:
            return False
        log.info("joining a multi-host JAX job: %s", reason)
    try:
        jax.distributed.initialize(**initialize_args(mesh_cfg, env))
    except ValueError as e:  # JAX found no cluster to join and was given no coordinator
        raise DistributedError(
            f"mesh.distributed={mode}: cannot join a multi-host job ({e}); set mesh.coordinator, "
            "mesh.num_processes and mesh.process_id (or JAX_COORDINATOR_ADDRESS, "
            "JAX_NUM_PROCESSES, JAX_PROCESS_ID), or mesh.distributed=off"
        ) from e
    log.info(
        "process %d of %d: %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


# ---------------------------------------------------------------------------------------------
# Who leads


def is_leader() -> bool:
    """True in process 0, the only one that talks to the chain and writes to buckets and disk."""
    return jax.process_index() == 0


def _broadcast_bytes(data: bytes) -> bytes:
    """The leader's `data` in every process (the others' argument is ignored). Every process must
    call it, in the same order, like any collective."""
    if len(data) > MAX_BROADCAST_BYTES:
        raise DistributedError(f"{len(data)} bytes exceed one broadcast ({MAX_BROADCAST_BYTES})")
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data) if is_leader() else 0)))
    capacity = max(_MIN_BROADCAST_BYTES, 1 << max(0, size - 1).bit_length())
    buf = np.zeros(capacity, np.uint8)
    if is_leader():
        buf[:size] = np.frombuffer(data, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8)[:size].tobytes()


def broadcast_from_leader(value: Any) -> Any:
    """The leader's `value` (JSON: dicts, lists, numbers, strings) in every process; the others'
    argument is ignored. Single-process: `value` itself. Every process must call it, in the same
    order, like any collective."""
    if jax.process_count() == 1:
        return value
    data = json.dumps(value, sort_keys=True).encode() if is_leader() else b""
    if len(data) > MAX_DECISION_BYTES:
        raise DistributedError(
            f"decision of {len(data)} bytes exceeds the {MAX_DECISION_BYTES}-byte broadcast cap"
        )
    return json.loads(_broadcast_bytes(data).decode())


# ---------------------------------------------------------------------------------------------
# The outside world, through the leader
#
# Outcomes travel as pickles: they are produced by this package's own code in the leader of the
# same job (a peer's bytes inside are data, never unpickled code), and they carry numpy arrays,
# metagraphs and typed exceptions that JSON cannot.


def _pack_error(error: Exception) -> bytes:
    """An exception as the followers re-raise it: same class, message and attributes. Built
    without calling `__init__` (many of ours take other arguments than their message)."""
    try:
        state = pickle.dumps(dict(vars(error)))
    except (pickle.PicklingError, TypeError, AttributeError):
        state = None
    try:
        return pickle.dumps(("error", type(error), str(error), state))
    except (pickle.PicklingError, TypeError, AttributeError):
        return pickle.dumps(("error", DistributedError, f"{type(error).__name__}: {error}", None))


def _unpack_outcome(data: bytes) -> Any:
    kind, *rest = pickle.loads(data)
    if kind == "ok":
        return rest[0]
    cls, message, state = rest
    error = cls.__new__(cls)
    error.args = (message,)
    if state is not None:
        vars(error).update(pickle.loads(state))
    raise error


def leader_call(fn: Callable[[], T]) -> T:
    """`fn()` run by the leader alone; every process returns its result, or raises the exception
    it raised (same class and message). With one process: just `fn()`. A collective: every
    process calls it at the same point of the same control flow."""
    if jax.process_count() == 1:
        return fn()
    if not is_leader():
        return _unpack_outcome(_broadcast_bytes(b""))
    try:
        value = fn()
    except Exception as error:  # handed to the followers, then raised here as well
        _broadcast_bytes(_pack_error(error))
        raise
    try:
        data = pickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        error = DistributedError(f"the leader's result of {fn!r} cannot reach the others: {e}")
        _broadcast_bytes(_pack_error(error))
        raise error from e
    _broadcast_bytes(data)
    return value


def leader_time() -> float:
    """Wall time as the leader reads it: deadlines decided alike in every process."""
    return leader_call(time.time)


class LeaderProxy:
    """Stands for an object only the leader opens (a chain client, a bucket): each method call
    runs in the leader and every process gets its outcome (`leader_call`); the attributes named
    in `values` are read once, when it opens."""

    def __init__(self, factory: Callable[[], Any], values: Sequence[str] = ()) -> None:
        held: list[Any] = []

        def open_target() -> dict[str, Any]:
            held.append(factory())
            return {name: getattr(held[0], name) for name in values}

        self._values = leader_call(open_target)
        self._target = held[0] if held else None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            return leader_call(lambda: getattr(self._target, name)(*args, **kwargs))

        return call


def leader_opened(factory: Callable[[], T], values: Sequence[str] = ()) -> T:
    """`factory()` itself with one process; a `LeaderProxy` for it in a multi-host job."""
    if jax.process_count() == 1:
        return factory()
    return LeaderProxy(factory, values)  # type: ignore[return-value]


class LeaderEvent(threading.Event):
    """A stop flag every process reads as the leader's: a signal to the leader is acted on by all
    at the same step (a follower's own signal is not: stop the leader, or every host at once)."""

    def __init__(self, local: threading.Event) -> None:
        super().__init__()
        self._local = local

    def is_set(self) -> bool:
        return bool(leader_call(self._local.is_set))

    def set(self) -> None:
        self._local.set()

    def clear(self) -> None:
        self._local.clear()

    def wait(self, timeout: float | None = None) -> bool:
        self._local.wait(timeout)
        return self.is_set()


def shared_stop(local: threading.Event) -> threading.Event:
    """`local` itself with one process; in a multi-host job the `LeaderEvent` over it."""
    return local if jax.process_count() == 1 else LeaderEvent(local)


def sync(name: str) -> None:
    """Waits until every process reaches the barrier `name` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
