"""Stage folders: named by a hash of what produced them, complete only when the marker exists.

A stage builds into a hidden temporary folder beside its final place, writes `manifest.json`,
then the completion marker, and only then renames the folder into place. A folder at the final
path is therefore always finished; a killed run leaves only a `.tmp-*` folder that is ignored
and cleaned up by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

COMPLETE_MARKER = "COMPLETE"
MANIFEST = "manifest.json"


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


@contextlib.contextmanager
def build_stage(work_dir: Path, stage: str, payload: dict, inputs: dict[str, str],
                run_id: str | None = None, publish: bool = True) -> Iterator[StageBuild]:
    """Context manager that builds one stage folder atomically.

    `payload` is the part of the resolved config the stage depends on; `inputs` maps upstream
    stage names to their hashes. Both go into the folder name and the manifest. On an exception
    the temporary folder is removed and nothing appears at the final path.

    A resumable build (several processes of one distributed run, or a SLURM job that may be
    requeued) passes a `run_id` shared by all of them: they all write into `.<name>.tmp-<run_id>`,
    and an attempt that dies leaves that folder (its checkpoints) for the next attempt with the
    same id instead of deleting it. Only the process with `publish=True` (rank 0) clears other
    runs' leftovers, writes the manifest and renames the folder into place; the others only write.
    """
    named = StageOutput(Path(work_dir), stage, payload, inputs)
    digest, final = named.digest, named.folder
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{run_id or os.getpid()}"
    if publish:
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            if stale != tmp:
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; never reused
    if run_id is None:
        tmp.mkdir()
    else:
        tmp.mkdir(exist_ok=True)  # another rank, or an earlier attempt of this run, may have made it
    started = time.time()
    manifest = {
        "stage": stage,
        "hash": digest,
        "config": payload,
        "inputs": inputs,
        "versions": _versions(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }
    build = StageBuild(stage=stage, final=final, tmp=tmp, manifest=manifest)
    try:
        yield build
    except BaseException:
        if run_id is None:  # a resumable build keeps its checkpoints for the next attempt
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not publish:
        return
    manifest["seconds"] = round(time.time() - started, 3)
    write_json_atomic(tmp / MANIFEST, manifest)
    (tmp / COMPLETE_MARKER).write_text("ok\n")  # written last: the folder is finished
    if final.exists():  # a concurrent run finished the same stage first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.rename(tmp, final)


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
        return Path(self.work_dir) / self.stage / f"{self.stage}-{self.digest}"

    def build(self, run_id: str | None = None, publish: bool = True):
        """`build_stage` for this folder (see there for `run_id` and `publish`)."""
        return build_stage(self.work_dir, self.stage, self.payload, self.inputs, run_id=run_id, publish=publish)


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("bertforge", "torch", "transformers", "tokenizers", "datatrove", "lightning"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return versions
