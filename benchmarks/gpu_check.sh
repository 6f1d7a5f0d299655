#!/usr/bin/env bash
# Everything the CUDA target needs checked, in one go, on a machine with a GPU:
#   1. the `cuda` tests on the real GPU (CUDA vs the NumPy reference on every test
#      architecture, random architectures, poisoned outputs, CuPy in/out; without a GPU
#      they run on the tests/cuda_emu emulation, here a missing GPU is an error) and the
#      NVRTC compile tests;
#   2. pairs/s of the CUDA backend (float32, float64) on the BENCHMARKS.md networks.
# Runs from the source tree (PYTHONPATH=.), no install needed.  Missing Python packages
# (lark, jinja2, pytest, hypothesis, cupy) are installed from a wheel directory:
#   benchmarks/gpu_check.sh [WHEEL_DIR]        (default: $INFINET_WHEELS or ./wheels)
# Prepare one on a networked machine with, e.g.:
#   pip download -d wheels lark jinja2 pytest hypothesis cupy-cuda12x
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
WHEELS="${1:-${INFINET_WHEELS:-wheels}}"
N="${GPU_CHECK_N:-128}"

missing=$("$PY" - <<'PY'
import importlib.util
mods = {"lark": "lark", "jinja2": "jinja2", "pytest": "pytest", "hypothesis": "hypothesis",
        "cupy": "cupy-cuda12x"}
print(" ".join(pkg for mod, pkg in mods.items() if importlib.util.find_spec(mod) is None))
PY
)
if [ -n "$missing" ]; then
    if [ -d "$WHEELS" ]; then
        echo "== installing from $WHEELS: $missing"
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" $missing
    else
        echo "error: missing Python packages: $missing (and no wheel directory $WHEELS)" >&2
        exit 2
    fi
fi

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c "import cupy; print('cupy', cupy.__version__, 'devices', cupy.cuda.runtime.getDeviceCount())"

echo "== tests (cuda on the GPU + nvrtc)"
log="$(mktemp)"
status=0
INFINET_CUDA_REQUIRE_GPU=1 "$PY" -m pytest -q -p no:cacheprovider -rs \
    tests/test_cuda.py tests/test_codegen_nvrtc.py > "$log" 2>&1 || status=$?
tail -25 "$log"

echo "== benchmark (pairs per second, ${N}x${N} pairs per net)"
"$PY" benchmarks/bench_backends.py --backends cuda --dtypes float32,float64 \
    --n1 "$N" --n2 "$N" --repeat 3
exit $status
