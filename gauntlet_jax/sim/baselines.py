"""Baselines on the simulation's own tokens: the curves a run's held-out loss is judged against.

- honest: the scenario's honest peers alone, every payload gathered, no validator;
- adamw: centralised AdamW on exactly the tokens the honest peers trained on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.config import Config
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.model import grad
from gauntlet_jax.node.replica import initial_params
from gauntlet_jax.protocol.honest import mean_loss, train_honest
from gauntlet_jax.sim.peers import HONEST_KINDS, Honest


def honest_baseline(
    cfg: Config,
    corpus: TokenCorpus,
    heldout: jax.Array,
    honest: Sequence[Honest],
    start: int,
    *,
    windows: int,
    eval_every: int,
    bar: Any = None,
) -> dict[str, Any]:
    """The scenario's honest peers alone: the same pages, θ_0 and schedule, every payload
    gathered, no validator (`protocol.honest.train_honest`)."""
    t0 = time.perf_counter()
    _, curve = train_honest(
        cfg,
        lambda i, w: honest[i].training_batches(corpus, cfg, start + w)[
            : honest[i].micro_batches(cfg)
        ],
        np.asarray(heldout),
        n_peers=len(honest),
        n_windows=windows,
        eval_every=eval_every,
        log=None if bar is None else (lambda _line: bar.update(eval_every)),
    )
    return {
        "steps": curve.windows,
        "loss": curve.heldout_loss,
        "peers": len(honest),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def adamw_baseline(
    cfg: Config,
    corpus: TokenCorpus,
    heldout: jax.Array,
    honest: Sequence[Honest],
    start: int,
    *,
    windows: int,
    eval_every: int,
    bar: Any = None,
) -> dict[str, Any]:
    """Centralised AdamW on exactly the tokens the honest peers trained on: step k takes the
    micro-batches all honest peers used in window start+k (`model.grad.adamw_step`)."""
    t0 = time.perf_counter()
    optimizer = grad.make_adamw(cfg.train, windows)
    params = initial_params(cfg)
    opt_state = optimizer.init(params)
    steps, losses = [0], [float(mean_loss(params, heldout, cfg))]
    for k in range(windows):
        tokens = np.concatenate(
            [p.training_batches(corpus, cfg, start + k)[: p.micro_batches(cfg)] for p in honest]
        )
        params, opt_state, _ = grad.adamw_step(
            params, opt_state, jnp.asarray(tokens), cfg.model, optimizer
        )
        if (k + 1) % eval_every == 0 or k + 1 == windows:
            steps.append(k + 1)
            losses.append(float(mean_loss(params, heldout, cfg)))
        if bar is not None:
            bar.update(1)
    return {
        "steps": steps,
        "loss": losses,
        "peers": len(honest),
        "seconds": round(time.perf_counter() - t0, 1),
        "lr": cfg.train.adamw_lr,
    }


BASELINES = {"honest": honest_baseline, "adamw": adamw_baseline}


def run_baselines(
    baselines: Sequence[str],
    cfg: Config,
    corpus: TokenCorpus,
    heldout: jax.Array,
    peers: Sequence[Honest],
    start: int,
    *,
    windows: int,
    eval_every: int,
    progress_factory: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """The named baselines' curves over the honest peers of `peers` (none when it has none)."""
    honest = [p for p in peers if p.kind in HONEST_KINDS]
    out: dict[str, Any] = {}
    if not honest:
        return out
    for name in baselines:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r} ({', '.join(BASELINES)})")
        bar = None
        if progress_factory is not None:
            bar = progress_factory(total=windows, desc=name, unit="step")
        out[name] = BASELINES[name](
            cfg, corpus, heldout, honest, start, windows=windows, eval_every=eval_every, bar=bar
        )
        if bar is not None:
            bar.close()
    return out


__all__ = ["BASELINES", "adamw_baseline", "honest_baseline", "run_baselines"]
