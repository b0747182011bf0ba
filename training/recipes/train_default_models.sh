#!/usr/bin/env bash
# Trains the bundled students and their no-KD twins (same steps), as the repo's models were made.
# Two runs at a time, one thread each; each resumes from its checkpoint if interrupted.
set -euo pipefail
cd "$(dirname "$0")/../.."
VSR=${VSR:-.venv/bin/vsr}
mkdir -p runs
for pair in "x2_kd x2_nokd" "x4_kd x4_nokd"; do
  for r in $pair; do
    "$VSR" --log-level WARNING distill --config "training/recipes/$r.json" > "runs/$r.log" 2>&1 &
  done
  wait
done

# Second session (issue 10): luma students, KD twins over 3 seeds in lock-step (one process, one thread), an RGB
# KD student riding along on seed 0 (RGB vs Y on the same batches); then the ablation, the bundled-model choice by
# held-out validation and the README table:
#   python -m training.lockstep --config training/recipes/x2_kd_v2.json --seeds 0 1 2 \
#     --variant 'kd={}' --variant 'nokd={"alpha": 1.0, "zoomout": 0}' \
#     --variant 'rgbkd={"_seeds": [0], "arch_config": {"channels": 24, "depth": 5, "expand": 2}}'
#   python -m training.seeds --scale 2 --run runs/x2-abl --install x2
#   python -m training.readme_table
# x4_kd_v2.json (luma, 29,752 params) is the same recipe at x4; it was not trained this session (no CPU time left).
