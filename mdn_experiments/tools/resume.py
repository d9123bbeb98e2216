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
import sys
from pathlib import Path

from mdn_experiments import files
from mdn_experiments.config.safety import check_overrides, quote
from mdn_experiments.errors import UserError, clip, one_line
from mdn_experiments.run import locking
from mdn_experiments.run.layout import REPRODUCE_FILE, job_folders, read_yaml, sweep_finished
from mdn_experiments.tools import launch

PROG = "mdn-resume"


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def recorded_overrides(hydra_yaml: Path, drop: tuple[str, ...]) -> tuple[list[str], str | None]:
    """The overrides Hydra recorded in hydra_yaml (less those starting with `drop`), checked as data
    from a run folder (safety.check_overrides with replay=True), and the folder the run was started in."""
    recorded = read_yaml(hydra_yaml).get("hydra")
    overrides = recorded.get("overrides") if isinstance(recorded, dict) else None
    if not isinstance(overrides, dict) or not all(isinstance(overrides.get(k), list) for k in ("hydra", "task")):
        raise UserError(
            f"{hydra_yaml} holds no hydra.overrides.hydra and hydra.overrides.task lists: not a Hydra record of mdn-run"
        )
    kept = [o for o in overrides["hydra"] + overrides["task"] if not (isinstance(o, str) and o.startswith(drop))]
    parsed = check_overrides(kept, str(hydra_yaml), replay=True)
    kept = [text for text, override in zip(kept, parsed) if not _foreign_store(override, hydra_yaml)]
    runtime = recorded.get("runtime")
    cwd = runtime.get("cwd") if isinstance(runtime, dict) else None
    return kept, cwd if isinstance(cwd, str) and Path(cwd).is_dir() else None


def _foreign_store(override, hydra_yaml: Path) -> bool:
    """A recorded `tracking.mlflow_uri=URI` naming a store outside the folder: a folder never
    chooses where its data is sent, so it is not replayed (one line says so); the resumed run
    logs to the store chosen now (mdn-resume --mlflow-uri, else the default)."""
    from mdn_experiments.run.tracking import same_store

    if override.key_or_group != "tracking.mlflow_uri" or override.is_delete():
        uri = None
    else:
        value = override.value()
        uri = getattr(value, "text", value)  # a quoted string's text
    if not isinstance(uri, str):
        return False
    folder = hydra_yaml.parent.parent if hydra_yaml.parent.name == ".hydra" else hydra_yaml.parent
    if same_store(uri, folder):
        return False
    print(
        f"[{PROG}] the run recorded the MLflow store {clip(uri, 200)}; a folder does not choose where its data "
        "is sent, so the store chosen now is used (mdn-resume --mlflow-uri URI to choose it)",
        file=sys.stderr,
        flush=True,
    )
    return True


def _relaunch(hydra_yaml: Path, extra: list[str], drop: tuple[str, ...]) -> int:
    """mdn-run again with the overrides recorded in hydra_yaml (less those starting with `drop`).

    It runs from the folder the run was started in (relative paths in its config mean the same),
    and never imports from there (launch.command)."""
    overrides, cwd = recorded_overrides(hydra_yaml, drop)
    print(f"[{PROG}] mdn-run {' '.join(overrides + extra)}", flush=True)
    return launch.run("mdn_experiments.cli", overrides + extra, cwd=cwd, resume=True).returncode


def _check_free(path: Path) -> None:
    """Refuse at once (naming the holder) when another process writes into path or its sweep."""
    for folder in (path, path.parent) if (path.parent / "multirun.yaml").exists() else (path,):
        who = locking.holder(folder)
        if who:
            fail(f"{folder} is being written by another process ({who}); one writer per folder: wait for it to end")


def resume_run(path: Path, extra: list[str]) -> int:
    if (path / "metrics.json").exists():
        fail(f"{path} holds a finished run (metrics.json): nothing to resume")
    _check_free(path)
    files.check_folder(path, "a run folder")  # no link or special file for Hydra or mdn-run to write through
    state = (
        "its last training state"
        if (path / "state.pt").exists() or (path / "state.prev.pt").exists()
        else "the beginning (it was stopped before its first training state was written)"
    )
    print(f"[{PROG}] resuming the run in {path} from {state}", flush=True)
    # one run, even if it was a job of a sweep; keep the .hydra/ files it was started with
    return _relaunch(
        path / ".hydra" / "hydra.yaml",
        [f"hydra.run.dir={quote(str(path))}", "hydra.mode=RUN", "hydra.output_subdir=null", *extra],
        drop=("hydra.run.dir=", "hydra.sweep.dir=", "hydra.mode=", "hydra.output_subdir="),
    )


def resume_sweep(path: Path, extra: list[str]) -> int:
    jobs = job_folders(path)
    if sweep_finished(path):
        fail(f"{path} holds a finished sweep (every job has metrics.json): nothing to resume")
    _check_free(path)
    files.check_folder(path, "a sweep folder")  # no link or special file for Hydra or mdn-run to write through
    done = sum((job / "metrics.json").exists() for job in jobs)
    print(
        f"[{PROG}] resuming the sweep in {path}: {done} of the {len(jobs)} job folders found had finished and "
        f"are kept; the others run",
        flush=True,
    )
    return _relaunch(
        path / "multirun.yaml", [f"hydra.sweep.dir={quote(str(path))}", *extra], drop=("hydra.sweep.dir=",)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path, help="a run folder, a sweep folder or a `make reproduce` folder")
    parser.add_argument(
        "--mlflow-uri",
        metavar="URI",
        help="log the resumed run(s) to this MLflow store (a store recorded in the folder is used only "
        "when it lies inside the folder)",
    )
    args = parser.parse_args(argv)
    extra = [f"tracking.mlflow_uri={quote(args.mlflow_uri)}"] if args.mlflow_uri else []
    path = args.path.expanduser().resolve()
    if not path.is_dir():
        fail(f"{args.path} is not a folder: give a run, sweep or reproduction folder")
    try:
        if (path / REPRODUCE_FILE).exists():
            code = launch.run("mdn_experiments.tools.reproduce", ["--resume", str(path)]).returncode
        elif (path / "multirun.yaml").exists():
            code = resume_sweep(path, extra)
        elif (path / ".hydra" / "hydra.yaml").exists():
            code = resume_run(path, extra)
        else:
            fail(
                f"{args.path} holds nothing to resume: no run (.hydra/), sweep (multirun.yaml) or "
                f"reproduction ({REPRODUCE_FILE}) in it"
            )
    except UserError as err:
        fail(one_line(err))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
