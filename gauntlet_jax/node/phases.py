"""Wall seconds of a node's window, phase by phase.

A `PhaseTimer` is started with the window; each `lap(name)` closes the phase that began at the
previous lap (or at the start) and books its seconds under `name`. The phases therefore tile the
window: they never overlap and they add up to `total()`, so an operator reading the split (the
validator's per-window metrics record, `bench window`) sees where every second went, including
work that runs on worker threads only as far as it holds the window up.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class PhaseTimer:
    """Consecutive phases of one window, in the order they were first lapped."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        """Ends the running phase as `name` (added to what `name` already holds)."""
        now = self._clock()
        self.seconds[name] = self.seconds.get(name, 0.0) + (now - self._last)
        self._last = now

    def total(self) -> float:
        """Seconds from the start to the last lap (the sum of the phases)."""
        return self._last - self._start
