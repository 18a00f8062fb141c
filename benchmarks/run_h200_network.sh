#!/usr/bin/env bash
# The network's GPU measurements (issues 15, 18, 21); one call runs one or more parts in order
# (repository root as cwd), e.g. `bash benchmarks/run_h200_network.sh crosscheck miner`:
#   exact       CPU vs GPU bits at 1b2 (crosscheck) and the aggregate's speed at 15 and 50 peers
#   crosscheck  20 windows of CPU = GPU bits at 1b2, 15 peers (CROSSCHECK_S, default 450 s)
#   aggregate   the outer step after the last payload, 15 and 50 peers
#   score       scoring rate now vs OLD (an older tree on PYTHONPATH), then the screen
#   screen      the screen at 1b2 on trained θ (SCREEN_SET: config overrides, e.g. a tokenizer)
#   miner       the miner step's copies, per remat variant
#   train       the miner step (bench train, the shipped 1b2 config) beside its PyTorch anchors
#               (HF eager, then torch.compile), same shapes and tokens
#   window      one whole validator window at 1b2, 20 peers
# Packages the device image lacks (the demo corpus, its tokenizer) travel in .devdeps/ (carry it;
# it is put on PYTHONPATH). JSON lines go to $OUT/<part>.jsonl, stderr to $OUT/<part>.err; each
# step has its own limit.
set -u
[ $# -gt 0 ] || { echo "usage: $0 PART... (exact crosscheck aggregate score screen miner train window)" >&2; exit 2; }
OUT=${OUT:-/tmp/bench_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.94}
PY=${PY:-python3}
step() {  # step LIMIT_S NAME CMD...
  local limit=$1 name=$2
  shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$ERR"
  timeout -k 5 "$limit" "$@" 2>>"$ERR" | sed -u "s/^{/{\"step\": \"$name\", /" | tee -a "$JSONL"
  echo "== $name rc=${PIPESTATUS[0]} $((SECONDS - start))s" | tee -a "$ERR"
}
{
  date -u
  git log --oneline -1 2>/dev/null || echo "commit: see the call's record"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  nproc
} >"$OUT/env.txt" 2>&1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .devdeps ]; then export PYTHONPATH=$PYTHONPATH:$PWD/.devdeps; fi
# The default tokenizer ships in mistral-common; where it is missing, the copy in .devdeps/.
TOKSET=()
if [ -f .devdeps/tokenizer.model.v1 ] && ! "$PY" -c "import mistral_common" 2>/dev/null; then
  TOKSET=(--set "data.tokenizer=$PWD/.devdeps/tokenizer.model.v1")
fi
BENCH=("$PY" -m gauntlet_jax.bench --config configs/1b2.yaml "${TOKSET[@]}")
for PART in "$@"; do
JSONL="$OUT/$PART.jsonl"
ERR="$OUT/$PART.err"
case "$PART" in
exact)
  bash "$0" crosscheck aggregate
  ;;
crosscheck)
  step "${CROSSCHECK_S:-450}" "crosscheck 1b2 15 peers" "$PY" benchmarks/crosscheck.py --config 1b2 --peers 15 --windows 20
  ;;
aggregate)
  step 60 "aggregate 15" "${BENCH[@]}" aggregate --peers 15 --repeats 3
  step 120 "aggregate 50" "${BENCH[@]}" aggregate --peers 50 --repeats 3
  ;;
score)
  step 150 "score K=8" "${BENCH[@]}" score --candidates 8 --warmup 0 --repeats 3
  # OLD: an older tree (git archive COMMIT gauntlet_jax configs), its own code and config.
  if [ -n "${OLD:-}" ]; then
    PYTHONPATH=$OLD step 150 "score K=8 old" \
      "$PY" -m gauntlet_jax.bench --config "$OLD/configs/1b2.yaml" score --candidates 8 --warmup 0 --repeats 3
  fi
  bash "$0" screen
  ;;
screen)
  step "${SCREEN_S:-170}" "screen 1b2" "$PY" -m gauntlet_jax.bench.screen --config 1b2 "${TOKSET[@]}" ${SCREEN_SET:-} \
    --peers 256 --exact 64 --train-steps "${SCREEN_TRAIN_STEPS:-100}"
  ;;
miner)
  step 90 "miner copies" "$PY" -m benchmarks.miner_copies --config configs/1b2.yaml --micro-batches 4 --repeats 3
  ;;
train)
  step 120 "train 1b2 M=4" "${BENCH[@]}" train --micro-batches 4 --repeats 3
  step 90 "train torch eager" "$PY" -m benchmarks.torch_train_reference --config configs/1b2.yaml --micro-batches 4 --repeats 3
  step "${COMPILE_S:-240}" "train torch compile" "$PY" -m benchmarks.torch_train_reference --config configs/1b2.yaml --micro-batches 4 --repeats 3 --compile
  ;;
window)
  # 20 real miners' payloads (one micro-batch each: the payload's size does not depend on it) and
  # probes in local buckets; the validator's second window, split by phase (docs/benchmarks.md).
  step "${WINDOW_S:-300}" "window 1b2 20 peers" "${BENCH[@]}" window --peers 20 --micro-batches 1
  ;;
*)
  echo "unknown part $PART" >&2
  exit 2
  ;;
esac
tail -c 1500 "$ERR"
done
