#!/usr/bin/env bash
# The prepared GPU check (docs/gpu_check.md): every part of benchmarks/gpu_check.py from the
# working tree, each in its own process with its own timeout, under a time budget (--budget-s,
# default 480 s); results as JSON under --out (relative to the current folder):
#
#   benchmarks/gpu_check.sh --out gpu_check [--cpu-report PATH] [--parts a,b] [--skip a,b]
#   benchmarks/gpu_check.sh --smoke --out /tmp/gpu_check_smoke      # CPU rehearsal
#
# GPU_CHECK_TIMEOUT_S (default 570) bounds the whole run: timeout stops the driver and its part
# processes (one process group) if the driver itself hangs; summary.json keeps what finished.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
exec timeout --kill-after=15 "${GPU_CHECK_TIMEOUT_S:-570}" python3 -m benchmarks.gpu_check "$@"
