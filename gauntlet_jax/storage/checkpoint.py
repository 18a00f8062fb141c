"""Checkpoints with Orbax, to a local directory or `gs://bucket/path` (GAUNTLET.md §1.7).

A checkpoint holds what a node needs to resume: θ (params), its error-feedback momentum (optional;
the lead validator's published checkpoint carries none), the LR schedule's step, the window it was
taken after, and a small JSON dict of extra metadata. The Orbax step is the window, so a checkpoint
directory holds `<dir>/<window>/{state,meta}`, and Orbax keeps the newest
`protocol.checkpoint_keep` of them.

Restoring reads the saved shapes and dtypes from the checkpoint's own metadata and places every
array where the caller says (`target_shardings`: a tree like params of `jax.sharding.Sharding`,
used for momentum too), so a checkpoint written by one device restores sharded over a mesh of any
size, and vice versa. Without target shardings everything lands on the first local device.

For `gs://` Orbax goes through tensorstore (arrays) and gcsfs (directory operations); both use
application-default credentials. Against an emulator set `TENSORSTORE_GCS_HTTP_URL`,
`GOOGLE_AUTH_TOKEN_FOR_TESTING`, `STORAGE_EMULATOR_HOST` and
`GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false` before the first use in the process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import jax
import orbax.checkpoint as ocp

from gauntlet_jax.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STATE, _META = "state", "meta"


@dataclass
class Checkpoint:
    """What a checkpoint holds. `momentum` has the structure of `params`, or is None."""

    params: Any
    window: int
    schedule_step: int
    momentum: Any | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _handlers() -> dict[str, ocp.CheckpointHandler]:
    return {_STATE: ocp.StandardCheckpointHandler(), _META: ocp.JsonCheckpointHandler()}


class CheckpointStore:
    """One checkpoint directory (local path or gs:// URL) managed by an Orbax CheckpointManager.

    Saves are asynchronous inside Orbax (the arrays are copied off the device first, so the
    caller may keep training); `save(..., wait=True)` (the default) returns only once the
    checkpoint is committed. Orbax writes to a temporary name and renames on commit, so a crash
    mid-save leaves the previous checkpoints intact and the partial one invisible.
    """

    def __init__(self, directory: str, keep: int = 3) -> None:
        if keep < 1:
            raise CheckpointError(f"checkpoint_keep must be ≥ 1, got {keep}")
        self.directory = str(directory).rstrip("/")
        try:
            self._manager = ocp.CheckpointManager(
                self.directory,
                item_handlers=_handlers(),
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            )
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot open checkpoint directory {self.directory}: {e}") from e

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._manager.close()

    def windows(self) -> list[int]:
        """Windows with a committed checkpoint, oldest first."""
        self._manager.reload()
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_window(self) -> int | None:
        windows = self.windows()
        return windows[-1] if windows else None

    def save(self, ckpt: Checkpoint, *, wait: bool = True) -> None:
        """Saves `ckpt` under its window; keeps the newest `keep` checkpoints."""
        state = {"params": ckpt.params}
        if ckpt.momentum is not None:
            state["momentum"] = ckpt.momentum
        meta = {
            "format": FORMAT_VERSION,
            "window": int(ckpt.window),
            "schedule_step": int(ckpt.schedule_step),
            "has_momentum": ckpt.momentum is not None,
            "metadata": ckpt.metadata,
        }
        try:
            saved = self._manager.save(
                int(ckpt.window),
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)}
                ),
                force=True,
            )
            if wait:
                self._manager.wait_until_finished()
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(
                f"cannot save checkpoint of window {ckpt.window} to {self.directory}: {e}"
            ) from e
        if not saved:
            raise CheckpointError(f"Orbax declined to save window {ckpt.window} (already saved?)")

    def wait(self) -> None:
        """Blocks until an asynchronous save has been committed."""
        self._manager.wait_until_finished()

    def restore(self, window: int | None = None, target_shardings: Any | None = None) -> Checkpoint:
        """The checkpoint of `window` (default: the newest), arrays placed on `target_shardings`."""
        if window is None:
            window = self.latest_window()
            if window is None:
                raise CheckpointError(f"no checkpoint in {self.directory}")
        elif window not in self.windows():
            raise CheckpointError(f"no checkpoint of window {window} in {self.directory}")
        try:
            saved = self._manager.item_metadata(window)[_STATE]
            tree = saved.tree if hasattr(saved, "tree") else saved
            abstract = _abstract_target(tree, target_shardings)
            restored = self._manager.restore(
                window,
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardRestore(abstract), _META: ocp.args.JsonRestore()}
                ),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"cannot restore window {window} from {self.directory}: {e}"
            ) from e
        meta = restored[_META]
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{self.directory}/{window}: unknown checkpoint format {meta!r}")
        state = restored[_STATE]
        return Checkpoint(
            params=state["params"],
            momentum=state.get("momentum"),
            window=int(meta["window"]),
            schedule_step=int(meta["schedule_step"]),
            metadata=dict(meta.get("metadata") or {}),
        )


def _abstract_target(saved_tree: Any, target_shardings: Any | None) -> Any:
    """ShapeDtypeStructs of the saved arrays, each with the sharding it should be restored to."""
    if target_shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved_tree
        )
    out = {}
    for key, subtree in saved_tree.items():  # "params", and "momentum" shaped like params
        try:
            out[key] = jax.tree.map(
                lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s),
                subtree,
                target_shardings,
            )
        except ValueError as e:
            raise CheckpointError(
                f"target shardings do not match the checkpoint's {key} tree: {e}"
            ) from e
    return out


def save_checkpoint(directory: str, window: int, state: Checkpoint, *, keep: int = 3) -> None:
    """Saves `state` as window `window`'s checkpoint in `directory`, keeping the newest `keep`."""
    if int(state.window) != int(window):
        raise CheckpointError(f"checkpoint says window {state.window}, saved as {window}")
    with CheckpointStore(directory, keep) as store:
        store.save(state)


def latest_checkpoint(directory: str) -> int | None:
    """The newest checkpointed window in `directory`, or None."""
    with CheckpointStore(directory) as store:
        return store.latest_window()


def restore_checkpoint(
    directory: str, window: int | None = None, target_shardings: Any | None = None
) -> Checkpoint:
    """Restores window `window` (default: the newest) from `directory`."""
    with CheckpointStore(directory) as store:
        return store.restore(window, target_shardings)
