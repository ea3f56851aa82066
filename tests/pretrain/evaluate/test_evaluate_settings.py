"""Evaluate settings that score nothing or fail mid-scoring are refused from the config alone, naming the key:
`evaluate.mask_draws=0` once wrote a metrics.json of zeros (loss 0.0, accuracy 0.0, masked_tokens 0) that
publish put in the model card, and `evaluate.batch_size=0` ended in range()'s ValueError."""

from __future__ import annotations

import re

import pytest

from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import StageOutput
from pretrain.config import EvaluateConfig, MaskingConfig


@pytest.mark.parametrize("settings, message", [
    ({"batch_size": 0}, "evaluate.batch_size=0: give at least 1"),
    ({"mask_draws": 0}, "evaluate.mask_draws=0: give at least 1"),
    ({"mask_draws": -1}, "evaluate.mask_draws=-1: give at least 1"),
    ({"max_rows": -3}, "evaluate.max_rows=-3: give 0 (every held-out row) or a row count"),
    ({"mask_ratio": 0.0}, "evaluate.mask_ratio=0.0 must lie strictly between 0 and 1"),
    ({"mask_ratio": 1.5}, "evaluate.mask_ratio=1.5 must lie strictly between 0 and 1"),
])
def test_evaluate_settings_that_cannot_score_are_refused(settings, message):
    from pretrain.evaluate.stage import check_evaluate_config  # for the evaluate stage's planning checks

    check_evaluate_config(EvaluateConfig())
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_evaluate_config(EvaluateConfig(**settings))


def test_the_build_refuses_them_before_reading_the_shards(tmp_path):
    from pretrain.evaluate.stage import build_evaluate

    out = StageOutput(tmp_path / "work", "evaluate", {}, {})
    with pytest.raises(ConfigError, match="evaluate.mask_draws=0"):
        build_evaluate(EvaluateConfig(mask_draws=0), MaskingConfig(), 0, tmp_path / "hf", own_model=True,
                       shards_dir=tmp_path / "no-shards", out=out)
    assert not (tmp_path / "work").exists()


def test_the_batch_size_names_no_evaluate_folder(make_cfg):
    """Scores do not depend on evaluate.batch_size (pretrain.heldout masks by rows, not batches): a smaller batch to
    fit memory reuses the folder; a setting that changes the scores names another."""
    from bertforge.stages import plan

    def evaluate_folder(*overrides: str) -> str:
        return plan(make_cfg("evaluate", ["experiment=demo_ga", *overrides]), "evaluate")[-1].output.digest

    assert evaluate_folder() == evaluate_folder("evaluate.batch_size=8")
    assert evaluate_folder() != evaluate_folder("evaluate.mask_draws=2")
