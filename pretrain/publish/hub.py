"""Pushing to a hub with the real huggingface_hub client: the pre-flight check, the final push of a
published folder, and the names of the per-step revisions.

Every push leaves its branch holding exactly the folder's files (and the hub's .gitattributes): a file an
earlier push left there is deleted in the same commit. The final push sends only the files the publish
stage wrote (its manifest's list): anything put into the finished folder later stays out. A step branch
counts as this model's only when its head commit was made for the same pretrain stage (the commit title
names the stage's hash, `stage_mark`), by an attempt whose weights at that step were not abandoned by a later
`optim.on_divergence=rollback`, and it holds config.json and every weights file: an interrupted upload, a
diverged attempt's step or another model's push is pushed again. A new step branch holds no model until its
upload commits (`new_step_branch`): never main's, which would be served as that step.

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
from bertforge.common.ranks import first_process
from pretrain.config import PublishConfig

log = logging.getLogger("bertforge.publish")

STEP_BRANCH = re.compile(r"step-(\d+)")
CHECK_TIMEOUT_S = 15.0
KEEP_ON_HUB = (".gitattributes",)  # the hub's own file (LFS rules): never deleted by a push
WEIGHTS = re.compile(r"(model\.safetensors|pytorch_model\.bin)")
SHARD = re.compile(r"(model|pytorch_model)-(\d+)-of-(\d+)\.(safetensors|bin)")  # transformers' sharded names
STEP_TITLE = r"( \(rollback (?P<rollbacks>\d+)\))?( \(part \d+\))?$"  # after `step_message`'s "...: step N"


def step_branch(step: int) -> str:
    """The revision an intermediate checkpoint goes to: step-000100 (sorts by name in step order)."""
    return f"step-{step:06d}"


def step_of(branch: str) -> int:
    """The step a step-N branch holds."""
    return int(STEP_BRANCH.fullmatch(branch)[1])


def pushing(publish: PublishConfig) -> bool:
    """Whether this command talks to a hub at all (a dry run only says what it would do)."""
    return publish.push_to_hub and not publish.dry_run


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
    # only the first process talks to the hub: a run asks whoami once
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
    if me.get("name"):  # a server that answers without a token names nobody: nothing to compare
        check_namespace(publish.repo_id, me, endpoint)
    return me.get("name")


def check_namespace(repo_id: str, me: dict, endpoint: str) -> None:
    """The repo's namespace is the token's account or one of its orgs (whoami-v2's `orgs[].name`) where
    its role is not "read": else creating or pushing the repo would fail with a 403 after every stage ran."""
    namespace = repo_id.split("/")[0]
    roles = {me["name"].lower(): "owner"} | {org["name"].lower(): org.get("roleInOrg") or "member"
                                             for org in me.get("orgs", []) if org.get("name")}
    role = roles.get(namespace.lower())
    if role not in (None, "read"):
        return
    orgs = ", ".join(f"{org['name']} ({org.get('roleInOrg') or 'member'})" for org in me.get("orgs", [])) or "none"
    why = (f"its role in {namespace} is read" if role == "read" else
           f"{namespace} is neither the account nor one of its orgs")
    raise ConfigError(f"publish.repo_id={repo_id!r}: the token huggingface_hub found on {endpoint} is the account "
                      f"{me['name']} (orgs: {orgs}), and {why}: push to {me['name']}/{repo_id.split('/')[1]} or "
                      f"an org it can write to, or use a token of an account that can write to {namespace}")


@dataclass(frozen=True)
class Upload:
    """What one push sends: the files of a folder, with the card text given separately."""

    folder: Path
    files: list[Path]

    @classmethod
    def of(cls, folder: Path, recorded: list[str] | None = None) -> "Upload":
        """Every file of `folder`, or with `recorded` (paths relative to it: the files the publish stage wrote,
        from its manifest) exactly those. A file found beside them (Hydra's outputs/ from running the card's
        command in the folder, a file added by hand) is left out with a warning; a recorded file that is
        gone is a ConfigError, since the push would delete it from the hub."""
        folder = Path(folder)
        found = sorted(p for p in folder.rglob("*") if p.is_file())
        if recorded is None:  # a publish folder built before its manifest listed the files
            return cls(folder, found)
        listed = set(recorded)
        names = {p: p.relative_to(folder).as_posix() for p in found}
        missing = sorted(listed - set(names.values()))
        if missing:
            raise ConfigError(f"publish: {folder} lacks {', '.join(missing)}, which the publish stage wrote there "
                              f"(model_files in {folder.parent / 'manifest.json'}): the folder was changed after "
                              f"it was built; move {folder.parent} aside and rerun the command to build it again")
        extra = [name for name in names.values() if name not in listed]
        if extra:
            log.warning("publish: %s holds %d file(s) the publish stage did not write, left out of the push: %s%s. "
                        "Remove them (the stage's own files are listed under model_files in %s)", folder,
                        len(extra), ", ".join(extra[:5]), ", ..." if len(extra) > 5 else "",
                        folder.parent / "manifest.json")
        return cls(folder, [p for p in found if names[p] in listed])

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def describe_push(publish: PublishConfig, upload: Upload, message: str, steps_note: str = "") -> str:
    """The dry run's answer: target, revision, every file with its size, and what happens to the
    intermediate checkpoints (`steps_note`, from `pretrain.publish.stage.steps_pushed`)."""
    rows = [f"dry run: would push {len(upload.files)} files ({_size(upload.total_bytes)}) to "
            f"{hub_endpoint(publish)}/{publish.repo_id} at revision {publish.revision} "
            f"({'private' if publish.private else 'public'} if created), replacing what it holds "
            f"(all but {', '.join(KEEP_ON_HUB)})", f"  commit message: {message}"]
    rows += [f"  {_size(p.stat().st_size):>10}  {p.relative_to(upload.folder).as_posix()}" for p in upload.files]
    if publish.push_every_n_steps:
        rows.append(f"  intermediate checkpoints: {steps_note or step_plan(publish)}")
    return "\n".join(rows)


def step_plan(publish: PublishConfig) -> str:
    n = publish.push_every_n_steps
    return f"every {n} steps during pretrain, to branches {step_branch(n)}, {step_branch(2 * n)}, ..."


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:,} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return str(count)


def stage_mark(pretrain_hash: str) -> str:
    """What a step commit's title says to name the model it holds: the pretrain stage folder's hash (the
    pretrain stage's push message, `bertforge <run>: pretrain stage <hash>`, ends with it)."""
    return f"pretrain stage {pretrain_hash}"


def step_message(message: str, step: int, rollbacks: int = 0) -> str:
    """The title of the commit that pushes `step` (`message` names the pretrain stage, see `stage_mark`) from
    the attempt that followed `rollbacks` rollbacks (optim.on_divergence=rollback)."""
    return f"{message}: step {step}" + (f" (rollback {rollbacks})" if rollbacks else "")


def weights_complete(files: set[str]) -> bool:
    """Whether `files` hold a whole set of weights: one weights file, or every shard of a sharded set
    (model-00001-of-00003.safetensors ... : the names carry the count)."""
    if any(WEIGHTS.fullmatch(name) for name in files):
        return True
    shards: dict[tuple[str, str, int], set[int]] = {}  # (name, format, count): the shard numbers there
    for m in filter(None, map(SHARD.fullmatch, files)):
        shards.setdefault((m[1], m[4], int(m[3])), set()).add(int(m[2]))
    return any(found == set(range(1, count + 1)) for (_, _, count), found in shards.items())


def step_branches(api, repo_id: str) -> list[str]:
    """Every step-N branch on the hub, whoever pushed it, in step order."""
    refs = api.list_repo_refs(repo_id)
    return sorted((b.name for b in refs.branches if STEP_BRANCH.fullmatch(b.name)),
                  key=step_of)


def holds_step(api, repo_id: str, branch: str, mark: str, rollback_steps: list[int] = ()) -> bool:
    """Whether `branch` holds this model's step: its head commit was made for `mark` (see `stage_mark`) at that
    step (a multi-part upload's later commits add " (part N)") and it has config.json and the whole weights.

    `rollback_steps`: the step each rollback of the run went back to, in order. A step past rollback k's
    step was pushed again by the attempt after it, so the commit must come from that attempt or a later
    one (its title's "(rollback N)"), and from no attempt the run does not know (one whose checkpoint was
    lost with a crash). An interrupted upload (an empty branch, or part of the files), a diverged attempt's
    step or another model's push does not count."""
    step = step_of(branch)
    head = api.list_repo_commits(repo_id, revision=branch)[0]
    title = re.search(rf"(^|\b){re.escape(step_message(mark, step))}{STEP_TITLE}", head.title)
    if not title:
        return False
    attempt = int(title["rollbacks"] or 0)
    needed = max((k for k, to_step in enumerate(rollback_steps, 1) if to_step < step), default=0)
    if not needed <= attempt <= len(rollback_steps):
        return False
    files = set(api.list_repo_files(repo_id, revision=head.commit_id))
    return "config.json" in files and weights_complete(files)


def empty_start(api, repo_id: str) -> str | None:
    """The commit a new step branch starts from: the repo's first (the hub's initial commit holds only
    .gitattributes), so a branch whose upload never made its commit holds no model at all, and
    `from_pretrained(..., revision=...)` fails on it rather than loading main's model. None when that commit
    holds more (a repo made some other way): `new_step_branch` then empties the branch itself."""
    first = api.list_repo_commits(repo_id)[-1].commit_id  # newest first: the last is the root
    return first if set(api.list_repo_files(repo_id, revision=first)) <= set(KEEP_ON_HUB) else None


def new_step_branch(api, repo_id: str, branch: str, start: str | None) -> None:
    """Make `branch` for a step's upload, holding no model until that upload commits: from `start` (see
    `empty_start`), or, without one, from main and emptied at once (main's model on a step branch would be
    served as that step by a failed or killed upload). A branch that is there already is left as it is: it
    holds another push's step, which the upload's own commit replaces."""
    from huggingface_hub import CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_branch(repo_id, branch=branch, revision=start)
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code == 409:  # there already
            return
        raise
    if start is None:
        files = [path for path in api.list_repo_files(repo_id, revision=branch) if path not in KEEP_ON_HUB]
        if files:
            api.create_commit(repo_id, [CommitOperationDelete(path_in_repo=path) for path in files],
                              commit_message="bertforge: step branch emptied for its upload", revision=branch)


def model_steps(api, repo_id: str, mark: str, rollback_steps: list[int] = ()) -> list[str]:
    """The step-N branches that hold this model's steps (`holds_step`), in step order."""
    return [branch for branch in step_branches(api, repo_id)
            if holds_step(api, repo_id, branch, mark, rollback_steps)]


def stale_files(api, repo_id: str, revision: str, keep: set[str]) -> list[str]:
    """Files on `revision` that a push of exactly `keep` must delete (the hub's .gitattributes stays)."""
    return [path for path in api.list_repo_files(repo_id, revision=revision)
            if path not in keep and path not in KEEP_ON_HUB]


def push_published(publish: PublishConfig, model_dir: Path, message: str, card_with_revisions, *,
                   pretrain_hash: str | None = None, rollback_steps: list[int] = (), steps_note: str = "",
                   files: list[str] | None = None) -> str | None:
    """Upload the published folder `model_dir` to `publish.repo_id` at `publish.revision` in one commit that
    also deletes every file the branch held and the folder lacks, so the branch holds exactly the folder:
    its files named in `files` (the publish stage's list, see `Upload.of`), or all of them when not given.

    `card_with_revisions(list of step branches) -> README text`: the card pushed lists the step branches
    that hold this model's steps (made for the pretrain stage `pretrain_hash`, whose run rolled back to
    `rollback_steps`; none when it is not given).
    A dry run prints what it would send (with `steps_note`, see `describe_push`) and returns None; else
    the commit URL.
    """
    upload = Upload.of(model_dir, files)
    if publish.dry_run:
        print(describe_push(publish, upload, message, steps_note))
        return None
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api = hub_api(publish)
    api.create_repo(publish.repo_id, private=publish.private, exist_ok=True)
    if publish.revision != "main":
        api.create_branch(publish.repo_id, branch=publish.revision, exist_ok=True)
    steps = model_steps(api, publish.repo_id, stage_mark(pretrain_hash), rollback_steps) if pretrain_hash else []
    card = card_with_revisions(steps)
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(model_dir).as_posix(), path_or_fileobj=str(p))
                  for p in upload.files if p.name != "README.md" or p.parent != model_dir]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    gone = stale_files(api, publish.repo_id, publish.revision, {op.path_in_repo for op in operations})
    operations += [CommitOperationDelete(path_in_repo=path) for path in gone]
    commit = api.create_commit(publish.repo_id, operations, commit_message=message, revision=publish.revision)
    log.info("publish: pushed %d files (%s) to %s/%s at %s%s: %s", len(operations) - len(gone),
             _size(upload.total_bytes), hub_endpoint(publish), publish.repo_id, publish.revision,
             f", deleting {len(gone)} that an earlier push left ({', '.join(gone[:5])}"
             f"{', ...' if len(gone) > 5 else ''})" if gone else "", commit.commit_url)
    return commit.commit_url
