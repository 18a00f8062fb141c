"""How many peers a window can evaluate exactly: a time budget, not a count.

The validator times its own exact scoring (seconds per compiled chunk of `candidate_chunk`
candidates) and the rest of its window (fast checks, the screen, the outer step, posting), and
gives each window as many whole chunks as fit in `score_budget_fraction` of the window's seconds
after that other work. `uids_per_window` is the floor, `exact_max` (when set) the cap. Whole
chunks only: the compiled program always has the chunk's shape, so the count never recompiles.

The pace is a moving average measured in this process (not saved with the state): a restarted
validator measures it again at warm-up, so the number of exact evaluations per window, unlike
which peers are chosen for a given number, follows the machine's speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gauntlet_jax.config import Config

# Weight of the newest measurement in the moving averages.
PACE_ALPHA = 0.3


def window_seconds(cfg: Config) -> float:
    """One window's length in seconds on the chain's clock."""
    return cfg.protocol.blocks_per_window * cfg.chain.block_time_s


@dataclass
class ScoringPace:
    """Moving averages of the seconds one exact chunk takes and of the window's other work."""

    chunk_s: float | None = None
    other_s: float = 0.0

    def record_chunks(self, seconds: float, chunks: int) -> None:
        if chunks > 0 and math.isfinite(seconds) and seconds >= 0:
            self.chunk_s = _average(self.chunk_s, seconds / chunks)

    def record_other(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds >= 0:
            self.other_s = _average(self.other_s or None, seconds)


def _average(old: float | None, new: float) -> float:
    return new if old is None else (1 - PACE_ALPHA) * old + PACE_ALPHA * new


def exact_count(pace: ScoringPace, n_candidates: int, cfg: Config) -> int:
    """Peers to evaluate exactly this window, out of `n_candidates` eligible ones."""
    vcfg = cfg.validator
    floor = min(vcfg.uids_per_window, n_candidates)
    count = floor
    if vcfg.score_budget_fraction > 0 and pace.chunk_s is not None:
        budget_s = vcfg.score_budget_fraction * window_seconds(cfg) - pace.other_s
        chunks = math.floor(budget_s / max(pace.chunk_s, 1e-9))
        count = max(floor, chunks * max(1, vcfg.candidate_chunk))
    if vcfg.exact_max > 0:
        count = min(count, max(vcfg.exact_max, floor))
    return min(count, n_candidates)
