"""The shards stage's tasks on a real one-node SLURM cluster (datatrove's SLURM executor): the tokenise
tasks (with the sentence pairs they build) and the static-masking tasks write the same bytes as on this
machine. Skipped, saying how to start a cluster, where none runs."""

from bertforge.common.stage_folder import StageOutput
from bertforge.stages import run_stages
from corpora.config import ExecutorConfig, ShardsConfig
from corpora.shards.pairs import PairSettings
from corpora.shards.stage import build_shards
from corpora.shards.static_masks import StaticMasking


def test_slurm_tokenise_tasks_write_the_same_rows_as_local(slurm_cluster, make_cfg, tmp_path):
    folders = run_stages(make_cfg("vocab", ["corpus.tasks=2", "tokenizer.vocab_size=2000"]), "vocab")
    shards = ShardsConfig(seq_len=64, tasks=2)
    built = {}
    for name, executor in (("local", ExecutorConfig()),
                           ("slurm", ExecutorConfig(name="slurm", poll_seconds=1, time="00:10:00"))):
        out = StageOutput(tmp_path / name, "shards", {}, {})
        build_shards(shards, [64], folders["corpus"], folders["vocab"], out,
                     StaticMasking(0.15, 0.8, 0.1, False, 2, 0, 0), PairSettings("mlm_sop", 0.1, 0.5, 0),
                     executor=executor)
        built[name] = out.folder
    launched = {p.parent.name: p.read_text() for p in (built["slurm"] / "datatrove").glob("*/launch_script.slurm")}
    assert sorted(launched) == ["mask", "tokenise"] and "srun" in launched["tokenise"]
    assert "--array=0-1" in launched["tokenise"] and "--array=0" in launched["mask"]
    for name in ("heldout-64.bin", "train-64.pairs.bin", "train-64.pairs_info.bin",
                 "train-64.mask_positions.bin", "train-64.mask_inputs.bin"):
        assert (built["slurm"] / name).read_bytes() == (built["local"] / name).read_bytes()
