"""Every `bertforge ...` command the README shows still parses: its command exists, and its overrides
compose into a valid experiment (keys, groups, types), so the README cannot drift from the configs."""

from __future__ import annotations

import re
import shlex

import pytest

from bertforge.cli import COMMANDS, moved
from tests.conftest import REPO, experiment


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)  # shell line continuations
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            found = re.search(r"(?:^|&& |; )(?:\S+=\S+ )*(bertforge (?:\S.*)?)$", line)
            if found and not line.startswith("#") and not re.match(r"bertforge \S+:", found.group(1)):
                commands.append(found.group(1))
    return commands


def _without_substitutions(line: str) -> str:
    """`$(...)` (nested parentheses and all) replaced by a placeholder path."""
    while "$(" in line:
        start = line.index("$(")
        depth, end = 0, start + 1
        for end in range(start + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
        line = line[:start] + "/tmp/placeholder" + line[end + 1:]
    return line


COMMAND_LINES = readme_commands()


def test_the_readme_shows_commands_for_every_stage():
    shown = {shlex.split(c)[1] for c in COMMAND_LINES if len(shlex.split(c)) > 1}
    assert {"demo", "corpus", "vocab", "pretrain", "downstream", "evaluate", "publish", "run"} <= shown


@pytest.mark.parametrize("line", COMMAND_LINES)
def test_a_readme_command_parses(line, data_dir, tmp_path):
    # shell variables and substitutions stand for paths the reader has
    words = shlex.split(re.sub(r"\$\{?\w+\}?", "/tmp/placeholder", _without_substitutions(line)))
    command, args = words[1], [w for w in words[2:] if w != "-m"]
    assert command in COMMANDS, f"README: unknown command in {line!r}"
    if args and args[0] in ("--help", "-h"):
        return
    # a sweep's first value of each comma list stands for every job (list values [a,b] are kept whole)
    overrides = [a if "[" in a or "," not in a else a.split(",", 1)[0] for a in args]
    assert not moved(overrides), f"README: {line!r} uses a moved key: {moved(overrides)}"
    experiment(command, data_dir, tmp_path, overrides)
