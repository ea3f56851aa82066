"""The README's output blocks are the script's to write: every marker names a block it knows, and it
fills a block with the lines a reader is shown."""

from __future__ import annotations

import importlib.util
import re
import sys

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("readme_outputs", REPO / "launch" / "readme_outputs.py")
readme_outputs = importlib.util.module_from_spec(spec)
sys.modules["readme_outputs"] = readme_outputs  # its dataclass looks its module up
spec.loader.exec_module(readme_outputs)


def test_every_marked_block_in_the_readme_is_one_the_script_writes():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    marked = [m.group(1) for m in readme_outputs.MARKER.finditer(readme)]
    assert sorted(marked) == sorted(readme_outputs.BLOCKS)


def test_a_block_shows_the_log_lines_then_the_summary_as_a_reader_sees_them():
    work = "/tmp/xyz/work"
    stdout = (f"[2026-11-27 23:03:42,580][bertforge][INFO] - corpus: reusing {work}/corpus/corpus-1\n"
              "[2026-11-27 23:03:43,000][bertforge.downstream][INFO] - downstream ga_upos, model, seed 0: accuracy 0.7\n"
              f"documents        92 kept\nexported model   {work}/publish/p/model\n")
    demo = readme_outputs.shown_lines(stdout, readme_outputs.BLOCKS["demo"], work)
    assert demo.splitlines() == [
        "[...][bertforge][INFO] - corpus: reusing bertforge-work/corpus/corpus-1",
        "[...][bertforge.downstream][INFO] - downstream ga_upos, model, seed 0: accuracy 0.7", "",
        "documents        92 kept", "exported model   bertforge-work/publish/p/model"]
    downstream = readme_outputs.shown_lines(stdout, readme_outputs.BLOCKS["downstream"], work)
    assert "seed 0" not in downstream and "corpus: reusing" in downstream  # per-seed lines trimmed
    readme = "text\n<!-- output: reuse -->\n```\nold\n```\nmore\n<!-- output: other -->\n```\nkept\n```\n"
    assert readme_outputs.replace_blocks(readme, {"reuse": "new 1\nnew 2\n"}) == (
        "text\n<!-- output: reuse -->\n```\nnew 1\nnew 2\n```\nmore\n<!-- output: other -->\n```\nkept\n```\n")


def test_an_echoed_block_shows_its_command_first_wrapped_as_a_shell_continues_it():
    block = readme_outputs.BLOCKS["nsp_shards"]
    shown = readme_outputs.shown_lines("[2026-11-27 23:03:42,580][bertforge.shards][INFO] - shards: 1 row\n"
                                       "[2026-11-27 23:03:42,581][bertforge][INFO] - corpus: reusing x\n", block, "/w")
    lines = shown.splitlines()
    assert lines[0].startswith("$ bertforge shards experiment=demo_ga") and lines[0].endswith(" \\")
    assert all(len(line) <= 110 for line in lines[:-1]) and lines[-1] == "[...][bertforge.shards][INFO] - shards: 1 row"
    assert " ".join(w for line in lines[:-1] for w in line.split() if w not in ("$", "\\")) == \
        "bertforge " + " ".join(block.command)


def test_a_launch_mistake_block_shows_the_command_and_its_error(tmp_path):
    import contextlib
    import os

    block = readme_outputs.BLOCKS["launch_errors"][0]
    env = dict(os.environ, BERTFORGE_WORK=str(tmp_path / "work"))
    with contextlib.ExitStack() as servers:
        shown = readme_outputs.run_block(block, env, tmp_path, servers).splitlines()
    assert shown[0] == "$ bertforge pretrain experiment=demo_ga trainer=ddp_cpu trainer.devices=64"
    assert re.fullmatch(r"bertforge pretrain: error: trainer.devices=64 but this machine has \d+ CPU cores visible; "
                        r"lower trainer.devices \(or -1 for all of them\)", shown[1]) and len(shown) == 2
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["hydra"]  # it failed before any stage
