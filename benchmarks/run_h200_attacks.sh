#!/usr/bin/env bash
# The 100-window attack runs (issue 17) on ONE GPU: every arm (all_honest + the 4 attack groups of
# benchmarks/attacks.py) under every defence setting is its own process, all at once, each with a
# small slice of the GPU's memory and its own time limit. Repository root as cwd:
#   OUT=/tmp/attacks bash benchmarks/run_h200_attacks.sh            # 100 windows
#   WINDOWS=2 ARMS="all_honest alie" SETTINGS_RUN=defaults JAX_PLATFORMS=cpu \
#     bash benchmarks/run_h200_attacks.sh                            # a CPU check
# Defence settings: defaults; the ladder (escalating slash + negative-evaluation tracking); the
# robust merge (protocol.merge_trim=1, a coordinate-wise trimmed mean); graded own-data evidence
# with the harm reset (evidence), and the same with power 3 (evidence_p3); with the harm test
# at a tenth of the median LossScore (idle_p3, which met issue 17's bars), and also resetting
# the rating (idle_reset_p3); idle_p3 with a harm memory of 20 or 50 windows' half-life
# (memory20, memory50); harm confirmed by 2 catches in a row, then an exclusion of 100 windows
# (confirm_exclude) or the 50-window memory (confirm_memory). SEEDS="0 1" runs every setting with each seed (runs named SETTING@sSEED;
# one seed: named SETTING). Back in $OUT (≤ 8 files): attacks.md (one table per setting), summaries.json ({setting: {arm: summary}}),
# logs.txt (each process' stderr tail and exit status), env.txt, metrics.tar.xz (every arm's
# per-peer, per-window metrics.jsonl, for reading why a share is what it is).
set -u
OUT=${OUT:-/tmp/attacks_out}
WINDOWS=${WINDOWS:-100}
ARMS=${ARMS:-all_honest alie echo sleeper data_skipper}
SETTINGS_RUN=${SETTINGS_RUN:-defaults ladder trim1}
SEEDS=${SEEDS:-0}
# EXTRA_SET: overrides for every run (e.g. --set data.tokenizer=PATH where mistral-common is missing).
RUN_S=${RUN_S:-540}  # each process' limit; the device call's own is 600 s
PY=${PY:-python3}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT" "$WORK"
declare -A SETTINGS=(
  [defaults]=""
  [ladder]="--set validator.escalating_slash=true --set validator.negative_evaluation=true"
  [trim1]="--set protocol.merge_trim=1"
  [evidence]="--set validator.own_data_evidence=graded --set validator.harm_reset=true"
  [evidence_p3]="--set validator.own_data_evidence=graded --set validator.harm_reset=true --set validator.power=3"
  [idle_p3]="--set validator.own_data_evidence=graded --set validator.harm_reset=true --set validator.harm_fraction=0.1 --set validator.power=3"
  [idle_reset_p3]="--set validator.own_data_evidence=graded --set validator.harm_reset=true --set validator.harm_fraction=0.1 --set validator.harm_resets_rating=true --set validator.power=3"
)
SETTINGS[memory20]="${SETTINGS[idle_p3]} --set validator.harm_memory_windows=20"
SETTINGS[memory50]="${SETTINGS[idle_p3]} --set validator.harm_memory_windows=50"
confirm2="--set validator.harm_confirm=2 --set validator.harm_confirm_of=2"
SETTINGS[confirm_exclude]="${SETTINGS[idle_p3]} $confirm2 --set validator.harm_exclude_windows=100"
SETTINGS[confirm_memory]="${SETTINGS[memory50]} $confirm2"
# Every (setting, seed) is a run with its own directory and table.
declare -A RUN_SETTING=() RUN_SEED=()
runs=()
for setting in $SETTINGS_RUN; do
  for seed in $SEEDS; do
    if [ "$(wc -w <<<"$SEEDS")" -gt 1 ]; then run="$setting@s$seed"; else run=$setting; fi
    RUN_SETTING[$run]=$setting RUN_SEED[$run]=$seed
    runs+=("$run")
  done
done
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.05}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .devdeps ]; then export PYTHONPATH=$PYTHONPATH:$PWD/.devdeps; fi
{
  date -u
  git log --oneline -1 2>/dev/null || echo "commit: see the call's record"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
  echo "windows $WINDOWS arms $ARMS settings $SETTINGS_RUN seeds $SEEDS run limit ${RUN_S}s"
} >"$OUT/env.txt" 2>&1
start=$SECONDS
pids=()
for run in "${runs[@]}"; do
  setting=${RUN_SETTING[$run]}
  for arm in $ARMS; do
    if [ "$arm" = all_honest ]; then sel=(--attacks ""); else sel=(--no-all-honest --attacks "$arm"); fi
    # shellcheck disable=SC2086  # the setting's overrides are separate words on purpose
    timeout -k 10 "$RUN_S" "$PY" -m benchmarks.attacks --windows "$WINDOWS" --out "$WORK/$run" \
      --seed "${RUN_SEED[$run]}" "${sel[@]}" ${SETTINGS[$setting]} ${EXTRA_SET:-} \
      >"$WORK/$run.$arm.log" 2>&1 &
    pids+=("$!:$run.$arm")
  done
done
for entry in "${pids[@]}"; do
  wait "${entry%%:*}"
  echo "== ${entry#*:} rc=$? after $((SECONDS - start))s" >>"$WORK/status"
done
{
  cat "$WORK/status"
  for f in "$WORK"/*.log; do echo "== $(basename "$f")"; tail -c 2000 "$f"; done
} >"$OUT/logs.txt"
: >"$OUT/attacks.md"
for run in "${runs[@]}"; do
  setting=${RUN_SETTING[$run]}
  dirs=()
  for arm in $ARMS; do [ -f "$WORK/$run/$arm/summary.json" ] && dirs+=("$WORK/$run/$arm"); done
  {
    echo "## $run (${SETTINGS[$setting]:-no overrides}; seed ${RUN_SEED[$run]}), $WINDOWS windows"
    echo
    if [ ${#dirs[@]} -gt 0 ]; then
      "$PY" -m benchmarks.attacks --table-from "${dirs[@]}" --out "$WORK/$run" 2>&1
    else
      echo "no arm finished"
    fi
    echo
  } >>"$OUT/attacks.md"
done
"$PY" - "$WORK" $ARMS >"$OUT/summaries.json" <<'PYEOF'
import json, sys
from pathlib import Path
work, arms = Path(sys.argv[1]), sys.argv[2:]
print(json.dumps({s.name: {a: json.loads((s / a / "summary.json").read_text())
                           for a in arms if (s / a / "summary.json").is_file()}
                  for s in sorted(work.iterdir()) if s.is_dir()}, indent=1))
PYEOF
(cd "$WORK" && find . -name metrics.jsonl -print0 | tar cJf "$OUT/metrics.tar.xz" --null -T -)
cat "$OUT/attacks.md" "$WORK/status"
