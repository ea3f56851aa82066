"""What the pushes leave on the hub (tests/hub_server.py, the real client, no training): a step branch counts
as pushed only when it holds this model's step, every push leaves its branch holding exactly its folder, and
the card lists only this model's steps; the card's training lines multiply out."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi

from bertforge.common.errors import ConfigError
from pretrain.config import OptimConfig, PublishConfig
from pretrain.hub_push import HubCheckpointPush
from bertforge.common.stage_folder import COMPLETE_MARKER, MANIFEST
from pretrain.publish.card import _training, for_hub
from pretrain.publish import hub as publish_hub
from pretrain.publish.hub import push_published
from pretrain.publish.stage import steps_pushed
from tests.hub_server import HubServer

TOKEN = "hf_branches_test_token_0123456789"
REPO = "org/m"
FIRST, SECOND = "bertforge sweep-a: pretrain stage aaaaaaaaaaaa", "bertforge sweep-b: pretrain stage bbbbbbbbbbbb"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer(tmp_path / "hub", tokens={TOKEN}) as server:
        yield server


def publish_to(hub, every=10) -> PublishConfig:
    return PublishConfig(push_to_hub=True, repo_id=REPO, endpoint=hub.url, push_every_n_steps=every)


def exporter(tag: str):
    def export(model, folder):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "tag": tag}))
        (folder / "model.safetensors").write_text(f"weights of {tag}")
    return export


def train(hub, message: str, *steps: int, tag: str | None = None, broken_upload=False) -> HubCheckpointPush:
    """A pretrain run's pushes: fit start, the given optimiser steps, the end of fit."""
    callback = HubCheckpointPush(publish_to(hub), exporter(tag or message), message)
    callback.on_fit_start(SimpleNamespace(is_global_zero=True), SimpleNamespace(rollbacks=[]))
    if broken_upload:  # the connection drops after create_branch made the branch (or the process dies there)
        def dropped(**kwargs):
            raise ConnectionError("connection reset by peer")
        callback._api.upload_folder = dropped
    for step in steps:
        callback.on_train_batch_end(SimpleNamespace(global_step=step, is_global_zero=True),
                                    SimpleNamespace(model=None), None, None, 0)
        callback.finish()  # one upload at a time: wait, so no step is skipped here
    return callback


def config_on(api, branch, tmp_path) -> dict:
    path = api.hf_hub_download(REPO, "config.json", revision=branch, cache_dir=tmp_path / "c")
    return json.loads(Path(path).read_text())


def test_a_step_branch_an_interrupted_upload_left_is_pushed_again(hub, tmp_path):
    first = train(hub, FIRST, 10, broken_upload=True)
    assert first.failed == ["step-000010"]
    api = HfApi(endpoint=hub.url)
    assert "step-000010" in {b.name for b in api.list_repo_refs(REPO).branches}  # left behind, empty
    again = train(hub, FIRST, 10, 20)  # the resumed run
    assert again.already_there == set() and again.pushed == ["step-000010", "step-000020"]
    assert set(api.list_repo_files(REPO, revision="step-000010")) == {".gitattributes", "config.json",
                                                                      "model.safetensors"}
    third = train(hub, FIRST, 10, 20)  # resumed once more: both are this model's now
    assert third.already_there == {"step-000010", "step-000020"} and third.pushed == []


def main_holds_an_earlier_model(hub) -> HfApi:
    api = HfApi(endpoint=hub.url)
    api.create_repo(REPO, private=True)
    for name, text in (("config.json", '{"model_type": "bert", "tag": "earlier"}'), ("model.safetensors", "old"),
                       ("README.md", "# an earlier model\n")):
        api.upload_file(path_or_fileobj=text.encode(), path_in_repo=name, repo_id=REPO, commit_message="earlier")
    return api


def test_a_failed_step_upload_leaves_no_model_on_its_branch(hub, tmp_path):
    """The upload dies after its branch is made: the branch must not hold main's model, which
    from_pretrained(repo, revision="step-000010") would load as this model's step 10."""
    api = main_holds_an_earlier_model(hub)
    failed = train(hub, FIRST, 10, broken_upload=True)
    assert failed.failed == ["step-000010"]
    assert set(api.list_repo_files(REPO, revision="step-000010")) == {".gitattributes"}
    assert publish_hub.model_steps(api, REPO, "pretrain stage aaaaaaaaaaaa") == []


def test_a_new_step_branch_is_emptied_when_the_repo_has_no_empty_commit(hub):
    """Without an empty first commit to start from, the branch is made from main and emptied before the upload;
    a branch that is there already (another push's step) is left for the upload's commit to replace."""
    from pretrain.publish.hub import new_step_branch

    api = main_holds_an_earlier_model(hub)
    assert publish_hub.empty_start(api, REPO) is not None  # the hub's initial commit: .gitattributes only
    new_step_branch(api, REPO, "step-000010", None)
    assert set(api.list_repo_files(REPO, revision="step-000010")) == {".gitattributes"}
    api.create_branch(REPO, branch="step-000020")
    new_step_branch(api, REPO, "step-000020", None)
    assert "config.json" in api.list_repo_files(REPO, revision="step-000020")


def test_a_resumed_run_pushes_the_step_it_resumes_at(hub, tmp_path):
    """Killed while uploading step 10, the run resumes from its step-10 checkpoint and never reaches step 10
    again: the resumed fit pushes it when it starts (or at its end when it resumed at its last step and trains
    nothing); a step the hub holds for this model is not pushed again."""
    api = main_holds_an_earlier_model(hub)
    train(hub, FIRST, 10, broken_upload=True)

    def resume_at(step: int, *hooks: str) -> HubCheckpointPush:
        callback = HubCheckpointPush(publish_to(hub), exporter("resumed"), FIRST)
        trainer = SimpleNamespace(global_step=step, is_global_zero=True)
        callback.on_fit_start(trainer, SimpleNamespace(rollbacks=[]))
        for hook in hooks:
            getattr(callback, hook)(trainer, SimpleNamespace(model=None))
            callback.finish()
        return callback

    resumed = resume_at(10, "on_train_start", "on_fit_end")
    assert resumed.pushed == ["step-000010"] and config_on(api, "step-000010", tmp_path)["tag"] == "resumed"
    assert resume_at(10, "on_train_start").pushed == []  # now held: not pushed again
    train(hub, FIRST, 20, broken_upload=True)
    assert resume_at(20, "on_fit_end").pushed == ["step-000020"]  # resumed at max_steps: fit trains nothing
    assert resumed.summary()["endpoint"] == hub.url


def test_steps_pushed_to_another_hub_are_not_this_hubs(hub, tmp_path):
    """The pretrain manifest's record of step pushes counts only for the same repo on the same endpoint."""
    pretrain = tmp_path / "pretrain-abc"
    pretrain.mkdir()
    (pretrain / COMPLETE_MARKER).write_text("ok\n")

    def record(**hub_revisions) -> tuple[bool, str]:
        (pretrain / MANIFEST).write_text(json.dumps({"hub_revisions": {"repo_id": REPO, "every_n_steps": 10,
                                                                        **hub_revisions}}))
        return steps_pushed(publish_to(hub), pretrain)

    assert record(endpoint=hub.url)[0]
    pushed, note = record(endpoint="http://127.0.0.1:9")
    assert not pushed and "on http://127.0.0.1:9" in note
    pushed, note = record()  # from before the endpoint was recorded
    assert not pushed and "a hub it did not record" in note


def test_the_pushed_cards_snippet_loads_the_revision_it_was_pushed_to():
    card = 'fill = pipeline("fill-mask", model="path/to/m")'
    assert 'model="org/m", revision="release")' in for_hub(card, "m", "org/m", [], "release")
    assert 'model="org/m")' in for_hub(card, "m", "org/m", [])


def test_another_models_step_is_replaced_and_the_card_lists_only_this_models(hub, tmp_path):
    train(hub, FIRST, 10, 20, tag="a")
    second = train(hub, SECOND, 10, tag="b")  # a sweep: another model, the same repo
    assert second.already_there == set() and second.pushed == ["step-000010"]
    api = HfApi(endpoint=hub.url)
    assert config_on(api, "step-000010", tmp_path)["tag"] == "b"
    assert publish_hub.model_steps(api, REPO, "pretrain stage bbbbbbbbbbbb") == ["step-000010"]
    assert publish_hub.model_steps(api, REPO, "pretrain stage aaaaaaaaaaaa") == ["step-000020"]
    folder = tmp_path / "published"
    exporter("b")(None, folder)
    (folder / "README.md").write_text("# b\n")
    push_published(publish_to(hub), folder, "publish b", lambda branches: for_hub("# b\n", "b", REPO, branches),
                   pretrain_hash="bbbbbbbbbbbb")
    card = Path(api.hf_hub_download(REPO, "README.md", cache_dir=tmp_path / "c")).read_text()
    assert "`step-000010`" in card and "step-000020" not in card


def test_a_step_branch_missing_a_weights_shard_is_pushed_again(hub):
    """A branch whose head holds config.json and only some shards of sharded weights (an upload in parts
    that died) does not hold the step; one with every shard does."""
    def sharded(count: int, present: int):
        def export(model, folder):
            folder.mkdir(parents=True)
            (folder / "config.json").write_text("{}")
            (folder / "model.safetensors.index.json").write_text("{}")
            for number in range(1, present + 1):
                (folder / f"model-{number:05d}-of-{count:05d}.safetensors").write_text(str(number))
        return export

    for present in (2, 3):  # the second run finds the first one's two shards of three: not this step
        callback = HubCheckpointPush(publish_to(hub), sharded(3, present), FIRST)
        callback.on_fit_start(SimpleNamespace(is_global_zero=True), SimpleNamespace(rollbacks=[]))
        assert callback.already_there == set()
        callback.on_train_batch_end(SimpleNamespace(global_step=10, is_global_zero=True),
                                    SimpleNamespace(model=None), None, None, 0)
        callback.finish()
        assert callback.pushed == ["step-000010"]
    assert publish_hub.model_steps(HfApi(endpoint=hub.url), REPO, "pretrain stage aaaaaaaaaaaa") == ["step-000010"]
    assert not publish_hub.weights_complete({"model.safetensors.index.json", "model-00002-of-00002.safetensors"})
    assert publish_hub.weights_complete({"pytorch_model-00001-of-00001.bin"})


def test_each_push_leaves_the_branch_holding_exactly_its_folder(hub, tmp_path):
    api = HfApi(endpoint=hub.url)
    first = tmp_path / "exp1"  # continued from MiniLM: its export has init_from.json
    exporter("exp1")(None, first)
    (first / "init_from.json").write_text('{"checkpoint": "sentence-transformers/all-MiniLM-L6-v2"}')
    (first / "README.md").write_text("card 1")
    (first / "bertforge_config.yaml").write_text("name: exp1\n")
    push_published(publish_to(hub), first, "exp1", lambda branches: "card of exp1")
    second = tmp_path / "exp2"  # from scratch, sharded weights
    second.mkdir()
    for name in ("config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                 "model.safetensors.index.json", "README.md", "bertforge_config.yaml"):
        (second / name).write_text(name)
    push_published(publish_to(hub), second, "exp2", lambda branches: "card of exp2")
    assert set(api.list_repo_files(REPO)) == {p.name for p in second.iterdir()} | {".gitattributes"}
    # a step branch starts from main but keeps none of main's files: only the export
    train(hub, FIRST, 10, tag="exp3")
    assert set(api.list_repo_files(REPO, revision="step-000010")) == {".gitattributes", "config.json",
                                                                      "model.safetensors"}
    # another branch (publish.revision) made from main holds exactly the folder too
    push_published(PublishConfig(push_to_hub=True, repo_id=REPO, endpoint=hub.url, revision="release"), first,
                   "exp1 again", lambda branches: "card of exp1")
    assert set(api.list_repo_files(REPO, revision="release")) == {p.name for p in first.iterdir()} | {".gitattributes"}


def test_a_push_sends_the_recorded_files_and_refuses_a_folder_that_lost_one(hub, tmp_path):
    """With the publish stage's file list: a file beside those is not sent; a listed file that is gone stops
    the push before the hub is touched (its commit would delete that file from the branch)."""
    api = HfApi(endpoint=hub.url)
    folder = tmp_path / "published"
    exporter("c")(None, folder)
    (folder / "README.md").write_text("# c\n")
    recorded = ["README.md", "config.json", "model.safetensors"]
    (folder / "notes.txt").write_text("added by hand")
    push_published(publish_to(hub), folder, "publish c", lambda branches: "# c\n", files=recorded)
    assert set(api.list_repo_files(REPO)) == set(recorded) | {".gitattributes"}
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"published lacks model\.safetensors, which the publish stage wrote.*"
                                          r"move .* aside and rerun"):
        push_published(publish_to(hub), folder, "publish c again", lambda branches: "# c\n", files=recorded)
    assert "model.safetensors" in api.list_repo_files(REPO)


def training_lines(phases: list[dict], everything: bool = False, **manifest) -> list[str]:
    tokens = sum(p["steps"] * p["batch_size"] * p["seq_len"] for p in phases)
    pretrain = {"counts": {"steps": sum(p["steps"] for p in phases), "tokens_trained": tokens, "phases": phases,
                           "first_loss": 9.0, "last_loss": 2.0},
                "hardware": {"devices": 1, "num_nodes": 1, "accelerator": "gpu", "precision": "bf16-mixed",
                             "strategy": "auto"}, "seconds": 100} | manifest
    cfg = SimpleNamespace(training=SimpleNamespace(batch_size=32), optim=OptimConfig(),
                          masking=SimpleNamespace(ratio=.15, replace_with_mask=.8, replace_with_random=.1))
    found = SimpleNamespace(manifests={"pretrain": pretrain, "shards": {"format": {"seq_len": 128}}})
    counted = re.compile(r"- (Phase \d+: |In all: )?[\d,]+ steps(, | x )")
    return [line for line in _training(cfg, found) if everything or counted.match(line)]


def test_the_training_time_adds_up_a_resumed_runs_attempts():
    """The pretrain manifest's seconds are every attempt's (bertforge.common.stage_folder): a resumed run's card
    says how they were spent."""
    phases = [{"seq_len": 128, "steps": 10, "batch_size": 8}]

    def hardware(**manifest) -> str:
        return next(line for line in training_lines(phases, everything=True, **manifest) if line.startswith("- Hardware"))

    assert hardware().endswith("strategy auto; 100 s of training")
    assert hardware(seconds=3800, attempt_seconds=[3700, 100]).endswith(
        "63.3 min of training in 2 attempts (61.7 min, 100 s; a stopped attempt counted to its last checkpoint)")


def test_the_training_lines_are_the_batches_trained_and_multiply_out():
    """training.batch_size=32 in the config, but tokens_per_batch / phases decided the batches trained."""
    assert training_lines([{"seq_len": 128, "steps": 1000, "batch_size": 64}]) == [
        "- 1,000 steps x 64 sequences x 128 tokens = 8,192,000 tokens"]
    assert training_lines([{"seq_len": 128, "steps": 90000, "batch_size": 256},
                           {"seq_len": 512, "steps": 10000, "batch_size": 64}]) == [
        "- Phase 1: 90,000 steps x 256 sequences x 128 tokens = 2,949,120,000 tokens",
        "- Phase 2: 10,000 steps x 64 sequences x 512 tokens = 327,680,000 tokens",
        "- In all: 100,000 steps, 3,276,800,000 tokens"]
