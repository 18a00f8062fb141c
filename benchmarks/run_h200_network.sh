#!/usr/bin/env bash
# The network's GPU measurements (issues 15, 18, 21) in a few device calls (repository root as cwd):
#   bash benchmarks/run_h200_network.sh exact    # CPU vs GPU bits at 1b2, the aggregate's speed
#   bash benchmarks/run_h200_network.sh score    # scoring rate now vs OLD (PYTHONPATH tree), screen
#   bash benchmarks/run_h200_network.sh proof    # 20 windows of crosscheck, then the screen at 1b2
#   bash benchmarks/run_h200_network.sh miner    # the miner step's copies
#   bash benchmarks/run_h200_network.sh window   # one whole validator window at 1b2, 20 peers
# JSON lines go to $OUT/<part>.jsonl, stderr to $OUT/<part>.err; each step has its own limit.
set -u
PART=${1:?exact, score, proof, miner or window}
OUT=${OUT:-/tmp/bench_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.94}
PY=${PY:-python3}
JSONL="$OUT/$PART.jsonl"
ERR="$OUT/$PART.err"
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
} >"$OUT/env-$PART.txt" 2>&1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
BENCH=("$PY" -m gauntlet_jax.bench --config configs/1b2.yaml)
case "$PART" in
exact)
  step 420 "crosscheck 1b2 15 peers" "$PY" benchmarks/crosscheck.py --config 1b2 --peers 15 --windows 20
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
  step 150 "screen 1b2" "$PY" -m gauntlet_jax.bench.screen --config 1b2 --peers 256 --exact 64 --train-steps 300
  ;;
proof)
  # The two bars in one call: 20 windows of CPU = GPU bits at 1b2, then the screen on trained θ.
  # SCREEN_SET: config overrides for the screen (e.g. a tokenizer path on a machine without
  # mistral-common).
  step "${CROSSCHECK_S:-400}" "crosscheck 1b2 15 peers" "$PY" benchmarks/crosscheck.py --config 1b2 --peers 15 --windows 20
  step "${SCREEN_S:-180}" "screen 1b2" "$PY" -m gauntlet_jax.bench.screen --config 1b2 ${SCREEN_SET:-} \
    --peers 256 --exact 64 --train-steps "${SCREEN_TRAIN_STEPS:-100}"
  ;;
miner)
  step 90 "miner copies" "$PY" -m benchmarks.miner_copies --config configs/1b2.yaml --micro-batches 4 --repeats 3
  ;;
window)
  # 20 real miners' payloads (one micro-batch each: the payload's size does not depend on it) and
  # probes in local buckets; the validator's second window, split by phase (docs/benchmarks.md).
  step 300 "window 1b2 20 peers" "${BENCH[@]}" window --peers 20 --micro-batches 1
  ;;
esac
tail -c 3000 "$ERR"
