#!/usr/bin/env bash
# What the screen buys (issue 21, part 3), in one device call (repository root as cwd):
#   bash benchmarks/run_h200_sim.sh            # 30 windows, arms sampled, screened, all_exact
#   WINDOWS=20 ARMS="sampled screened" bash benchmarks/run_h200_sim.sh
# The arms of benchmarks/screen_vs_sampled.py run side by side (one process each, on the GPU
# unless JAX_PLATFORMS says otherwise), then one more call joins them into the JSON line and
# compare.html. $OUT gets the JSON line (screen_vs_sampled.jsonl), each arm's summary.json,
# metrics.jsonl and report, compare.html and its plot; stderr in $OUT/screen_vs_sampled.err.
set -u
OUT=${OUT:-/tmp/bench_out}
WINDOWS=${WINDOWS:-30}
ARMS=${ARMS:-sampled screened all_exact}
LIMIT=${LIMIT:-540}
RUNS=${RUNS:-/tmp/screen_vs_sampled}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
ERR="$OUT/screen_vs_sampled.err"
{
  date -u
  git log --oneline -1 2>/dev/null || echo "commit: see the call's record"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
  nproc
} >"$OUT/env-sim.txt" 2>&1
start=$SECONDS
pids=()
for arm in $ARMS; do
  timeout -k 5 "$LIMIT" "$PY" -m benchmarks.screen_vs_sampled --windows "$WINDOWS" --arm "$arm" \
    --out "$RUNS" >/dev/null 2>>"$ERR" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; echo "== arm pid $pid rc=$? $((SECONDS - start))s" >>"$ERR"; done
arm_flags=()  # the arms that finished (an arm cut by the limit has no summary)
for arm in $ARMS; do [ -f "$RUNS/$arm/summary.json" ] && arm_flags+=(--arm "$arm"); done
[ ${#arm_flags[@]} -gt 0 ] || { echo "no arm finished" >>"$ERR"; tail -c 3000 "$ERR"; exit 1; }
"$PY" -m benchmarks.screen_vs_sampled --windows "$WINDOWS" "${arm_flags[@]}" --out "$RUNS" \
  2>>"$ERR" | tee "$OUT/screen_vs_sampled.jsonl"
for arm in $ARMS; do
  mkdir -p "$OUT/$arm"
  "$PY" -m gauntlet_jax.report "$RUNS/$arm" >/dev/null 2>>"$ERR"
  cp -r "$RUNS/$arm/summary.json" "$RUNS/$arm/metrics.jsonl" "$RUNS/$arm/report.html" \
    "$RUNS/$arm/plots" "$OUT/$arm/" 2>>"$ERR"
done
cp -r "$RUNS/compare.html" "$RUNS/plots" "$OUT/" 2>>"$ERR"
tail -c 3000 "$ERR"
