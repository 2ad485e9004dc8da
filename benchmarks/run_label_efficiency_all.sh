#!/usr/bin/env bash
# The label-efficiency benchmarks of docs/benchmarks.md. Each command continues its experiment folder
# (benchmarks/work/<name>, git-ignored) where an earlier, interrupted run stopped; finished runs are kept.
# THREADS=1 when another benchmark shares the CPU.
set -euo pipefail
cd "$(dirname "$0")"
THREADS="${THREADS:-2}"
run() {
    # run NAME DATASET [options]: 300 pretraining and 300 fine-tuning steps unless the options say otherwise.
    local name=$1 dataset=$2
    shift 2
    local resume=()
    [[ -d work/${name} ]] && resume=(--resume)
    python label_efficiency.py --dataset "$dataset" --out "work/${name}" --pretrain-steps 300 --finetune-steps 300 \
        --threads "$THREADS" "$@" "${resume[@]}"
}
run label_efficiency_hippocampus hippocampus --methods random,autoencoder,vae,simclr,byol,pgl --fractions 0.1,1.0 --seeds 3
run label_efficiency_brats-flair brats-flair --methods random,byol,pgl --fractions 1.0 --seeds 1
run label_efficiency_jsrt jsrt --methods random,autoencoder,vae,simclr,byol --fractions 0.05,0.1,0.25,1.0 --seeds 3
# The JSRT 10 % checks: longer fine-tuning, longer pretraining, both.
run label_efficiency_jsrt_ft600 jsrt --methods random,autoencoder --fractions 0.1 --seeds 3 --finetune-steps 600
run label_efficiency_jsrt_pre1000 jsrt --methods random,autoencoder,simclr --fractions 0.1 --seeds 3 --pretrain-steps 1000
run label_efficiency_jsrt_pre1000_ft600 jsrt --methods random,autoencoder,simclr --fractions 0.1 --seeds 3 \
    --pretrain-steps 1000 --finetune-steps 600
python summarize.py
