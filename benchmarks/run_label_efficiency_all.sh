#!/usr/bin/env bash
# The label-efficiency benchmarks of docs/benchmarks.md. Each command continues its experiment folder
# (benchmarks/work/, git-ignored) where an earlier, interrupted run stopped; finished runs are kept.
set -euo pipefail
cd "$(dirname "$0")"
RESUME=()
[[ -d work/label_efficiency_hippocampus ]] && RESUME=(--resume)
python label_efficiency.py --dataset hippocampus --methods random,autoencoder,vae,simclr,byol \
    --fractions 0.1 --seeds 3 --pretrain-steps 300 --finetune-steps 300 "${RESUME[@]}"
RESUME=()
[[ -d work/label_efficiency_jsrt ]] && RESUME=(--resume)
python label_efficiency.py --dataset jsrt --methods random,autoencoder,vae,simclr,byol \
    --fractions 0.05,0.1,0.25,1.0 --seeds 3 --pretrain-steps 300 --finetune-steps 300 "${RESUME[@]}"
python summarize.py
