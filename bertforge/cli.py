"""The `bertforge` command: one Hydra app per stage, chosen by the first argument.

    bertforge corpus filters=none           # one stage, Hydra overrides after it
    bertforge vocab -m tokenizer.vocab_size=4000,8000
    bertforge run experiment=demo_ga        # every stage of one experiment
    bertforge demo                          # the Irish demo on CPU
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bertforge.common.errors import ConfigError, CorpusInputError
from bertforge.common.stage_folder import lineage
from pretrain.config import load_config  # also registers the schema conf/base.yaml builds on
from pretrain.preemption import EXIT_PREEMPTED, Preempted
from bertforge.sweep_report import record_job_result

STAGE_VARIABLE = "BERTFORGE_STAGE"  # tells ranks started by Lightning which stage they run
STAGES = {
    "corpus": ("corpora.corpus.stage", "run_corpus", "clean and deduplicate raw text"),
    "vocab": ("corpora.vocab.stage", "run_vocab", "train a subword vocabulary"),
    "shards": ("corpora.shards.stage", "run_shards", "tokenise and pack into memory-mapped rows"),
    "pretrain": ("pretrain.train_stage", "run_pretrain", "masked-language-model pretraining"),
    "evaluate": ("pretrain.evaluate.stage", "run_evaluate", "held-out masked-token loss and accuracy"),
    "publish": ("pretrain.publish.stage", "run_publish", "export an HF folder with a model card"),
    "run": ("bertforge.run", "run_all", "every stage of one experiment"),
    "demo": ("bertforge.run", "run_demo", "the whole path on Irish treebank text, tiny BERT, CPU"),
}


def usage() -> str:
    lines = ["usage: bertforge <stage> [hydra overrides...] [-m for a sweep]", "", "stages:"]
    lines += [f"  {name:<9} {help_text}" for name, (_, _, help_text) in STAGES.items()]
    lines += ["", "Config help for a stage: bertforge <stage> --help"]
    return "\n".join(lines)


def stage_app(stage: str):
    """The Hydra app for one stage: compose conf/<stage>.yaml, validate it, run the stage."""
    module_name, func_name, _ = STAGES[stage]

    @hydra.main(version_base=None, config_path="pkg://bertforge_conf", config_name=stage)
    def app(raw: DictConfig):
        try:
            if stage == "demo":
                from bertforge.run import ensure_demo_data

                raw.paths.data_dir = ensure_demo_data(raw.paths.data_dir, raw.paths.work_dir)
            cfg = load_config(raw)
            result = getattr(importlib.import_module(module_name), func_name)(cfg)
        except (ConfigError, CorpusInputError) as err:
            logging.getLogger("bertforge").error("%s", err)
            print(f"bertforge {stage}: error: {err}", file=sys.stderr)
            sys.exit(2)
        except Preempted as stop:
            logging.getLogger("bertforge").warning("%s", stop)
            print(f"bertforge {stage}: {stop}", file=sys.stderr)
            sys.exit(EXIT_PREEMPTED)
        folders = result if isinstance(result, dict) else lineage(result)
        hydra_cfg = HydraConfig.get()
        record_job_result(hydra_cfg.runtime.output_dir, stage, list(hydra_cfg.overrides.task), folders)
        return result

    return app


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES and os.environ.get("LOCAL_RANK") and os.environ.get(STAGE_VARIABLE) in STAGES:
        # A rank Lightning started for a multi-device run: it re-runs our command line without the stage.
        stage, rest = os.environ[STAGE_VARIABLE], argv
    if stage not in STAGES:
        print(f"bertforge: unknown stage {stage!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    os.environ[STAGE_VARIABLE] = stage
    # Hydra parses the overrides from sys.argv[1:]; Lightning restarts sys.argv[0] for other local ranks,
    # so it must stay the real program.
    sys.argv = [os.path.abspath(sys.argv[0]) if os.path.isfile(sys.argv[0]) else sys.argv[0], *rest]
    stage_app(stage)()
