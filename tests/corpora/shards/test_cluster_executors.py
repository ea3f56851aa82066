"""The shards stage's tasks on a real one-node SLURM cluster (datatrove's SLURM executor) and on a local Ray
instance (datatrove's Ray executor): the tokenise tasks (with the sentence pairs they build) and the
static-masking tasks write the same bytes as on this machine. The SLURM test is skipped, saying how to start
a cluster, where none runs."""

from pathlib import Path

from bertforge.common.stage_folder import StageOutput
from bertforge.stages import run_stages
from corpora.config import ExecutorConfig, ShardsConfig
from corpora.shards.pairs import PairSettings
from corpora.shards.stage import build_shards
from corpora.shards.static_masks import StaticMasking

WRITTEN = ("heldout-64.bin", "train-64.pairs.bin", "train-64.pairs_info.bin", "train-64.mask_positions.bin",
           "train-64.mask_inputs.bin")


def built_locally_and_on(executor: ExecutorConfig, make_cfg, tmp_path) -> dict[str, Path]:
    """The shards folder built by two tokenise tasks with pairs and static masks, locally and on `executor`."""
    folders = run_stages(make_cfg("vocab", ["corpus.tasks=2", "tokenizer.vocab_size=2000"]), "vocab")
    built = {}
    for name, chosen in (("local", ExecutorConfig()), (executor.name, executor)):
        out = StageOutput(tmp_path / name, "shards", {}, {})
        build_shards(ShardsConfig(seq_len=64, tasks=2), [64], folders["corpus"], folders["vocab"], out,
                     StaticMasking(0.15, 0.8, 0.1, False, 2, 0, 0), PairSettings("mlm_sop", 0.1, 0.5, 0),
                     executor=chosen)
        built[name] = out.folder
    for name in WRITTEN:
        assert (built[executor.name] / name).read_bytes() == (built["local"] / name).read_bytes(), name
    return built


def test_slurm_tokenise_tasks_write_the_same_rows_as_local(slurm_cluster, make_cfg, tmp_path):
    built = built_locally_and_on(ExecutorConfig(name="slurm", poll_seconds=1, time="00:10:00"), make_cfg, tmp_path)
    launched = {p.parent.name: p.read_text() for p in (built["slurm"] / "datatrove").glob("*/launch_script.slurm")}
    assert sorted(launched) == ["mask", "tokenise"] and "srun" in launched["tokenise"]
    assert "--array=0-1" in launched["tokenise"] and "--array=0" in launched["mask"]


def test_ray_tokenise_tasks_write_the_same_rows_as_local(make_cfg, tmp_path, ray_shut_down_after, caplog):
    caplog.set_level("INFO", logger="bertforge")
    built = built_locally_and_on(ExecutorConfig(name="ray"), make_cfg, tmp_path)
    ran = {p.name: len(list((p / "completions").iterdir())) for p in (built["ray"] / "datatrove").iterdir()}
    assert ran == {"tokenise": 2, "mask": 1}
    assert "shards: step tokenise, 2 task(s) on Ray" in caplog.text
    assert "shards: step mask, 1 task(s) on Ray" in caplog.text
