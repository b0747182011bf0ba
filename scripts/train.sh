#!/usr/bin/env bash
# Continue every unfinished training run under training/runs/ in the background, one process and one thread each
# (two one-thread runs beat one two-thread run on 2 cores: 9.2 vs 12.6 steps/s, bench/results/train-speed-cpu.json).
# A run is unfinished when its checkpoint's step is below its config's steps. Logs: training/runs/<run>/train.log.
# Start new runs with `vsr distill --config training/recipes/<recipe>.json` (they land in training/runs/ too).
# Usage: scripts/train.sh [--list]      (--list: print each run's state, start nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VSR=${VSR:-.venv/bin/vsr}
for run in training/runs/*/; do
  run=${run%/}
  [ -f "$run/config.json" ] && [ -f "$run/checkpoint.pt" ] || continue
  state=$("$PY" - "$run" <<'PY'
import json, sys, torch
run = sys.argv[1]
ck = torch.load(f"{run}/checkpoint.pt", map_location="cpu", weights_only=False)
steps = json.load(open(f"{run}/config.json"))["steps"]
print(f"{ck['step']} {steps}")
PY
)
  read -r step steps <<<"$state"
  if [ "$step" -ge "$steps" ]; then echo "$run: finished ($step/$steps)"; continue; fi
  if pgrep -f "distill --resume $run\$" >/dev/null || pgrep -f "distill --resume $run " >/dev/null; then
    echo "$run: already running ($step/$steps)"; continue
  fi
  if [ "${1:-}" = "--list" ]; then echo "$run: unfinished ($step/$steps)"; continue; fi
  echo "$run: resuming at $step/$steps (log $run/train.log)"
  OMP_NUM_THREADS=1 nohup "$VSR" distill --resume "$run" --threads 1 >>"$run/train.log" 2>&1 &
done
