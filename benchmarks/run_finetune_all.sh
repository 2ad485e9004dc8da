#!/usr/bin/env bash
# The foundation benchmarks in one go (about 45 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")"
python finetune_labels.py --dataset jsrt --fraction 1.0 --minutes 12
python finetune_labels.py --dataset hippocampus --fraction 1.0 --minutes 12
python finetune_labels.py --dataset jsrt --fraction 0.1 --minutes 6
python finetune_labels.py --dataset hippocampus --fraction 0.1 --minutes 6
