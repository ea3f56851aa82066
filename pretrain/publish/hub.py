"""Pushing to a hub with the real huggingface_hub client: the pre-flight check, the final push of a
published folder, and the names of the per-step revisions.

The token is never ours to hold: huggingface_hub finds it (HF_TOKEN, or the store `hf auth login`
writes) and we only ask whether there is one. Nothing here logs, prints or writes it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bertforge.common.errors import ConfigError
from pretrain.config import PublishConfig

log = logging.getLogger("bertforge.publish")

STEP_BRANCH = re.compile(r"step-(\d+)")
CHECK_TIMEOUT_S = 15.0


def step_branch(step: int) -> str:
    """The revision an intermediate checkpoint goes to: step-000100 (sorts by name in step order)."""
    return f"step-{step:06d}"


def pushing(publish: PublishConfig) -> bool:
    """Whether this command talks to a hub at all (a dry run only says what it would do)."""
    return publish.push_to_hub and not publish.dry_run


def first_process() -> bool:
    """Whether this is global rank 0 (or a single process). Ranks that Lightning, torchrun or SLURM start also
    run the stage graph; only the first talks to the hub, so a run pushes once and asks whoami once."""
    return all(os.environ.get(name, "0") in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def hub_endpoint(publish: PublishConfig) -> str:
    """publish.endpoint, else HF_ENDPOINT, else the client's default (huggingface.co)."""
    from huggingface_hub import constants

    return (publish.endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_api(publish: PublishConfig):
    from huggingface_hub import HfApi

    # The client's HTTP library logs every request at INFO: a push of many files would bury our own lines.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    return HfApi(endpoint=hub_endpoint(publish))  # token: the library's own lookup, at each call


def check_publish_settings(publish: PublishConfig) -> None:
    """The push keys make sense together and `repo_id` is a valid hub id (no network)."""
    if publish.push_every_n_steps < 0:
        raise ConfigError(f"publish.push_every_n_steps={publish.push_every_n_steps}: give 0 (never) or a step count")
    if not (publish.push_to_hub or publish.dry_run):
        if publish.push_every_n_steps:
            raise ConfigError("publish.push_every_n_steps is set but publish.push_to_hub=false: set "
                              "publish.push_to_hub=true publish.repo_id=org/name (or drop push_every_n_steps)")
        return
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not publish.repo_id:
        raise ConfigError("publish.repo_id is empty: name the hub repo to push to, e.g. publish.repo_id=my-org/ga-bert")
    try:
        if publish.repo_id.count("/") != 1:
            raise HFValidationError("it must be one namespace and one name, org/name")
        validate_repo_id(publish.repo_id)
    except HFValidationError as err:
        raise ConfigError(f"publish.repo_id={publish.repo_id!r} is not a hub repo id: {str(err).splitlines()[0]} "
                          "(letters, digits, '-', '_', '.'; at most 96 characters; e.g. my-org/ga-bert)") from None
    if not re.fullmatch(r"[\w.\-]+", publish.revision) or STEP_BRANCH.fullmatch(publish.revision):
        raise ConfigError(f"publish.revision={publish.revision!r}: give a branch name such as main (step-N names are "
                          "kept for the intermediate checkpoints)")


def check_hub(publish: PublishConfig) -> str | None:
    """Pre-flight, before any stage runs: the settings, then ask the server (whoami) whether it is there
    and takes our token for writing. Returns the account name, or None when nothing will be pushed."""
    check_publish_settings(publish)
    if not pushing(publish) or not first_process():
        return None
    from huggingface_hub import get_token
    from huggingface_hub.utils import build_hf_headers, get_session

    endpoint, token = hub_endpoint(publish), get_token()
    where = "publish.endpoint" if publish.endpoint else "HF_ENDPOINT" if os.environ.get("HF_ENDPOINT") else "the hub"
    # Without a token we still ask: a server that answers whoami without one takes anonymous writes.
    headers = build_hf_headers(token=token or False)
    try:
        answer = get_session().get(f"{endpoint}/api/whoami-v2", headers=headers, timeout=CHECK_TIMEOUT_S)
    except Exception as err:  # httpx connection errors, timeouts, bad URLs: all mean "cannot reach it"
        raise ConfigError(f"publish.push_to_hub: cannot reach {endpoint} ({where}): {type(err).__name__}: "
                          f"{str(err).splitlines()[0][:160] if str(err) else 'no answer'}. Check publish.endpoint / "
                          "HF_ENDPOINT and the network, or set publish.dry_run=true to see what would be pushed") from None
    if answer.status_code in (401, 403):
        if token is None:
            raise ConfigError(f"publish.push_to_hub: {endpoint} needs a token to create {publish.repo_id} and none was "
                              "found: set HF_TOKEN or run `hf auth login` (never put the token in a config)")
        raise ConfigError(f"publish.push_to_hub: {endpoint} rejected the token huggingface_hub found (HF_TOKEN or "
                          "the stored login): use a token with write access to "
                          f"{publish.repo_id.split('/')[0]}")
    if answer.status_code >= 400:
        raise ConfigError(f"publish.push_to_hub: {endpoint}/api/whoami-v2 answered HTTP {answer.status_code}: is "
                          f"{endpoint} a hub server? Check publish.endpoint / HF_ENDPOINT")
    me = answer.json() if answer.content else {}
    role = me.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise ConfigError(f"publish.push_to_hub: the token huggingface_hub found is read-only on {endpoint}: "
                          f"use one with write access to {publish.repo_id.split('/')[0]}")
    return me.get("name")


@dataclass(frozen=True)
class Upload:
    """What one push sends: every file of a folder, with the card text given separately."""

    folder: Path
    files: list[Path]

    @classmethod
    def of(cls, folder: Path) -> "Upload":
        return cls(folder, sorted(p for p in Path(folder).rglob("*") if p.is_file()))

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def describe_push(publish: PublishConfig, upload: Upload, message: str) -> str:
    """The dry run's answer: target, revision, every file with its size."""
    rows = [f"dry run: would push {len(upload.files)} files ({_size(upload.total_bytes)}) to "
            f"{hub_endpoint(publish)}/{publish.repo_id} at revision {publish.revision} "
            f"({'private' if publish.private else 'public'} if created)", f"  commit message: {message}"]
    rows += [f"  {_size(p.stat().st_size):>10}  {p.relative_to(upload.folder).as_posix()}" for p in upload.files]
    if publish.push_every_n_steps:
        rows.append(f"  intermediate checkpoints: every {publish.push_every_n_steps} steps during pretrain, to "
                    f"branches {step_branch(publish.push_every_n_steps)}, {step_branch(2 * publish.push_every_n_steps)}, ...")
    return "\n".join(rows)


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:,} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return str(count)


def step_revisions(api, repo_id: str) -> list[str]:
    """The step-N branches already on the hub, in step order."""
    refs = api.list_repo_refs(repo_id)
    return sorted((b.name for b in refs.branches if STEP_BRANCH.fullmatch(b.name)),
                  key=lambda name: int(STEP_BRANCH.fullmatch(name)[1]))


def push_published(publish: PublishConfig, model_dir: Path, message: str, card_with_revisions) -> str | None:
    """Upload the published folder `model_dir` to `publish.repo_id` at `publish.revision` in one commit.

    `card_with_revisions(list of step branches) -> README text`: the card pushed lists the step revisions
    the repo has at that moment. A dry run prints what it would send and returns None; else the commit URL.
    """
    upload = Upload.of(model_dir)
    if publish.dry_run:
        print(describe_push(publish, upload, message))
        return None
    from huggingface_hub import CommitOperationAdd

    api = hub_api(publish)
    api.create_repo(publish.repo_id, private=publish.private, exist_ok=True)
    if publish.revision != "main":
        api.create_branch(publish.repo_id, branch=publish.revision, exist_ok=True)
    card = card_with_revisions(step_revisions(api, publish.repo_id))
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(model_dir).as_posix(), path_or_fileobj=str(p))
                  for p in upload.files if p.name != "README.md" or p.parent != model_dir]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    commit = api.create_commit(publish.repo_id, operations, commit_message=message, revision=publish.revision)
    log.info("publish: pushed %d files (%s) to %s/%s at %s: %s", len(operations), _size(upload.total_bytes),
             hub_endpoint(publish), publish.repo_id, publish.revision, commit.commit_url)
    return commit.commit_url
