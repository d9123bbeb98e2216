"""The run folder: what a run writes (history.csv, metrics.json, model.pt) and how a folder is read
back (its training state, the refusals it can cause, a finished run's networks).

Everything read from a folder is data: configs go through `config.saved_config` (allow-lists,
typed schema) before anything is built from them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch

from mdn_experiments import files
from mdn_experiments.config import saved_config, validate_model
from mdn_experiments.datasets.base import Dataset
from mdn_experiments.errors import RunFolderError, UserError
from mdn_experiments.evaluation.contract import non_finite
from mdn_experiments.models import Network
from mdn_experiments.run import tracking
from mdn_experiments.run.build import build, make_dataset
from mdn_experiments.train.state import PREVIOUS_FILE, STATE_FILE, read_state

log = logging.getLogger(__name__)

PHASES = ("mdn", "gaussian", "baseline", "evaluate")  # what a saved state says the run was doing


# keys that may differ between a run and its resumption: they do not change the results
RESUME_FREE_KEYS = (
    "trainer.progress",
    "trainer.threads",
    "trainer.checkpoint_seconds",
    "figures",
    "logger",
    "tracking.mlflow_uri",
    "tracking.experiment",
)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """history.csv: one row per epoch, the columns as the trainer names them."""
    if not history:
        return
    with files.replaced(path, text=True) as fh:
        writer = csv.writer(fh)
        writer.writerow(list(history[0]))
        writer.writerows([row.values() for row in history])


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Standard JSON (a non-finite float is refused: see finite_metrics), written whole or not at all."""
    files.write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def finite_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics as standard JSON holds them: a non-finite value becomes null, and `non_finite`
    says which keys they were and what they held ("bayes_nll=inf; nll_gap=-inf")."""
    bad = non_finite(metrics)
    out = {key: None if key in bad else value for key, value in metrics.items()}
    out["non_finite"] = "; ".join(f"{key}={value}" for key, value in bad.items())
    return out


def config_changes(saved: dict, current: dict) -> list[str]:
    """`key: saved -> current` for every result-affecting key that differs."""
    a, b = tracking.flatten(saved), tracking.flatten(current)
    return [
        f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if key not in RESUME_FREE_KEYS and a.get(key) != b.get(key)
    ]


def remove_state(run_dir: Path) -> None:
    for name in (STATE_FILE, PREVIOUS_FILE):
        (run_dir / name).unlink(missing_ok=True)  # unlink never follows a link


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A damaged state file is reported once per process (mdn-run checks the folder twice)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def check_run_folder(run_dir: Path, config: dict, trust_saved_config: bool = False) -> dict | None:
    """The refusals a run folder can cause, checked before anything is written into it; returns
    the saved training state it holds (None if none).

    Refused (RunFolderError): a finished run, a sweep or reproduction folder, and (unless
    `trust_saved_config`) an unfinished run whose saved config differs from `config` in a key
    that changes results. A damaged state is a StateFileError."""
    if (run_dir / "metrics.json").exists():
        raise RunFolderError(f"{run_dir} already holds a finished run (metrics.json); choose another folder")
    for marker, what in (("multirun.yaml", "a sweep"), ("reproduce.json", "a reproduction")):
        if (run_dir / marker).exists():
            raise RunFolderError(f"{run_dir} is {what} folder ({marker}), not a run folder; choose another folder")
    saved = read_state(run_dir, warn=_warn_once) if run_dir.is_dir() else None
    if saved is None:
        return None
    if not isinstance(saved.get("config"), dict) or saved.get("phase") not in PHASES:
        raise RunFolderError(f"{run_dir / STATE_FILE}: not a training state of mdn-experiments (no config or phase)")
    changes = config_changes(saved["config"], config)
    if changes and not trust_saved_config:
        raise RunFolderError(
            f"{run_dir} holds an unfinished run with another config ({'; '.join(changes[:3])}); "
            f"resume it with `mdn-resume {run_dir}` or choose another folder"
        )
    if changes:
        log.warning("using the config saved in the run folder; the current one differs: %s", "; ".join(changes))
    return saved


def load_run(run_dir: Path | str, map_location: str = "cpu") -> tuple[Network, Network | None, dict]:
    """Rebuild the trained MDN (and baseline, if saved) of a run folder from model.pt alone.

    The folder is data: its config is checked (allow-lists, types) before anything is built from
    it, and only the project's own classes are. Raises RunFolderError (one line) when the file is
    missing, damaged, tampered with or does not fit its weights."""
    mdn_net, baseline, _, checkpoint = load_trained(run_dir, map_location)
    return mdn_net, baseline, checkpoint["config"]


def _saved_dataset(cfg, checkpoint: dict, need_data: bool) -> Dataset:
    """The run's dataset object. A table's run answers from the columns model.pt names, without
    reading its training file, unless `need_data` (its rows are asked for: mdn-predict --index);
    a training file that is gone then falls back to those columns too."""
    from mdn_experiments.datasets.table import SavedColumns
    from mdn_experiments.errors import DataError

    columns = checkpoint.get("columns")
    saved = lambda: SavedColumns(str(cfg.dataset.get("name", "table")), columns, str(cfg.dataset.get("path")))  # noqa: E731
    if not need_data and is_columns(columns):
        return saved()  # a moved or huge training file costs nothing
    try:
        return make_dataset(cfg)
    except DataError:
        if not is_columns(columns):
            raise
        log.warning("the run's table %s cannot be read: using the columns model.pt names", cfg.dataset.get("path"))
        return saved()


def is_columns(columns: Any) -> bool:
    """model.pt's `columns`: {"features": [names], "targets": [names]}, nothing else (it is data)."""
    return (
        isinstance(columns, dict)
        and set(columns) == {"features", "targets"}
        and all(isinstance(v, list) and v and all(isinstance(n, str) for n in v) for v in columns.values())
    )


def load_trained(
    run_dir: Path | str, map_location: str = "cpu", need_data: bool = False
) -> tuple[Network, Network | None, Dataset, dict]:
    """load_run's work: (MDN, baseline or None, the dataset object, the checkpoint dict).
    `need_data`: the dataset's rows will be asked for (a table's training file is read)."""
    path = Path(run_dir) / "model.pt"
    if not (path.exists() or path.is_symlink()):
        raise RunFolderError(
            f"{path} does not exist: {run_dir} holds no finished run"
            + (
                f" (it has a training state: finish it with `mdn-resume {run_dir}`)"
                if (Path(run_dir) / STATE_FILE).exists()
                else ""
            )
        )
    try:
        raw = files.read_bytes(path, files.MODEL_BYTES)  # a regular file of bounded size, never a link
    except OSError as err:
        raise RunFolderError(f"{path} cannot be read ({err.strerror or type(err).__name__})") from None
    try:
        checkpoint = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, wrong format, unpickling refused
        raise RunFolderError(
            f"{path} cannot be loaded: truncated or not a model.pt of mdn-experiments ({type(err).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        raise RunFolderError(f"{path} is not a model.pt of mdn-experiments (no config and state_dict)")
    cfg = saved_config(checkpoint["config"], str(path))
    try:
        validate_model(cfg)  # the trainer's settings do not matter for a trained network
        dataset = _saved_dataset(cfg, checkpoint, need_data)
    except UserError as err:
        raise RunFolderError(f"{path}: {err}") from None
    networks = []
    for head, key in (("mdn", "state_dict"), ("mse", "baseline_state_dict")):
        if key not in checkpoint:
            networks.append(None)
            continue
        network = build(cfg, dataset, head)
        try:
            network.load_state_dict(checkpoint[key])
        except (RuntimeError, TypeError, AttributeError, KeyError) as err:
            first = " ".join(str(err).split())[:200]
            raise RunFolderError(
                f"{path}: the weights in {key} do not fit the network its config describes ({first})"
            ) from None
        networks.append(network.eval())
    return networks[0], networks[1], dataset, checkpoint
