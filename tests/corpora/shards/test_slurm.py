"""The shards stage's tokenise tasks on a real one-node SLURM cluster (datatrove's SLURM executor) write
the same rows as on this machine. Skipped, saying how to start a cluster, where none runs."""

from bertforge.common.stage_folder import StageOutput
from bertforge.stages import run_stages
from corpora.config import ExecutorConfig, ShardsConfig
from corpora.shards.stage import build_shards


def test_slurm_tokenise_tasks_write_the_same_rows_as_local(slurm_cluster, make_cfg, tmp_path):
    folders = run_stages(make_cfg("vocab", ["corpus.tasks=2", "tokenizer.vocab_size=2000"]), "vocab")
    shards = ShardsConfig(seq_len=64, tasks=2)
    built = {}
    for name, executor in (("local", ExecutorConfig()),
                           ("slurm", ExecutorConfig(name="slurm", poll_seconds=1, time="00:10:00"))):
        out = StageOutput(tmp_path / name, "shards", {}, {})
        build_shards(shards, [64], folders["corpus"], folders["vocab"], out, executor=executor)
        built[name] = out.folder
    [launched] = list((built["slurm"] / "datatrove").glob("*/launch_script.slurm"))
    assert "srun" in launched.read_text() and "--array=0-1" in launched.read_text()
    for name in ("train-64.bin", "heldout-64.bin"):
        assert (built["slurm"] / name).read_bytes() == (built["local"] / name).read_bytes()
