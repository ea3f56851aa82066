"""Shared pieces of the multi-process tests: a small real run, its logs and its per-rank data ledgers."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]

# The demo experiment, cut to a few steps of a global batch of 8: small enough for 2 CPU cores.
STEPS, GLOBAL_BATCH = 8, 8
TINY_RUN = ["experiment=demo_ga", f"training.max_steps={STEPS}", f"training.batch_size={GLOBAL_BATCH}",
            "optim.warmup_steps=2", "logger.log_every_n_steps=1", f"checkpoint.every_n_steps={STEPS}",
            "logger.progress_bar=false", "logger.log_data_positions=true", "logger=csv"]


def bertforge_env(data_dir: Path, work_dir: Path) -> dict[str, str]:
    """The environment a user's shell would have: the venv's bin first, data and work folders set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    env.update(BERTFORGE_DATA=str(data_dir), BERTFORGE_WORK=str(work_dir), WANDB_MODE="offline",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def metrics(stage_dir: Path) -> list[dict[str, float]]:
    """Rows of the CSV log that carry train/loss, as floats, by step."""
    with open(stage_dir / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle) if row.get("train/loss")]


def ledger(stage_dir: Path) -> dict[int, list[tuple[int, int, int, int, int]]]:
    """rank -> (attempt, step, slot, start, stop) of every micro-batch it trained on."""
    found = {}
    for path in sorted((stage_dir / "data_positions").glob("rank*.tsv")):
        rows = [tuple(int(x) for x in line.split("\t")) for line in path.read_text().splitlines()]
        found[int(path.stem.removeprefix("rank"))] = rows
    return found


def pretrain_folders(work_dir: Path) -> list[Path]:
    return sorted(p for p in (work_dir / "pretrain").iterdir() if not p.name.startswith("."))


def with_upstream(upstream_work: Path, work: Path) -> Path:
    """`work` holding a copy of the shared corpus, vocab and shards folders (each run trains in its own)."""
    for stage in ("corpus", "vocab", "shards"):
        shutil.copytree(upstream_work / stage, work / stage)
    return work
