"""Every point of a `-m` sweep checked before the first one runs.

Hydra composes a sweep point only when its turn comes, so a bad value in the third point would fail after
the first two had trained, and end the sweep before it wrote its comparison. This callback expands the
sweep as Hydra's basic sweeper does (the product of the swept values), composes each point, and runs the
same checks a single command runs before any stage: the config schema, the settings no folder name holds,
and the planning of every stage (input files, task files, checkpoints).
"""

from __future__ import annotations

import itertools
import sys

from hydra.experimental.callback import Callback

from bertforge.common.errors import ConfigError, CorpusInputError

TARGETS = {"run": "publish"}  # a command that is not a stage: the stage it runs up to


def sweep_points(overrides: list[str]) -> list[list[str]]:
    """The overrides of each job of a basic sweep over `overrides`, in Hydra's job order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        values = override.sweep_string_iterator() if override.is_sweep_override() else \
            [override.get_value_element_as_str()]
        choices.append([f"{key}={value}" for value in values])
    return [list(point) for point in itertools.product(*choices)]


def check_point(command: str, overrides: list[str]) -> None:
    """Compose one point as its job will and run the checks `bertforge <command>` runs before any stage."""
    from hydra import compose

    from bertforge.experiment import load_config
    from bertforge.stages import check_settings, plan

    cfg = load_config(compose(config_name=command, overrides=overrides))
    target = TARGETS.get(command, command)
    check_settings(cfg, target)
    plan(cfg, target)


class SweepCheck(Callback):
    """Hydra callback (conf/base.yaml): a sweep with a bad point stops before its first job, naming it."""

    def on_multirun_start(self, config, **kwargs) -> None:
        command = config.hydra.job.config_name
        if command == "demo":  # the demo fetches its data first; it is not swept
            return
        points = sweep_points(list(config.hydra.overrides.task))
        for number, overrides in enumerate(points):
            try:
                check_point(command, overrides)
            except (ConfigError, CorpusInputError) as err:
                # Hydra turns exceptions from callbacks into warnings and carries on; a sweep must stop here.
                print(f"bertforge {command}: error: sweep job #{number} ({' '.join(overrides)}): {err}",
                      file=sys.stderr)
                raise SystemExit(2) from None
