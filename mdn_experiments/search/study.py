"""The search's state: an Optuna study in a journal file inside the sweep folder, and nowhere else.

The file's place is fixed (SWEEP/search.journal; no config key names it), so a folder cannot send
the search's state elsewhere; it is read as data (a regular file of bounded size, no link; Optuna's
journal is JSON lines, nothing in it is code). Optuna's journal works on one machine and on the
shared file system of a cluster (its lock is an O_EXCL file, not a link).
"""

from __future__ import annotations

from pathlib import Path

from mdn_experiments import files
from mdn_experiments.errors import RunFolderError, UserError, clip

SEARCH_FILE = "search.journal"  # the study (Optuna's journal storage)
BEST_FILE = "best.yaml"  # the best trial's settings and the mdn-run line that runs them
FINAL = "final"  # the job folder of the final run (the best settings, the test part scored once)
TRIALS_CSV = "trials.csv"
STUDY_NAME = "search"
JOURNAL_BYTES = 256 * 2**20  # a journal of 10,000 trials takes a few MB


def trial_folder(number: int) -> str:
    """The job folder of trial `number`, relative to the sweep (Hydra's subdir in the presets)."""
    return f"trial={number}"


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise UserError(
            "the search needs Optuna: pip install 'mdn-experiments[search]' (or pip install 'optuna>=4')"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours to print
    return optuna


def is_search(sweep_dir: Path) -> bool:
    return (Path(sweep_dir) / SEARCH_FILE).exists()


def open_study(sweep_dir: Path, seed: int = 0, startup_trials: int = 5, create: bool = False):
    """The study in sweep_dir (created when `create` and absent). RunFolderError in one line when
    the journal is not a regular file below JOURNAL_BYTES or cannot be read."""
    optuna = import_optuna()
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    path = Path(sweep_dir) / SEARCH_FILE
    if path.exists() or path.is_symlink() or not create:
        size = files.regular_size(path, follow=False)  # a link, FIFO or device is refused here
        if size > JOURNAL_BYTES:
            raise RunFolderError(
                f"{path} holds {files.size_text(size)}, more than a search's journal "
                f"({files.size_text(JOURNAL_BYTES)}): not read"
            )
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, constant_liar=True)
    try:
        storage = JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        if create:
            study = optuna.create_study(
                study_name=STUDY_NAME, storage=storage, direction="minimize", sampler=sampler, load_if_exists=True
            )
        else:
            study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler)
        done = len(study.get_trials(deepcopy=False))
    except (UserError, OSError):
        raise
    except Exception as err:  # noqa: BLE001 - a damaged journal is the folder's fault, said in one line
        raise RunFolderError(
            f"{path} cannot be read as a search's journal ({type(err).__name__}: {clip(err, 200)})"
        ) from None
    if done:  # a resumed search: a sampler seeded anew would draw the first trials' settings again
        study.sampler = optuna.samplers.TPESampler(
            seed=(seed + done) % 2**32, n_startup_trials=startup_trials, constant_liar=True
        )
    return study
