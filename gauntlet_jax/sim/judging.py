"""Judging a simulation: weight shares by peer kind, the issue's bars, and how soon the ratings
separate the peers of Figure 2. Pure functions of a run's numbers (and its metrics records)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from gauntlet_jax.sim.peers import HONEST_KINDS


def class_weights(weights: dict[int, float], kinds: dict[int, str]) -> dict[str, float]:
    """Weight share of each peer kind (sums to 1 when any weight is positive)."""
    total = sum(weights.values())
    out: dict[str, float] = {}
    for uid, kind in kinds.items():
        out[kind] = out.get(kind, 0.0) + (weights.get(uid, 0.0) / total if total > 0 else 0.0)
    return out


def honest_share(weights: dict[int, float], kinds: dict[int, str]) -> float:
    """The share of `weights` held by peers of the honest kinds (`HONEST_KINDS`); uids without
    a kind (the validator's) count as not honest."""
    total = sum(weights.values())
    honest = sum(v for u, v in weights.items() if kinds.get(u, "?") in HONEST_KINDS)
    return honest / total if total > 0 else 0.0


def honest_share_per_window(
    records: Sequence[dict[str, Any]], kinds: dict[int, str]
) -> dict[int, float]:
    """The honest kinds' share of the weights the validator held after each window (its peer
    records' `weight`), window → share."""
    by_window: dict[int, dict[int, float]] = {}
    for r in records:
        if r.get("kind") == "peer" and isinstance(r.get("weight"), (int, float)):
            by_window.setdefault(int(r["window"]), {})[int(r["uid"])] = float(r["weight"])
    return {w: honest_share(ws, kinds) for w, ws in sorted(by_window.items())}


# Bars of the default scenario (issue 7): honest ≥ 90 %, no adversary class above 2 %, the
# sybil group below one honest peer, held-out loss drop ≥ 90 % of the all-honest run's.
HONEST_SHARE_BAR = 0.90
ADVERSARY_CLASS_BAR = 0.02
LOSS_DROP_BAR = 0.90


def evaluate_bars(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars, each with its numbers and whether it passed (absent when the scenario
    lacks the peers a bar is about). Weights are the mean over the run's last quarter
    (`weight_tail_mean`); the final snapshot is shown beside."""
    peers = summary["peers"]
    shares = summary["class_weight_tail_mean"]
    bars: dict[str, Any] = {}
    kinds = {p["kind"] for p in peers.values()}
    share = summary["honest_weight_share_tail_mean"]
    bars["honest_share"] = {
        "value": share,
        "final": summary["honest_weight_share"],
        "bar": HONEST_SHARE_BAR,
        "passed": share >= HONEST_SHARE_BAR,
    }
    adversaries = {k: v for k, v in shares.items() if k not in HONEST_KINDS and k != "sybil"}
    if adversaries:
        worst = max(adversaries, key=lambda k: adversaries[k])
        bars["adversary_class_max"] = {
            "value": adversaries[worst],
            "class": worst,
            "final": summary["class_weight"][worst],
            "bar": ADVERSARY_CLASS_BAR,
            "passed": adversaries[worst] <= ADVERSARY_CLASS_BAR,
        }
    honest_w = [p["weight_tail_mean"] for p in peers.values() if p["kind"] == "honest"]
    if "sybil" in kinds and honest_w:
        sybil = sum(p["weight_tail_mean"] for p in peers.values() if p["kind"] == "sybil")
        mean_honest = float(np.mean(honest_w))
        bars["sybil_vs_one_honest"] = {
            "value": sybil,
            "one_honest_mean": mean_honest,
            "passed": sybil < mean_honest,
        }
    if "malformed" in kinds:
        invalid = sum(
            p["slash_counts"].get("invalid", 0) + p["slash_counts"].get("eval_invalid", 0)
            for p in peers.values()
            if p["kind"] == "malformed"
        )
        completed = len(summary["validator_windows"]) == summary["windows"]
        bars["malformed_never_stopped"] = {
            "windows_completed": len(summary["validator_windows"]),
            "rejections": invalid,
            "passed": completed and invalid > 0,
        }
    base = summary["baselines"].get("honest")
    if base:
        sim = summary["heldout_loss"]["loss"]
        drop_sim, drop_base = sim[0] - sim[-1], base["loss"][0] - base["loss"][-1]
        ratio = drop_sim / drop_base if drop_base > 0 else math.nan
        bars["heldout_drop_vs_all_honest"] = {
            "value": ratio,
            "final_loss": sim[-1],
            "all_honest_final_loss": base["loss"][-1],
            "bar": LOSS_DROP_BAR,
            "passed": bool(ratio >= LOSS_DROP_BAR),
        }
    return bars


def rating_separation(
    records: Sequence[dict[str, Any]], kinds: dict[int, str], expected: Sequence[str]
) -> dict[str, Any]:
    """Figure 2's claim in numbers: how often the per-window LossScores of the expected peers
    come in the expected order (noisy), and from which window on their ratings (ordinals) stay
    in that order (the rating separates them)."""
    order = [next(u for u, k in sorted(kinds.items()) if k == kind) for kind in expected]
    by_window: dict[int, dict[int, dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == "peer" and r["uid"] in order:
            by_window.setdefault(r["window"], {})[r["uid"]] = r
    windows = sorted(by_window)
    score_pairs = score_right = 0
    rating_ok: list[bool] = []
    for w in windows:
        rows = by_window[w]
        scored = [u for u in order if rows.get(u, {}).get("evaluated")]
        for a, b in itertools.pairwise(scored):
            score_pairs += 1
            score_right += rows[a]["improvement_random"] > rows[b]["improvement_random"]
        ords = [rows.get(u, {}).get("ordinal") for u in order]
        known = [o for o in ords if o is not None]
        rating_ok.append(
            len(known) == len(ords) and all(x > y for x, y in itertools.pairwise(known))
        )
    settled = None
    for i in range(len(windows)):
        if all(rating_ok[i:]):
            settled = windows[i]
            break
    first = windows[0] if windows else None
    return {
        "order": [f"{u} ({kinds[u]})" for u in order],
        "loss_score_pairs_in_order": score_right / score_pairs if score_pairs else None,
        "rating_in_order_from_window": settled,
        "windows_to_separate": None if settled is None or first is None else settled - first + 1,
        "rating_in_order_fraction": float(np.mean(rating_ok)) if rating_ok else None,
    }


def screen_agreement(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How well the first-order screen ranks peers as the exact LossScore does: Spearman rank
    correlation, per window over the peers with both (windows with ≥ 3 of them), and how many
    peers each window screened and evaluated exactly."""
    by_window: dict[int, list[tuple[float, float]]] = {}
    counts: dict[int, dict[str, int]] = {}
    for r in records:
        if r.get("kind") == "window":
            counts[r["window"]] = {"screened": r.get("screened", 0), "exact": r.get("exact", 0)}
        if r.get("kind") != "peer":
            continue
        screen, exact = r.get("screen"), r.get("improvement_random")
        if isinstance(screen, float) and isinstance(exact, float) and r.get("evaluated"):
            by_window.setdefault(r["window"], []).append((screen, exact))
    rhos = {}
    for w, pairs in sorted(by_window.items()):
        if len(pairs) >= 3:
            a, b = zip(*pairs, strict=True)
            rho = spearmanr(a, b).statistic
            if np.isfinite(rho):
                rhos[w] = float(rho)
    return {
        "spearman_per_window": rhos,
        "spearman_mean": float(np.mean(list(rhos.values()))) if rhos else None,
        "spearman_min": min(rhos.values()) if rhos else None,
        "per_window": {str(w): c for w, c in sorted(counts.items())},
    }


__all__ = [
    "ADVERSARY_CLASS_BAR",
    "HONEST_SHARE_BAR",
    "LOSS_DROP_BAR",
    "class_weights",
    "evaluate_bars",
    "honest_share",
    "honest_share_per_window",
    "rating_separation",
    "screen_agreement",
]
