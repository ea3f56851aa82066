"""The same corpus config on a real one-node SLURM cluster (datatrove's SLURM executor) gives the
same documents as on this machine. The cluster comes from launch/slurm/start_local_cluster.sh;
where it cannot run (not root, no Debian packages) the test is skipped and says why."""

import json
import subprocess
from pathlib import Path

import pytest

from bertforge.stages import run_stage
from corpora.documents import iter_documents

CLUSTER_SCRIPT = Path(__file__).resolve().parents[3] / "launch" / "slurm" / "start_local_cluster.sh"


@pytest.fixture(scope="module")
def slurm_cluster():
    if not CLUSTER_SCRIPT.exists():
        pytest.skip(f"SLURM test skipped: {CLUSTER_SCRIPT} is missing (it brings up the one-node cluster)")
    started = subprocess.run(["bash", str(CLUSTER_SCRIPT)], capture_output=True, text=True, timeout=600)
    if started.returncode == 3:
        pytest.skip(f"SLURM test skipped: no cluster can run here: {started.stderr.strip()[-500:]}")
    assert started.returncode == 0, started.stderr[-2000:]


def test_slurm_executor_gives_the_same_corpus_as_local(slurm_cluster, make_cfg, tmp_path):
    overrides = ["filters=gopher", "corpus.tasks=2"]
    local = run_stage(make_cfg("corpus", overrides, work_dir=tmp_path / "local"), "corpus")
    on_slurm = run_stage(make_cfg("corpus", overrides + ["executor=slurm", "corpus.executor.poll_seconds=1",
                                                          "corpus.executor.time=00:10:00"],
                                   work_dir=tmp_path / "slurm"), "corpus")
    assert sorted(d["id"] for d in iter_documents(on_slurm)) == sorted(d["id"] for d in iter_documents(local))
    launched = list((on_slurm / "datatrove").glob("*/launch_script.slurm"))
    assert len(launched) == 3 and all("srun" in p.read_text() for p in launched)  # it really went through sbatch
    report = json.loads((on_slurm / "report.json").read_text())
    assert report["documents_kept"] == json.loads((local / "report.json").read_text())["documents_kept"]
