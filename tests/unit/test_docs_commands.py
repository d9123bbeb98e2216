"""Every `mdn-run` command the README and the docs print for a reader to copy (their tables and
code blocks) works as printed from a fresh clone: composed, range-checked and its data set built,
with no MDN_* environment variable set and the working folder a fresh one. A placeholder is filled
only where the docs say what it stands for (`dataset.root=FOLDER` of the UCI suite: its folder);
a user's own file (`dataset.path=...`) and free placeholders (NAME, PATH, `$s`) are the reader's.
The documented refusals (```console blocks) are run by test_docs_console."""

from __future__ import annotations

import re
import shlex

import pytest

from helpers import REPO, cli_in_process
from mdn_experiments.config.compose import compose
from mdn_experiments.config.safety import parse_overrides

# the changelog names old commands on purpose (what was renamed to what)
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "changelog.md")]
FREE = re.compile(r"(=|^)(NAME|PATH|COLUMN|FILE|URI|S|C)\b|\$|\.\.\.|dataset\.path=")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) of every mdn-run command in a table row or a bash/plain code block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for lang, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
            if lang not in ("", "bash"):
                continue
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("mdn-run "):
                    found.append((page.name, line))
        for line in text.splitlines():
            if line.startswith("|"):
                found += [(page.name, command) for command in re.findall(r"`(mdn-run [^`]*)`", line)]
    return found


COMMANDS = [(where, command) for where, command in documented_commands() if not FREE.search(command)]


def test_the_docs_print_commands_to_copy():
    assert len(COMMANDS) >= 40


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c}" for w, c in COMMANDS])
def test_a_documented_command_works_from_a_fresh_clone(where, command, tmp_path, monkeypatch, uci_root):
    from mdn_experiments.config import validate
    from mdn_experiments.run.build import make_dataset

    for name in ("MDN_UCI_ROOT", "MDN_MNIST_ROOT", "MDN_RESUME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # a fresh folder: no data/uci, no outputs
    argv = shlex.split(command.replace("dataset.root=FOLDER", f"dataset.root={uci_root}"))[1:]
    if "--help" in argv or "--cfg" in argv:
        proc = cli_in_process(argv)
        assert proc.returncode == 0, proc.stderr
        return
    overrides = []
    for override in parse_overrides([a for a in argv if a != "-m"], where):  # a sweep: its first job
        value = next(iter(override.sweep_iterator())) if override.is_sweep_override() else None
        overrides.append(override.input_line if value is None else f"{override.get_key_element()}={value}")
    cfg = compose(overrides)
    validate(cfg)
    assert make_dataset(cfg) is not None
