"""The same corpus config on a real one-node SLURM cluster (datatrove's SLURM executor) gives the
same documents as on this machine. It needs a running cluster (the `slurm_cluster` fixture in
tests/conftest.py); without one the test is skipped and says how to start one."""

import json


from bertforge.stages import run_stage
from corpora.documents import iter_documents

def test_slurm_executor_gives_the_same_corpus_as_local(slurm_cluster, make_cfg, tmp_path):
    overrides = ["filters=gopher", "corpus.tasks=2"]
    local = run_stage(make_cfg("corpus", overrides, work_dir=tmp_path / "local"), "corpus")
    on_slurm = run_stage(make_cfg("corpus", overrides + ["executor=slurm", "corpus.executor.poll_seconds=1",
                                                          "corpus.executor.time=00:10:00"],
                                   work_dir=tmp_path / "slurm"), "corpus")
    assert sorted(d["id"] for d in iter_documents(on_slurm)) == sorted(d["id"] for d in iter_documents(local))
    launched = list((on_slurm / "datatrove").glob("*/launch_script.slurm"))
    # filter, index, merge, apply: each step really went through sbatch
    assert len(launched) == 4 and all("srun" in p.read_text() for p in launched)
    report = json.loads((on_slurm / "report.json").read_text())
    assert report["documents_kept"] == json.loads((local / "report.json").read_text())["documents_kept"]
