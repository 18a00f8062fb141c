"""Catch-up: replay the lead validator's published aggregates of the windows a node missed
(GAUNTLET.md §1.7).

Each aggregate is sign(A) of one window, bit-packed (`outer.pack_signs`) in a safetensors object
named `names.aggregate_name(window, version)`, with the lead's θ fingerprint after that window's
step in its header (`fingerprint`; absent from aggregates of older leads). Replaying applies
exactly the step a live node applied — `outer.apply_sign` with the same signs and the same
`outer_lr(step)` — so a node that restarts from a checkpoint and replays ends bit-identical to one
that never stopped, and proves it by comparing fingerprints.

A missing, unreadable or malformed aggregate raises `AggregateUnavailable`, which carries the
parameters advanced up to (not including) that window, so the caller decides: wait and retry,
rebuild the window from the gather set's payloads, or give up.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import Config
from gauntlet_jax.errors import GauntletError, InvalidPayload, ObjectNotFound, StorageError
from gauntlet_jax.protocol import names, outer
from gauntlet_jax.protocol.fingerprint import parse_fingerprint
from gauntlet_jax.protocol.schedule import outer_lr
from gauntlet_jax.storage.base import Bucket

# safetensors header allowance per tensor (name, dtype, shape, offsets as JSON) and in total.
_HEADER_BYTES_PER_TENSOR = 256
_HEADER_BYTES = 64 * 1024


class AggregateUnavailable(GauntletError):
    """The aggregate of `window` cannot be used. `params` is θ advanced through window − 1."""

    def __init__(
        self,
        window: int,
        kind: Literal["missing", "unreadable", "malformed"],
        detail: str,
        params: Any,
    ) -> None:
        self.window = window
        self.kind = kind
        self.detail = detail
        self.params = params
        super().__init__(f"aggregate of window {window} is {kind}: {detail}")


class PublishedAggregate(NamedTuple):
    """One window's aggregate: the int8 sign tree, and the lead's θ fingerprint after applying it
    (None when the lead did not publish one)."""

    signs: Any
    fingerprint: str | None


def _header_bytes(plan: CompressionPlan) -> int:
    return _HEADER_BYTES_PER_TENSOR * 2 * len(plan.leaves) + _HEADER_BYTES


def max_aggregate_bytes(plan: CompressionPlan) -> int:
    """The largest a well-formed aggregate can be: two bit-planes per leaf plus the header."""
    planes = sum(2 * ((lp.n_params + 7) // 8) for lp in plan.leaves)
    return planes + _header_bytes(plan)


def encode_aggregate(signs: Any, plan: CompressionPlan, fingerprint: str) -> bytes:
    """The bytes the lead validator publishes for one window (`fetch_aggregate` reads them)."""
    return names.encode_arrays(outer.pack_signs(signs, plan), {"fingerprint": fingerprint})


def fetch_aggregate(
    bucket: Bucket, window: int, cfg: Config, plan: CompressionPlan
) -> PublishedAggregate:
    """`window`'s published aggregate, checked against `plan`; raises AggregateUnavailable (with
    params=None) if it is missing, unreadable or malformed (a bad fingerprint included)."""
    name = names.aggregate_name(window, cfg.protocol.version)
    try:
        data = bucket.get(name, max_bytes=max_aggregate_bytes(plan))
    except ObjectNotFound as e:
        raise AggregateUnavailable(window, "missing", str(e), None) from e
    except StorageError as e:  # includes ObjectTooLarge: not a well-formed aggregate either
        raise AggregateUnavailable(window, "unreadable", str(e), None) from e
    try:
        signs = outer.unpack_signs(names.load_arrays(data), plan)
        published = names.load_metadata(data, _header_bytes(plan)).get("fingerprint")
        theta = None if published is None else parse_fingerprint(published, None)
    except (names.MalformedObject, InvalidPayload) as e:
        raise AggregateUnavailable(window, "malformed", str(e), None) from e
    return PublishedAggregate(signs, theta)


def catch_up(
    params: Any,
    from_window: int,
    to_window: int,
    bucket: Bucket,
    cfg: Config,
    *,
    plan: CompressionPlan,
    first_step: int,
) -> Any:
    """θ after the outer steps of windows from_window … to_window − 1, replayed from `bucket`.

    `first_step` is the LR schedule step of `from_window`'s outer step (a checkpoint's
    `schedule_step`; for a node whose schedule starts at the run's start window, it is
    `from_window − start_window`). Window w uses step `first_step + (w − from_window)`.
    """
    if to_window < from_window:
        raise ValueError(f"to_window {to_window} < from_window {from_window}")
    if first_step < 0:
        raise ValueError(f"first_step must be ≥ 0, got {first_step}")
    for window in range(from_window, to_window):
        try:
            signs = fetch_aggregate(bucket, window, cfg, plan).signs
        except AggregateUnavailable as e:
            raise AggregateUnavailable(window, e.kind, e.detail, params) from e
        lr = outer_lr(first_step + (window - from_window), cfg.protocol)
        params = outer.apply_sign(params, signs, lr, cfg)
    return params
