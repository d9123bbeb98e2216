"""The refusals a run or a sweep can meet before Hydra writes anything into its folder, and the
folder's lock (one writer per folder). Called by mdn-run's Hydra callback as soon as the config is
composed: a refusal here changes nothing on disk."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mdn_experiments import files
from mdn_experiments.config import validate
from mdn_experiments.config.safety import HYDRA_SLOTS, check_targets
from mdn_experiments.errors import RunFolderError
from mdn_experiments.run import locking
from mdn_experiments.run.layout import SWEEP_DONE_FILE, read_yaml

# files that mark a folder as one of ours; anything else in a folder makes it someone else's
OUR_MARKERS = (".hydra", ".lock", "state.pt", "state.prev.pt", SWEEP_DONE_FILE, "multirun.yaml")


def _check_foreign(folder: Path, key: str) -> None:
    """A folder that holds files but none of a run's or a sweep's is not ours to write into."""
    if folder.is_dir() and any(folder.iterdir()) and not any((folder / name).exists() for name in OUR_MARKERS):
        raise RunFolderError(
            f"{key}={str(folder)!r} holds other files and no run or sweep of mdn-experiments: choose a new "
            f"or empty folder (nothing was written)"
        )


def _make_folder(folder: Path, key: str) -> None:
    """Create the run or sweep folder now, so that one that cannot be made is a one-line error."""
    if "${" in str(folder):  # Hydra would read the folder's own name as an interpolation
        raise RunFolderError(
            f"{key}={str(folder)!r}: Hydra cannot use a folder whose path holds '${{': choose another folder"
        )
    try:
        files.make_folder(folder, named=True)
    except OSError as err:
        raise RunFolderError(
            f"{key}={str(folder)!r} cannot be created ({err.strerror or err}): {key} must be a folder "
            f"path you can write to"
        )


def _lock(folder: Path, what: str) -> None:
    """Hold folder's lock for the rest of this process (the kernel drops it at exit)."""
    locking.acquire(folder, what)


def check_hydra(config: DictConfig) -> None:
    """The composed Hydra config builds only the project's callbacks and Hydra's launchers and sweeper."""
    tree = {
        "hydra": {
            name: OmegaConf.to_container(config.hydra[name], resolve=False)
            for name in ("callbacks", "launcher", "sweeper")
            if config.hydra.get(name) is not None
        }
    }
    check_targets(tree, "", slots=HYDRA_SLOTS)


def claim_run_folder(config: DictConfig, resuming: bool) -> Path:
    """Every refusal a single run can meet, before Hydra writes into its folder; then its lock.

    Refused: a path that is a file, a folder that holds other files, a finished run, a sweep or
    reproduction folder, a run of another config (unless resuming), a folder another process
    writes into (the run's own, or the sweep it belongs to)."""
    run_dir = Path(config.hydra.run.dir).expanduser().absolute()
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"hydra.run.dir={str(run_dir)!r} is a file: hydra.run.dir must be a folder")
    _check_foreign(run_dir, "hydra.run.dir")
    files.check_folder(run_dir, "a run folder")  # no link or special file for Hydra or us to write through
    if (run_dir.parent / "multirun.yaml").exists():  # a job of a sweep (mdn-resume): its sweep too
        files.check_folder(run_dir.parent, "a sweep folder")
    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    if not resuming:
        validate(task_cfg)  # ranges first: a wrong value is refused before torch is imported
    from mdn_experiments.run.artifacts import check_run_folder  # torch & co. once a run is on its way
    from mdn_experiments.run.build import check_config

    saved = check_run_folder(run_dir, OmegaConf.to_container(task_cfg, resolve=True), trust_saved_config=resuming)
    if saved is None:  # a new run: its config is checked now, so that a refused one leaves no folder behind
        check_config(task_cfg)
    _make_folder(run_dir, "hydra.run.dir")
    if (run_dir.parent / "multirun.yaml").exists():  # a job of a sweep: the sweep's writer is the other writer
        _lock(run_dir.parent, "sweep")
    _lock(run_dir, "run")
    return run_dir.resolve()


def claim_sweep_folder(config: DictConfig, resuming: bool) -> Path:
    """Every refusal a sweep can meet, before Hydra writes into its folder; then its lock.

    A folder that already holds a sweep is taken only by a resume (mdn-resume, make reproduce),
    and only with the overrides it was started with: a new sweep never mixes its jobs with an
    old one's."""
    sweep_dir = Path(config.hydra.sweep.dir).expanduser().absolute()
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise RunFolderError(f"hydra.sweep.dir={str(sweep_dir)!r} is a file: hydra.sweep.dir must be a folder")
    for marker, what in (("metrics.json", "a run"), ("reproduce.json", "a reproduction")):
        if (sweep_dir / marker).exists():
            raise RunFolderError(
                f"hydra.sweep.dir={str(sweep_dir)!r} is {what} folder ({marker}): choose another folder"
            )
    _check_foreign(sweep_dir, "hydra.sweep.dir")
    files.check_folder(sweep_dir, "a sweep folder")  # no link or special file for Hydra or us to write through
    recorded = sweep_dir / "multirun.yaml"
    if recorded.exists() or any(sweep_dir.glob("*/.hydra")):
        if not resuming:
            raise RunFolderError(
                f"hydra.sweep.dir={str(sweep_dir)!r} already holds a sweep: continue it with "
                f"`mdn-resume {shlex.quote(str(sweep_dir))}`, or choose another folder (nothing was written)"
            )
        try:
            before = (read_yaml(recorded).get("hydra") or {}).get("overrides", {}).get("task") or []
        except (RunFolderError, AttributeError) as err:
            raise RunFolderError(f"{recorded} cannot be read ({err}): the sweep cannot be continued safely") from None
        now = list(config.hydra.overrides.task)
        if before != now:
            raise RunFolderError(
                f"{sweep_dir} holds a sweep started with other overrides ({' '.join(before) or 'none'}; now: "
                f"{' '.join(now) or 'none'}): choose another folder"
            )
    _make_folder(sweep_dir, "hydra.sweep.dir")
    _lock(sweep_dir, "sweep")
    return sweep_dir.resolve()
