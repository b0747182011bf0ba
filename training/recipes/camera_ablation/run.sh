#!/usr/bin/env bash
# The clean-share ablation of x2-camera: short fine-tunes one after another (one training slot, one thread),
# each resumable from its checkpoint. Compare them with the held-out rows of runs/<name>/metrics.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
mkdir -p runs
for r in "$@"; do
  "$PY" -m vsr_cli --log-level WARNING distill --config "training/recipes/camera_ablation/$r.json" > "runs/camera-$r.log" 2>&1
done
