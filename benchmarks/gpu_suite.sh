#!/usr/bin/env bash
# The GPU benchmarks in one command, for a lent GPU machine (one H200: about 8 minutes).
#
#   bash benchmarks/gpu_suite.sh                                            # cuda, 4b, bfloat16
#   bash benchmarks/gpu_suite.sh --device cpu --size tiny --dtype float32   # CPU smoke of the same steps
#
# Steps (each writes its own section of docs/benchmarks.md under the current directory, with its
# exact command; run it from the repository root):
#   stage_a      Qwen3-VL-4B-shaped random-weight model, batch 1 vs 16, images/s  (benchmarks/stage_a_throughput.py)
#   lora_step    SFT LoRA steps: tokens/s and peak memory                         (benchmarks/lora_step.py)
#   merged_load  loading the merged checkpoint in transformers                    (benchmarks/merged_checkpoint_load.py)
# then a "## GPU suite" section: machine, each step's status and wall time, and this command.
# Every step runs under its own time limit (--step-limit-s sets one for all), so the suite ends in
# bounded time; a failed, missing or timed-out step is reported in that section and the suite exits 1.
#
# Python: $PYTHON if set, else .venv/bin/python of this repository (on a fresh GPU machine: install
# a CUDA build of torch and `pip install -e .`, then `PYTHON=python3 bash benchmarks/gpu_suite.sh`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE=cuda SIZE=4b DTYPE=bfloat16
STEPS=stage_a,lora_step,merged_load
IMAGES=32 NEW_TOKENS=32 BATCH=16
# Time limits per step (model build, save and load included): 200 + 120 + 150 s = 7 min 50 s at most.
declare -A LIMIT_S=([stage_a]=200 [lora_step]=120 [merged_load]=150)
WORK="${TMPDIR:-/tmp}/qc-gpu-suite"
ARGS="$*"

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}"; echo "options: --device --size --dtype --steps --images --new-tokens --batch --step-limit-s --work"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --dtype) DTYPE="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --images) IMAGES="$2"; shift 2 ;;
    --new-tokens) NEW_TOKENS="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --step-limit-s) for k in "${!LIMIT_S[@]}"; do LIMIT_S[$k]="$2"; done; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_suite.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"
else echo "gpu_suite.sh: no Python: set PYTHON=/path/to/python (with the project installed)" >&2; exit 2
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$WORK" docs
RESULTS="$WORK/results.tsv"
: > "$RESULTS"

step_command() {
  case "$1" in
    stage_a) echo "-m benchmarks.stage_a_throughput --size $SIZE --device $DEVICE --dtype $DTYPE --batch $BATCH --images $IMAGES --new-tokens $NEW_TOKENS --work $WORK/stage_a" ;;
    lora_step) echo "-m benchmarks.lora_step --size $SIZE --device $DEVICE --dtype $DTYPE --write-doc" ;;
    merged_load) echo "-m benchmarks.merged_checkpoint_load --size $SIZE --device $DEVICE --dtype $DTYPE --write-doc" ;;
    *) return 1 ;;
  esac
}
step_module() { case "$1" in stage_a) echo stage_a_throughput ;; lora_step) echo lora_step ;; merged_load) echo merged_checkpoint_load ;; esac; }

IFS=',' read -ra SELECTED <<< "$STEPS"
for step in "${SELECTED[@]}"; do
  if ! cmd="$(step_command "$step")"; then
    echo "gpu_suite.sh: unknown step '$step' (stage_a, lora_step, merged_load)" >&2; exit 2
  fi
  if [[ ! -f "$REPO/benchmarks/$(step_module "$step").py" ]]; then
    printf '%s\tmissing\t0\t%s\n' "$step" "$cmd" >> "$RESULTS"
    echo "== $step: benchmarks/$(step_module "$step").py is missing" >&2
    continue
  fi
  echo "== $step: $PY $cmd"
  started_ns=$(date +%s%N)
  set +e
  # shellcheck disable=SC2086  # the command is a word list on purpose
  timeout --signal=KILL "${LIMIT_S[$step]}" "$PY" $cmd
  rc=$?
  set -e
  tenths=$(( ($(date +%s%N) - started_ns) / 100000000 ))
  seconds="$((tenths / 10)).$((tenths % 10))"
  status=ok
  if [[ $rc -eq 137 ]]; then status="timed out after ${LIMIT_S[$step]}s"; elif [[ $rc -ne 0 ]]; then status="failed (exit $rc)"; fi
  printf '%s\t%s\t%s\t%s\n' "$step" "$status" "$seconds" "$cmd" >> "$RESULTS"
done

"$PY" -m benchmarks.suite_report --results "$RESULTS" --device "$DEVICE" --command "bash benchmarks/gpu_suite.sh $ARGS"
! grep -qv $'\tok\t' "$RESULTS"
