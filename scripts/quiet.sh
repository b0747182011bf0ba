#!/usr/bin/env bash
# Run one command with the CPU to itself: pause every training process (SIGSTOP: no work lost, memory kept), run the
# command, resume them (SIGCONT), also when the command fails or is interrupted. Benchmarks and full test runs go
# through this (DEVELOPERS.md: benchmarks pause training). The 1-minute load average before and after is printed so
# that results can record it.
# Usage: scripts/quiet.sh CMD [ARGS...]
set -uo pipefail
pids=$(pgrep -f "vsr distill|training.lockstep" || true)
resume() { [ -n "$pids" ] && kill -CONT $pids 2>/dev/null; true; }
trap resume EXIT INT TERM
[ -n "$pids" ] && kill -STOP $pids && echo "quiet.sh: paused training (pids $(echo $pids))" >&2
sleep 5  # let the load settle
echo "quiet.sh: load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$@"; rc=$?
echo "quiet.sh: load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exit $rc
