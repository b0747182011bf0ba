#!/usr/bin/env bash
# Trains x2-camera (training/recipes/x2_camera.json) in the background on one thread, resumable: run it again after
# an interruption and it continues from runs/x2-camera/checkpoint.pt. Writes its process group id to $PIDFILE
# (so that benchmarks can pause it) and removes it when the run ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PIDFILE=${PIDFILE:-runs/x2-camera.pid}
mkdir -p runs "$(dirname "$PIDFILE")"
ps -o pgid= -p $$ | tr -d ' ' > "$PIDFILE"
trap 'rm -f "$PIDFILE"' EXIT
"$PY" -m vsr_cli --log-level WARNING distill --config training/recipes/x2_camera.json > runs/x2-camera.log 2>&1
