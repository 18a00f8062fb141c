#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks.md in one device call (repository root as cwd):
#   bash benchmarks/run_h200.sh            # writes $OUT/bench.jsonl, env.txt, stderr.log
# Each step has its own time limit, so one hang loses one line, not the run. The JAX score
# bench and the PyTorch reference run back to back in the same call (same machine, same state).
# Optional: .whl/flax-*.whl is installed only when the image's flax cannot build our model.
set -u
OUT=${OUT:-/tmp/bench_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# K = 8 candidates' activations and trial weights need more than JAX's default 75 % pool.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.94}
PY=${PY:-python3}
CFG=${CFG:-configs/1b2.yaml}
K=${K:-8}
JSONL="$OUT/bench.jsonl"
ERR="$OUT/stderr.log"

step() {  # step LIMIT_S NAME CMD...: run with a limit; JSON lines to $JSONL, stderr to $ERR
  local limit=$1 name=$2
  shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$ERR"
  timeout -k 5 "$limit" "$@" 2>>"$ERR" | tee -a "$JSONL"
  local rc=${PIPESTATUS[0]}
  echo "== $name rc=$rc $((SECONDS - start))s" | tee -a "$ERR"
  return "$rc"
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  "$PY" -c "import jax; jax.print_environment_info()"
  "$PY" -c "import flax, optax, numpy, torch, transformers; print('flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'transformers', transformers.__version__)"
} >"$OUT/env.txt" 2>&1

if ! "$PY" -c "from gauntlet_jax.config import load_config; from gauntlet_jax.model import llama; llama.abstract_params(load_config('tiny').model)" 2>>"$ERR"; then
  echo "image flax cannot build the model; installing the carried wheel" | tee -a "$ERR"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/flax-*.whl 2>>"$ERR"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

BENCH=("$PY" -m gauntlet_jax.bench --config "$CFG")
step 210 "score K=$K" "${BENCH[@]}" score --candidates "$K" --warmup 0 --repeats 3 \
  --profile "$OUT/prof" \
  || step 150 "score K=$K chunk 4" "${BENCH[@]}" score --candidates "$K" --chunk 4 --warmup 0 --repeats 2
step 150 "torch reference K=$K" "$PY" -m benchmarks.torch_reference --config "$CFG" \
  --candidates "$K" --warmup 0 --repeats 2
step 120 "train M=4" "${BENCH[@]}" train --micro-batches 4 --repeats 3 --profile "$OUT/prof"
# A miner accumulates many micro-batches per window: per-call costs amortise further.
step 120 "train M=16" "${BENCH[@]}" train --micro-batches 16 --repeats 2
step 90 "compress" "${BENCH[@]}" compress --repeats 5
step 100 "aggregate" "${BENCH[@]}" aggregate --repeats 3

# Profiles come back as single files (the tool returns files at most two folders down).
for kind in score train; do
  f=$(find "$OUT/prof/$kind" -name '*.xplane.pb' 2>/dev/null | head -1)
  [ -n "$f" ] && gzip -c "$f" >"$OUT/$kind.xplane.pb.gz"
done
rm -rf "$OUT/prof"
ls -la "$OUT"
# Short table last (the reply carries the end of the output).
"$PY" - "$JSONL" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    mem = r.get("peak_bytes_in_use")
    print(f"{r['what']:22s} {r['median_s']:9.4f}s {r['throughput']:12.3f} {r['unit']:14s} "
          f"mfu={r['mfu']:.3f} peak={r['peak_tflops_per_s']:.0f}TF "
          f"mem={(mem or 0) / 2**30:.1f}GiB first={r['first_call_s']:.1f}s")
EOF
