#!/usr/bin/env bash
# Smoke run (`make smoke`): generates the tiny dataset, trains
# the tiny supervised config with tools/train.py, resumes it, and evaluates it with mmseg's *own*
# tools/test.py, printing the mIoU. No downloads; a couple of minutes on 2 CPU cores.
set -euo pipefail
PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK_DIR:-$ROOT/work_dirs/smoke_demo}
DATA=$WORK/data
CONFIG=$ROOT/configs/esl/tiny_supervised_voc.py
ITERS=${ITERS:-300}
HALF=$((ITERS / 2))

if [ ! -f "$DATA/ImageSets/Segmentation/val.txt" ]; then
    "$PYTHON" "$ROOT/tools/make_tiny_dataset.py" --out "$DATA" --num-train 32 --num-val 8
fi
DATA_OPTS=(train_dataloader.dataset.data_root="$DATA" val_dataloader.dataset.data_root="$DATA"
           test_dataloader.dataset.data_root="$DATA")
SCHEDULE=(train_cfg.max_iters="$HALF" train_cfg.val_interval="$ITERS" default_hooks.checkpoint.interval="$HALF"
          default_hooks.logger.interval=50 "param_scheduler.0.end=$ITERS")

start=$(date +%s)
echo "== train $HALF iterations (tools/train.py) =="
"$PYTHON" "$ROOT/tools/train.py" "$CONFIG" --work-dir "$WORK/train" --cfg-options "${DATA_OPTS[@]}" "${SCHEDULE[@]}"
echo "== resume and train to $ITERS iterations =="
"$PYTHON" "$ROOT/tools/train.py" "$CONFIG" --work-dir "$WORK/train" --resume \
    --cfg-options "${DATA_OPTS[@]}" "${SCHEDULE[@]}" train_cfg.max_iters="$ITERS"
echo "== evaluate with mmseg's own tools/test.py =="
MMSEG_TOOLS=$("$PYTHON" -c 'import mmseg, os; print(os.path.join(os.path.dirname(mmseg.__file__), ".mim", "tools"))')
"$PYTHON" "$MMSEG_TOOLS/test.py" "$CONFIG" "$WORK/train/iter_$ITERS.pth" --work-dir "$WORK/test" \
    --cfg-options "${DATA_OPTS[@]}" | tee "$WORK/test.log"
miou=$(grep -o 'mIoU: [0-9.]*' "$WORK/test.log" | tail -n 1)
echo "== smoke demo done in $(( $(date +%s) - start )) s: tiny DeepLabv3+, $ITERS iterations, val $miou =="
