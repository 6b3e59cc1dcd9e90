#!/usr/bin/env bash
# The one prepared check for a lent GPU machine. Run from the repository root:
#
#     bash benchmarks/gpu/check.sh      # results in $OUT (the device tool's folder), else ./gpu-results
#
# 1. env:   nvidia-smi, Python/NumPy/CuPy/PyTorch/nvcc versions, `python3 -m gpugrad info`
#           (which also compiles every kernels/*.cu through CuPy: the first NVRTC builds);
# 2. tests: pytest -m cuda on tests/test_cuda.py and tests/test_kernels_cpu.py, stopping at the
#           first failure (-x); without pytest, benchmarks/gpu/run_without_pytest.py runs them;
# 3. bench: benchmarks/gpu/bench_kernels.py (G1 kernels, G2-G5 steps) inside a time budget;
# 4. summary: the benchmark table, then each step's status and time and the test line, last.
#
# Installs nothing. Each step runs under a time limit; a failing step does not stop the next
# (no `set -e`), and the summary is always printed. About 2-3 minutes on an H200; the limits
# add up to 295 s. Files left in the output folder (at most 8, none in subfolders): check.log
# (everything printed), summary.md, junit.xml, bench_kernels.md, bench_kernels.json.
# GG_LIMIT_ENV, GG_LIMIT_TESTS and GG_LIMIT_BENCH override the limits (seconds); PYTHON the
# interpreter (default python3). Exit status: 0 when every step succeeded, else 1.
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
OUT_DIR="${OUT:-./gpu-results}"
mkdir -p "$OUT_DIR"
export OUT_DIR PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PY="${PYTHON:-python3}"
LOG="$OUT_DIR/check.log"
STEPFILE="$(mktemp)"
T0=$(date +%s)

# limits in seconds: env, tests, bench (the benchmark's own budget ends it 30 s before its limit)
LIMIT_ENV="${GG_LIMIT_ENV:-45}"
LIMIT_TESTS="${GG_LIMIT_TESTS:-135}"
LIMIT_BENCH="${GG_LIMIT_BENCH:-115}"

# run_step NAME LIMIT CMD...: run CMD under `timeout`; record "NAME|status|seconds" in $STEPFILE
run_step() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (limit ${limit}s): $*"
    local start rc status
    start=$(date +%s)
    timeout -k 10 "$limit" "$@"
    rc=$?
    case $rc in
        0) status="ok" ;;
        124 | 137) status="TIMED OUT after ${limit}s" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    echo "$name|$status|$(($(date +%s) - start))" >>"$STEPFILE"
    echo "=== $name: $status in $(($(date +%s) - start))s"
}

env_report() {
    echo "--- nvidia-smi"
    nvidia-smi || echo "nvidia-smi failed"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw \
        --format=csv || true
    echo "--- versions"
    "$PY" --version
    "$PY" - <<'EOF'
import importlib
for name in ("numpy", "cupy", "torch", "pytest"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {mod.__version__}")
    except Exception as err:  # noqa: BLE001
        print(f"{name}: not importable ({type(err).__name__}: {err})")
try:
    import cupy
    rt = cupy.cuda.runtime
    print(f"CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}, {rt.getDeviceCount()} device(s)")
except Exception as err:  # noqa: BLE001
    print(f"cupy CUDA: {type(err).__name__}: {err}")
try:
    import torch
    print(f"torch CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
except Exception as err:  # noqa: BLE001
    print(f"torch: {type(err).__name__}: {err}")
EOF
    (nvcc --version 2>/dev/null | tail -n 2) || echo "nvcc: not on PATH"
    echo "--- $PY -m gpugrad info"
    "$PY" -m gpugrad info
}

run_tests() {
    local files=(tests/test_cuda.py tests/test_kernels_cpu.py)
    if "$PY" -c "import pytest" 2>/dev/null; then
        local extra=()
        if "$PY" -c "import pytest_timeout" 2>/dev/null; then
            extra+=(--timeout=100)          # a hung test fails with a traceback instead of being killed
        fi
        # -o addopts: pyproject's addopts name pytest-benchmark's option, which may be missing here
        "$PY" -m pytest -m cuda -q -x -o addopts=-ra -p no:cacheprovider --durations=10 \
            --junitxml="$OUT_DIR/junit.xml" "${extra[@]}" "${files[@]}"
    else
        echo "pytest is not installed: running the cuda tests with benchmarks/gpu/run_without_pytest.py"
        "$PY" benchmarks/gpu/run_without_pytest.py -x "${files[@]}"
    fi
}
export -f env_report run_tests

{
    run_step env "$LIMIT_ENV" bash -c env_report
    run_step tests "$LIMIT_TESTS" bash -c run_tests
    run_step bench "$LIMIT_BENCH" "$PY" benchmarks/gpu/bench_kernels.py --out "$OUT_DIR" \
        --budget-s $((LIMIT_BENCH - 30))
} 2>&1 | tee "$LOG"

# ----------------------------------------------------------------------------- summary
SUMMARY="$OUT_DIR/summary.md"
{
    echo "# gpugrad GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "| step | status | seconds |"
    echo "|---|---|---|"
    while IFS='|' read -r name status secs; do
        echo "| $name | $status | $secs |"
    done <"$STEPFILE"
    echo "| total | | $(($(date +%s) - T0)) |"
    echo
    tests_line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b.* in [0-9.]+s|^== .* \(without pytest\) ==' \
        "$LOG" | tail -n 1)
    echo "tests: ${tests_line:-no result line (see check.log)}"
} >"$SUMMARY"

{
    echo
    echo "=================================================================== summary"
    if [ -f "$OUT_DIR/bench_kernels.md" ]; then
        cat "$OUT_DIR/bench_kernels.md"
    else
        echo "(no benchmark table: see the bench step above)"
    fi
    echo
    cat "$SUMMARY"
} | tee -a "$LOG"

failed=$(grep -vc '|ok|' "$STEPFILE")
rm -f "$STEPFILE"
[ "$failed" -eq 0 ]
