"""The layout of run and sweep folders as files on disk, and their readers: plain data only (YAML
with safe_load, JSON), no torch. Every reader turns a missing, unreadable or malformed file into a
one-line RunFolderError naming it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mdn_experiments.errors import RunFolderError

SWEEP_DONE_FILE = "sweep_done.json"  # written when a multirun ends (its job folders); mdn-resume reads it
REPRODUCE_FILE = "reproduce.json"  # a reproduction's steps and their state (mdn-resume reads it)
UCI_FILE = "uci.json"  # a UCI suite's steps and their state (make uci)


def read_yaml(path: Path) -> dict:
    """A YAML mapping from a run folder (safe_load: data only); RunFolderError in one line when
    the file is missing, unreadable, not YAML or not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = err.strerror if isinstance(err, OSError) else " ".join(str(err).split())[:120]
        raise RunFolderError(f"{path} cannot be read ({reason})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is empty or not a mapping")
    return data


def read_json(path: Path) -> dict:
    """A JSON object from a run folder; RunFolderError in one line when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) else " ".join(str(err).split())[:120]
        raise RunFolderError(f"{path} cannot be read ({reason})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a JSON object")
    return data


def job_folders(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep: every folder under it (not itself) that holds a .hydra folder."""
    return sorted(p.parent for p in Path(sweep_dir).rglob(".hydra") if p.is_dir() and p.parent != Path(sweep_dir))


def sweep_finished(sweep_dir: Path, failed_ok: bool = False) -> bool:
    """Whether the sweep ended (sweep_done.json) and every job it had then still holds its metrics
    (or, with failed_ok, its error.txt): a job folder deleted since makes it unfinished."""
    try:
        done = read_json(Path(sweep_dir) / SWEEP_DONE_FILE)
    except RunFolderError:
        return False
    names = done.get("job_folders")
    if not isinstance(names, list):  # a sweep from before the list was kept: every job folder found now
        names = [str(job.relative_to(sweep_dir)) for job in job_folders(sweep_dir)]
        if len(names) < done.get("jobs", 0):
            return False
    ends = ("metrics.json", "error.txt") if failed_ok else ("metrics.json",)
    return all(
        isinstance(name, str) and any((Path(sweep_dir) / name / end).is_file() for end in ends) for name in names
    )
