"""gaBERT's Document-Heuristic preset, rule by rule against wiki-bert-pipeline's filterdocs.py: the average
sentence length and the foreign-letter rules it needs, real Irish prose passing, and no language ID."""

import pytest
import yaml

from bertforge.common.errors import ConfigError
from bertforge.stages import run_stage
from corpora.config import QualityConfig
from corpora.corpus.rules.quality import TextStats, character_rule, length_rule, line_rule
from tests.conftest import REPO
from tests.corpora.corpus.test_rules import irish_docs

PRESET = yaml.safe_load((REPO / "conf" / "filters" / "gabert_doc.yaml").read_text(encoding="utf-8"))
GABERT = QualityConfig(**PRESET["quality"])


def broken(text: str) -> str | None:
    stats = TextStats(text)
    return next((reason for rule in (length_rule, character_rule, line_rule) if (reason := rule(stats, GABERT))), None)


def test_preset_states_every_filterdocs_threshold_and_no_language_id():
    assert (GABERT.min_sentences, GABERT.min_mean_sentence_words, GABERT.min_words) == (3, 4, 30)
    assert (GABERT.max_upper_ratio, GABERT.max_punct_ratio, GABERT.max_digit_ratio) == (0.1, 0.075, 0.075)
    assert GABERT.max_foreign_letter_ratio == 0.02 and set(GABERT.alphabet) == set("abcdefghijklmnopqrstuvwxyzáéíóú")
    assert "langid" not in PRESET  # wiki-bert-pipeline switches langdetect off for Irish


def test_real_irish_prose_passes(data_dir):
    docs = irish_docs(data_dir)
    failed = [d for d in docs if broken(d)]
    assert len(failed) <= 0.05 * len(docs)


def test_short_sentences_are_removed():
    assert broken(" ".join(["Bhíodar ansin go minic."] * 12)) is None  # 4 words a sentence (avg-len 4)
    assert broken(" ".join(["Bhíodar ansin inniu."] * 20)) == "short_sentences"  # 3 words a sentence


def test_letters_outside_the_irish_alphabet_are_removed_where_a_script_rule_would_not():
    irish = "Tá an aimsir go hálainn inniu agus tá na páistí ag súgradh sa pháirc le chéile. " * 4
    french = "Le château était à côté de la forêt où les élèves jouaient près de l'église ça va. " * 4
    assert broken(irish) is None
    assert broken(french) == "foreign_letters"
    latin_only = QualityConfig(scripts=["Latin"], min_script_ratio=0.98)
    assert character_rule(TextStats(french), latin_only) is None


def test_foreign_ratio_without_an_alphabet_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="filters.quality.alphabet"):
        run_stage(make_cfg("corpus", ["filters=gabert_doc", "filters.quality.alphabet="]), "corpus")
