"""The check before a sweep's first job: which points would push to the same place on a hub (`same_target`),
from their planned folders; and, as a user runs `bertforge <stage> -m`, bad points named before any job runs
and a sweep folder no other sweep shares."""

import csv
import os

from omegaconf import OmegaConf

from bertforge.stages import _plain, plan
from bertforge.sweep_check import push_targets, same_target
from pretrain.publish.card import CONFIG_FILE, reproducible_config
from tests.bertforge.test_cli import bertforge
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


def test_a_glob_sweep_with_a_bad_point_stops_before_its_first_job(tmp_path, data_dir):
    work = tmp_path / "w"
    result = bertforge("vocab", "-m", "experiment=demo_ga", "filters=glob(g*)", "tokenizer.vocab_size=2000,0",
                       data_dir=data_dir, work=work)
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("bertforge vocab: error: sweep job #1 (experiment=demo_ga filters=gabert_doc tokenizer.vocab_size=0): "
            "tokenizer.vocab_size=0 leaves no room") in result.stderr
    assert "Warning" not in result.stderr and not work.exists()  # no job ran


def test_a_point_that_does_not_compose_stops_the_sweep_naming_it(tmp_path, data_dir):
    work = tmp_path / "w"
    result = bertforge("vocab", "-m", "experiment=demo_ga", "filters=none,nosuch", data_dir=data_dir, work=work)
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("bertforge vocab: error: sweep job #1 (experiment=demo_ga filters=nosuch): MissingConfigException: "
            in result.stderr) and not work.exists()


def test_the_model_cards_reproduce_config_is_checked_as_its_command(tmp_path, data_dir):
    card = tmp_path / "model"
    card.mkdir()
    cfg = experiment("run", data_dir, tmp_path / "w", ["experiment=demo_ga"])
    (card / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(reproducible_config(_plain(cfg)))))
    result = bertforge("run", "-m", "--config-dir", str(card), "--config-name", CONFIG_FILE.removesuffix(".yaml"),
                       "training.seed=1,2", "tokenizer.vocab_size=2000,0", data_dir=data_dir, work=tmp_path / "w2")
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("bertforge run: error: sweep job #1 (training.seed=1 tokenizer.vocab_size=0): tokenizer.vocab_size=0 "
            "leaves no room") in result.stderr


def test_a_sweep_written_in_the_config_is_checked_too(tmp_path, data_dir):
    """A sweep's values in `hydra.sweeper.params` (a yaml file, not the command line) are expanded as Hydra's basic
    sweeper does, before the command line's, and checked like them."""
    config = tmp_path / "conf"
    config.mkdir()
    cfg = experiment("run", data_dir, tmp_path / "w", ["experiment=demo_ga"])
    swept = reproducible_config(_plain(cfg)) | {"hydra": {"sweeper": {"params": {"tokenizer.vocab_size": "2000,0"}}}}
    (config / "swept.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(swept)))
    work = tmp_path / "w2"
    result = bertforge("vocab", "-m", "--config-dir", str(config), "--config-name", "swept", "training.seed=1",
                       data_dir=data_dir, work=work)
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("bertforge vocab: error: sweep job #1 (tokenizer.vocab_size=0 training.seed=1): tokenizer.vocab_size=0 "
            "leaves no room") in result.stderr
    assert not work.exists()


# `bertforge` with Hydra's ${now:...} stopped at one second (microseconds still pass): two sweeps started in it.
SAME_SECOND = """
import datetime

import hydra.core.utils

from bertforge.cli import main


class SameSecond(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.now(tz).replace(year=2026, month=1, day=2, hour=3, minute=4, second=5)


hydra.core.utils.datetime = SameSecond
main()
"""


def test_sweeps_started_in_the_same_second_keep_their_own_folders_and_rows(tmp_path, data_dir):
    (tmp_path / "same_second.py").write_text(SAME_SECOND)
    work = tmp_path / "w"
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    for filters in ("filters=none,length,gopher", "filters=none,length"):
        result = bertforge("corpus", "-m", "experiment=demo_ga", filters, data_dir=data_dir, work=work,
                           module="same_second", env={"PYTHONPATH": path})
        assert result.returncode == 0, result.stderr[-2000:]
    folders = list((work / "hydra").glob("multirun-2026-01-02_03-04-05*"))
    tables = sorted([row["filters"] for row in csv.DictReader((folder / "comparison.csv").open())]
                    for folder in folders)
    assert tables == [["none", "length"], ["none", "length", "gopher"]]


def test_a_sweep_into_a_folder_another_sweep_used_is_refused(tmp_path, data_dir):
    used = tmp_path / "used"
    used.mkdir()
    result = bertforge("corpus", "-m", "experiment=demo_ga", "filters=none,length", f"hydra.sweep.dir={used}",
                       data_dir=data_dir, work=tmp_path / "w")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"bertforge corpus: error: the sweep folder {used} exists" in result.stderr
    assert list(used.iterdir()) == []
