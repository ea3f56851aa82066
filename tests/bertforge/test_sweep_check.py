"""Which sweep points would push to the same place on a hub (`same_target`), from their planned folders."""

from bertforge.stages import plan
from bertforge.sweep_check import push_targets, same_target
from tests.conftest import experiment

HUB = "http://127.0.0.1:9"  # never contacted: the targets come from the configs and the plan


def targets(data_dir, tmp_path, command: str, point: list[str]) -> dict:
    cfg = experiment(command, data_dir, tmp_path, ["experiment=demo_ga", "publish.push_to_hub=true",
                                                   f"publish.endpoint={HUB}", *point])
    return push_targets(cfg.publish, {planned.stage.name: planned.output.digest for planned in plan(cfg, command)})


def clash(data_dir, tmp_path, command: str, *points: list[str]) -> str | None:
    return same_target(list(points), [targets(data_dir, tmp_path, command, point) for point in points])


def test_different_models_to_one_repo_clash(data_dir, tmp_path):
    one_repo = ["publish.repo_id=my-org/ga-bert"]
    found = clash(data_dir, tmp_path, "publish", ["tokenizer.vocab_size=1000", *one_repo],
                  ["tokenizer.vocab_size=1500", *one_repo])
    assert found.startswith("sweep jobs #0 (tokenizer.vocab_size=1000 publish.repo_id=my-org/ga-bert) and #1 ")
    assert f"push different models to {HUB}/my-org/ga-bert at main" in found
    steps = ["publish.push_every_n_steps=100", *one_repo]  # pretrain pushes only its steps
    found = clash(data_dir, tmp_path, "pretrain", ["training.seed=1", *steps], ["training.seed=2", *steps])
    assert f"{HUB}/my-org/ga-bert at step-N" in found


def test_each_point_its_own_place_or_one_model_does_not_clash(data_dir, tmp_path):
    own_repo = ["publish.repo_id=my-org/ga-bert-${tokenizer.vocab_size}", "publish.push_every_n_steps=100"]
    assert clash(data_dir, tmp_path, "publish", ["tokenizer.vocab_size=1000", *own_repo],
                 ["tokenizer.vocab_size=1500", *own_repo]) is None
    # one model to two revisions: the second point reuses the pretrain folder, so its steps are pushed once
    repo = ["publish.repo_id=my-org/ga-bert", "publish.push_every_n_steps=100"]
    assert clash(data_dir, tmp_path, "publish", ["publish.revision=main", *repo],
                 ["publish.revision=v2", *repo]) is None
    # a dry run pushes nothing
    dry = ["publish.dry_run=true", "publish.repo_id=my-org/ga-bert"]
    assert clash(data_dir, tmp_path, "publish", ["tokenizer.vocab_size=1000", *dry],
                 ["tokenizer.vocab_size=1500", *dry]) is None
