"""Every ```console block of the README and the docs pages is run: each `$ mdn-run ...` line in this
process, and what it prints must be the lines shown under it (the documented refusals)."""

from __future__ import annotations

import re
import shlex

import pytest

from helpers import REPO, cli_in_process

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def console_examples() -> list[tuple[str, list[str], list[str]]]:
    examples = []
    for page in PAGES:
        for block in re.findall(r"```console\n(.*?)```", page.read_text(), re.S):
            command, expected = None, []
            for line in block.splitlines() + ["$ "]:
                if line.startswith("$ "):
                    if command is not None:
                        examples.append((f"{page.name}: {command}", shlex.split(command), expected))
                    command, expected = line[2:].strip() or None, []
                else:
                    expected.append(line)
    return examples


def test_the_docs_show_console_examples():
    assert len(console_examples()) >= 6


@pytest.mark.parametrize("name, argv, expected", console_examples(), ids=[e[0] for e in console_examples()])
def test_a_documented_command_prints_what_the_docs_show(name, argv, expected, tmp_path):
    assert argv[0] == "mdn-run", "only mdn-run examples are run here"
    proc = cli_in_process([*argv[1:], f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert (proc.stdout + proc.stderr).strip().splitlines() == expected
