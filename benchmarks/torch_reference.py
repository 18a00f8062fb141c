"""PyTorch reference for `python -m gauntlet_jax.bench score`: the validator's loss-delta scoring
done the reference validator's way, on the same shapes, so the two run side by side.

    python -m benchmarks.torch_reference --config configs/1b2.yaml --candidates 8

The reference way: a Hugging Face `LlamaForCausalLM` with the config's shapes (fp32 weights, bf16
autocast, SDPA attention). The window's random batches are scored once with the current model;
then, per candidate, one after another: loss on its own batches with the current model, a copy of
the model (`copy.deepcopy`), the candidate's payload decoded (scatter of the top-k values into each
chunk, inverse DCT of each 64×64 chunk, sign) and the step θ − β·sign applied to the copy, then
the copy's loss on the own and the random batches. Every batch is a separate forward, its loss
read back with `.item()`.

Inputs mirror the JAX bench: K candidates with `own_batches` batches each and `random_batches`
shared random batches of batch_size × seq_len uniform token ids (same generator and seed), and
payloads already on the device (top-k of the chunked DCT of a Gaussian tensor per parameter).
The timed region is one window's scoring: the random-before pass and all K candidates.
Prints one JSON line in the bench's format; FLOPs are counted the same way (gauntlet_jax/bench/cli.py's docstring).

Needs torch, transformers, numpy and pyyaml; run from the repository root (imports the config
loader of gauntlet_jax, which needs no JAX).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from gauntlet_jax.config import Config, add_config_args, config_from_args

OWN_BATCHES = 5
RANDOM_BATCHES = 5
ACCEL_PEAK_SIZE = 8192
CPU_PEAK_SIZE = 512


class Leaf(NamedTuple):
    """How one parameter is chunked: chunk sizes per axis and the grid of chunks."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    grid: tuple[int, ...]
    k: int


def largest_divisor_at_most(size: int, target: int) -> int:
    return next(c for c in range(min(size, target), 0, -1) if size % c == 0)


def leaf_plan(name: str, shape: Sequence[int], chunk: int, topk: int) -> Leaf:
    chunks = tuple(largest_divisor_at_most(s, chunk) for s in shape)
    grid = tuple(s // c for s, c in zip(shape, chunks, strict=True))
    return Leaf(name, tuple(shape), chunks, grid, max(1, min(topk, math.prod(chunks))))


def dct_basis(n: int, device: torch.device) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n×n): y = D @ x, x = Dᵀ @ y."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] *= math.sqrt(0.5)
    return basis.to(device=device, dtype=torch.float32)


class Codec:
    """The reference's chunked DCT + top-k (to make payloads) and its decode (to apply them)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bases: dict[int, torch.Tensor] = {}

    def basis(self, n: int) -> torch.Tensor:
        if n not in self.bases:
            self.bases[n] = dct_basis(n, self.device)
        return self.bases[n]

    def encode(self, x: torch.Tensor, leaf: Leaf) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameter-shaped tensor → (idx int64, vals fp32), each (n_chunks, k)."""
        if len(leaf.chunks) == 2:
            (g1, g2), (c1, c2) = leaf.grid, leaf.chunks
            blocks = x.reshape(g1, c1, g2, c2)
            coeffs = torch.einsum(
                "iajb,ka,lb->ijkl", blocks, self.basis(c1), self.basis(c2)
            ).reshape(g1 * g2, c1 * c2)
        else:
            (g,), (c,) = leaf.grid, leaf.chunks
            coeffs = x.reshape(g, c) @ self.basis(c).T
        idx = torch.topk(coeffs.abs(), leaf.k, dim=1).indices
        return idx, torch.gather(coeffs, 1, idx)

    def decode(self, idx: torch.Tensor, vals: torch.Tensor, leaf: Leaf) -> torch.Tensor:
        """(idx, vals) → dense parameter-shaped update: scatter-mean, inverse DCT per chunk."""
        n_chunks, chunk_elems = math.prod(leaf.grid), math.prod(leaf.chunks)
        coeffs = torch.zeros(n_chunks, chunk_elems, device=self.device, dtype=torch.float32)
        coeffs.scatter_reduce_(1, idx, vals, reduce="mean", include_self=False)
        if len(leaf.chunks) == 2:
            (g1, g2), (c1, c2) = leaf.grid, leaf.chunks
            blocks = torch.einsum(
                "ijkl,ka,lb->iajb",
                coeffs.reshape(g1, g2, c1, c2),
                self.basis(c1),
                self.basis(c2),
            )
            return blocks.reshape(leaf.shape)
        (g,), (c,) = leaf.grid, leaf.chunks
        return (coeffs.reshape(g, c) @ self.basis(c)).reshape(leaf.shape)


def hf_model(cfg: Config, device: torch.device) -> LlamaForCausalLM:
    m = cfg.model
    config = LlamaConfig(
        vocab_size=m.vocab_size,
        hidden_size=m.d_model,
        intermediate_size=m.d_mlp,
        num_hidden_layers=m.n_layers,
        num_attention_heads=m.n_heads,
        num_key_value_heads=m.n_kv_heads,
        max_position_embeddings=m.seq_len,
        rms_norm_eps=m.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
        tie_word_embeddings=False,
        use_cache=False,
    )
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of `repeats` synchronised calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def measure_peak(device: torch.device, n: int, per_burst: int = 10) -> float:
    """bf16 n³ product rate, FLOP/s (random operands), as the JAX bench measures it: bursts of
    products launched back to back, one synchronisation per burst."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)

    def burst() -> None:
        for _ in range(per_burst):
            a @ b

    return 2.0 * n**3 * per_burst / statistics.median(timed(burst, device, warmup=1, repeats=5))


def flops_per_token(model: LlamaForCausalLM, cfg: Config) -> float:
    """Forward FLOPs per token, counted as the JAX bench counts them: 2 per matrix parameter
    (the embedding lookup is none) plus the attention products over `seq_len`."""
    n_params = sum(p.numel() for p in model.parameters())
    matmul_params = n_params - model.get_input_embeddings().weight.numel()
    m = cfg.model
    return 2.0 * matmul_params + 2.0 * m.seq_len * m.n_heads * (m.d_model // m.n_heads) * m.n_layers


def reference_record(
    what: str,
    cfg: Config,
    model: LlamaForCausalLM,
    times: list[float],
    first: float,
    peak: float,
    *,
    work: float,
    unit: str,
    flops: float,
    **extra: Any,
) -> dict[str, Any]:
    """One JSON line in the bench's format (`gauntlet_jax/bench/measure.py`'s fields): `work`
    units per median call as the throughput, MFU against the bf16 `peak` the process measured."""
    device = next(model.parameters()).device
    median = statistics.median(times)
    return {
        "what": what,
        "config": cfg.name,
        "platform": "gpu" if device.type == "cuda" else device.type,
        "device_kind": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "device_count": 1,
        "batch_shape": [cfg.data.batch_size, cfg.model.seq_len],
        "median_s": median,
        "times_s": [round(x, 6) for x in times],
        "first_call_s": first,
        "throughput": work / median,
        "unit": unit,
        "flops": flops,
        "tflops_per_s": flops / median / 1e12,
        "mfu": flops / median / peak,
        "peak_tflops_per_s": peak / 1e12,
        "peak_bytes_in_use": (
            torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        ),
        "params": sum(p.numel() for p in model.parameters()),
        "compute_dtype": "bfloat16 autocast",
        "attention": model.config._attn_implementation,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **extra,
    }


def peak_for(device: torch.device) -> float:
    return measure_peak(device, ACCEL_PEAK_SIZE if device.type == "cuda" else CPU_PEAK_SIZE)


class Scorer:
    """One window's scoring, the reference's way."""

    def __init__(self, model: LlamaForCausalLM, leaves: list[Leaf], beta: float) -> None:
        self.model = model
        self.leaves = leaves
        self.beta = beta
        self.device = next(model.parameters()).device
        self.codec = Codec(self.device)

    @torch.no_grad()
    def mean_loss(self, model: LlamaForCausalLM, batches: torch.Tensor) -> float:
        total = 0.0
        for batch in batches:  # one forward per batch
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = model(input_ids=batch, labels=batch)
            total += out.loss.item()
        return total / len(batches)

    @torch.no_grad()
    def trial_model(self, payload: list[tuple[torch.Tensor, torch.Tensor]]) -> LlamaForCausalLM:
        trial = copy.deepcopy(self.model)
        params = dict(trial.named_parameters())
        for leaf, (idx, vals) in zip(self.leaves, payload, strict=True):
            update = self.codec.decode(idx, vals, leaf)
            params[leaf.name].sub_(torch.sign(update), alpha=self.beta)
        return trial

    def score_window(
        self,
        payloads: list[list[tuple[torch.Tensor, torch.Tensor]]],
        own: torch.Tensor,
        rand: torch.Tensor,
    ) -> list[tuple[float, float, float, float]]:
        random_before = self.mean_loss(self.model, rand)
        out = []
        for payload, own_batches in zip(payloads, own, strict=True):
            own_before = self.mean_loss(self.model, own_batches)
            trial = self.trial_model(payload)
            own_after = self.mean_loss(trial, own_batches)
            random_after = self.mean_loss(trial, rand)
            del trial
            out.append((own_before, own_after, random_before, random_after))
        return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.torch_reference", description=__doc__
    )
    add_config_args(parser)
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--own-batches", type=int, default=OWN_BATCHES)
    parser.add_argument("--random-batches", type=int, default=RANDOM_BATCHES)
    parser.add_argument("--warmup", type=int, default=1, help="untimed windows after the first")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    device = torch.device(args.device)
    k = args.candidates or cfg.validator.candidate_chunk
    b, t = cfg.data.batch_size, cfg.model.seq_len
    n_own, n_rand = args.own_batches, args.random_batches
    torch.manual_seed(args.seed)

    peak = peak_for(device)
    model = hf_model(cfg, device)
    leaves = [
        leaf_plan(name, p.shape, cfg.compress.chunk, cfg.compress.topk)
        for name, p in model.named_parameters()
    ]
    scorer = Scorer(model, leaves, cfg.validator.eval_lr_factor * cfg.protocol.learning_rate)
    with torch.no_grad():
        payloads = [
            [scorer.codec.encode(torch.randn(leaf.shape, device=device), leaf) for leaf in leaves]
            for _ in range(k)
        ]
    rng = np.random.default_rng(args.seed)  # same order and seed as bench_score
    own_np = rng.integers(0, cfg.model.vocab_size, size=(k, n_own, b, t), dtype=np.int32)
    rand_np = rng.integers(0, cfg.model.vocab_size, size=(n_rand, b, t), dtype=np.int32)
    own = torch.from_numpy(own_np).long().to(device)
    rand = torch.from_numpy(rand_np).long().to(device)

    start = time.perf_counter()
    losses = scorer.score_window(payloads, own, rand)
    sync(device)
    first = time.perf_counter() - start
    if not all(math.isfinite(x) for row in losses for x in row):
        raise FloatingPointError("reference: non-finite losses")
    times = timed(
        lambda: scorer.score_window(payloads, own, rand), device, args.warmup, max(1, args.repeats)
    )
    tokens = b * t * (n_rand + k * (2 * n_own + n_rand))
    record = reference_record(
        "score_torch_reference",
        cfg,
        model,
        times,
        first,
        peak,
        work=k,
        unit="candidates/s",
        flops=flops_per_token(model, cfg) * tokens,
        candidates=k,
        own_batches=n_own,
        random_batches=n_rand,
        forwards=1 + 3 * k,
        tokens=tokens,
        repeats=args.repeats,
    )
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
