"""Bad push settings fail before any stage runs, each naming the key and what to do (no training here)."""

import socket

import pytest

from bertforge.common.errors import ConfigError
from bertforge.stages import check_settings, plan, run_stages
from tests.hub_server import HubServer

TOKEN = "hf_preflight_test_token_0123456789"


@pytest.fixture
def no_stored_token(monkeypatch, tmp_path):
    """Only HF_TOKEN counts: a login stored on this machine must not make a test pass or fail."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


@pytest.fixture
def hub(tmp_path):
    with HubServer(tmp_path / "hub", tokens={TOKEN}) as server:
        yield server


def fails_before_any_stage(make_cfg, tmp_path, overrides, *expected):
    cfg = make_cfg("publish", ["experiment=demo_ga", "publish.push_to_hub=true", *overrides])
    with pytest.raises(ConfigError) as err:
        run_stages(cfg, "publish")
    for text in expected:
        assert text in str(err.value), str(err.value)
    work = tmp_path / "work"
    assert not work.exists() or not any(work.iterdir()), list(work.rglob("*"))  # nothing was built
    return str(err.value)


@pytest.mark.parametrize("repo_id", ["no namespace", "org/na me", "org//x", "a/b/c", "org/" + "x" * 100, "org/-x--y"])
def test_malformed_repo_id(make_cfg, tmp_path, no_stored_token, repo_id):
    fails_before_any_stage(make_cfg, tmp_path, [f"publish.repo_id='{repo_id}'"], "publish.repo_id", "org/name"
                           if repo_id.count("/") != 1 else "publish.repo_id")


def test_empty_repo_id(make_cfg, tmp_path, no_stored_token):
    fails_before_any_stage(make_cfg, tmp_path, [], "publish.repo_id is empty")


def test_no_token_for_a_server_that_needs_one(make_cfg, tmp_path, no_stored_token, hub):
    message = fails_before_any_stage(make_cfg, tmp_path, ["publish.repo_id=org/ga", f"publish.endpoint={hub.url}"],
                                     "needs a token", "HF_TOKEN", "hf auth login")
    assert hub.url in message


def test_a_token_the_server_rejects(make_cfg, tmp_path, no_stored_token, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one_0000000000")
    message = fails_before_any_stage(make_cfg, tmp_path, ["publish.repo_id=org/ga", f"publish.endpoint={hub.url}"],
                                     "rejected the token")
    assert "hf_not_the_right_one" not in message


def test_a_server_that_cannot_be_reached(make_cfg, tmp_path, no_stored_token, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fails_before_any_stage(make_cfg, tmp_path, ["publish.repo_id=org/ga", f"publish.endpoint=http://127.0.0.1:{port}"],
                           "cannot reach", f"127.0.0.1:{port}", "publish.endpoint")


@pytest.mark.parametrize("orgs, repo_id, why", [
    ({"org": "write"}, "someone-elses-org/ga", "someone-elses-org is neither the account nor one of its orgs"),
    ({"org": "write", "readers": "read"}, "readers/ga", "its role in readers is read")])
def test_a_namespace_the_token_cannot_write_to(make_cfg, tmp_path, no_stored_token, monkeypatch, orgs, repo_id,
                                               why):
    """whoami names the account and its orgs: a repo elsewhere fails now, not with a 403 after every stage ran."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer(tmp_path / "hub", tokens={TOKEN}, orgs=orgs) as hub:
        message = fails_before_any_stage(make_cfg, tmp_path, [f"publish.repo_id={repo_id}",
                                                              f"publish.endpoint={hub.url}"],
                                         f"publish.repo_id='{repo_id}'", why, "account tester", "org (write)")
    assert TOKEN not in message


def test_the_accounts_own_namespace_and_its_orgs_pass(make_cfg, no_stored_token, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for repo_id in ("tester/ga", "org/ga", "Org/ga"):
        check_settings(make_cfg("publish", ["experiment=demo_ga", "publish.push_to_hub=true",
                                            f"publish.repo_id={repo_id}", f"publish.endpoint={hub.url}"]), "publish")


def test_steps_to_push_without_push_to_hub(make_cfg, tmp_path):
    cfg = make_cfg("pretrain", ["experiment=demo_ga", "publish.push_every_n_steps=10"])
    with pytest.raises(ConfigError, match="publish.push_every_n_steps is set but publish.push_to_hub=false"):
        run_stages(cfg, "pretrain")


@pytest.mark.parametrize("key", ["evaluate.checkpoint", "downstream.checkpoint"])
def test_a_card_never_carries_another_models_scores(make_cfg, tmp_path, key):
    """evaluate.checkpoint / downstream.checkpoint score another model; publish refuses before any stage runs."""
    cfg = make_cfg("publish", ["experiment=demo_ga", f"{key}={tmp_path}", "downstream=ud_irish"], work_dir=tmp_path / "w")
    with pytest.raises(ConfigError, match=f"{key}=.* scores another model.*drop {key} to publish"):
        run_stages(cfg, "publish")
    assert not (tmp_path / "w").exists()
    check_settings(cfg, key.split(".")[0])  # scoring another model on its own is what the key is for


def test_a_good_token_passes_and_pretrain_checks_too(make_cfg, no_stored_token, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    cfg = make_cfg("pretrain", ["experiment=demo_ga", "publish.push_to_hub=true", "publish.repo_id=org/ga",
                                f"publish.endpoint={hub.url}", "publish.push_every_n_steps=10"])
    check_settings(cfg, "pretrain")  # the check ran and passed
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ConfigError, match="needs a token"):  # the pretrain command checks before training
        check_settings(cfg, "pretrain")


def test_push_settings_name_no_stage_folder(make_cfg):
    """Pushing uploads a finished folder: `publish.push_to_hub=true` after a local publish reuses every stage."""
    local = {s.stage.name: s.output.folder for s in plan(make_cfg("publish", ["experiment=demo_ga"]), "publish")}
    pushed = {s.stage.name: s.output.folder for s in plan(make_cfg("publish", [
        "experiment=demo_ga", "publish.dry_run=true", "publish.repo_id=org/ga", "publish.private=false",
        "publish.revision=release", "publish.endpoint=http://127.0.0.1:9", "publish.push_every_n_steps=5"]),
        "publish")}
    assert pushed == local
    card = {s.stage.name: s.output.folder for s in plan(make_cfg("publish", ["experiment=demo_ga",
                                                                             "publish.license=mit"]), "publish")}
    assert card["publish"] != local["publish"] and card["pretrain"] == local["pretrain"]
