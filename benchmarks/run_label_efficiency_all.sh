#!/usr/bin/env bash
# The label-efficiency benchmarks of docs/benchmarks.md. Each command continues its experiment folder
# (benchmarks/work/, git-ignored) where an earlier, interrupted run stopped; finished runs are kept.
# THREADS=1 when another benchmark shares the CPU.
set -euo pipefail
cd "$(dirname "$0")"
THREADS="${THREADS:-2}"
run() {
    local dataset=$1
    shift
    local resume=()
    [[ -d work/label_efficiency_${dataset} ]] && resume=(--resume)
    python label_efficiency.py --dataset "$dataset" --pretrain-steps 300 --finetune-steps 300 \
        --threads "$THREADS" "$@" "${resume[@]}"
}
run hippocampus --methods random,autoencoder,vae,simclr,byol,pgl --fractions 0.1,1.0 --seeds 3
run brats-flair --methods random,byol,pgl --fractions 1.0 --seeds 1
run jsrt --methods random,autoencoder,vae,simclr,byol --fractions 0.05,0.1,0.25,1.0 --seeds 3
python summarize.py
