"""Which process of a distributed run this is, from the environment alone (no torch: the CLI asks at start-up)."""

from __future__ import annotations

import os

__all__ = ["RANK_VARIABLES", "is_main_process"]

# Lightning's re-launched DDP workers and torchrun workers set RANK / LOCAL_RANK / NODE_RANK; srun sets SLURM_PROCID
# (which Lightning's SLURM environment reads) before any of them
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_main_process() -> bool:
    """True in the process that owns output folders and prints results (rank 0, or a run without DDP)."""
    return all(int(os.environ.get(var, "0") or 0) == 0 for var in RANK_VARIABLES)
