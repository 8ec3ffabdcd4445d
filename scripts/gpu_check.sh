#!/usr/bin/env bash
# Check roiviz on a CUDA machine in one command (`make gpu-check`), from the repository root:
#   1. a CUDA torch, torchvision and triton: those installed are used when they work; otherwise
#      wheels carried in .whl/ are installed, else the pinned versions below from PyPI;
#   2. tests/test_cuda.py (every op and strategy on cuda against the CPU / the reference,
#      gradcheck in float64, two backward runs bit-identical, no host sync with a fixed
#      sampling_ratio);
#   3. scripts/gpu_check.py: exactness and determinism on W1/W3, then `roiviz bench --device cuda`
#      against torchvision's CUDA kernels in the same process -> gpu-check-<date>.json + .png.
# Results go to $OUT when it is set (the device tool brings that folder back), else to
# benchmarks/results/. Expected: 3-5 minutes on one H200 with the packages already installed
# (most of it Triton compiling its kernels on first use), plus the download when installing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
# Pinned where they are installed: torch's PyPI wheels for Linux are CUDA builds and bring triton.
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

have_cuda_stack() {
    "$PY" - <<'EOF'
import torch, torchvision, triton  # noqa: F401
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}, "
      f"triton {triton.__version__} on {torch.cuda.get_device_name(0)}")
EOF
}

echo "== 1. packages"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if ! have_cuda_stack; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    else
        "$PY" -m pip install -q "$TORCH_PIN" "$TORCHVISION_PIN"
    fi
    have_cuda_stack
fi
"$PY" -c "import numpy, matplotlib, tqdm, pytest, hypothesis" 2>/dev/null \
    || "$PY" -m pip install -q "numpy>=1.24" "matplotlib>=3.7" "tqdm>=4.60" "pytest>=7.4" hypothesis

echo "== 2. tests/test_cuda.py"
start=$SECONDS
set +e
"$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$DEST/gpu-check-pytest.log"
tests=${PIPESTATUS[0]}
set -e
echo "tests: exit $tests in $((SECONDS - start)) s"

echo "== 3. exactness, determinism and timings against torchvision"
start=$SECONDS
"$PY" scripts/gpu_check.py --out "$DEST"
echo "bench: $((SECONDS - start)) s"
exit "$tests"
