"""`python -m gauntlet_jax.train_demo --config local [--steps N]`: centralised AdamW training on
the configured corpus (the embedded Shakespeare demo by default), printing the held-out loss.

It is the baseline the distributed run is compared with, and the quickest check that model, data
and optimizer work together: the held-out loss must fall from ≈ ln(vocab) at initialisation.
Training data are the validator-style random pages of successive windows (never the held-out
documents), one micro-batch of `data.batch_size` × `model.seq_len` tokens per step by default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from gauntlet_jax.cli import run_guarded
from gauntlet_jax.config import Config, add_config_args, config_from_args
from gauntlet_jax.data.corpus import TokenCorpus, open_corpus
from gauntlet_jax.data.pages import heldout_batches, random_batches
from gauntlet_jax.model import grad, llama, sharding


@dataclass
class TrainResult:
    """Held-out loss at each evaluated step, and throughput of the training steps."""

    curve: list[tuple[int, float]] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    tokens: int = 0
    train_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "heldout_loss": [[s, round(v, 4)] for s, v in self.curve],
            "tokens": self.tokens,
            "train_seconds": round(self.train_seconds, 2),
            "tokens_per_s": round(self.tokens / max(self.train_seconds, 1e-9), 1),
        }


def _training_batches(corpus: TokenCorpus, cfg: Config, micro: int) -> Iterator[np.ndarray]:
    """[micro, B, T] groups of micro-batches from the random pages of windows 0, 1, 2, …"""
    window = 0
    pending: list[np.ndarray] = []
    while True:
        while len(pending) < micro:
            pending.extend(random_batches(corpus, cfg, cfg.train.seed, window))
            window += 1
        yield np.stack(pending[:micro])
        del pending[:micro]


def train(
    cfg: Config,
    steps: int,
    *,
    eval_every: int = 50,
    micro: int = 1,
    max_heldout_batches: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains from a fresh init for `steps` AdamW steps; evaluates held-out loss at step 0, every
    `eval_every` steps and at the end."""
    corpus = open_corpus(cfg.data, progress=progress)
    heldout = heldout_batches(corpus, cfg)[:max_heldout_batches]
    mesh = sharding.make_mesh(cfg.mesh)
    model_cfg = cfg.model
    optimizer = grad.make_adamw(cfg.train, steps)
    shardings = sharding.param_shardings(model_cfg, mesh)
    params = sharding.init_sharded_params(model_cfg, jax.random.key(cfg.train.seed), mesh)
    opt_state = sharding.shard_like(optimizer.init(params), shardings)
    heldout_dev = sharding.shard_batch(heldout, mesh, batch_axis=1)
    eval_loss = jax.jit(llama.batches_loss_and_count, static_argnums=2)

    result = TrainResult()

    def evaluate(step: int) -> None:
        total, count = eval_loss(params, heldout_dev, model_cfg)
        loss = float(total) / max(float(count), 1.0)
        result.curve.append((step, loss))
        tqdm.write(f"step {step:5d}  held-out loss {loss:.4f}")

    evaluate(0)
    batches = _training_batches(corpus, cfg, micro)
    bar = tqdm(range(1, steps + 1), desc="train", disable=not progress, unit="step")
    for step in bar:
        batch = sharding.shard_batch(jnp.asarray(next(batches)), mesh, batch_axis=1)
        start = time.perf_counter()
        params, opt_state, loss = grad.adamw_step(params, opt_state, batch, model_cfg, optimizer)
        loss_value = float(loss)  # waits for the step; also what the bar shows
        if step > 1:  # step 1 includes compilation
            result.train_seconds += time.perf_counter() - start
            result.tokens += int(np.prod(batch.shape))
        result.train_losses.append(loss_value)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if step % eval_every == 0 or step == steps:
            evaluate(step)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gauntlet_jax.train_demo", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--steps", type=int, default=300, help="AdamW steps")
    parser.add_argument("--eval-every", type=int, default=50, help="held-out evaluation cadence")
    parser.add_argument("--micro", type=int, default=1, help="micro-batches per step")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = config_from_args(args)
        result = train(cfg, args.steps, eval_every=args.eval_every, micro=args.micro)
        print(json.dumps({"config": cfg.name, "steps": args.steps, **result.as_dict()}))

    return run_guarded(body)


if __name__ == "__main__":
    sys.exit(main())
