#!/usr/bin/env bash
# The one prepared check for a lent GPU machine. Run from the repository root:
#
#     bash benchmarks/gpu/check.sh      # results in $OUT (the device tool's folder), else ./gpu-results
#
# 1. gate:   a real GPU must be usable (CuPy sees it and runs work; not GPUGRAD_EMULATE_CUDA): if
#            not, the script fails here, loudly, and runs nothing else (benchmarks/gpu/probe.py gate);
# 2. warm:   nvidia-smi, Python/NumPy/CuPy/PyTorch/nvcc versions, `python3 -m gpugrad info` (which
#            compiles every kernels/*.cu through CuPy), then a few small training steps, so NVRTC's
#            and CuPy's own kernels are in CuPy's disk cache before anything is timed;
# 3. tests:  pytest -m cuda on tests/test_cuda.py, tests/test_kernels_cpu.py, tests/test_random_keys.py
#            (the same key's numbers as the CPU's) and tests/test_vmap.py, stopping at the first
#            failure (-x); without pytest, benchmarks/gpu/run_without_pytest.py runs them. The
#            step fails, loudly, when no CUDA test passed (all skipped is a failure, not a pass);
# 4. graphs: what CUDA graph capture under CuPy accepts (a RawKernel launch, an elementwise op, a
#            matmul, a memory-pool allocation, gpugrad's backward and Adam step): graph_capture.md;
# 5. bench:  benchmarks/gpu/bench_kernels.py (G1 kernels, most important rows first, then G2-G5
#            steps) inside a time budget;
# 6. summary: the benchmark table, the graph-capture table, then each step's status and time and
#            the test line, last.
#
# Installs nothing. Each step runs under a time limit; after the gate, a failing step does not
# stop the next (no `set -e`), and the summary is always printed. The limits add up to 295 s.
# Files left in the output folder (at most 8, none in subfolders): check.log (everything
# printed), summary.md, junit.xml, graph_capture.md, bench_kernels.md, bench_kernels.json.
# GG_LIMIT_GATE, GG_LIMIT_WARM, GG_LIMIT_TESTS, GG_LIMIT_GRAPHS and GG_LIMIT_BENCH override the
# limits (seconds); PYTHON the interpreter (default python3). For the script's own test only
# (tests/test_gpu_scripts.py, on the CUDA emulator): GG_GATE=off skips the gate and GG_TEST_K
# selects tests (pytest -k). Exit status: 0 when every step succeeded, else 1.
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
OUT_DIR="${OUT:-./gpu-results}"
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/{check.log,summary.md,junit.xml,graph_capture.md,bench_kernels.md,bench_kernels.json}
export OUT_DIR PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PY="${PYTHON:-python3}"
LOG="$OUT_DIR/check.log"
STEPFILE="$(mktemp)"
T0=$(date +%s)

# limits in seconds (the benchmark's own budget ends it 25 s before its limit)
LIMIT_GATE="${GG_LIMIT_GATE:-20}"
LIMIT_WARM="${GG_LIMIT_WARM:-55}"
LIMIT_TESTS="${GG_LIMIT_TESTS:-110}"
LIMIT_GRAPHS="${GG_LIMIT_GRAPHS:-20}"
LIMIT_BENCH="${GG_LIMIT_BENCH:-90}"

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
    local info=$?
    echo "--- warming CuPy's kernel cache"
    "$PY" benchmarks/gpu/probe.py warm && [ "$info" -eq 0 ]
}

run_tests() {
    local files=(tests/test_cuda.py tests/test_kernels_cpu.py tests/test_random_keys.py tests/test_vmap.py)
    if "$PY" -c "import pytest" 2>/dev/null; then
        local extra=()
        if "$PY" -c "import pytest_timeout" 2>/dev/null; then
            extra+=(--timeout=100)          # a hung test fails with a traceback instead of being killed
        fi
        # -o addopts: pyproject's addopts name pytest-benchmark's option, which may be missing here
        if [ -n "${GG_TEST_K:-}" ]; then
            extra+=(-k "$GG_TEST_K")
        fi
        "$PY" -m pytest -m cuda -q -x -o addopts=-ra -p no:cacheprovider --durations=10 \
            --junitxml="$OUT_DIR/junit.xml" "${extra[@]}" "${files[@]}"
        local rc=$?
        # all skipped is no check at all: fail loudly
        "$PY" benchmarks/gpu/probe.py tests-ran "$OUT_DIR/junit.xml" && return "$rc"
        return 3
    fi
    echo "pytest is not installed: running the cuda tests with benchmarks/gpu/run_without_pytest.py"
    local log
    log="$(mktemp)"
    "$PY" benchmarks/gpu/run_without_pytest.py -x "${files[@]}" | tee "$log"
    local rc=${PIPESTATUS[0]}
    if ! grep -qE '^== [0-9]+ passed' "$log"; then
        echo "!!!!!!!! NO CUDA TEST RAN: nothing passed, so nothing was checked on the GPU !!!!!!!!"
        rc=3
    fi
    rm -f "$log"
    return "$rc"
}
export -f env_report run_tests

if [ "${GG_GATE:-on}" = off ]; then
    echo "gate|off (GG_GATE=off: the script's own test)|0" >>"$STEPFILE"
    echo "=== gate: OFF (GG_GATE=off); 'cuda' is $("$PY" -c 'import gpugrad as g; print(g.cuda.get_device_name())' 2>&1)" \
        | tee "$LOG"
else
    {
        run_step gate "$LIMIT_GATE" "$PY" benchmarks/gpu/probe.py gate
    } 2>&1 | tee "$LOG"
fi
GATE_OK=0
grep -qE '^gate\|(ok|off \()' "$STEPFILE" && GATE_OK=1

if [ "$GATE_OK" -eq 1 ]; then
    {
        run_step warm "$LIMIT_WARM" bash -c env_report
        run_step tests "$LIMIT_TESTS" bash -c run_tests
        run_step graphs "$LIMIT_GRAPHS" "$PY" benchmarks/gpu/probe.py graphs --out "$OUT_DIR"
        run_step bench "$LIMIT_BENCH" "$PY" benchmarks/gpu/bench_kernels.py --out "$OUT_DIR" \
            --budget-s $((LIMIT_BENCH - 25))
    } 2>&1 | tee -a "$LOG"
else
    echo "=== the gate failed: no GPU to check, so nothing else ran (see above)" | tee -a "$LOG"
fi

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
    if [ "$GATE_OK" -ne 1 ]; then
        echo "**GATE FAILED: no usable GPU, nothing was checked or measured** (see check.log)"
        echo
    fi
    tests_line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b.* in [0-9.]+s|^== .* \(without pytest\) ==' \
        "$LOG" | tail -n 1)
    echo "tests: ${tests_line:-no result line (see check.log)}"
    if [ -f "$OUT_DIR/graph_capture.md" ]; then
        echo
        cat "$OUT_DIR/graph_capture.md"
    fi
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
    [ -f "$OUT_DIR/graph_capture.md" ] || echo "(no graph-capture table: see the graphs step above)"
    cat "$SUMMARY"
} | tee -a "$LOG"

failed=$(grep -vcE '\|ok\||^gate\|off ' "$STEPFILE")
rm -f "$STEPFILE"
[ "$failed" -eq 0 ]
