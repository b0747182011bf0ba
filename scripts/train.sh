#!/usr/bin/env bash
# Continue every unfinished training run under training/runs/ in the background, one process and one thread each
# (two one-thread runs beat one two-thread run on 2 cores: 9.2 vs 12.6 steps/s, bench/results/train-speed-cpu.json).
# A run is unfinished when its checkpoint's step is below its config's steps: a `vsr distill` run, or a lock-step
# ablation (`python -m training.lockstep`, config.json with "base"). At most JOBS runs at once (default: the number of
# cores); when more are waiting, a follower (`--follow`, nohup'd) starts each as a slot frees and exits when none waits.
# Logs: training/runs/<run>/train.log.
# Usage: scripts/train.sh [--list | --follow]   (--list: print each run's state, start nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VSR=${VSR:-.venv/bin/vsr}
JOBS=${JOBS:-$(nproc)}
mode=${1:-}

state_of() {  # "<step> <steps> <kind>" of a run folder
  "$PY" - "$1" <<'PY'
import json, sys, torch
run = sys.argv[1]
cfg = json.load(open(f"{run}/config.json"))
ck = torch.load(f"{run}/checkpoint.pt", map_location="cpu", weights_only=False)
if "base" in cfg:  # lock-step: every model is at the same step
    print(f"{next(iter(ck['states'].values()))['step']} {cfg['base']['steps']} lockstep")
else:
    print(f"{ck['step']} {cfg['steps']} distill")
PY
}

running() { pgrep -f "vsr distill|training.lockstep" | wc -l; }
# a training process holds an flock on <run>/.lock (training.run.hold_run_lock) for as long as it runs
is_running() { ! flock -n "$1/.lock" true; }

pass() {  # one look at every run; prints how many are still waiting for a slot
  local waiting=0
  for run in training/runs/*/; do
    run=${run%/}
    [ -f "$run/config.json" ] && [ -f "$run/checkpoint.pt" ] || continue
    read -r step steps kind <<<"$(state_of "$run")"
    if [ "$step" -ge "$steps" ]; then [ "$mode" = "--follow" ] || echo "$run: finished ($step/$steps)"; continue; fi
    if is_running "$run"; then [ "$mode" = "--follow" ] || echo "$run: running ($step/$steps)"; continue; fi
    if [ "$mode" = "--list" ]; then echo "$run: unfinished ($step/$steps)"; continue; fi
    if [ "$(running)" -ge "$JOBS" ]; then
      [ "$mode" = "--follow" ] || echo "$run: waiting for a free core ($step/$steps)"
      waiting=$((waiting + 1)); continue
    fi
    echo "$run: resuming at $step/$steps (log $run/train.log)"
    if [ "$kind" = lockstep ]; then
      OMP_NUM_THREADS=1 nohup "$PY" -m training.lockstep --resume "$run" >>"$run/train.log" 2>&1 &
    else
      OMP_NUM_THREADS=1 nohup "$VSR" distill --resume "$run" --threads 1 >>"$run/train.log" 2>&1 &
    fi
    sleep 1  # let pgrep see it before the next run is considered
  done
  echo "$waiting" >"${TMPDIR:-/tmp}/vsr-train-waiting"
}

pass
waiting=$(cat "${TMPDIR:-/tmp}/vsr-train-waiting")
if [ "$mode" = "--follow" ]; then
  while [ "$waiting" -gt 0 ]; do
    sleep 60
    pass
    waiting=$(cat "${TMPDIR:-/tmp}/vsr-train-waiting")
  done
elif [ "$mode" != "--list" ] && [ "$waiting" -gt 0 ] && ! pgrep -f "train.sh --follow" >/dev/null; then
  nohup "$0" --follow >>training/runs/follow.log 2>&1 &
  echo "$waiting run(s) wait for a free core; scripts/train.sh --follow starts them (log training/runs/follow.log)"
fi
