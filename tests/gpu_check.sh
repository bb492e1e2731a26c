#!/usr/bin/env bash
# The GPU check, in one command, for a machine with one CUDA GPU and no internet (8 minutes wall in all):
#   1. python -m pytest tests/test_cuda.py                  the CUDA tests
#   2. the lessons nbs/07_training.ipynb and nbs/16_cifar10.ipynb top to bottom, their `#| cuda` cells included,
#      offline (bundled digits, a synthetic CIFAR-10) and capped (tests/gpu_check.py lists every change)
#   3. python tests/bench_ddp.py --one cuda                  `torchrun --nproc-per-node 1` against the plain process:
#                                                           the same losses, and the images/s of both
#   4. minddpm_bench --size 64 --largest-batch on           minddpm against the original recipe, largest batch too
# They run in the order 1, 2, 3, 4; it goes on to the next part when one fails, and exits 1 if any failed (2: no CUDA GPU).
#
#   tests/gpu_check.sh [OUTDIR]      results in OUTDIR, else in $OUT when set, else in ./gpu_check_out:
#                                    gpu_check.json, summary.md, gpu_check.log, bench.json, lesson_*.png
#   GPU_CHECK_ALLOW_CPU=1 tests/gpu_check.sh    without a GPU: a rehearsal of the plumbing with tiny caps
#   GPU_CHECK_PARTS="lesson_13 bench" ...       only these parts (of: tests lesson_07 lesson_13 ddp bench)
#   GPU_CHECK_TRAIN_STEPS=500 ...               the lessons' training cap (default 300 on a GPU)
#
# Budget on the GPU: 440 s of parts + preflight, report and the timeouts' kill grace (~25 s) < 8 minutes. A part's
# timeout is the sum of the budgets so far minus the time already spent: what a part leaves goes to the next ones.
#   tests/test_cuda.py  70 s   (CUDA tests; compiling the tiny UNet is the long one)
#   lesson 07          120 s   (its CPU cells on the GPU, compiling the colab UNet, then its capped run)
#   lesson 16           90 s   (capped CIFAR-10 run, classifier, sampling, Inception features)
#   torchrun 1 GPU      60 s   (two process starts, 33 steps of the colab preset's UNet each)
#   minddpm_bench      100 s   (last: its largest-batch search takes whatever the others left)
# The CPU rehearsal runs the lessons' CPU cells as CI does (a minute or two each on 2 idle cores, several on
# busy ones), so it gets 60 + 360 + 300 + 120 + 180 s.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTDIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd) || exit 1
rm -f "$OUTDIR"/{gpu_check.json,summary.md,gpu_check.log,bench.json,lesson_07.png,lesson_13.png}
PY=${PYTHON:-python3}; command -v "$PY" >/dev/null || PY=python

# Temporary files (data, runs, compile caches, pytest's tmp_path) go to $WORK, removed at the end; parts run from
# there too, so nothing is written into the repo.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
export TMPDIR=$WORK PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
cd "$WORK" || exit 1

# On a bare machine minddpm is not installed: a package of links makes `minddpm`, and `minddpm.assets` (the
# bundled data/, as the wheel ships it), importable from this checkout.
SHIM=
if [ -n "${GPU_CHECK_SHIM:-}" ] || ! "$PY" -c 'import minddpm.assets' 2>/dev/null; then
  mkdir -p shim/minddpm && ln -s "$ROOT"/minddpm/*.py shim/minddpm/ && ln -s "$ROOT/data" shim/minddpm/assets
  export PYTHONPATH="$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"; SHIM=1
  echo "minddpm is not installed: using it from $ROOT"
fi

"$PY" "$ROOT/tests/gpu_check.py" preflight "$WORK/env.json"; rc=$?
if [ $rc = 0 ]; then MODE=cuda
elif [ $rc = 3 ] && [ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then MODE=cpu; echo "CPU REHEARSAL: tiny caps, not a GPU check"
elif [ $rc = 3 ]; then echo "gpu_check: needs a CUDA GPU (GPU_CHECK_ALLOW_CPU=1 rehearses the plumbing on a CPU)" >&2; exit 2
else echo "gpu_check: the preflight failed (is PyTorch installed?)" >&2; exit 1; fi
export GPU_CHECK_MODE=$MODE
if [ $MODE = cuda ]; then B=(70 120 90 60 100); else B=(60 360 300 120 180); fi
export GPU_CHECK_BUDGET_S=$(( B[0] + B[1] + B[2] + B[3] + B[4] ))

ms() { date +%s%3N; }
T0=$(ms); BUDGET=0
part() {  # part NAME BUDGET_S COMMAND...: run COMMAND under its timeout; output in $WORK/NAME.log
  local name=$1; BUDGET=$((BUDGET + $2)); shift 2
  [[ " ${GPU_CHECK_PARTS:-$name} " == *" $name "* ]] || return 0
  local limit=$(( BUDGET - ($(ms) - T0) / 1000 )); (( limit < 10 )) && limit=10
  echo "== $name (timeout $limit s): $*"
  local t=$(ms) rc
  timeout -k 5 "$limit" "$@" >"$WORK/$name.log" 2>&1; rc=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(ms) - t ))" "$limit" "$*" >>"$WORK/parts.tsv"
  echo "   exit $rc after $(( ($(ms) - t) / 1000 )) s"
}

# --noconftest: tests/conftest.py only serves the docs tests, and imports jupytext, which a bare GPU machine lacks
part tests "${B[0]}" "$PY" -m pytest "$ROOT/tests/test_cuda.py" -v -rs -p no:cacheprovider --noconftest \
     --rootdir "$ROOT" --junitxml "$WORK/test_cuda.xml"
part lesson_07 "${B[1]}" "$PY" "$ROOT/tests/gpu_check.py" lesson "$ROOT/nbs/07_training.ipynb" "$WORK/lesson_07.json"
part lesson_13 "${B[2]}" "$PY" "$ROOT/tests/gpu_check.py" lesson "$ROOT/nbs/16_cifar10.ipynb" "$WORK/lesson_13.json"
part ddp "${B[3]}" "$PY" "$ROOT/tests/bench_ddp.py" --one "$MODE"
if command -v minddpm_bench >/dev/null && [ -z "$SHIM" ]; then BENCH=(minddpm_bench)
else BENCH=("$PY" -c 'import sys; from minddpm.cli import minddpm_bench; minddpm_bench(sys.argv[1:])'); fi
if [ $MODE = cuda ]; then BENCH+=(--size 64 --largest-batch on)
else BENCH+=(--size 8 --batch 2 --steps 1 --precision fp32 --compile off --largest-batch off); fi
part bench "${B[4]}" "${BENCH[@]}" --json "$OUTDIR/bench.json"

"$PY" "$ROOT/tests/gpu_check.py" report "$WORK" "$OUTDIR"; rc=$?
cat "$OUTDIR/summary.md"
echo "results: $OUTDIR (gpu_check.json, summary.md, gpu_check.log)"
exit $rc
