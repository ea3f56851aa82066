"""The model card a hub user expects: YAML front matter (made with huggingface_hub's ModelCardData, so
`model-index` is in the hub's own format), fill-mask widget sentences in the model's language, the data,
vocabulary, training, held-out and downstream results, and how to reproduce the model."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from bertforge.common.checkpoints import is_hub_id
from corpora.config import FiltersConfig, SourceConfig
from corpora.vocab.word_starts import BYTE_LEVEL_SPACE, word_markers
from pretrain.config import MaskingConfig, OptimConfig, PublishConfig, TrainingConfig

CONFIG_FILE = "bertforge_config.yaml"
INIT_FROM_ENV = "BERTFORGE_INIT_FROM"
"""Where the reproduce config reads a local `model.init_from` from: a path on the publisher's machine means
nothing elsewhere (and names their home folder), so the reader points this at their copy of the weights."""
# Keys left out of the reproducible config: where to push is the publisher's business, not the model's.
PUSH_KEYS = ("push_to_hub", "repo_id", "private", "revision", "endpoint", "push_every_n_steps", "dry_run")
# The saved config's own defaults list: base.yaml (the schema, Hydra's run dir and callbacks), then the
# experiment's values over it, as conf/run.yaml composes.
REPRODUCE_DEFAULTS = ("base", "_self_")
TASK_TYPES = {"upos": "token-classification", "xpos": "token-classification", "feats": "token-classification",
              "ner": "token-classification",
              "parse": "dependency-parsing", "classify": "text-classification"}


@dataclass(frozen=True)
class ModelCardFacts:
    """The config sections a model card quotes (the architecture comes from the exported config.json)."""

    publish: PublishConfig
    run_name: str
    source: SourceConfig
    filters: FiltersConfig
    masking: MaskingConfig
    optim: OptimConfig
    training: TrainingConfig


@dataclass(frozen=True)
class CardInputs:
    """What the stages measured: every upstream manifest, the corpus report, the exported config.json,
    widget sentences, the published tokenizer (`tokenizer_facts`), the downstream stage's metrics.json (None
    when that stage did not run), and `model.init_from` as the reproduce config holds it."""

    manifests: dict
    corpus_report: dict
    architecture: dict
    widgets: list[str]
    tokenizer: dict
    downstream: dict | None = None
    reproduce_init_from: str = ""


def model_card(cfg: ModelCardFacts, found: CardInputs) -> str:
    """README.md for the published folder: front matter, then the sections a user reads."""
    name = cfg.publish.model_name or cfg.run_name
    start = found.manifests["pretrain"].get("init_from")
    body = [f"# {name}", "", _summary(found, start), "", *_data(cfg, found), *_vocab(found),
            *_training(cfg, found), *_heldout(found), *_downstream(found.downstream), *_use(name, found.widgets),
            *_reproduce(start, found.reproduce_init_from)]
    return front_matter(cfg, found, name, start) + "\n" + "\n".join(body)


def front_matter(cfg: ModelCardFacts, found: CardInputs, name: str, start: dict | None) -> str:
    from huggingface_hub import ModelCardData

    data = ModelCardData(
        language=cfg.publish.language or None, license=cfg.publish.license, library_name="transformers",
        pipeline_tag="fill-mask", datasets=list(cfg.publish.datasets) or None,
        base_model=start["checkpoint"] if start and is_hub_id(start["checkpoint"]) else None,
        tags=list(dict.fromkeys(["bertforge", "masked-lm", *([cfg.publish.language] if cfg.publish.language else []),
                                 *cfg.publish.tags])),
        widget=[{"text": text} for text in found.widgets] or None,
        model_name=name, eval_results=eval_results(cfg, found))
    return f"---\n{data.to_yaml()}\n---\n"


def eval_results(cfg: ModelCardFacts, found: CardInputs) -> list:
    """Held-out masked-token scores and every downstream task's score, as huggingface_hub EvalResults."""
    from huggingface_hub import EvalResult

    scores = found.manifests["evaluate"]["counts"]["trained"]
    heldout = dict(task_type="fill-mask", task_name="Masked language modelling", dataset_type=cfg.source.name,
                   dataset_name=f"{cfg.source.name} (held-out documents)", dataset_split="heldout")
    results = [EvalResult(**heldout, metric_type="accuracy", metric_value=round(scores["accuracy"], 4),
                          metric_name="held-out masked-token accuracy"),
               EvalResult(**heldout, metric_type="loss", metric_value=round(scores["loss"], 4),
                          metric_name="held-out masked-token loss")]
    for task_id, task in (found.downstream or {}).get("tasks", {}).items():
        dataset = task.get("dataset", {})
        for metric, value in task.get("models", {}).get("model", {}).items():
            results.append(EvalResult(
                task_type=TASK_TYPES.get(task["task"], task["task"]), task_name=f"{task_id} ({task['task']})",
                dataset_type=_dataset_name(dataset, task_id), dataset_name=_dataset_name(dataset, task_id),
                dataset_split=_test_split(task, found.downstream.get("recipe", {})), metric_type=metric,
                metric_value=round(value["mean"], 4),
                metric_name=f"{metric} (mean of {len(value.get('seeds', []))} seeds)"))
    return results


def _test_split(task: dict, recipe: dict) -> str | None:
    """The test file scored, sliced as `datasets` writes it (`test.conllu[:500]`) when
    downstream.max_eval_examples cut it short (the stage scored that many, the cap's count)."""
    test, cap = task.get("dataset", {}).get("test"), recipe.get("max_eval_examples")
    scored = task.get("examples", {}).get("test")
    return f"{test}[:{scored}]" if test and isinstance(cap, int) and scored is not None and scored >= cap else test


def _dataset_name(dataset: dict, task_id: str) -> str:
    """The dataset's name, else its folder's or file's name (the downstream stage records a path)."""
    return dataset.get("name") or (Path(dataset["path"]).name if dataset.get("path") else task_id)


def _summary(found: CardInputs, start: dict | None) -> str:
    a, train = found.architecture, found.manifests["pretrain"]["counts"]
    return (f"A {a['model_type'].upper()} masked-language model ({a['num_hidden_layers']} layers, hidden size "
            f"{a['hidden_size']}, {a['num_attention_heads']} heads, {train['parameters']:,} parameters) "
            + (_continued_from(start) if start else "pretrained from scratch with bertforge."))


def _data(cfg: ModelCardFacts, found: CardInputs) -> list[str]:
    report = found.corpus_report
    removed = ", ".join(f"{rule}: {s['documents']}" for rule, s in sorted(report["removed_by_rule"].items()))
    return ["## Training data", "",
            f"- Source: `{cfg.source.name}` ({', '.join(i.format for i in cfg.source.inputs)})",
            f"- Documents: {report['documents_kept']} kept of {report['documents_in']} "
            f"({report['kept']['words']:,} words); removed by rule: {removed or 'none'}",
            f"- Filters preset: `{cfg.filters.name}`; exact deduplication: {cfg.filters.exact_dedup}", ""]


def _vocab(found: CardInputs) -> list[str]:
    """The published tokenizer as it is (with model.vocab_mode=keep or extend, the checkpoint's, whatever the
    tokenizer keys say), and the vocab stage's held-out scores of it."""
    vocab, tok = found.manifests["vocab"]["counts"], found.tokenizer
    return ["## Tokenizer", "",
            f"- {tok['model']}, {tok['size']} tokens, lowercase={tok['lowercase']}, "
            f"strip_accents={tok['strip_accents']}",
            f"- Held-out fertility {vocab['fertility']:.3f} subwords/word, UNK rate {vocab['unk_rate']:.4f}, "
            f"{vocab['chars_per_token']:.2f} characters/token", ""]


def _training(cfg: ModelCardFacts, found: CardInputs) -> list[str]:
    pretrain = found.manifests["pretrain"]
    train, hardware, o = pretrain["counts"], pretrain["hardware"], cfg.optim
    return ["## Training", "",
            *_phase_lines(train),
            f"- Hardware: {hardware['devices'] * hardware['num_nodes']} {hardware['accelerator'].upper()} device(s), "
            f"precision {hardware['precision']}, strategy {hardware['strategy']}; "
            f"{_duration(pretrain.get('seconds'))} of training{_attempts(pretrain.get('attempt_seconds'))}",
            f"- Masking: {cfg.masking.ratio:.0%} of tokens ({cfg.masking.replace_with_mask:.0%} [MASK], "
            f"{cfg.masking.replace_with_random:.0%} random)",
            f"- {o.name} lr {o.lr}, weight decay {o.weight_decay}, {o.warmup_steps} warmup steps, {o.schedule} schedule",
            f"- Train loss {train['first_loss']:.3f} -> {train['last_loss']:.3f}", ""]


def _phase_lines(train: dict) -> list[str]:
    """Steps x sequences per step x length of each phase the pretrain manifest records (`counts.phases`: the
    batches really trained, after training.tokens_per_batch and training.phases), so every line multiplies
    out; with several phases, a total line."""
    phases = train.get("phases") or []
    if not phases:  # a manifest from before phases were recorded
        return [f"- {train['steps']} steps, {train['tokens_trained']:,} tokens"]
    tokens = [p["steps"] * p["batch_size"] * p["seq_len"] for p in phases]
    rows = [f"{p['steps']:,} steps x {p['batch_size']} sequences x {p['seq_len']} tokens = {n:,} tokens"
            for p, n in zip(phases, tokens)]
    if len(rows) == 1:
        return [f"- {rows[0]}"]
    return [*(f"- Phase {i}: {row}" for i, row in enumerate(rows, 1)),
            f"- In all: {sum(p['steps'] for p in phases):,} steps, {sum(tokens):,} tokens"]


def _attempts(seconds: list[float] | None) -> str:
    """How a resumed run's time was spent: the stage folder adds up its attempts (a stopped one to its last checkpoint)."""
    if not seconds:
        return ""
    return f" in {len(seconds)} attempts ({', '.join(_duration(s) for s in seconds)}; a stopped attempt counted to its " \
           "last checkpoint)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unrecorded time"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _heldout(found: CardInputs) -> list[str]:
    evaluate = found.manifests["evaluate"]
    scores, max_rows = evaluate["counts"], evaluate["config"]["evaluate"]["max_rows"]
    rows = scores["heldout_rows"]
    scored = (f"Scored on the first {max_rows:,} of the {rows:,} held-out rows (evaluate.max_rows)."
              if 0 < max_rows < rows else f"Scored on all {rows:,} held-out rows.")
    return ["## Evaluation (held-out masked tokens)", "", scored, "",
            "| model | loss | accuracy |", "|---|---:|---:|",
            f"| this model | {scores['trained']['loss']:.3f} | {scores['trained']['accuracy']:.3f} |",
            f"| same architecture, untrained | {scores['untrained']['loss']:.3f} | "
            f"{scores['untrained']['accuracy']:.3f} |", ""]


def _downstream(metrics: dict | None) -> list[str]:
    """One row per task and metric: this model, its random-init twin and every reference (mean ± sd)."""
    if not metrics or not metrics.get("tasks"):
        return []
    tasks = metrics["tasks"]
    others = list(dict.fromkeys(m for t in tasks.values() for m in t.get("models", {}) if m != "model"))
    recipe = metrics.get("recipe", {})
    capped = [f"{split} capped at the first {recipe[key]:,} examples ({key})" for split, key in
              (("training sets", "max_train_examples"), ("dev and test sets", "max_eval_examples"))
              if isinstance(recipe.get(key), int)]
    lines = ["## Downstream evaluation", "",
             f"Fine-tuned {recipe.get('epochs', '?')} epochs, lr {recipe.get('lr', '?')}, batch "
             f"{recipe.get('batch_size', '?')}, seeds {recipe.get('seeds', '?')}; mean ± sd over seeds"
             + (f"; {' and '.join(capped)}, so the scores are not those of the whole test sets." if capped
                else "."), "",
             "| task | dataset (train -> test) | metric | this model | " + " | ".join(others) + " |",
             "|---|---|---|---:|" + "---:|" * len(others)]
    for task_id, task in tasks.items():
        d = task.get("dataset", {})
        models = task.get("models", {})
        for metric in models.get("model", {}):
            cells = [_mean_sd(models.get(other, {}).get(metric)) for other in others]
            lines.append(f"| {task_id} ({task['task']}) | {_dataset_name(d, task_id)} ({d.get('train', '?')} -> "
                         f"{_test_split(task, recipe)}) | {metric} | {_mean_sd(models['model'][metric])} | "
                         + " | ".join(cells) + " |")
    return [*lines, ""]


def _mean_sd(score: dict | None) -> str:
    return "-" if not score else f"{score['mean']:.3f} ± {score.get('sd', 0):.3f}"


REPRODUCE_DIR = "path/to/this/folder"
"""Where the card's reproduce command finds the config: the user's copy of this folder (run from elsewhere,
so the stage folders never land in it)."""
LOCAL_MODEL_ID = "path/to/{name}"
"""The card's model id until it is pushed (`for_hub` puts the repo id in)."""


def _use(name: str, widgets: list[str]) -> list[str]:
    example = widgets[0] if widgets else "[MASK]"
    return ["## Use", "", "```python", "from transformers import pipeline", "",
            f'fill = pipeline("fill-mask", model="{LOCAL_MODEL_ID.format(name=name)}")', f"fill({example!r})", "```",
            ""]


def _reproduce(start: dict | None, init_from: str) -> list[str]:
    """The command that trains the model again; with a local start, where the config reads it from."""
    local = [f"The model continued from a local folder, which `model.init_from` reads from `${INIT_FROM_ENV}`: set "
             f"it to a copy of that folder (`{public_checkpoint(start['checkpoint'])}`, weights sha256 "
             f"{start['sha256']}).", ""] if start and init_from == f"${{oc.env:{INIT_FROM_ENV}}}" else []
    return ["## Reproduce", "",
            f"`{CONFIG_FILE}` in this folder is the experiment's whole config (paths and push settings left out). "
            "With bertforge installed, the same raw data under `$BERTFORGE_DATA`, and `$BERTFORGE_WORK` naming "
            "where the stage folders and Hydra's run logs go (unset: `./bertforge-work`, under the folder you run "
            "the command from):", "",
            "```bash",
            f"bertforge run --config-dir {REPRODUCE_DIR} --config-name {CONFIG_FILE.removesuffix('.yaml')}",
            "```", "", *local]


def for_hub(card: str, name: str, repo_id: str, branches: list[str], revision: str = "main") -> str:
    """The card as pushed: the repo id where the local card has a path (and the branch it is pushed to when that
    is not main, which `from_pretrained` and `pipeline` would load instead), and the repo's step revisions."""
    model = f'"{repo_id}"' + (f', revision="{revision}"' if revision != "main" else "")
    return card.replace(f'"{LOCAL_MODEL_ID.format(name=name)}"', model) + revisions_section(repo_id, branches)


def revisions_section(repo_id: str, branches: list[str]) -> str:
    """Appended to the card pushed to the hub: the intermediate checkpoints the repo holds."""
    if not branches:
        return ""
    rows = "\n".join(f"- `{b}`: step {int(b.split('-')[1])}" for b in branches)
    return (f"\n## Intermediate checkpoints (revisions)\n\n{rows}\n\n```python\nfrom transformers import "
            f"AutoModelForMaskedLM\n\nmodel = AutoModelForMaskedLM.from_pretrained({repo_id!r}, "
            f"revision={branches[-1]!r})\n```\n")


def reproducible_config(experiment: dict) -> dict:
    """The experiment (plain data) with the machine's own paths turned back into ${paths.*} and the push keys
    dropped, so `bertforge run --config-name` on another machine names the same stages. It composes on
    conf/base.yaml (`defaults`), as every command's config does, so the run also gets base.yaml's Hydra
    settings: its logs under `paths.work_dir`/hydra (Hydra's default, ./outputs, would write them into the
    published folder) and the sweep callbacks."""
    paths = experiment.get("paths", {})
    roots = sorted(((str(v).rstrip("/"), f"${{paths.{k}}}") for k, v in paths.items() if v), key=lambda r: -len(r[0]))

    def portable(value):
        if isinstance(value, dict):
            return {k: portable(v) for k, v in value.items()}
        if isinstance(value, list):
            return [portable(v) for v in value]
        if isinstance(value, str):
            for root, name in roots:
                if value == root or value.startswith(root + "/"):
                    return name + value[len(root):]
        return value

    config = {k: portable(v) for k, v in experiment.items() if k != "paths"}
    config["publish"] = {k: v for k, v in config.get("publish", {}).items() if k not in PUSH_KEYS}
    model = config.get("model", {})
    if is_local_start(model.get("init_from", "")) and not model["init_from"].startswith("${paths."):
        model["init_from"] = f"${{oc.env:{INIT_FROM_ENV}}}"  # a folder on this machine: see INIT_FROM_ENV
    config["paths"] = {"data_dir": "${oc.env:BERTFORGE_DATA}", "work_dir": "${oc.env:BERTFORGE_WORK,bertforge-work}"}
    return {"defaults": list(REPRODUCE_DEFAULTS), **config}


def widget_sentences(heldout_texts, tokenizer, count: int) -> list[str]:
    """Up to `count` held-out sentences (one per document, 6-25 words) with one word masked: the longest
    alphabetic word after the first that the tokenizer keeps whole, so the model can name it."""
    found = []
    for text in heldout_texts:
        if len(found) >= count:
            break
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            words = sentence.split(" ")
            if not 6 <= len(words) <= 25:
                continue
            whole = [i for i, w in enumerate(words) if i and w.isalpha() and len(w) >= 3
                     and len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
            if whole:
                pick = max(whole, key=lambda i: len(words[i]))
                found.append(" ".join(words[:pick] + [tokenizer.mask_token] + words[pick + 1:]))
                break
    return found


def _continued_from(start: dict) -> str:
    rows = ", ".join(f"{route} {count:,}" for route, count in start["rows"].items() if count)
    where = ("the local folder " if is_local_start(start["checkpoint"]) else "") + \
        f"`{public_checkpoint(start['checkpoint'])}`"
    # Only replace moves rows by model.vocab_transfer: keep and extend keep the old rows (extend's new ones
    # start from the mean of their old pieces, whatever the key says).
    transfer = f" (transfer {start['vocab_transfer']})" if start["vocab_mode"] == "replace" else ""
    return (f"continued with bertforge from {where} (sha256 {start['sha256']}"
            + (f", bertforge {start['stage']} stage {start['stage_hash']}" if "stage" in start else "")
            + f"); vocabulary mode {start['vocab_mode']}, embedding rows: {rows}{transfer}; new weights: "
            f"{', '.join(start['weights']['new']) or 'none'}.")


def is_local_start(init_from: str) -> bool:
    """Whether `model.init_from` names a folder (else a hub id, or nothing)."""
    return bool(init_from) and not is_hub_id(init_from)


def public_checkpoint(init_from: str) -> str:
    """What the card and the published files say of `model.init_from`: a hub id as it is; a local folder by its
    last component only (with the weights' sha256 beside it, that identifies the start without the
    publisher's paths)."""
    return (Path(init_from).expanduser().name or init_from) if is_local_start(init_from) else init_from


def public_start(start: dict) -> dict:
    """`init_from.json` as published: the start's record with a local folder named as `public_checkpoint` says
    (and `local_folder` true, so its name is not taken for a hub id)."""
    if not is_local_start(start.get("checkpoint", "")):
        return start
    return {**start, "checkpoint": public_checkpoint(start["checkpoint"]), "local_folder": True}


def tokenizer_facts(tokenizer) -> dict:
    """What the card says of a (fast) transformers tokenizer: its model (wordpiece, bpe, unigram), size with
    the added tokens, and whether its normalizer lowercases and strips accents."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]["type"].lower()
    if model == "bpe" and word_markers(spec)[1] == BYTE_LEVEL_SPACE:  # a ByteLevel pre-tokenizer
        model = "bpe (byte-level)"
    lowercase, strip_accents = _casing(spec.get("normalizer"))
    return {"model": model, "size": len(tokenizer), "lowercase": lowercase, "strip_accents": strip_accents}


def _types(normalizer: dict | None) -> list[str]:
    """The types of a tokenizer.json normalizer, a Sequence's members included."""
    if not normalizer:
        return []
    return [normalizer.get("type", ""), *(kind for member in normalizer.get("normalizers") or []
                                           for kind in _types(member))]


def _casing(normalizer: dict | None) -> tuple[bool, bool]:
    """(lowercase, strip_accents) of a tokenizer.json normalizer."""
    bert = [n for n in [normalizer, *((normalizer or {}).get("normalizers") or [])]
            if n and n.get("type") == "BertNormalizer"]
    kinds = _types(normalizer)
    lowercase = "Lowercase" in kinds or any(n.get("lowercase") for n in bert)
    # BertNormalizer's strip_accents null follows lowercase (as BERT's uncased models do)
    strips = "StripAccents" in kinds or any(n.get("strip_accents") or (n.get("strip_accents") is None and
                                                                      n.get("lowercase")) for n in bert)
    return lowercase, strips
