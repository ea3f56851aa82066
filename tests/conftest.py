"""Shared fixtures: the real data folder, and configs composed exactly as the CLI composes them."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share two cores: one thread each (and for the processes a test starts), not two threads
    # each spinning against the other's.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from hydra import compose, initialize_config_module

from bertforge.experiment import ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[1]
PRIMARY_CONFIGS = ["corpus", "vocab", "shards", "pretrain", "evaluate", "publish", "run", "demo"]

os.environ.setdefault("WANDB_MODE", "offline")  # tests run wandb for real, offline
os.environ.setdefault("WANDB_SILENT", "true")


def find_data_dir() -> Path | None:
    for candidate in (os.environ.get("BERTFORGE_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "ud" / "UD_Irish-IDT").is_dir():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = find_data_dir()
    if found is None:
        pytest.fail("real test data not found: set BERTFORGE_DATA to the folder holding ud/UD_Irish-IDT "
                    "(in the bertforge workspace, ../shared/data)")
    return found


def compose_raw(stage: str, overrides: list[str] | None = None):
    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        return compose(config_name=stage, overrides=overrides or [])


def experiment(stage: str, data_dir: Path, work_dir: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """A stage's config composed exactly as the CLI composes it, pointed at real data and a work folder
    (module-scoped fixtures call it directly; tests use `make_cfg`)."""
    return load_config(compose_raw(stage, [f"paths.data_dir={data_dir}", f"paths.work_dir={work_dir}",
                                           *(overrides or [])]))


def stages_to(target: str, data_dir: Path, work_dir: Path, overrides: list[str] | None = None) -> dict[str, Path]:
    """Every stage `target` needs, run (or reused) as the CLI would run them: stage name -> folder."""
    from bertforge.stages import run_stages

    return run_stages(experiment(target, data_dir, work_dir, overrides), target)


def ud_sentences(data_dir: Path, name: str) -> list[str]:
    """The `# text =` sentences of a UD treebank file (or of every file of a treebank folder, in name
    order) under `data_dir/ud`, e.g. "UD_Irish-IDT/ga_idt-ud-test.conllu": parsed by the project's own
    CoNLL-U reader for gold sentences, so no test carries its own copy of the parse."""
    from corpora.vocab.metrics import read_gold_sentences

    path = data_dir / "ud" / name
    files = sorted(path.glob("*.conllu")) if path.is_dir() else [path]
    return [text for file in files for text, _ in read_gold_sentences(file)]


def estonian_jsonl(data_dir: Path, folder: Path, files: int, docs_per_file: int, sentences_per_doc: int = 8) -> Path:
    """`folder` with `files` JSONL files (part0.jsonl, ...) of documents made of real Estonian sentences
    (UD Estonian-EDT), drawn with a fixed seed: a corpus of many files for the tests of killed runs."""
    import json
    import random

    sentences = ud_sentences(data_dir, "UD_Estonian-EDT")
    rng = random.Random(1)
    folder.mkdir(parents=True)
    for part in range(files):
        (folder / f"part{part}.jsonl").write_text("".join(
            json.dumps({"text": " ".join(rng.sample(sentences, sentences_per_doc))}, ensure_ascii=False) + "\n"
            for _ in range(docs_per_file)), encoding="utf-8")
    return folder


class FakeClock:
    """A stand-in for time.time or time.perf_counter, moved by hand (`clock.now += 30`)."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """Compose a stage config with overrides, pointed at real data and a fresh work folder."""

    def make(stage: str = "run", overrides: list[str] | None = None, work_dir: Path | None = None
             ) -> ExperimentConfig:
        return experiment(stage, data_dir, work_dir or tmp_path / "work", overrides)

    return make


# A few steps of the demo experiment: enough to see the loss fall, quick on 2 CPU cores.
QUICK = ["experiment=demo_ga", "training.max_steps=60", "optim.warmup_steps=10", "logger.log_every_n_steps=5",
         "checkpoint.every_n_steps=60", "logger=csv"]


@pytest.fixture
def ray_shut_down_after():
    """The local Ray instance that `executor=ray` starts is shut down after the test: later tests on this
    xdist worker fork processes, which must not inherit Ray's threads."""
    import ray

    yield
    ray.shutdown()


START_SLURM = "BERTFORGE_TEST_START_SLURM"  # opt in: let the tests start a one-node cluster (root, apt)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running SLURM cluster, or a loud skip. The tests never install or start anything on their own:
    `.ci/run` starts a one-node cluster first (launch/slurm/start_local_cluster.sh, as root); elsewhere
    start it yourself, or set BERTFORGE_TEST_START_SLURM=1 to let this fixture run that script."""
    if os.environ.get(START_SLURM) == "1":
        done = subprocess.run([str(REPO / "launch" / "slurm" / "start_local_cluster.sh")], capture_output=True,
                              text=True, timeout=600)
        if done.returncode not in (0, 3):
            pytest.fail(f"start_local_cluster.sh failed:\n{done.stdout}\n{done.stderr}")
    try:
        up = subprocess.run(["sinfo", "--noheader", "--states=idle,mixed,allocated"], capture_output=True,
                            text=True, timeout=20)
        running = up.returncode == 0 and bool(up.stdout.strip())
    except (FileNotFoundError, subprocess.TimeoutExpired):
        running = False
    if not running:
        message = ("SLURM TESTS SKIPPED: no SLURM cluster is running here. Start one with "
                   "launch/slurm/start_local_cluster.sh (root, Debian) or rerun with BERTFORGE_TEST_START_SLURM=1")
        warnings.warn(message)
        print(f"\n{'!' * 80}\n{message}\n{'!' * 80}", file=sys.stderr)
        pytest.skip(message)


# Under pytest-xdist (`-n 2 --dist loadgroup`, pyproject.toml's addopts), each module runs whole on one worker,
# so its module fixtures are built once; and every test that starts processes of its own (the launch tests, the
# SLURM jobs) runs on one worker, one at a time, so that two multi-process runs never share the two cores and
# the SLURM node. They go first: they are the longest unit, and the other worker takes the rest meanwhile.
def _runs_processes(item: pytest.Item) -> bool:
    return "launch" in item.path.relative_to(REPO).parts or "slurm_cluster" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not _runs_processes(item))  # stable: the order within each part is kept
    for item in items:
        group = "processes" if _runs_processes(item) else str(item.path.relative_to(REPO))
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def upstream_work(tmp_path_factory, data_dir) -> Path:
    """A work folder with corpus, vocab and shards of the launch tests' tiny run (tests/launch/conftest.py's
    TINY_RUN) built once, shared by the tests that launch real training commands."""
    from bertforge.stages import run_stage
    from tests.launch.conftest import TINY_RUN

    work = tmp_path_factory.mktemp("launch-upstream")
    run_stage(experiment("shards", data_dir, work, TINY_RUN), "shards")
    return work
