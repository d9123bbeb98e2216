"""The layout of run and sweep folders as files on disk, and their readers: plain data only (YAML
with safe_load, JSON; read through `files`), no torch. Every reader turns a missing, unreadable or malformed file into a
one-line RunFolderError naming it."""

from __future__ import annotations

from pathlib import Path

from mdn_experiments import files
from mdn_experiments.errors import RunFolderError

SWEEP_DONE_FILE = "sweep_done.json"  # written when a multirun ends (its job folders); mdn-resume reads it
REPRODUCE_FILE = "reproduce.json"  # a reproduction's steps and their state (mdn-resume reads it)
UCI_FILE = "uci.json"  # a UCI suite's steps and their state (make uci)


def read_yaml(path: Path) -> dict:
    """A YAML mapping from a run folder (files.read_yaml: a regular file of bounded size, safe_load
    without aliases, a bounded shape); RunFolderError in one line otherwise."""
    return files.read_yaml(path)


def read_json(path: Path) -> dict:
    """A JSON object from a run folder (files.read_json); RunFolderError in one line otherwise."""
    return files.read_json(path)


def job_folders(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep: every folder under it (not itself) that holds a .hydra folder."""
    return sorted(p.parent for p in Path(sweep_dir).rglob(".hydra") if p.is_dir() and p.parent != Path(sweep_dir))


def inside(folder: Path, name: object) -> Path | None:
    """folder/name when `name` (read from a file) is a relative path that stays inside folder
    (no absolute path, no `..`, no empty part); None otherwise."""
    if not isinstance(name, str) or not name or len(name) > 4096 or "\x00" in name:
        return None
    parts = Path(name).parts
    if Path(name).is_absolute() or any(part in ("..", ".", "") for part in parts):
        return None
    return Path(folder) / name


def sweep_finished(sweep_dir: Path, failed_ok: bool = False) -> bool:
    """Whether the sweep ended (sweep_done.json) and every job it had then still holds its metrics
    (or, with failed_ok, its error.txt): a job folder deleted since makes it unfinished. The file
    is data: a job folder it names outside the sweep, or a count that is not a number, makes the
    sweep unfinished (a resume then looks at every job folder itself)."""
    try:
        done = read_json(Path(sweep_dir) / SWEEP_DONE_FILE)
    except RunFolderError:
        return False
    names = done.get("job_folders")
    if not isinstance(names, list):  # a sweep from before the list was kept: every job folder found now
        names = [str(job.relative_to(sweep_dir)) for job in job_folders(sweep_dir)]
        jobs = done.get("jobs", 0)
        if not isinstance(jobs, int) or isinstance(jobs, bool) or len(names) < jobs:
            return False
    folders = [inside(sweep_dir, name) for name in names]
    if any(folder is None for folder in folders):
        return False
    ends = ("metrics.json", "error.txt") if failed_ok else ("metrics.json",)
    return all(any((folder / end).is_file() for end in ends) for folder in folders)
