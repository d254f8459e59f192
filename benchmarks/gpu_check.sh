#!/usr/bin/env bash
# GPU figures of igcv-nas in one go (issue 11, item 6): run from the repository root of a fresh
# copy on a machine with an NVIDIA GPU; finishes in under 10 minutes (every step has its own
# timeout, so one hang costs only that step). Prints one figure per line ("FIGURE name = value").
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine
#   bash benchmarks/gpu_check.sh --cpu           # plumbing check on a CPU-only machine (tiny sizes)
#
# Uses whatever python has torch: $PYTHON, else .venv/bin/python, else python3 (it never
# installs torch: a CUDA build must match the machine's driver). Installs the project with
# `pip install -e . --no-deps` when `import igcv_nas` fails, and says what is missing when it
# cannot run. Data: CIFAR-10 in $IGCV_DATA_DIR or ./.data; when absent it is unpacked from a
# bundled copy (prepare_cifar10.py in $GPU_CHECK_SHARED, shared/data, ../shared/data or
# /work/shared/data). Outputs (logs, CSVs, the search's run directory) go to $OUT when set,
# else benchmarks/results/gpu_check/.
#
# Steps and default timeouts (seconds; override with T_<STEP>=...):
#   setup 60 | env 30 | trainer 75 | amp 45 | search 130 | fidelity 200   (total <= 540)
#   trainer:  ProxyTrainer vs a plain DataLoader loop, mobilenet_v2 and igcv3_d (CIFAR, width 1)
#   amp:      ProxyTrainer with AMP on vs off
#   search:   igcv-search --gpus-per-trial 1 --trials 4 --steps 60 --scheduler none (mixed, 80M)
#   fidelity: 6 mixed archs at 80M: the GPU default proxy (igcv_nas.evaluate.proxy.GPU_BUDGET) and the
#             CPU default recipe against a 16-epoch reference (benchmarks/gpu_figures.py)
set -u
cd "$(dirname "$0")/.." || exit 2
CPU=0
for arg in "$@"; do
  case "$arg" in
    --cpu|--dry-run) CPU=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (accepted: --cpu)"; exit 2 ;;
  esac
done
START=$(date +%s)
OUTDIR=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUTDIR"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONWARNINGS=ignore::DeprecationWarning
FAILED=()

step() {  # step NAME TIMEOUT CMD...: run with a timeout, log to $OUTDIR/NAME.log, echo figures
  local name=$1 t=$2; shift 2
  local var="T_${name^^}"; t=${!var:-$t}
  echo "== $name (timeout ${t}s, $(($(date +%s) - START))s elapsed)"
  timeout --kill-after=10 "$t" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  grep -E '^(FIGURE|MISSING|#|  arch)' "$OUTDIR/$name.log"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "TIMEOUT $name after ${t}s (log: $OUTDIR/$name.log)"; FAILED+=("$name:timeout")
  elif [ $rc -ne 0 ]; then
    echo "FAILED $name (exit $rc); last lines of $OUTDIR/$name.log:"; tail -n 8 "$OUTDIR/$name.log"
    FAILED+=("$name:$rc")
  fi
  return $rc
}

# -- python with torch ----------------------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in .venv/bin/python python3 python; do
    if command -v "$c" >/dev/null 2>&1 && timeout 60 "$c" -c 'import torch' >/dev/null 2>&1; then
      PY=$c; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "MISSING torch: no python here imports torch (tried \$PYTHON, .venv/bin/python, python3,"
  echo "  python); install a CUDA build of torch for this driver, or run with PYTHON=/path/to/python"
  exit 2
fi
echo "gpu_check: python $PY; outputs in $OUTDIR; $( [ $CPU = 1 ] && echo 'CPU PLUMBING CHECK (--cpu): figures are not GPU figures' || echo 'GPU run')"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# -- the project ----------------------------------------------------------------------------
if ! timeout 60 "$PY" -c 'import igcv_nas' >/dev/null 2>&1; then
  echo "== setup: pip install -e . --no-deps"
  timeout "${T_SETUP:-60}" "$PY" -m pip install -q -e . --no-deps > "$OUTDIR/setup.log" 2>&1 \
    || { echo "MISSING igcv_nas: pip install -e . --no-deps failed:"; tail -n 5 "$OUTDIR/setup.log"; }
fi
FLAG=(); [ $CPU = 1 ] && FLAG=(--cpu)
step env 30 "$PY" benchmarks/gpu_figures.py "${FLAG[@]}" env
cat "$OUTDIR/env.log" | grep -vE '^(FIGURE|MISSING)' | sed 's/^/  /'
if grep -q '^MISSING \(torch\|CUDA\|igcv_nas\|numpy\)' "$OUTDIR/env.log"; then
  echo "gpu_check: cannot run (see MISSING above)"; exit 2
fi
HAVE_RAY=1; grep -q '^MISSING \(ray\|optuna\|pandas\|yaml\)' "$OUTDIR/env.log" && HAVE_RAY=0

# -- data -----------------------------------------------------------------------------------
DATA=${IGCV_DATA_DIR:-$PWD/.data}
if [ ! -f "$DATA/cifar-10-batches-py/test_batch" ]; then
  for d in "${GPU_CHECK_SHARED:-}" shared/data ../shared/data /work/shared/data; do
    if [ -n "$d" ] && [ -f "$d/prepare_cifar10.py" ]; then
      echo "== data: unpacking the bundled CIFAR-10 from $d into $DATA"
      timeout 120 "$PY" "$d/prepare_cifar10.py" "$DATA" > "$OUTDIR/data.log" 2>&1 && break
    fi
  done
fi
if [ ! -f "$DATA/cifar-10-batches-py/test_batch" ]; then
  echo "MISSING CIFAR-10: not in $DATA/cifar-10-batches-py and no prepare_cifar10.py found;"
  echo "  set IGCV_DATA_DIR, or put shared/data/{prepare_cifar10.py,cifar10-jpeg.tar.gz} here"
  exit 2
fi
export IGCV_DATA_DIR=$DATA

# -- figures --------------------------------------------------------------------------------
if [ $CPU = 1 ]; then
  TR=(--width 0.25 --batch 32 --steps 2 --rounds 2 --workers 0)
  SEARCH=(--trials 2 --steps 4 --gpus-per-trial 0 --val-size 200 --max-concurrent 1)
  FID=(--n 3)
else
  TR=(--width 1.0 --batch 256 --steps 20 --rounds 3 --workers 4)
  SEARCH=(--trials 4 --steps 60 --gpus-per-trial 1)
  FID=(--n 6 --ref-epochs 16)
fi
step trainer 75 "$PY" benchmarks/gpu_figures.py "${FLAG[@]}" --data-dir "$DATA" trainer "${TR[@]}"
step amp 45 "$PY" benchmarks/gpu_figures.py "${FLAG[@]}" --data-dir "$DATA" amp "${TR[@]}"
if [ $HAVE_RAY = 1 ]; then
  RUN="$OUTDIR/search-run"; rm -rf "$RUN"
  step search 130 "$PY" -m igcv_nas.cli.search --space mixed --flops 80M --flops-min 64M \
      --scheduler none --quiet --data-dir "$DATA" --run-dir "$RUN" "${SEARCH[@]}"
  timeout 30 "$PY" benchmarks/gpu_figures.py "${FLAG[@]}" search-summary "$RUN"
else
  echo "SKIPPED search: ray/optuna/pandas/yaml missing (see MISSING above)"; FAILED+=("search:missing")
fi
rm -f "$OUTDIR/gpu_fidelity.csv"
step fidelity 200 "$PY" benchmarks/gpu_figures.py "${FLAG[@]}" --data-dir "$DATA" fidelity \
    "${FID[@]}" --csv "$OUTDIR/gpu_fidelity.csv"

echo "gpu_check: done in $(($(date +%s) - START)) s; ${#FAILED[@]} step(s) failed or timed out${FAILED[*]:+: ${FAILED[*]}}"
[ ${#FAILED[@]} -eq 0 ]
