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
