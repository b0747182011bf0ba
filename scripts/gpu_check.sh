#!/usr/bin/env bash
# One-shot GPU check (< 8 min on one CUDA device): the GPU tests, then `vsr bench gpu` (960x540 -> 1920x1080, fp16,
# throughput vs batch, 30 fps streams sustained with p99 < 50 ms, fraction of the measured fp16 matmul peak, nvJPEG /
# NVDEC / NVENC availability), written to bench/results/gpu-cuda.json. Run from anywhere; uses $PY (default python3).
#   scripts/gpu_check.sh            on the GPU host (../shared/gpu/README.md: install .whl/ first if av/fastapi lack)
#   scripts/gpu_check.sh --dry-run  the same steps on CPU with a tiny frame, results to a temp folder (CI runs it:
#                                   tests/bench/test_gpu_check.py), so the script is known to work before a GPU is lent
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ -d .whl ] && ! "$PY" -c "import av, fastapi" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)
if [ "$DRY" = 1 ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  # the GPU tests' collection (they skip without CUDA) and the bench on CPU
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/vsr tests/service/test_engine.py
  VSR_BENCH_RESULTS=$out timeout 180 "$PY" -m vsr_cli --log-level WARNING bench gpu --dry-run
  test -s "$out/gpu-dryrun-cpu.json"
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['rows'] and r['dry_run']" "$out/gpu-dryrun-cpu.json"
else
  nvidia-smi || true
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
  timeout 240 "$PY" -m vsr_cli --log-level WARNING bench gpu
  ls -l bench/results/gpu-*.json
fi
echo "gpu_check: ok in $(( $(date +%s) - start )) s (dry run: $DRY)"
