"""Starting the project's commands in a fresh interpreter: the one helper the tools (mdn-resume,
make reproduce, the benchmark) and the tests use to launch `mdn-run` and its siblings.

The child never imports from its working folder: `python -P` (Python 3.11+) leaves the current
folder off sys.path, so a folder named by a run folder (the one a run was started in) cannot
bring in a module of its own. On older Pythons the same is done by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESUME_ENV = "MDN_RESUME"  # set for a resumed run: its saved config wins over the composed one


def command(module: str, args: list[str]) -> list[str]:
    """argv that runs `python -m module ARGS` without the working folder on sys.path."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", module, *args]
    code = (
        f"import sys, runpy; sys.path = [p for p in sys.path if p not in ('', '.')]; "
        f"sys.argv = [{module!r}] + sys.argv[1:]; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code, *args]


def mdn_run_command(args: list[str]) -> list[str]:
    return command("mdn_experiments.cli", args)


def environment(resume: bool = False, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    if resume:
        env[RESUME_ENV] = "1"
    return env


def run(
    module: str,
    args: list[str],
    *,
    cwd: Path | str | None = None,
    resume: bool = False,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """subprocess.run of `python -m module ARGS` (see `command`)."""
    return subprocess.run(command(module, args), cwd=cwd, env=environment(resume, env), **kwargs)


def start(
    module: str,
    args: list[str],
    *,
    cwd: Path | str | None = None,
    resume: bool = False,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> subprocess.Popen:
    """subprocess.Popen of `python -m module ARGS` (see `command`)."""
    return subprocess.Popen(command(module, args), cwd=cwd, env=environment(resume, env), **kwargs)
