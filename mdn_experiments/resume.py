"""`mdn-resume PATH`: continue whatever PATH holds, with the config saved in it.

- a run folder (`.hydra/` and no metrics.json): from its last training state (state.pt), or from
  the start when it was stopped before the first one was written;
- a sweep folder (multirun.yaml): the same sweep again into the same folder; jobs that finished
  are skipped, unfinished ones resumed, never-started ones run, then the summary is rewritten;
- a `make reproduce` folder (reproduce.json): the same, step by step, then REPORT.md.

Runs and sweeps are re-launched through `mdn-run` with the overrides Hydra recorded, from the
folder they were started in, so launchers and logging are the same as the first time; the
environment variable MDN_RESUME=1 tells each job to take the config saved in its training state.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from mdn_experiments.cli import RESUME_ENV
from mdn_experiments.report import SWEEP_DONE_FILE
from mdn_experiments.reproduce import REPRODUCE_FILE

PROG = "mdn-resume"


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _relaunch(hydra_yaml: Path, extra: list[str], drop: tuple[str, ...]) -> int:
    """mdn-run again with the overrides recorded in hydra_yaml (less those starting with `drop`)."""
    recorded = yaml.safe_load(hydra_yaml.read_text())["hydra"]
    overrides = [o for o in recorded["overrides"]["hydra"] + recorded["overrides"]["task"]
                 if not o.startswith(drop)]
    cwd = recorded.get("runtime", {}).get("cwd")
    command = [sys.executable, "-m", "mdn_experiments.cli", *overrides, *extra]
    print(f"[{PROG}] mdn-run {' '.join(overrides + extra)}", flush=True)
    env = {**os.environ, RESUME_ENV: "1"}
    return subprocess.run(command, cwd=cwd if cwd and Path(cwd).is_dir() else None, env=env).returncode


def resume_run(path: Path) -> int:
    if (path / "metrics.json").exists():
        fail(f"{path} holds a finished run (metrics.json): nothing to resume")
    state = "its last training state" if (path / "state.pt").exists() or (path / "state.prev.pt").exists() \
        else "the beginning (it was stopped before its first training state was written)"
    print(f"[{PROG}] resuming the run in {path} from {state}", flush=True)
    # one run, even if it was a job of a sweep; keep the .hydra/ files it was started with
    return _relaunch(path / ".hydra" / "hydra.yaml",
                     [f"hydra.run.dir={path}", "hydra.mode=RUN", "hydra.output_subdir=null"],
                     drop=("hydra.run.dir=", "hydra.sweep.dir=", "hydra.mode=", "hydra.output_subdir="))


def resume_sweep(path: Path) -> int:
    jobs = [p.parent.parent for p in path.rglob(".hydra/config.yaml")]
    if (path / SWEEP_DONE_FILE).exists() and all((job / "metrics.json").exists() for job in jobs):
        fail(f"{path} holds a finished sweep (every job has metrics.json): nothing to resume")
    done = sum((job / "metrics.json").exists() for job in jobs)
    print(f"[{PROG}] resuming the sweep in {path}: {done} of the {len(jobs)} jobs started so far had "
          f"finished and are kept", flush=True)
    return _relaunch(path / "multirun.yaml", [f"hydra.sweep.dir={path}"], drop=("hydra.sweep.dir=",))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a run folder, a sweep folder or a `make reproduce` folder")
    args = parser.parse_args(argv)
    path = args.path.expanduser().resolve()
    if not path.is_dir():
        fail(f"{args.path} is not a folder: give a run, sweep or reproduction folder")
    if (path / REPRODUCE_FILE).exists():
        code = subprocess.run([sys.executable, "-m", "mdn_experiments.reproduce", "--resume", str(path)]).returncode
    elif (path / "multirun.yaml").exists():
        code = resume_sweep(path)
    elif (path / ".hydra" / "hydra.yaml").exists():
        code = resume_run(path)
    else:
        fail(f"{args.path} holds nothing to resume: no run (.hydra/), sweep (multirun.yaml) or "
             f"reproduction ({REPRODUCE_FILE}) in it")
    sys.exit(code)


if __name__ == "__main__":
    main()
