"""Starting the project's commands in a fresh interpreter: the one helper the tools (mdn-resume,
make reproduce, the benchmark) and the tests use to launch `mdn-run` and its siblings. `run_here`
runs one in this process instead, as the interpreter would (make reproduce's steps, so that the
parallel launcher's workers serve them all).

The child never imports from its working folder: `python -P` (Python 3.11+) leaves the current
folder off sys.path, so a folder named by a run folder (the one a run was started in) cannot
bring in a module of its own. On older Pythons the same is done by hand.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
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


class Stopped(KeyboardInterrupt):
    """SIGTERM to a command run by run_here: it stops as on Ctrl-C, and says which signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def children() -> list[int]:
    """This process's child processes (a launcher's workers), as Linux lists them; [] elsewhere."""
    try:
        tasks = Path("/proc/self/task").iterdir()
        return [int(pid) for task in tasks for pid in (task / "children").read_text().split()]
    except OSError:
        return []


def _cpu_ticks(pid: int) -> int | None:
    """The CPU time a process has used so far, in clock ticks (Linux); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def wait_until_idle(pids: list[int], limit: float = 10.0, still: float = 0.3) -> None:
    """Wait until none of `pids` has used CPU for `still` seconds (or `limit` seconds have passed):
    stopped workers have then saved their jobs' training states and sent back their answers."""
    deadline, quiet_since = time.monotonic() + limit, time.monotonic()
    last = [_cpu_ticks(pid) for pid in pids]
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = [_cpu_ticks(pid) for pid in pids]
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= still:
            return


_stopping: list[int] = []  # the signal stop_command is handling, while it waits


def stop_command(signum, frame) -> None:
    """SIGINT or SIGTERM to a command whose jobs run in worker processes (a sweep's parallel
    launcher): stop as Ctrl-C does in a terminal, where every process of the command gets the
    signal, but only once the workers have saved their jobs' training states. SIGTERM is passed on
    to them (Ctrl-C's SIGINT reached them already); then this process waits for them to go idle
    (at most 10 s) before it stops, which kills them."""
    if _stopping:  # the same stop signalled again while we wait (a terminal and a parent both pass
        return  # Ctrl-C on, as make uci does): the first one finishes it
    _stopping.append(signum)
    try:
        workers = children()
        if signum == signal.SIGTERM:
            for pid in workers:
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
        if workers:
            wait_until_idle(workers)
    finally:
        _stopping.clear()
    raise Stopped(signum)


def run_here(module: str, args: list[str], *, resume: bool = False) -> int:
    """`python -m module ARGS` run in this process, as the interpreter runs it (runpy), and its exit
    status: SystemExit's code, 0 when it returns, 1 (with the traceback shown) when it raises.

    What a child would have had is given and taken back: sys.argv, the resume variable
    (environment(resume)), and SIGTERM, which stops the command as Ctrl-C would (a child of
    its own would have got the signal). The caller keeps sys.path free of its working folder, as
    `python -P` does for a child (worker processes started by the command inherit it)."""
    saved_argv, saved_resume = sys.argv, os.environ.get(RESUME_ENV)
    sys.argv = [module, *args]
    if resume:
        os.environ[RESUME_ENV] = "1"
    previous = signal.signal(signal.SIGTERM, stop_command)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception:  # noqa: BLE001 - a bug in the command: its traceback, and the status of one
        traceback.print_exc()
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.argv = saved_argv
        if saved_resume is None:
            os.environ.pop(RESUME_ENV, None)
        else:
            os.environ[RESUME_ENV] = saved_resume
