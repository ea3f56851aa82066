"""The step-push callback against the local hub server: one upload in flight (a step that comes meanwhile is
skipped), a failed upload is a warning and training goes on, and steps the hub has are not pushed again."""

import logging
import threading
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi

from pretrain.config import PublishConfig
from pretrain.hub_push import HubCheckpointPush
from tests.hub_server import HubServer

TOKEN = "hf_callback_test_token_0123456789"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer(tmp_path / "hub", tokens={TOKEN}) as server:
        yield server


def write_export(model, folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')


def module(*rollback_steps):
    """The training module as the callback reads it: the rollbacks before this attempt (to_step of each)."""
    return SimpleNamespace(model=None, rollbacks=[{"to_step": step} for step in rollback_steps])


def steps(callback, *numbers):
    trainer = SimpleNamespace(global_step=0, is_global_zero=True)
    for step in numbers:
        trainer.global_step = step
        callback.on_train_batch_end(trainer, SimpleNamespace(model=None), None, None, 0)
    return trainer


def test_one_upload_in_flight_the_next_step_is_skipped(hub, tmp_path, caplog):
    publish = PublishConfig(push_to_hub=True, repo_id="org/m", endpoint=hub.url, push_every_n_steps=10)
    callback = HubCheckpointPush(publish, write_export, "test")
    trainer = SimpleNamespace(global_step=0, is_global_zero=True)
    callback.on_fit_start(trainer, module())
    release = threading.Event()
    upload = callback._api.upload_folder

    def slow_upload(**kwargs):  # the network is slow: the upload is still running at the next push step
        release.wait(30)
        return upload(**kwargs)

    callback._api.upload_folder = slow_upload
    with caplog.at_level(logging.WARNING, logger="bertforge.pretrain"):
        steps(callback, 10, 10, 15, 20)  # 10 twice: micro-batches of one optimiser step push once
        release.set()
        callback.finish()
    assert callback.pushed == ["step-000010"] and callback.skipped == ["step-000020"]
    assert "step-000020 not pushed" in caplog.text
    refs = {b.name for b in HfApi(endpoint=hub.url).list_repo_refs("org/m").branches}
    assert refs == {"main", "step-000010"}
    steps(callback, 30)
    callback.finish()
    assert callback.pushed == ["step-000010", "step-000030"]


def test_a_failed_upload_is_a_warning(hub, tmp_path, caplog, monkeypatch):
    publish = PublishConfig(push_to_hub=True, repo_id="org/m", endpoint=hub.url, push_every_n_steps=5)
    callback = HubCheckpointPush(publish, write_export, "test")
    callback.on_fit_start(SimpleNamespace(is_global_zero=True), module())
    monkeypatch.setenv("HF_TOKEN", "hf_revoked_meanwhile_000000000")  # the server now refuses every write
    with caplog.at_level(logging.WARNING, logger="bertforge.pretrain"):
        steps(callback, 5)
        callback.finish()
    assert callback.failed == ["step-000005"] and not callback.pushed
    assert "pushing step 5 to org/m@step-000005 failed" in caplog.text and "training goes on" in caplog.text
    assert "hf_revoked" not in caplog.text


def test_steps_on_the_hub_are_not_pushed_again(hub):
    """A resumed run skips the steps the hub holds for this pretrain stage (head commit made for it, with
    config.json and the weights); an empty branch an interrupted upload left is pushed again."""
    def with_weights(model, folder):
        write_export(model, folder)
        (folder / "model.safetensors").write_bytes(b"weights")

    api = HfApi(endpoint=hub.url)
    publish = PublishConfig(push_to_hub=True, repo_id="org/m", endpoint=hub.url, push_every_n_steps=5)
    first = HubCheckpointPush(publish, with_weights, "bertforge x: pretrain stage 0123456789ab")
    first.on_fit_start(SimpleNamespace(is_global_zero=True), module())
    steps(first, 5)
    first.finish()
    api.create_branch("org/m", branch="step-000010")  # the upload of step 10 died after create_branch
    callback = HubCheckpointPush(publish, with_weights, "bertforge x: pretrain stage 0123456789ab")
    callback.on_fit_start(SimpleNamespace(is_global_zero=True), module())
    steps(callback, 5, 10)
    callback.finish()
    assert callback.already_there == {"step-000005"} and callback.pushed == ["step-000010"]
    assert set(api.list_repo_files("org/m", revision="step-000010")) == {".gitattributes", "config.json",
                                                                       "model.safetensors"}


def test_after_a_rollback_the_retrained_steps_replace_the_abandoned_ones(hub, tmp_path):
    """optim.on_divergence=rollback starts the next attempt with the callback: the steps after the rollback
    point that the diverged attempt pushed hold weights it abandoned, and the retrained ones replace them.
    A run resumed after a crash (a new callback; the module's rollbacks come from its checkpoint) still
    tells the abandoned steps from the retrained ones, and one resumed from a checkpoint of before the
    rollback (which it does not know) pushes the later attempt's steps again."""
    attempt = {"n": 1}

    def export(model, folder):
        write_export(model, folder)
        (folder / "model.safetensors").write_text(f"attempt {attempt['n']}")

    publish = PublishConfig(push_to_hub=True, repo_id="org/m", endpoint=hub.url, push_every_n_steps=10)
    message = "bertforge x: pretrain stage 0123456789ab"
    start = SimpleNamespace(is_global_zero=True)

    def train(callback, fit_module, *numbers):
        callback.on_fit_start(start, fit_module)
        for step in numbers:  # one at a time: a step that comes while one uploads is skipped
            steps(callback, step)
            callback.finish()
        return callback

    callback = train(HubCheckpointPush(publish, export, message), module(), 10, 20, 30)
    attempt["n"] = 2  # diverged after 30, back to the step-10 checkpoint
    train(callback, module(10), 20)  # ... and the process dies after pushing step 20
    resumed = train(HubCheckpointPush(publish, export, message), module(10), 30, 40)
    assert resumed.already_there == {"step-000010", "step-000020"} and resumed.pushed == ["step-000030",
                                                                                          "step-000040"]
    api = HfApi(endpoint=hub.url)

    def held():
        found = {}
        for branch in ("step-000010", "step-000020", "step-000030", "step-000040"):
            api.hf_hub_download("org/m", "model.safetensors", revision=branch, local_dir=tmp_path / "dl" / branch)
            found[branch] = (tmp_path / "dl" / branch / "model.safetensors").read_text()
        return found

    assert held() == {"step-000010": "attempt 1", "step-000020": "attempt 2", "step-000030": "attempt 2",
                      "step-000040": "attempt 2"}
    attempt["n"] = 1  # resumed from the diverged attempt's step-30 checkpoint: it knows no rollback
    before = train(HubCheckpointPush(publish, export, message), module(), 40)
    assert before.already_there == {"step-000010"} and before.pushed == ["step-000040"]
    assert held()["step-000040"] == "attempt 1"


def test_step_exports_wait_beside_the_run_folder_and_a_killed_runs_are_removed(hub, tmp_path):
    """The exports go to `<run folder>.hub-push` (the run's working folder becomes the stage folder: never inside
    it), not the system temp folder: what a killed run left there goes at the next start, the rest at the end."""
    run_folder = tmp_path / "pretrain" / ".pretrain-0123456789ab.work"
    left = tmp_path / "pretrain" / ".pretrain-0123456789ab.work.hub-push" / "step-000020"
    left.mkdir(parents=True)
    (left / "model.safetensors").write_text("an export a SIGKILL left")
    seen = []

    def export(model, folder):
        seen.append(folder)
        write_export(model, folder)

    publish = PublishConfig(push_to_hub=True, repo_id="org/m", endpoint=hub.url, push_every_n_steps=10)
    callback = HubCheckpointPush(publish, export, "test")
    callback.on_fit_start(SimpleNamespace(is_global_zero=True, default_root_dir=str(run_folder)), module())
    assert not left.exists()
    steps(callback, 10)
    callback.finish()
    assert seen == [left.parent / "step-000010"] and callback.pushed == ["step-000010"]
    assert not left.parent.exists() and not run_folder.exists()
