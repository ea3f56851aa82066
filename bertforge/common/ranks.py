"""Which process of a multi-process launch this is.

Lightning's launcher, torchrun and srun start every rank with the same command line, so every rank runs
the stage graph; the environment they set tells the first process from the others.
"""

from __future__ import annotations

import os

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
STAGE_VARIABLE = "BERTFORGE_STAGE"  # the command this process runs: set by the CLI, read by the ranks it starts


def first_process() -> bool:
    """Whether this is global rank 0 (or a single process): the one that builds the single-process stages,
    pushes to the hub and asks whoami, so a run does each once."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)
