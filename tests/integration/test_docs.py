"""The docs are run: every ```python block of the README and the docs pages runs as written, the
API example gives the answer it describes, and the docs site builds strictly (a broken link or a
missing page fails)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in PAGES:
        for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
            blocks.append((f"{page.name}#{index}", code))
    return blocks


def test_there_are_python_blocks_to_run():
    assert any(name.startswith("mdn-answer.md") for name, _ in python_blocks())


@pytest.mark.parametrize("name, code", python_blocks(), ids=[name for name, _ in python_blocks()])
def test_every_python_block_runs_as_written(name, code, tmp_path):
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    if "best validation NLL" in code:  # the API example: the answer it describes
        masses = [int(m) for m in re.findall(r"mode at t = [-\d.]+ holding (\d+)% of the probability", proc.stdout)]
        assert 1 <= len(masses) <= 3 and abs(sum(masses) - 100) <= 2, proc.stdout
        nll = float(re.search(r"best validation NLL (-?[\d.]+)", proc.stdout).group(1))
        assert nll < -0.9  # the true conditional density scores about -1.28; one Gaussian about -0.6


def test_the_site_builds_strictly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "metrics" / "index.html").read_text().count("positioning_rmse_top_pi") >= 1
