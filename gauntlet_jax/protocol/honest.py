"""Honest peers training one model through the protocol: the reusable core of the simulator.

Each window every peer computes its mean gradient on its own pages at the shared parameters,
updates its error-feedback momentum and compresses it (`momentum_step`); the gather set's payloads
are merged into one sign step (`outer_step`). The peers are a leading array axis: their gradients
and momenta are one `vmap`, never a Python loop over peers.

`python -m gauntlet_jax.protocol.honest --config tiny --windows 120` trains the same peers with and
without error feedback and writes both held-out loss curves (JSON and PNG).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress.plan import CompressionPlan, make_plan
from gauntlet_jax.config import Config, add_config_args, config_from_args, with_overrides
from gauntlet_jax.data.corpus import open_corpus
from gauntlet_jax.data.pages import batches_for, heldout_batches
from gauntlet_jax.model import grad, llama
from gauntlet_jax.protocol import outer
from gauntlet_jax.protocol.momentum import MomentumResult, init_momentum, momentum_step
from gauntlet_jax.protocol.schedule import outer_lr

# Error feedback never starts: the "without error feedback" ablation.
NO_ERROR_FEEDBACK = 2**30


def plan_for_model(cfg: Config) -> CompressionPlan:
    """The compression plan of the configured model."""
    return make_plan(
        llama.abstract_params(cfg.model), llama.param_logical_axes(cfg.model), cfg.compress
    )


@functools.partial(jax.jit, static_argnames=("cfg", "plan"))
def peer_updates(
    params: Any,
    m_P: Any,
    batches_PNBT: jax.Array,
    n_valid_P: jax.Array,
    lr: jax.Array,
    step: jax.Array,
    cfg: Config,
    plan: CompressionPlan,
) -> tuple[MomentumResult, jax.Array]:
    """All peers' window work at the shared `params`: (momentum results stacked on the peer axis,
    each peer's mean training loss [P]). `batches_PNBT` [P, N, B, T], first `n_valid_P[p]` used."""
    grads_P, loss_P = jax.vmap(
        lambda batches, n: grad.accumulate_grads(params, batches, cfg.model, n)
    )(batches_PNBT, n_valid_P)
    result = jax.vmap(lambda m, g: momentum_step(m, g, lr, step, cfg, plan))(m_P, grads_P)
    return result, loss_P


@functools.partial(jax.jit, static_argnames=("cfg",))
def mean_loss(params: Any, batches_NBT: jax.Array, cfg: Config) -> jax.Array:
    """Exact mean next-token loss over all counted targets of [N, B, T] batches."""

    def one(tokens_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
        return llama.loss_and_count(params, tokens_BT, cfg.model)

    totals, counts = jax.lax.map(one, batches_NBT)
    return jnp.sum(totals) / jnp.maximum(jnp.sum(counts), 1.0)


def stack_peer_batches(
    batches: Sequence[np.ndarray], max_micro: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-peer [n_p, B, T] batches → ([P, max_micro, B, T] zero-padded, n_valid [P])."""
    n_valid = np.array([min(len(b), max_micro) for b in batches], np.int32)
    shape = batches[0].shape[1:]
    out = np.zeros((len(batches), max_micro, *shape), np.int32)
    for p, b in enumerate(batches):
        out[p, : n_valid[p]] = b[: n_valid[p]]
    return out, n_valid


class Curve(NamedTuple):
    windows: list[int]
    heldout_loss: list[float]
    train_loss: list[float]
    seconds: float


def train_honest(
    cfg: Config,
    peer_batches: Callable[[int, int], np.ndarray],
    heldout_NBT: np.ndarray,
    *,
    n_peers: int,
    n_windows: int,
    eval_every: int = 5,
    params: Any = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, Curve]:
    """Trains from `params` (default: init with train.seed) for `n_windows` outer steps.

    `peer_batches(uid, window)` gives a peer's [n, B, T] tokens (e.g. `data.pages.batches_for`).
    The held-out loss is measured before window 0 and after every `eval_every` windows.
    """
    plan = plan_for_model(cfg)
    if params is None:
        params = llama.init_params(cfg.model, jax.random.key(cfg.train.seed))
    m_P = jax.tree.map(lambda x: jnp.broadcast_to(x, (n_peers, *x.shape)), init_momentum(params))
    mask = np.ones(n_peers, bool)
    heldout = jnp.asarray(heldout_NBT)
    windows, heldout_losses, train_losses = [0], [float(mean_loss(params, heldout, cfg))], []
    start = time.perf_counter()
    for window in range(n_windows):
        lr = outer_lr(window, cfg.protocol)
        batches, n_valid = stack_peer_batches(
            [peer_batches(uid, window) for uid in range(n_peers)], cfg.train.max_micro_batches
        )
        result, loss_P = peer_updates(
            params, m_P, jnp.asarray(batches), jnp.asarray(n_valid), lr, window, cfg, plan
        )
        params = outer.outer_step(params, result.idx, result.vals, mask, lr, cfg, plan)
        m_P = result.m
        train_losses.append(float(jnp.mean(loss_P)))
        if (window + 1) % eval_every == 0 or window + 1 == n_windows:
            windows.append(window + 1)
            heldout_losses.append(float(mean_loss(params, heldout, cfg)))
            if log is not None:
                log(
                    f"window {window + 1}: lr {lr:.2e} train {train_losses[-1]:.4f} "
                    f"held-out {heldout_losses[-1]:.4f}"
                )
    curve = Curve(windows, heldout_losses, train_losses, time.perf_counter() - start)
    return params, curve


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.set_defaults(config="tiny")
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--windows", type=int, default=120)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--out", default="runs/honest", help="directory for curves.json/png")
    args = parser.parse_args()
    cfg = config_from_args(args)
    corpus = open_corpus(cfg.data)
    heldout = heldout_batches(corpus, cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = {}
    variants = {
        "error feedback": cfg,
        "no error feedback": with_overrides(
            cfg, [f"protocol.error_feedback_after={NO_ERROR_FEEDBACK}"]
        ),
    }
    for name, variant in variants.items():
        print(f"== {name}")
        _, curve = train_honest(
            variant,
            lambda uid, window, v=variant: batches_for(corpus, uid, window, v),
            heldout,
            n_peers=args.peers,
            n_windows=args.windows,
            eval_every=args.eval_every,
            log=print,
        )
        curves[name] = curve._asdict()
    summary = {
        "config": dataclasses.asdict(cfg),
        "peers": args.peers,
        "windows": args.windows,
        "curves": curves,
    }
    (out / "curves.json").write_text(json.dumps(summary, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(curve["windows"], curve["heldout_loss"], label=name)
    ax.set_xlabel("window (outer step)")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"{cfg.name}: {args.peers} honest peers, DCT top-{cfg.compress.topk}, sign step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    print(f"wrote {out / 'curves.json'} and {out / 'curves.png'}")


if __name__ == "__main__":
    _main()
