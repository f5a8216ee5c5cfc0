#!/usr/bin/env bash
# Trains the bundled default model (models/default) from scratch and refreshes its metrics and curves.
# The exact command the committed checkpoint came from; see docs/MODEL_CARD.md for wall time and machine.
#   bash scripts/train_default.sh [OUT_DIR]        (default OUT_DIR: runs/default)
# Re-running after an interruption continues from the newest checkpoint (--resume is exact).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv_env.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${1:-runs/default}

CONFIG=training/configs/small_synthparts.yaml
python -m training --config "$CONFIG" --out "$OUT" --resume
# Warm restart: the same run continued to 6000 steps (the cosine re-spans 6000 steps; see the model card).
python -m training --config "$CONFIG" --out "$OUT" --resume --steps 6000
mkdir -p models/default docs/images
cp "$OUT/model/model.safetensors" "$OUT/model/config.json" "$OUT/train_log.csv" "$OUT/eval_log.jsonl" models/default/
python -m benchmarks.eval_checkpoint --model models/default --split test --num-images 100 --ci-subset 8 \
    --out models/default/metrics.json --markdown "$OUT/test_metrics.md"
python -m benchmarks.plot_curves models/default/train_log.csv docs/images/curves_default.png \
    --eval "$OUT/eval_log.jsonl" \
    --title "default model: small config, SynthParts train (base categories), 320x240, 6000 steps x 2 images"
