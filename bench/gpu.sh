#!/usr/bin/env bash
# clsp's GPU figures in one table (bench/gpu.py): bench/gpu.sh [--dry-run] [bench/gpu.py options].
# Under 8 minutes on one current GPU; --dry-run runs every part on the CPU at toy sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec timeout 480 "$PYTHON" bench/gpu.py "$@"
