"""PyTorch anchor for `python -m gauntlet_jax.bench train`: the miner's gradient accumulation
done the usual PyTorch way, on the same shapes, so the two run side by side.

    python -m benchmarks.torch_train_reference --config configs/1b2.yaml --micro-batches 4

The usual way: a Hugging Face `LlamaForCausalLM` with the config's shapes (fp32 weights, bf16
autocast, SDPA attention, no activation checkpointing unless `--checkpointing`), one forward and
`backward()` per micro-batch of batch_size × seq_len tokens, the gradients accumulating in the
fp32 `.grad` buffers (zeroed, `set_to_none`, before each step). `--compile` wraps the model in
`torch.compile` (the tuned anchor). Tokens are uniform ids from the same generator and seed as
`bench train`; the timed region is one accumulated step over all micro-batches, as there.
Prints one JSON line in the bench's format; FLOPs are 3 × forward, as the bench counts them.

Needs torch, transformers, numpy and pyyaml; run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from benchmarks.torch_reference import (
    flops_per_token,
    hf_model,
    peak_for,
    reference_record,
    sync,
    timed,
)
from gauntlet_jax.config import add_config_args, config_from_args


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.torch_train_reference", description=__doc__
    )
    add_config_args(parser)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--checkpointing", action="store_true", help="HF gradient checkpointing of every layer"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    device = torch.device(args.device)
    m_batches, b, t = args.micro_batches, cfg.data.batch_size, cfg.model.seq_len
    torch.manual_seed(args.seed)

    peak = peak_for(device)
    model = hf_model(cfg, device).train()
    if args.checkpointing:
        model.gradient_checkpointing_enable()
    forward = torch.compile(model) if args.compile else model
    rng = np.random.default_rng(args.seed)  # same order and seed as bench_train
    tokens_np = rng.integers(0, cfg.model.vocab_size, size=(m_batches, b, t), dtype=np.int32)
    batches = torch.from_numpy(tokens_np).long().to(device)

    def step() -> float:
        model.zero_grad(set_to_none=True)
        total = 0.0
        for batch in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = forward(input_ids=batch, labels=batch).loss / m_batches
            loss.backward()
            total += loss.detach()
        return float(total)

    start = time.perf_counter()
    loss = step()
    sync(device)
    first = time.perf_counter() - start
    if not math.isfinite(loss):
        raise FloatingPointError("train reference: non-finite loss")
    times = timed(step, device, args.warmup, max(1, args.repeats))
    tokens = m_batches * b * t
    record = reference_record(
        "train_torch_reference",
        cfg,
        model,
        times,
        first,
        peak,
        work=tokens,
        unit="tokens/s",
        flops=3.0 * flops_per_token(model, cfg) * tokens,
        micro_batches=m_batches,
        tokens=tokens,
        compiled=args.compile,
        checkpointing=args.checkpointing,
        loss=loss,
        repeats=args.repeats,
    )
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
