"""Run configuration: frozen dataclasses loaded from YAML with dotted command-line overrides.

Every knob has exactly one home: a field below with its default. YAML files in `configs/` only
override defaults; `--set section.key=value` overrides the YAML. Unknown keys are errors that name
the key and the valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gauntlet_jax import __version__
from gauntlet_jax.errors import ConfigError

# Package data (a link to the repository's configs/ in a checkout, the files in a wheel).
CONFIG_DIR = Path(__file__).parent / "configs"
# validator.own_data_evidence: how the own-vs-random gap becomes b (checks.own_data_indicator).
OWN_DATA_EVIDENCE = ("binary", "graded")


@dataclass(frozen=True)
class ModelConfig:
    """LLaMA-style decoder shapes and the dtype policy (GAUNTLET.md §8.1)."""

    vocab_size: int = 32000
    d_model: int = 2048
    n_layers: int = 16
    n_heads: int = 8
    n_kv_heads: int = 8
    d_mlp: int = 8192
    seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    # fp32 master weights; matmuls in compute_dtype.
    param_dtype: str = "float32"
    compute_dtype: str = "bfloat16"
    # Targets equal to pad_id are ignored by the loss. The reference sets pad = EOS, so EOS
    # targets never count (GAUNTLET.md §3.2); 2 is EOS of the default SentencePiece model.
    pad_id: int = 2
    mask_pad_in_loss: bool = True
    init_std: float = 0.02
    # Attention kernel: "auto" = cuDNN on GPU, XLA elsewhere; or "xla" / "cudnn".
    attention_impl: str = "auto"
    # Rematerialise each block in the backward pass (saves activation memory).
    remat: bool = False
    # What a rematerialised block keeps for the backward: "nothing" (recompute the whole block)
    # or "dots" (keep the matrix products' outputs, recompute only the elementwise work).
    remat_policy: str = "nothing"


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; -1 fills with the remaining devices (at most one axis may be -1)."""

    # Candidate axis: the validator's vmap over peers' pseudo-gradients can be spread over it.
    peers: int = 1
    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    # Multi-host: call jax.distributed.initialize. "on" / "off", or "auto": on a Cloud TPU VM, or
    # when the environment names a coordinator or several TPU workers (gauntlet_jax/node/multihost.py).
    distributed: str = "auto"
    # Explicit multi-host job (e.g. GPU hosts): coordinator "host:port", process count and this
    # process's id. Empty / 0 / -1 = from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    # JAX_PROCESS_ID, else JAX's own cluster detection (TPU pods, SLURM, …).
    coordinator: str = ""
    num_processes: int = 0
    process_id: int = -1


@dataclass(frozen=True)
class DataConfig:
    """Tokenizer, token shards and the per-(uid, window) page assignment (GAUNTLET.md §4.1)."""

    # SentencePiece model path; empty = tokenizer.model.v1 shipped in the mistral-common wheel.
    tokenizer: str = ""
    # Token shards: a directory or bucket URL written by prepare_data; empty = the embedded demo
    # corpus (public-domain Shakespeare), prepared on first use into cache_dir.
    shards: str = ""
    cache_dir: str = "~/.cache/gauntlet_jax"
    pages_per_window: int = 6
    docs_per_page: int = 100
    # Sequences per micro-batch (the reference's batch_size).
    batch_size: int = 6
    # Documents held out from every page assignment, for the held-out loss.
    heldout_docs: int = 64
    # Documents are cut to this many tokens (keeping a final EOS) before packing; the reference
    # tokenizes with max_length 2048. Bounds a page's tokens. 0 = never cut.
    max_doc_tokens: int = 2048
    # Root seed of page assignment; public so anyone can recompute any uid's pages.
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Miner inner work per window, and the centralised AdamW baseline."""

    # Upper bound on micro-batches per window (the time budget may stop earlier).
    max_micro_batches: int = 64
    # Fraction of the window the miner spends computing gradients before it must upload.
    compute_fraction: float = 0.6
    # AdamW baseline (demo training and simulation comparison).
    adamw_lr: float = 1e-3
    adamw_weight_decay: float = 0.1
    adamw_warmup: int = 20
    seed: int = 0


@dataclass(frozen=True)
class CompressConfig:
    """DeMo compression: chunked DCT + per-chunk top-k (GAUNTLET.md §1.4)."""

    chunk: int = 64
    topk: int = 32
    # 8-bit value quantisation as the reference at P (off at P85).
    quantize: bool = False
    # Hard cap on a payload's size before anything is read.
    max_payload_bytes: int = 128 * 1024 * 1024
    # Threads that decode and validate gathered payloads as they arrive (`compress.streaming`).
    decode_workers: int = 4


@dataclass(frozen=True)
class ProtocolConfig:
    """The shared outer step, schedule and windows (GAUNTLET.md §1.2, §1.4–§1.6, §8.2)."""

    # Namespace of every object name; 0.2.0: the exact integer outer step (docs/protocol.md).
    version: str = "0.2.0"
    blocks_per_window: int = 7
    learning_rate: float = 4e-4
    warmup_steps: int = 250
    warmup_start_factor: float = 0.1
    cosine_t0: int = 20000
    cosine_t_mult: int = 2
    eta_min_factor: float = 0.1
    momentum_decay: float = 0.999
    weight_decay: float = 0.0
    # Error feedback (subtract what was sent) starts after this many momentum updates.
    error_feedback_after: int = 0
    # Per-peer normalisation before merging: "chunk" (per-chunk L2) or "tensor" (whole tensor).
    normalise: str = "chunk"
    # Robust merge (issue 17): at each DCT coefficient drop this many of the largest and of the
    # smallest normalised peer values before averaging (a coordinate-wise trimmed mean, exact in
    # integers; at most (n − 1) // 2 each side of the n peers that sent it). 0 = the plain mean.
    merge_trim: int = 0
    # Seconds after the window's last block in which an upload counts as on time.
    put_window_s: float = 10.0
    gather_peers: int = 15
    min_peers: int = 5
    # Gather-set refresh cadence and lag (windows).
    peer_refresh_windows: int = 5
    peer_effective_lag: int = 2
    # The lead validator announces the run's start this many windows ahead, so miners that
    # are compiling can join from the first window.
    start_delay_windows: int = 2
    checkpoint_every: int = 100
    checkpoint_keep: int = 3
    # Retention of a node's own old objects (windows).
    retention_windows: int = 10


@dataclass(frozen=True)
class ValidatorConfig:
    """The Gauntlet: fast checks, loss deltas, OpenSkill, weights (GAUNTLET.md §2–§5, P85)."""

    offset_windows: int = 2
    active_windows: int = 5
    # The floor of exactly evaluated peers per window (the reference's fixed count).
    uids_per_window: int = 4
    num_bins: int = 5
    sample_rate: float = 0.1
    eval_lr_factor: float = 0.2
    # Candidates per compiled call (exact scoring and the screen); more are run chunk by chunk.
    candidate_chunk: int = 8
    # Exact evaluations per window as a time budget: as many chunks as fit in this fraction of
    # the window (blocks_per_window · block_time_s) after the window's other work, at the
    # measured pace (docs/protocol.md, "Scoring every peer"); 0 = exactly uids_per_window.
    score_budget_fraction: float = 0.8
    # At most this many exact evaluations per window (0 = no cap; = uids_per_window pins the
    # count, for reproducible simulations).
    exact_max: int = 0
    # The first-order screen of every active peer (validator/screen.py) picks who is evaluated
    # exactly: the top by estimate, and screen_stalest_share of the slots (at least one of two
    # or more) to the stalest others, so every eligible peer is evaluated within a bounded
    # number of windows (evaluation.choose_exact). Off: the reference's selection (a random
    # ordinal bin, staleness-weighted draws).
    screen: bool = True
    screen_stalest_share: float = 0.25
    openskill_beta: float = 7.0
    openskill_tau: float = 0.1
    bma_alpha: float = 0.05
    # b is 0 (neither +1 nor −1) when the own-data and random-data relative improvements differ by
    # at most this: wider than the rounding of losses summed in another order on other devices
    # (≤ 1e-6 relative measured between 1 and 8 devices), so validators agree on b
    # (checks.binary_indicator). 0 = the reference's strict own > random.
    indicator_dead_band: float = 1e-5
    # How the own-vs-random evidence b is read (checks.own_data_indicator): "binary" is the
    # reference's ±1 on the sign of m = own − random improvement; "graded" is 2·m/M − 1 clipped
    # to [−1, 1], M the median m of the window's evaluated peers, so a peer gaining on its own
    # pages half as much as the median peer's earns 0 and one gaining nothing earns −1
    # (docs/attacks.md: what it does to the data skipper).
    own_data_evidence: str = "binary"
    # Harm reset: an evaluated peer whose LossScore is negative (beyond the dead band) in a
    # window whose median LossScore is positive loses its BMA (to 0, so its final is 0 until
    # it earns evidence again). Off = the reference. Catches the sleeper that turns harmful once
    # rated high (docs/attacks.md).
    harm_reset: bool = False
    # The harm test's threshold as a fraction of the window's median LossScore: 0 = a negative
    # LossScore; 0.1 also catches an update that does next to nothing (a noise payload's
    # LossScore is ≈ 0) while the median peer's helps.
    harm_fraction: float = 0.0
    # Harm reset also resets the rating (μ, σ: a newcomer's), so a peer caught harming climbs
    # back from an ordinal of 0, not from the rating it earned before.
    harm_resets_rating: bool = False
    # Harm memory (with harm_reset): a catch sets the BMA to −D instead of 0, D being the peer's
    # harm debt before it: each earlier catch counts 1, halving every harm_memory_windows
    # windows since. A first catch costs what the reset alone does; a peer caught again soon
    # climbs from −D (ln(1 + D) / −ln(1 − bma_alpha) windows of good evidence back to 0), so
    # an attacker that turns whenever it is rated high pays more each time. Alone it also
    # grinds honest peers, whose catches recur late in a run (measured: docs/attacks.md).
    # 0 = no memory.
    harm_memory_windows: float = 0.0
    # Harm confirmation (with harm_reset): a catch resets the peer only when at least
    # harm_confirm of its last harm_confirm_of evaluations (this one included) were caught. One
    # unlucky evaluation of an honest peer (its update hurt that window's random pages: 2–3.5 %
    # of honest evaluations on the tiny config, some at −1.7 × the window's median) then costs
    # it only its rank; an attacker that stays harmful is caught again. 1 of 1 = every catch.
    harm_confirm: int = 1
    harm_confirm_of: int = 1
    # A confirmed catch also makes the peer a newcomer (its harm debt kept) and keeps it out of
    # gather and evaluation for this many windows, as the overlap and repeated-fault
    # exclusions do. 0 = no exclusion.
    harm_exclude_windows: int = 0
    sync_max_steps: float = 3.0
    sync_curve_steps: float = 5.0
    sync_probes: int = 256
    slash_factor: float = 0.75
    # Per window while inactive: positive final ×this (the reference's flat 25 % cut).
    inactivity_factor: float = 0.75
    inactivity_reset_windows: int = 25
    power: float = 2.0
    windows_per_weights: int = 50
    stake_cap: float = 20000.0
    overlap_check: bool = True
    overlap_threshold: float = 0.4
    # Later uploader of an overlapping pair: final and BMA ×overlap_slash_factor below
    # overlap_reset_at; at or above it the peer is reset (rating, scores, BMA: a newcomer's);
    # at or above overlap_exclude_at it is also kept out of gather and evaluation for
    # overlap_exclude_windows windows (Templar's later releases: 200; GAUNTLET.md §10.2 gives
    # 20–200 over time; 0 = no exclusion).
    overlap_slash_factor: float = 0.5
    overlap_reset_at: float = 0.5
    overlap_exclude_at: float = 0.6
    overlap_exclude_windows: int = 200
    # The escalating slash of Templar's last releases (GAUNTLET.md §10.2; validator/ladder.py),
    # off by default: the paper's flat slash_factor is what the simulations and their bars pin.
    # On: a gather peer's n-th consecutive payload fault (missing, early, late, invalid) cuts
    # final and BMA by slash_ladder[min(n, len) − 1]; more than slash_mega_fraction of its last
    # slash_history gather windows faulty resets it and keeps it out for slash_exclude_windows.
    escalating_slash: bool = False
    slash_ladder: tuple[float, ...] = (0.75, 0.5, 0.0)
    slash_history: int = 8
    slash_mega_fraction: float = 0.5
    slash_exclude_windows: int = 200
    # Negative-evaluation tracking (Templar one-covenant; off by default for the same reason).
    # On: more than negative_fraction of a peer's last negative_history evaluations with a
    # negative LossScore cut its final by negative_slash_factor; negative_exclude_after
    # consecutive negative evaluations keep it out of the gather set until a non-negative one.
    # Neither counts in a window whose negative_skip_rank-th best score is itself negative.
    negative_evaluation: bool = False
    negative_history: int = 8
    negative_fraction: float = 0.5
    negative_slash_factor: float = 0.25
    negative_exclude_after: int = 3
    negative_skip_rank: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.harm_memory_windows >= 0:
            raise ConfigError(
                "validator.harm_memory_windows must be ≥ 0 (0 = off), "
                f"got {self.harm_memory_windows}"
            )
        if not 1 <= self.harm_confirm <= self.harm_confirm_of:
            raise ConfigError(
                "validator.harm_confirm must be ≥ 1 and ≤ harm_confirm_of, got "
                f"{self.harm_confirm} of {self.harm_confirm_of}"
            )
        if self.harm_exclude_windows < 0:
            raise ConfigError(
                f"validator.harm_exclude_windows must be ≥ 0, got {self.harm_exclude_windows}"
            )
        if self.own_data_evidence not in OWN_DATA_EVIDENCE:
            raise ConfigError(
                f"validator.own_data_evidence must be one of {OWN_DATA_EVIDENCE}, "
                f"got {self.own_data_evidence!r}"
            )


@dataclass(frozen=True)
class StorageConfig:
    """Where this node's objects live: a local directory or gs://bucket/prefix."""

    bucket: str = "runs/local/buckets/{hotkey}"
    # Per-request timeouts (GAUNTLET.md §7: GET 15 s). A large object's put is chunked, and the
    # timeout applies to each chunk's request.
    get_timeout_s: float = 15.0
    put_timeout_s: float = 60.0
    # GCS retries 429/5xx/connection errors with exponential backoff (from backoff_s, doubling,
    # at most backoff_max_s) until retry_deadline_s has passed, then raises StorageError.
    # (google-api-core's Retry bounds time, not attempts.)
    retry_deadline_s: float = 30.0
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    # Objects above this size go up as a resumable upload in chunks of resumable_chunk_bytes
    # (a multiple of 256 KiB), so a failure resends one chunk, not the whole object.
    resumable_threshold_bytes: int = 16 * 1024 * 1024
    resumable_chunk_bytes: int = 16 * 1024 * 1024
    # GCS credentials: a service-account JSON file; empty = application-default credentials.
    # anonymous = no credentials at all (reading public-read buckets).
    credentials_file: str = ""
    anonymous: bool = False
    project: str = ""
    checkpoint_dir: str = "runs/local/checkpoints/{hotkey}"


@dataclass(frozen=True)
class ChainConfig:
    """The chain endpoint: a local SQLite ledger or a subtensor websocket (GAUNTLET.md §6)."""

    # "sqlite:///path/to/chain.db" (embedded default) or "ws://host:9944" / "wss://...".
    url: str = "sqlite:///runs/local/chain.db"
    netuid: int = 1
    block_time_s: float = 12.0
    timeout_s: float = 30.0
    # Secret key source: an env var name holding a URI/mnemonic/seed, or a key file path.
    key_env: str = "GAUNTLET_HOTKEY_SECRET"
    key_file: str = ""
    # The coldkey (registration only: it pays the burn): an env var name or a key file path.
    coldkey_env: str = "GAUNTLET_COLDKEY_SECRET"
    coldkey_file: str = ""
    # Subtensor: wait until each extrinsic is in a block (and report its pallet error) before
    # returning. Off = fire and forget, as the reference's set_weights.
    wait_for_inclusion: bool = True


@dataclass(frozen=True)
class RunConfig:
    """Where metrics, logs and state go."""

    out_dir: str = "runs/local"
    log_every: int = 1
    tensorboard: bool = True
    # Prometheus endpoint with the per-window figures (node.metrics.PrometheusExporter):
    # 0 = off; bound to prometheus_addr, loopback unless you mean to expose it.
    prometheus_port: int = 0
    prometheus_addr: str = "127.0.0.1"


@dataclass(frozen=True)
class SimConfig:
    """What the simulator (gauntlet_jax/sim) models of the simulated network; no node reads it."""

    # Exact evaluations one simulated window holds: the simulated validator's scoring pace on
    # the chain's clock, so the time budget (validator.budget) sees a window of
    # blocks_per_window · block_time_s chain seconds, not this host's speed. Whole chunks of
    # candidate_chunk, at least uids_per_window, at most exact_max (the budget's own rule).
    # 0 = the host's measured pace, as a real validator (a slow CPU then gives the floor).
    exact_per_window: int = 8


@dataclass(frozen=True)
class Config:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    validator: ValidatorConfig = field(default_factory=ValidatorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sim: SimConfig = field(default_factory=SimConfig)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Checks (and widens int → float) a YAML value against a field's declared type."""
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(typ, value, where)
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(typ):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} matches none of {typ}")
    if typ is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(typ)
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):
        # YAML 1.1 reads "3e-3" (no dot) as a string; accept what Python reads as a float.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is str and isinstance(value, bool):
        # YAML 1.1 reads a bare on/off (mesh.distributed: on) as a boolean.
        return "on" if value else "off"
    if typ in (int, float, str) and (not isinstance(value, typ) or isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}")
    return value


# Keys whose meaning changed under a new name: an old config fails naming the new key rather
# than running with a different rule.
RENAMED_KEYS = {
    # Until 2026-12-03 the non-top exact slots were a staleness-weighted random draw.
    "validator.screen_random_share": "validator.screen_stalest_share (the share of exact slots "
    "that now go to the stalest peers first, not to a random draw)",
}


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    for key in unknown:
        dotted = f"{where}.{key}" if where else str(key)
        if dotted in RENAMED_KEYS:
            raise ConfigError(f"config key {dotted} was renamed: use {RENAMED_KEYS[dotted]}")
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys"
            f"{' of ' + where if where else ''}: {', '.join(sorted(types_))}"
        )
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`model.n_layers=4` → ("model.n_layers", 4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, or a bare name (`tiny`) looked up in configs/; `configs/tiny.yaml` also
    finds the packaged file where there is no checkout (an installed wheel)."""
    p = Path(path)
    if p.exists():
        return p
    inside = Path(*p.parts[1:]) if len(p.parts) > 1 and p.parts[0] == "configs" else p
    for candidate in (CONFIG_DIR / inside, CONFIG_DIR / f"{inside}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"config file {str(path)!r} not found (looked in . and {CONFIG_DIR})")


def config_from_dict(values: Mapping[str, Any]) -> Config:
    return _build(Config, values, "")


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Loads a YAML config (or the defaults) and applies dotted `key=value` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        resolved = resolve_config_path(path)
        loaded = yaml.safe_load(resolved.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{resolved}: top level must be a mapping")
        tree = loaded
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def with_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    tree = to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def add_version_flag(parser: Any) -> None:
    """`--version`: the package version (`gauntlet_jax.__version__`, its one home)."""
    parser.add_argument("--version", action="version", version=f"gauntlet-jax {__version__}")


def add_config_args(parser: Any) -> None:
    """Adds the shared `--config` / `--set` flags (and `--version`) to an argparse parser."""
    add_version_flag(parser)
    parser.add_argument("--config", default="local", help="YAML file or name in configs/")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set model.n_layers=4 (repeatable)",
    )


def config_from_args(args: Any) -> Config:
    return load_config(args.config, args.overrides)
