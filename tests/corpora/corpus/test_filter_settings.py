"""The filters' thresholds are checked while planning, each refusal naming its key, before any document is
read: a share typed as a percentage, a negative count, a minimum above its maximum, an unknown script."""

import re
from pathlib import Path

import pytest

from bertforge.common.errors import ConfigError
from bertforge.stages import run_stage
from corpora.config import FiltersConfig, QualityConfig
from corpora.corpus.rules.settings import check_filter_settings
from tests.conftest import REPO


@pytest.mark.parametrize("override,named", [
    ("filters.quality.min_alpha_word_ratio=80", "filters.quality.min_alpha_word_ratio=80.0: give a share from "
                                                "0 to 1 (0.8 for 80 %)"),
    ("filters.line_quality.max_digit_ratio=-0.1", "filters.line_quality.max_digit_ratio=-0.1"),
    ("filters.quality.min_words=-5", "filters.quality.min_words=-5: give 0 or more"),
    ("filters.quality.max_newlines_per_word=nan", "filters.quality.max_newlines_per_word=nan"),
    ("filters.quality.min_words=500", "filters.quality.min_words=500 is above filters.quality.max_words=100:"),
    ("+filters.quality.max_top_ngram_char_ratio.two=0.2", "max_top_ngram_char_ratio has the key 'two'"),
    ("filters.quality.max_dup_ngram_char_ratio.5=1.5", "filters.quality.max_dup_ngram_char_ratio.5=1.5"),
    ("filters.quality.scripts=[Latinn]", "'Latinn', which is not a Unicode script name"),
    ("filters.langid.languages=[ga]", None),  # a valid setting: passes the check
    ("filters.langid.min_score=1.5", "filters.langid.min_score=1.5"),
    ("filters.normalise.unicode_form=NFD", "filters.normalise.unicode_form='NFD'"),
    ("filters.stopwords.min_stopwords=-1", "filters.stopwords.min_stopwords=-1"),
])
def test_a_threshold_out_of_range_is_refused_while_planning(make_cfg, override, named):
    overrides = ["filters=gopher", override]
    if "langid.min_score" in override:
        overrides.append("filters.langid.languages=[ga]")
    if "min_words=500" in override:
        overrides.append("filters.quality.max_words=100")
    cfg = make_cfg("corpus", overrides)
    if named is None:
        check_filter_settings(cfg.filters)
        return
    with pytest.raises(ConfigError, match=re.escape(named)):
        run_stage(cfg, "corpus")
    assert not (Path(cfg.paths.work_dir) / "corpus").exists()  # refused before the stage made its folder


def test_the_shipped_filter_presets_pass():
    import yaml

    for preset in sorted((REPO / "conf" / "filters").glob("*.yaml")):
        raw = yaml.safe_load(preset.read_text(encoding="utf-8"))
        check_filter_settings(FiltersConfig(quality=QualityConfig(**raw.get("quality", {})),
                                            line_quality=QualityConfig(**raw.get("line_quality", {}))))


def test_a_foreign_letter_rule_needs_its_alphabet():
    with pytest.raises(ConfigError, match="filters.line_quality.max_foreign_letter_ratio needs "
                                          "filters.line_quality.alphabet"):
        check_filter_settings(FiltersConfig(line_quality=QualityConfig(max_foreign_letter_ratio=0.02)))


@pytest.mark.parametrize("marks", [[""], [".", " "]])
def test_an_empty_terminal_mark_is_refused(marks):
    """Every line ends in "": such a mark would turn the terminal-punctuation rule off unnoticed."""
    with pytest.raises(ConfigError, match="filters.line_quality.terminal_punct"):
        check_filter_settings(FiltersConfig(line_quality=QualityConfig(terminal_punct=marks)))
    check_filter_settings(FiltersConfig(line_quality=QualityConfig(terminal_punct=[".", "?", "!", '"'])))
