#!/usr/bin/env bash
# The full roiviz-vs-torchvision comparison (W1, W2, W3; every op and strategy; fwd and fwd+bwd;
# peak memory of one W1 forward), written as JSON into benchmarks/results/.
#
#   benchmarks/compare_torchvision.sh                      # default python: /work/tvenv/bin/python
#   PYTHON=path/to/venv/bin/python benchmarks/compare_torchvision.sh [OUT.json] [roiviz bench options]
#
# The python must have torch==2.14.1 and torchvision==0.29.1; roiviz is taken from this checkout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-/work/tvenv/bin/python}"
if ! "$py" -c "import torchvision" 2>/dev/null; then
    echo "compare_torchvision.sh: '$py' cannot import torchvision; set PYTHON to a python that has" \
         "torch==2.14.1 and torchvision==0.29.1 (see docs/benchmarks.md)" >&2
    exit 2
fi
out="${1:-$root/benchmarks/results/$(date -u +%Y-%m-%d_%H%M)_cpu.json}"
shift || true
mkdir -p "$(dirname "$out")"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" -m roiviz bench --json "$out" "$@"
