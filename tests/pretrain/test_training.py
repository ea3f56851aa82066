"""Training runs on real Irish shards: two phases in one run, every logged metric, speed switches that
leave the loss unchanged, compile without recompilation, and the start-up errors for bad input."""

import csv
import shutil
from pathlib import Path

import pytest
import torch

from bertforge.common.errors import ConfigError
from bertforge.stages import run_stage
from bertforge.common.stage_folder import read_manifest
from pretrain.train_stage import check_start_up
from tests.conftest import QUICK

# Short runs of the demo experiment on 32- and 64-token rows; no checkpoints until the end.
FAST = QUICK + ["logger.progress_bar=false", "checkpoint.every_n_steps=1000"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, data_dir):
    """Corpus, vocabulary and shards (lengths 32 and 64) built once for every test here."""
    from bertforge.experiment import load_config
    from tests.conftest import compose_raw

    work = tmp_path_factory.mktemp("train")
    overrides = [f"paths.data_dir={data_dir}", f"paths.work_dir={work}", *FAST, "shards.extra_seq_lens=[32]"]
    run_stage(load_config(compose_raw("pretrain", overrides)), "shards")
    return work


def make(upstream, tmp_path, data_dir, overrides, fresh_dir: str | None = None):
    """A pretrain config on the shared upstream stages (copied into `fresh_dir` when given, so a run
    whose config differs only in `impl`, which the stage hash leaves out, still trains)."""
    from bertforge.experiment import load_config
    from tests.conftest import compose_raw

    work = upstream
    if fresh_dir:
        work = tmp_path / fresh_dir
        for stage in ("corpus", "vocab", "shards"):
            shutil.copytree(upstream / stage, work / stage)
    return load_config(compose_raw("pretrain", [f"paths.data_dir={data_dir}", f"paths.work_dir={work}", *FAST,
                                                "shards.extra_seq_lens=[32]", *overrides]))


def logged(folder: Path) -> list[dict]:
    with open(folder / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_phases_in_one_run_log_every_metric(upstream, tmp_path, data_dir):
    phases = ("training.phases=[{seq_len:32,fraction:0.5,batch_size:16},"
              "{seq_len:64,fraction:0.5,tokens_per_batch:512,lr:5e-4}]")
    cfg = make(upstream, tmp_path, data_dir, [phases, "training.max_steps=12", "logger.log_every_n_steps=3",
                                              "trainer.micro_batch_size=4", "logger.val_every_n_steps=6",
                                              "masking=span", "optim=lamb", "optim.warmup_steps=2"])
    folder = run_stage(cfg, "pretrain")
    counts = read_manifest(folder)["counts"]
    assert counts["steps"] == 12 and counts["tokens_trained"] == 6 * 16 * 32 + 6 * 512
    assert [(p["seq_len"], p["batch_size"], p["accumulation"]) for p in counts["phases"]] == [(32, 16, 4), (64, 8, 2)]
    rows = [r for r in logged(folder) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12]
    assert [int(float(r["train/seq_len"])) for r in rows] == [32, 32, 64, 64]
    for row in rows:
        for key in ("train/masked_accuracy", "train/lr", "train/grad_norm", "throughput/tokens_per_s",
                    "throughput/mfu", "throughput/data_wait_share", "time/data_wait_s"):
            assert float(row[key]) >= 0, key
        assert float(row["throughput/tokens_per_s"]) > 0 and 0 < float(row["throughput/mfu"]) < 1
    # Linear decay over 12 steps after 2 of warmup; phase 2 (steps 6..11) at half the peak.
    peak = cfg.optim.lr
    assert [float(r["train/lr"]) for r in rows] == pytest.approx([peak, 0.7 * peak, 0.4 * peak / 2, 0.1 * peak / 2])
    validations = [r for r in logged(folder) if r.get("val/loss")]
    assert [int(r["step"]) for r in validations] == [6, 12] and all(float(r["val/loss"]) > 0 for r in validations)


def _losses(folder: Path) -> list[float]:
    return [float(r["train/loss"]) for r in logged(folder) if r.get("train/loss")]


def test_speed_switches_leave_the_loss_unchanged_and_compile_never_recompiles(upstream, tmp_path, data_dir):
    from torch._dynamo.utils import counters

    # A constant rate after warmup: the first steps of runs of different lengths see the same rates.
    same = ["logger.log_every_n_steps=1", "model.dropout=0.0", "optim.schedule=constant", "optim.warmup_steps=2"]
    reference = _losses(run_stage(make(upstream, tmp_path, data_dir, same + [
        "impl=reference", "training.max_steps=8"], "reference"), "pretrain"))
    default = _losses(run_stage(make(upstream, tmp_path, data_dir, same + [
        "impl=default", "training.max_steps=8"], "default"), "pretrain"))
    torch._dynamo.reset()
    counters.clear()
    # aot_eager traces forward and backward like inductor does but skips code generation (minutes on
    # 2 CPU cores); recompilation is decided by Dynamo's guards, which are the same for every backend.
    compiled = _losses(run_stage(make(upstream, tmp_path, data_dir, same + [
        "impl=fast", "impl.compile_backend=aot_eager", "impl.num_workers=0", "training.max_steps=20"], "compiled"), "pretrain"))
    assert len(reference) == len(default) == 8 and len(compiled) == 20
    assert reference[-1] < reference[0] - 0.2  # it trains, so the comparison means something
    assert default == pytest.approx(reference, rel=2e-3)
    assert compiled[:8] == pytest.approx(reference, rel=2e-3)
    # The default attention (SDPA kept out of the graph) is the only graph break, and nothing compiles
    # again over 20 batches.
    assert counters["graph_break"] and all("torch.compiler.disable" in reason for reason in counters["graph_break"])
    assert not counters["recompiles"]


def test_bf16_layer_norms_train_like_autocast_and_compile_without_recompiling(upstream, tmp_path, data_dir):
    """impl.bf16_layer_norm on a bf16-mixed run: the loss follows the autocast run's to bf16 rounding, the
    compiled model neither breaks its graph anywhere new nor recompiles, and the export is a plain model."""
    from torch._dynamo.utils import counters
    from transformers import AutoModelForMaskedLM

    same = ["logger.log_every_n_steps=1", "model.dropout=0.0", "optim.schedule=constant", "optim.warmup_steps=2",
            "trainer.precision=bf16-mixed", "training.max_steps=8"]
    autocast = _losses(run_stage(make(upstream, tmp_path, data_dir, same), "pretrain"))
    torch._dynamo.reset()
    counters.clear()
    folder = run_stage(make(upstream, tmp_path, data_dir, same + [
        "impl.bf16_layer_norm=true", "impl.compile=true", "impl.compile_backend=aot_eager"], "bf16_norms"), "pretrain")
    bf16_norms = _losses(folder)
    assert autocast[-1] < autocast[0] - 0.2 and len(bf16_norms) == 8
    assert bf16_norms == pytest.approx(autocast, rel=5e-3)  # 1e-4 apart here
    assert all("torch.compiler.disable" in reason for reason in counters["graph_break"])
    assert not counters["recompiles"]
    exported = AutoModelForMaskedLM.from_pretrained(folder / "hf")
    assert all(type(m) is torch.nn.LayerNorm for m in exported.modules() if isinstance(m, torch.nn.LayerNorm))


def test_shards_of_another_tokenizer_are_refused(upstream, tmp_path, data_dir):
    cfg = make(upstream, tmp_path, data_dir, [])
    shards = run_stage(cfg, "shards")
    other_vocab = run_stage(make(upstream, tmp_path, data_dir, ["tokenizer.vocab_size=1500"]), "vocab")
    with pytest.raises(ConfigError, match="built with another tokenizer than .*tokenizer.json"):
        check_start_up(cfg.model, cfg.optim, cfg.training, cfg.trainer, shards, other_vocab,
                       read_manifest(shards)["format"], world_size=1)


def test_sequence_longer_than_the_model_allows_is_refused_at_start_up(upstream, tmp_path, data_dir):
    with pytest.raises(ConfigError, match="sequence length 64 exceeds model.max_position_embeddings=32"):
        run_stage(make(upstream, tmp_path, data_dir, ["model.max_position_embeddings=32"]), "pretrain")


def test_batch_that_does_not_divide_across_devices_is_refused_at_start_up(upstream, tmp_path, data_dir):
    with pytest.raises(ConfigError, match="training.batch_size=33 .*not divisible by world size 2"):
        run_stage(make(upstream, tmp_path, data_dir, ["trainer=ddp_cpu", "trainer.devices=2", "training.batch_size=33"]), "pretrain")
