"""Stage folders: named by a hash of what produced them, complete only when the marker exists.

A stage builds into a hidden working folder beside its final place, writes `manifest.json`,
then the completion marker, and only then renames the folder into place. A folder at the final
path is therefore always finished; a killed run leaves only a hidden folder, which the next run
of the same stage resumes (pretrain) or removes with a warning (the others).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bertforge.common.errors import FinishedMeanwhile, StageBusy

log = logging.getLogger("bertforge")

COMPLETE_MARKER = "COMPLETE"
MANIFEST = "manifest.json"
ATTEMPTS = "attempts.json"  # a resumable build's working folder: the seconds of each attempt so far


def config_hash(payload: Any) -> str:
    """A stable 12-hex-digit hash of any JSON-serialisable payload (key order does not matter)."""
    blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file() and (folder / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict:
    """The manifest of a finished stage folder; a clear error if the folder is not finished."""
    folder = Path(folder)
    if not is_complete(folder):
        raise FileNotFoundError(
            f"{folder} is not a finished bertforge stage folder (no {COMPLETE_MARKER} marker): "
            "run the stage that produces it first."
        )
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class StageBuild:
    """A stage folder being built: write into `tmp`, fill `manifest`, and it is published on exit."""

    stage: str
    final: Path
    tmp: Path
    manifest: dict
    started: float = field(default_factory=time.time)
    earlier_seconds: list[float] = field(default_factory=list)
    """A resumable build's earlier attempts' seconds (`ATTEMPTS` in its working folder)."""
    records_attempts: bool = False
    """Whether this process keeps `ATTEMPTS` (the publishing process of a resumable build)."""

    def record_attempt(self) -> None:
        """Write this attempt's seconds so far after the earlier attempts' into the working folder, so the attempt
        that finishes adds them up (`seconds` in the manifest). Called when an attempt stops and at each of its
        checkpoints: a killed attempt counts up to its last checkpoint, the work the next one goes on from."""
        if self.records_attempts:
            write_json_atomic(self.tmp / ATTEMPTS, [*self.earlier_seconds, round(time.time() - self.started, 3)])


@contextlib.contextmanager
def build_stage(work_dir: Path, stage: str, payload: dict, inputs: dict[str, str], resumable: bool = False,
                publish: bool = True, fresh: bool = False,
                keep_on_error: bool | tuple[type[BaseException], ...] = False) -> Iterator[StageBuild]:
    """Context manager that builds one stage folder atomically.

    `payload` is the part of the resolved config the stage depends on; `inputs` maps upstream
    stage names to their hashes. Both go into the folder name and the manifest. Only the process
    with `publish=True` (rank 0 of a distributed run) holds the stage's lock (`.<name>.lock`, an
    fcntl lock that a dead process no longer holds, so a second live run stops at once and is told
    who builds it), writes the manifest and renames the folder into place; other ranks only write.
    The locks live in `<work>/.locks/`.

    A resumable build (pretrain, corpus) writes into `.<name>.work`, named from the hash alone, so
    rerunning the same command, on any launcher, finds an interrupted attempt's work there and goes
    on. The folder is kept when the process is killed or interrupted, and when any error ends it
    with `keep_on_error`: any error when True (pretrain: its checkpoints), or an error of the exception types
    it lists (corpus: tasks that failed); an error otherwise (bad input) removes it.
    `fresh=True` sets such a folder aside (renamed, never deleted) and starts over. Other builds write
    into `.<name>.tmp-<pid>` and remove it on failure; a killed build's leftover is removed by the
    next one, with a warning.

    A folder found finished once the lock is held (another run finished it after the caller looked)
    raises FinishedMeanwhile before the body runs: the work is not done twice.
    """
    named = StageOutput(Path(work_dir), stage, payload, inputs)
    digest, final = named.digest, named.folder
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / (f".{final.name}.work" if resumable else f".{final.name}.tmp-{os.getpid()}")
    with _stage_lock(Path(work_dir), final) if publish else contextlib.nullcontext():
        if is_complete(final):
            raise FinishedMeanwhile(final)
        if publish:
            _clear_leftovers(final, tmp, fresh)
        tmp.mkdir(exist_ok=resumable)  # other ranks, or an earlier attempt, may have made a resumable one
        started = time.time()
        earlier = _earlier_attempts(tmp) if resumable else []
        manifest = {
            "stage": stage,
            "hash": digest,
            "config": payload,
            "inputs": inputs,
            "versions": _versions(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        }
        build = StageBuild(stage=stage, final=final, tmp=tmp, manifest=manifest, started=started,
                           earlier_seconds=earlier, records_attempts=resumable and publish)
        try:
            yield build
        except BaseException as err:
            interrupted = not isinstance(err, Exception)  # KeyboardInterrupt, SystemExit: not the input's fault
            kept = isinstance(err, keep_on_error) if isinstance(keep_on_error, tuple) else keep_on_error
            if not (resumable and (kept or interrupted)):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):  # never in place of the error that ended the attempt
                    build.record_attempt()
            raise
        if not publish:
            return
        this = round(time.time() - started, 3)
        manifest["seconds"] = round(sum(earlier) + this, 3)  # every attempt's: what the folder cost
        if earlier:
            manifest["attempt_seconds"] = [*earlier, this]
        (tmp / ATTEMPTS).unlink(missing_ok=True)  # now in the manifest
        write_json_atomic(tmp / MANIFEST, manifest)
        (tmp / COMPLETE_MARKER).write_text("ok\n")  # written last: the folder is finished
        if final.exists():  # finished meanwhile by a run that did not wait for the lock (an older bertforge)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, final)


def _lock_path(work_dir: Path, final: Path) -> Path:
    return Path(work_dir) / ".locks" / f"{final.name}.lock"


def _earlier_attempts(tmp: Path) -> list[float]:
    """The seconds of the attempts before this one that `StageBuild.record_attempt` wrote ([]: none, or a file a
    kill cut short)."""
    try:
        seconds = json.loads((tmp / ATTEMPTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [float(s) for s in seconds] if isinstance(seconds, list) else []


LOCK_TRIES = 5  # a waiting rank's probe (`_builder_alive`) holds the lock for microseconds: not a builder


@contextlib.contextmanager
def _stage_lock(work_dir: Path, final: Path) -> Iterator[None]:
    """Hold `<work>/.locks/<name>.lock` for the build; a second builder fails at once, naming the holder.
    (Outside the stage's own folder, so listing a stage's folders finds only stage folders.)"""
    path = _lock_path(work_dir, final)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < LOCK_TRIES - 1:
                    time.sleep(0.05)
        else:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StageBusy(f"{final.name} is being built by {holder} (lock {path}): wait for that run, or stop it "
                            "and rerun this command to resume its work") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _builder_alive(lock: Path) -> bool:
    """Whether a process holds `lock` now (a shared probe, released at once, fails while one builds)."""
    if not lock.exists():
        return False
    with open(lock, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


BUILDER_GRACE_S = 600.0  # how long a waiting rank waits for a builder that holds no lock (start-up, imports)


def wait_for_builder(work_dir: Path, folder: Path, poll_s: float = 2.0) -> None:
    """Another process (the first rank of a launch) builds `folder`: wait until it is complete, for as long as
    that takes while some process holds its lock. StageBusy when none has held it for `BUILDER_GRACE_S`
    (the builder died, or never started): its log says why."""
    lock = _lock_path(work_dir, folder)
    seen = time.monotonic()
    while not is_complete(folder):
        if _builder_alive(lock):
            seen = time.monotonic()
        elif time.monotonic() - seen > BUILDER_GRACE_S:
            raise StageBusy(f"{folder.name} is not built: this rank waits for the first process of the launch to "
                            f"build it, and no process has held its lock ({lock}) for {BUILDER_GRACE_S:.0f} s; see "
                            "the first process's log, then rerun the command")
        time.sleep(poll_s)


def _clear_leftovers(final: Path, tmp: Path, fresh: bool) -> None:
    """Under the lock: remove what killed non-resumable builds left, and set a resumable folder aside
    when asked to start over. Says what it does: nothing disappears silently."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        if stale != tmp:
            log.warning("%s: removing %s, left unfinished by a build that was killed", final.parent.name, stale)
            shutil.rmtree(stale, ignore_errors=True)
    if fresh and tmp.exists():
        aside = tmp.with_name(f"{tmp.name}-set-aside-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(tmp, aside)
        log.warning("%s: starting over (checkpoint.resume=false); the earlier attempt is kept in %s",
                    final.parent.name, aside)


def stage_folder(work_dir: Path, stage: str, digest: str) -> Path:
    """Where the finished folder of `stage` with hash `digest` lies: <work_dir>/<stage>/<stage>-<digest>."""
    return Path(work_dir) / stage / f"{stage}-{digest}"


@dataclass(frozen=True)
class StageOutput:
    """The folder one stage is asked to build: where it goes and what names it (from the stage graph).

    A stage function checks what it can first, then opens the folder with `build()` and writes
    into `StageBuild.tmp`; the folder appears at `folder` only when the build finishes.
    """

    work_dir: Path
    stage: str
    payload: dict
    inputs: dict[str, str]

    @property
    def digest(self) -> str:
        """The hash in the folder's name (and in its manifest)."""
        return config_hash({"stage": self.stage, "config": self.payload, "inputs": self.inputs})

    @property
    def folder(self) -> Path:
        return stage_folder(self.work_dir, self.stage, self.digest)

    def build(self, resumable: bool = False, publish: bool = True, fresh: bool = False,
              keep_on_error: bool | tuple[type[BaseException], ...] = False):
        """`build_stage` for this folder (see there for the switches)."""
        return build_stage(self.work_dir, self.stage, self.payload, self.inputs, resumable=resumable,
                           publish=publish, fresh=fresh, keep_on_error=keep_on_error)


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("bertforge", "torch", "transformers", "tokenizers", "datatrove", "lightning"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return versions
