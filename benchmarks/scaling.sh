#!/usr/bin/env bash
# Scaling sweeps (time vs number of ROIs, output size, channels) around W1, roiviz and
# torchvision when importable, written as JSON rows for roiviz.viz.plot_scaling.
#
#   benchmarks/scaling.sh [OUT.json] [roiviz bench options, e.g. --passes fwd fwd+bwd]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-/work/tvenv/bin/python}"
out="${1:-$root/benchmarks/results/$(date -u +%Y-%m-%d_%H%M)_scaling.json}"
shift || true
mkdir -p "$(dirname "$out")"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" -m roiviz bench --scaling --json "$out" "$@"
