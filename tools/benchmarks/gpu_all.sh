#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks.md ("Training-step speed and memory", issue 8) in one command.
#
# Usage:  bash tools/benchmarks/gpu_all.sh [CONFIG] [OUT_DIR]
#   CONFIG   an ESL config at paper scale; default configs/esl/esl_r101_voc_1-8.py, and when that file does
#            not exist the built-in stand-in `builtin:r101-voc` (mmseg's DeepLabv3+ ResNet-101-D8, 21 classes,
#            the paper's ESL settings, random init). Any ESLSegmentor config works.
#   OUT_DIR  where JSON, markdown and logs go; default work_dirs/bench.
# Environment: PYTHON (default python3); BENCH_BUDGET_S, seconds after which train_step.py starts no new run
#   (default 270; the runs not started are recorded as skipped); BENCH_ITERS / BENCH_WARMUP (default 20 / 5).
#   Worst case: BENCH_BUDGET_S + 75 s (step 1's hard timeout) + 180 s (step 2's) = 8.75 minutes by default;
#   lower BENCH_BUDGET_S if the environment set-up takes part of a 9-minute slot.
#   For a rehearsal at small scale (e.g. on a CPU): BENCH_DEVICE (cuda), BENCH_AMP (none,fp16,bf16), BENCH_CROP
#   (513), BENCH_LABELED / BENCH_UNLABELED (8 / 8), BENCH_IMAGES (1464), BENCH_SIZE (513), e.g.
#   BENCH_DEVICE=cpu BENCH_AMP=none BENCH_CROP=48 BENCH_LABELED=2 BENCH_UNLABELED=2 BENCH_ITERS=2 BENCH_WARMUP=1 \
#   BENCH_IMAGES=4 BENCH_SIZE=48 bash tools/benchmarks/gpu_all.sh configs/esl/tiny_esl_voc.py /tmp/rehearsal
#
# What runs, most important first (estimated 6-7 minutes on one H100; not measured yet):
#   1. train_step.py at 513², 8 labeled + 8 unlabeled images (+ 8 CutMix partners), median of 20 iterations
#      after 5 warm-up ones: all five methods (a)-(e) in fp32 (ratios to (a) and (d)); then (d) floor and (e)
#      ESL under fp16 and under bf16 AMP (mmengine AmpOptimWrapper), which gives (e)/(d) at each precision;
#      (a)-(c) under AMP are left out to fit the time. --components: the breakdown of (e) at every mode.
#   2. prototype_init.py: PrototypeInitHook on 1464 labeled 513² images (VOC's labeled set): teacher forward on
#      the GPU in batches of 8, reservoir and K-means on the CPU, each stage timed (the breakdown separates
#      reservoir + K-means from the network; --feature-only would replace the network by random E^t).
# Every step has a hard `timeout`; train_step.py rewrites its JSON after every run, so a cut-off step still
# leaves the runs it finished. Exit status: non-zero if any step failed or timed out.
#
# On a machine without mmcv/mmengine/mmseg (the lent GPU machines), the device environment `.whl/env.sh` is
# sourced first when it exists (carried wheels into /tmp/site).
set -u
CONFIG=${1:-configs/esl/esl_r101_voc_1-8.py}
OUT_DIR=${2:-work_dirs/bench}
PY=${PYTHON:-python3}
BUDGET=${BENCH_BUDGET_S:-270}
ITERS=${BENCH_ITERS:-20}
WARMUP=${BENCH_WARMUP:-5}
DEVICE=${BENCH_DEVICE:-cuda}
AMP=${BENCH_AMP:-none,fp16,bf16}
CROP=${BENCH_CROP:-513}
LABELED=${BENCH_LABELED:-8}
UNLABELED=${BENCH_UNLABELED:-8}
IMAGES=${BENCH_IMAGES:-1464}
SIZE=${BENCH_SIZE:-513}
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
export PYTHONUNBUFFERED=1

if ! "$PY" -c 'import mmcv, mmengine, mmseg' >/dev/null 2>&1; then
  if [ -f .whl/env.sh ]; then
    echo "[gpu_all] mmcv/mmengine/mmseg missing: sourcing .whl/env.sh"
    # shellcheck disable=SC1091
    . .whl/env.sh
  else
    echo "[gpu_all] ERROR: mmcv, mmengine and mmseg are not importable with $PY; run tools/setup_env.sh" >&2
    exit 1
  fi
fi
if [ "$CONFIG" != builtin:r101-voc ] && [ ! -f "$CONFIG" ]; then
  echo "[gpu_all] $CONFIG does not exist: using the built-in stand-in builtin:r101-voc"
  CONFIG=builtin:r101-voc
fi
mkdir -p "$OUT_DIR"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true; nproc
  "$PY" -c 'import torch, mmcv, mmengine, mmseg; print("torch", torch.__version__, "cuda", torch.version.cuda,
"| mmcv", mmcv.__version__, "mmengine", mmengine.__version__, "mmseg", mmseg.__version__)'
  git rev-parse HEAD 2>/dev/null; echo "config: $CONFIG"; } > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"
START=$(date +%s)
STATUS=0

echo "[gpu_all] 1/2 training step (budget ${BUDGET} s)"
timeout $((BUDGET + 75)) "$PY" tools/benchmarks/train_step.py --config "$CONFIG" --crop "$CROP" \
  --labeled "$LABELED" --unlabeled "$UNLABELED" --iters "$ITERS" --warmup "$WARMUP" --device "$DEVICE" \
  --methods sup,mt-hard,mt-dsl,floor,esl --amp "$AMP" --amp-methods floor,esl --components --component-iters 5 \
  --time-budget "$BUDGET" \
  --json "$OUT_DIR/train_step.json" --md "$OUT_DIR/train_step.md" 2>&1 | tee "$OUT_DIR/train_step.log"
rc=${PIPESTATUS[0]}; [ "$rc" -ne 0 ] && { echo "[gpu_all] train_step.py exited with $rc"; STATUS=1; }
echo "[gpu_all] elapsed $(( $(date +%s) - START )) s"

echo "[gpu_all] 2/2 prototype initialisation, $IMAGES images"
timeout 180 "$PY" tools/benchmarks/prototype_init.py --config "$CONFIG" --images "$IMAGES" --size "$SIZE" \
  --batch-size 8 --device "$DEVICE" --json "$OUT_DIR/prototype_init.json" --md "$OUT_DIR/prototype_init.md" 2>&1 \
  | grep -v 'task/s' | tee "$OUT_DIR/prototype_init.log"
rc=${PIPESTATUS[0]}; [ "$rc" -ne 0 ] && { echo "[gpu_all] prototype_init.py exited with $rc"; STATUS=1; }
echo "[gpu_all] elapsed $(( $(date +%s) - START )) s"

echo "[gpu_all] done in $(( $(date +%s) - START )) s; results in $OUT_DIR"
exit $STATUS
