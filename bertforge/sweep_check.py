"""Every point of a `-m` sweep checked before the first one runs.

Hydra composes a sweep point only when its turn comes, so a bad value in the third point would fail after
the first two had trained, and end the sweep before it wrote its comparison. This callback expands the
sweep as Hydra's basic sweeper does (the product of the swept values), composes each point, and runs the
same checks a single command runs before any stage: the config schema, the settings no folder name holds,
and the planning of every stage (input files, task files, checkpoints). Points that would push different
models to the same hub repo (and revision) are refused too: each push would replace the one before. Last, the
sweep takes its folder (`hydra.sweep.dir`) for itself: a folder another sweep used would mix the two sweeps'
jobs and rows.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from bertforge.common.errors import ConfigError, CorpusInputError
from bertforge.common.ranks import STAGE_VARIABLE

TARGETS = {"run": "publish"}  # a command that is not a stage: the stage it runs up to


def sweep_points(overrides: list[str], config_loader=None) -> list[list[str]]:
    """The overrides of each job of a basic sweep over `overrides`, in Hydra's job order. `config_loader`:
    the sweep's, which lists a config group's options for a glob() value (as Hydra's BasicSweeper does)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for override in OverridesParser.create(config_loader=config_loader).parse_overrides(overrides):
        key = override.get_key_element()
        values = override.sweep_string_iterator() if override.is_sweep_override() else \
            [override.get_value_element_as_str()]
        choices.append([f"{key}={value}" for value in values])
    return [list(point) for point in itertools.product(*choices)]


def check_point(command: str, config_name: str, overrides: list[str]) -> dict[tuple, str]:
    """Compose one point as its job will (from `config_name`: the command's own, or --config-name's) and run
    the checks `bertforge <command>` runs before any stage. Returns what it pushes to a hub (`push_targets`)."""
    from hydra import compose

    from bertforge.experiment import load_config
    from bertforge.stages import check_settings, plan

    cfg = load_config(compose(config_name=config_name, overrides=overrides))
    target = TARGETS.get(command, command)
    check_settings(cfg, target)
    return push_targets(cfg.publish, {planned.stage.name: planned.output.digest for planned in plan(cfg, target)})


def push_targets(publish, digests: dict[str, str]) -> dict[tuple, str]:
    """Where a point pushes, each with the stage folder whose model goes there: (hub, repo, revision) -> the
    publish folder's hash for the final push, (hub, repo, "step-N") -> the pretrain folder's for the
    intermediate checkpoints (`digests`: stage name -> folder hash, of the stages the command runs)."""
    from pretrain.publish.hub import hub_endpoint, pushing

    if not pushing(publish):
        return {}
    repo = (hub_endpoint(publish), publish.repo_id)
    targets = {}
    if "publish" in digests:
        targets[(*repo, publish.revision)] = digests["publish"]
    if publish.push_every_n_steps and "pretrain" in digests:
        targets[(*repo, "step-N")] = digests["pretrain"]
    return targets


def same_target(points: list[list[str]], targets: list[dict[tuple, str]]) -> str | None:
    """The first two points that push different models to one place, said as an error; else None."""
    first: dict[tuple, int] = {}
    for number, pushed in enumerate(targets):
        for where, digest in pushed.items():
            other = first.setdefault(where, number)
            if targets[other][where] != digest:
                endpoint, repo, revision = where
                return (f"sweep jobs #{other} ({' '.join(points[other])}) and #{number} ({' '.join(points[number])}) "
                        f"push different models to {endpoint}/{repo} at {revision}: each push would replace the one "
                        "before. Put a swept value into the repo name, e.g. "
                        "publish.repo_id='my-org/ga-bert-${tokenizer.vocab_size}' (or publish.revision for the "
                        "final push), or sweep without publish.push_to_hub and push the one you choose")
    return None


def sweep_error(command: str, config) -> str | None:
    """The first reason the sweep of `config` (Hydra's multirun config) must not start, said for the user;
    None when every point passes."""
    from hydra.core.global_hydra import GlobalHydra

    config_name = config.hydra.job.config_name
    # As Hydra's basic sweeper: the config's hydra.sweeper.params first, then the command line's overrides
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    points = sweep_points(params + list(config.hydra.overrides.task), GlobalHydra.instance().config_loader())
    targets = []
    for number, overrides in enumerate(points):
        try:
            targets.append(check_point(command, config_name, overrides))
        except (ConfigError, CorpusInputError) as err:
            return f"sweep job #{number} ({' '.join(overrides)}): {err}"
        except Exception as err:  # e.g. Hydra's, for an option that does not exist
            return f"sweep job #{number} ({' '.join(overrides)}): {type(err).__name__}: {err}"
    return same_target(points, targets)


def claim(sweep_dir: Path) -> str | None:
    """Make `sweep_dir` this sweep's, or say why not: when it exists, another sweep has used it (the
    comparison reads every job result in it) or is using it. Creating it is the claim: of two sweeps
    started at once, one gets it."""
    try:
        sweep_dir.mkdir(parents=True)
    except FileExistsError:
        return (f"the sweep folder {sweep_dir} exists: another sweep's jobs and results would mix with this "
                "one's. Set hydra.sweep.dir to a folder that does not exist yet (finished stages are reused)")
    return None


class SweepCheck(Callback):
    """Hydra callback (conf/base.yaml): a sweep with a bad point stops before its first job, naming it, and
    a sweep never shares its folder."""

    def on_multirun_start(self, config, **kwargs) -> None:
        # The command, not --config-name: the model card's reproduce config is named bertforge_config.
        command = os.environ.get(STAGE_VARIABLE) or config.hydra.job.config_name
        if command != "demo":  # the demo fetches its data first; it is not swept
            try:
                error = sweep_error(command, config)
            except Exception as err:  # Hydra would only warn and run the sweep unchecked
                error = f"the sweep could not be checked before its first job: {type(err).__name__}: {err}"
            if error:
                stop(command, error)
        error = claim(Path(config.hydra.sweep.dir))
        if error:
            stop(command, error)


def stop(command: str, error: str) -> None:
    # Hydra turns exceptions from callbacks into warnings and carries on; a sweep must stop here.
    print(f"bertforge {command}: error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
