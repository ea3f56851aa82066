"""`bertforge run` (the stage graph up to publish, with a summary) and `bertforge demo` (the same on Irish text)."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from pathlib import Path

from bertforge.common.errors import CorpusInputError
from bertforge.common.stage_folder import read_manifest
from bertforge.experiment import ExperimentConfig
from bertforge.stages import run_stages

log = logging.getLogger("bertforge.run")

DEMO_TREEBANK = "ud/UD_Irish-IDT"
DEMO_URL = "https://raw.githubusercontent.com/UniversalDependencies/UD_Irish-IDT/master/{name}"
DEMO_FILES = ("ga_idt-ud-dev.conllu", "ga_idt-ud-test.conllu")
DEMO_SENTENCES = (
    "Tá an [MASK] ag obair sa bhaile.",
    "Bhí sé ag caint leis an [MASK] inné.",
    "Is í an Ghaeilge [MASK] oifigiúil na hÉireann.",
)


def run_all(cfg: ExperimentConfig, summary: bool = True) -> dict:
    """Every stage for one experiment (finished stages are reused); returns the stage folders. `summary`:
    print what it found (a sweep's jobs do not: the sweep prints one comparison of them all at the end)."""
    folders = run_stages(cfg, "publish")
    if summary and "publish" in folders:  # another rank of a multi-process launch stops after pretrain
        print(format_summary(folders))
    return folders


def format_summary(folders: dict) -> str:
    corpus = json.loads((Path(folders["corpus"]) / "report.json").read_text())
    vocab = read_manifest(Path(folders["vocab"]))["counts"]
    train = read_manifest(Path(folders["pretrain"]))["counts"]
    scores = read_manifest(Path(folders["evaluate"]))["counts"]
    by_rule = ", ".join(f"{rule}: {s['documents']}" for rule, s in sorted(corpus["removed_by_rule"].items()))
    return "\n".join([
        "",
        f"documents        {corpus['documents_kept']} kept, {corpus['documents_removed']} removed ({by_rule or '-'})",
        f"vocabulary       {vocab['vocab_size']} tokens, fertility {vocab['fertility']:.3f}",
        f"tokens trained   {train['tokens_trained']:,} ({train['steps']} steps)",
        f"train loss       {train['first_loss']:.3f} -> {train['last_loss']:.3f}",
        f"held-out acc     {scores['trained']['accuracy']:.3f} (untrained {scores['untrained']['accuracy']:.3f}), "
        f"loss {scores['trained']['loss']:.3f} (untrained {scores['untrained']['loss']:.3f})",
        *(downstream_lines(Path(folders["downstream"])) if "downstream" in folders else []),
        f"loss curve       {Path(folders['pretrain']) / 'loss_curve.png'}",
        f"exported model   {Path(folders['publish']) / 'model'}",
    ])


def downstream_lines(folder: Path) -> list[str]:
    """One line per downstream task: the model's main score beside its untrained twin's (mean ± sd)."""
    from pretrain.downstream.scoring import MAIN_METRIC
    from pretrain.downstream.stage import scores_line

    tasks = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["tasks"]
    return [f"{'downstream' if i == 0 else '':<16} {name} {MAIN_METRIC[task['task']]}: {scores_line(task)}"
            for i, (name, task) in enumerate(tasks.items())]


def ensure_demo_data(data_dir: str, work_dir: str) -> str:
    """The data folder holding the Irish treebank: BERTFORGE_DATA, else a download into work_dir."""
    if data_dir and (Path(data_dir) / DEMO_TREEBANK).is_dir():
        return data_dir
    target = Path(work_dir) / "data"
    if (target / DEMO_TREEBANK).is_dir():
        return str(target)
    told = f"BERTFORGE_DATA={data_dir!r} has no {DEMO_TREEBANK}" if data_dir else "BERTFORGE_DATA is not set"
    log.warning("%s; fetching the Irish UD treebank into %s", told, target)
    tmp = target / (DEMO_TREEBANK + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for name in DEMO_FILES:
            with urllib.request.urlopen(DEMO_URL.format(name=name), timeout=20) as response:
                (tmp / name).write_bytes(response.read())
    except OSError as err:
        raise CorpusInputError(
            "BERTFORGE_DATA", f"{told}, and the treebank could not be downloaded ({err})",
            "Set BERTFORGE_DATA to a folder that holds ud/UD_Irish-IDT/*.conllu "
            "(in the bertforge workspace: export BERTFORGE_DATA=$PWD/../shared/data).") from None
    os.replace(tmp, target / DEMO_TREEBANK)
    return str(target)


def run_demo(cfg: ExperimentConfig) -> dict:
    """The whole path on Irish text, then fill-mask predictions from the exported model."""
    from transformers import pipeline

    folders = run_all(cfg)
    if "publish" not in folders:
        return folders
    fill = pipeline("fill-mask", model=str(Path(folders["publish"]) / "model"), device="cpu")
    print("\nfill-mask predictions (top 3):")
    for sentence in DEMO_SENTENCES:
        guesses = ", ".join(f"{p['token_str']} ({p['score']:.2f})" for p in fill(sentence, top_k=3))
        print(f"  {sentence}\n      -> {guesses}")
    return folders
