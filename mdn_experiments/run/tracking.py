"""Experiment tracking: where a run's numbers go besides its folder (`logger: csv | tensorboard |
mlflow`, or a list of them).

`csv` is what every run writes anyway (history.csv, baseline_history.csv, metrics.json); the
other two are optional (`pip install 'mdn-experiments[tracking]'`) and imported only when chosen:

- `tensorboard`: an event file under RUN_DIR/tensorboard with the per-epoch scalars of both
  trainings (`mdn/...`, `baseline/...`), the final metrics (`metrics/...` and the HParams tab,
  which lines up the jobs of a sweep by their config) and the figures as images;
  `tensorboard --logdir outputs/` shows every run.
- `mlflow`: one MLflow run per job: the flattened config as params, the per-epoch metrics, the
  numbers of metrics.json (its text values as tags), and the figures, model.pt, metrics.json and
  the histories as artifacts. The tracking URI defaults to a SQLite file, outputs/mlflow.db
  (artifacts beside it in outputs/mlartifacts), no server needed; the experiment defaults to the
  sweep folder for the jobs of a sweep and to the dataset's name for single runs.

A run that is stopped and resumed continues its MLflow run (the run id is kept in
RUN_DIR/tracking.json) when the store chosen now is the one recorded there, or the recorded one
lies inside the run folder; otherwise it logs a new run to the store chosen now, and says so: a
folder never chooses where its data is sent. Tracking never costs a result: a failure to log after the run's files are
written is a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from mdn_experiments import files
from mdn_experiments.config.settings import TrackingSettings
from mdn_experiments.errors import UserError, clip

log = logging.getLogger(__name__)

# a tracking URI read back from a run folder (tracking.json) may only name these stores
SAVED_URI_SCHEMES = ("sqlite", "http", "https", "file")
CONNECT_SECONDS = 5.0  # an MLflow server that does not answer within this is unreachable
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger -> the package it needs
TRACKING_FILE = "tracking.json"  # the MLflow run of this folder (for a resume)
TENSORBOARD_DIR = "tensorboard"
FLUSH_SECONDS = 2.0  # MLflow: per-epoch metrics are sent in batches at most this often


def require(name: str) -> None:
    """One line naming the extra to install when the package behind logger `name` is missing."""
    package = PACKAGES.get(name)
    if package is None:
        return
    try:
        importlib.import_module(package)  # imported now, before training, only because it was chosen
    except ImportError as err:
        raise UserError(
            f"logger={name} needs the {package} package, which cannot be imported ({err}): "
            f"pip install 'mdn-experiments[tracking]' (or pip install {package})"
        ) from None


def default_mlflow_uri() -> str:
    """A SQLite file under outputs/ of the folder mdn-run was started in."""
    return "sqlite:///" + str((Path.cwd() / "outputs" / "mlflow.db").resolve())


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"trainer": {"lr": 0.001}} -> {"trainer.lr": 0.001}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics dict (bools excluded), as floats."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def job_context(run_dir: Path, dataset: str) -> tuple[str, str]:
    """(default experiment name, run name) from Hydra's job: a sweep's jobs share one experiment."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:
                name = hydra_cfg.job.override_dirname or f"job {hydra_cfg.job.num}"
                experiment = f"sweep {hydra_cfg.sweep.dir}"
                if len(experiment) > 500:  # MLflow's limit on experiment names: keep the folder's end
                    experiment = "sweep ..." + experiment[-491:]
                return experiment, name
    except Exception:  # noqa: BLE001 - no Hydra job (the Python API): plain names
        pass
    return dataset, f"{run_dir.parent.name} {run_dir.name}" if run_dir.parent.name.startswith("K=") else run_dir.name


class Tracker:
    """What a logger does with a run; the base does nothing (csv is written by the run itself)."""

    def epoch(self, phase: str, row: dict[str, Any]) -> None:
        """One history row of training `phase` (mdn or baseline), column names as in its csv."""

    def final(self, metrics: dict[str, Any], run_dir: Path) -> None:
        """The finished run: metrics.json's content and the files in its folder."""

    def close(self, status: str) -> None:
        """`status`: finished, failed or killed (stopped and resumable)."""


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        self.config = config

    def epoch(self, phase: str, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for key, value in numbers(row).items():
            if key != "epoch":
                self.writer.add_scalar(f"{phase}/{key}", value, step)

    def final(self, metrics: dict[str, Any], run_dir: Path) -> None:
        import matplotlib.image
        from torch.utils.tensorboard.summary import hparams

        values = {f"metrics/{key}": value for key, value in numbers(metrics).items()}
        params = {
            key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in flatten(self.config).items()
        }
        for summary in hparams(params, {key: v for key, v in values.items() if math.isfinite(v)}):
            self.writer.file_writer.add_summary(summary)
        for key, value in values.items():
            self.writer.add_scalar(key, value, 0)
        for png in sorted((run_dir / "figures").glob("*.png")):
            image = matplotlib.image.imread(png)[..., :3]  # RGBA floats in [0, 1]
            self.writer.add_image(f"figures/{png.stem}", image, 0, dataformats="HWC")
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


@contextlib.contextmanager
def _store_lock(uri: str):
    """Parallel jobs of a sweep create the SQLite store and the experiment one at a time."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///") :])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = files.open_lock_file(path.with_name(path.name + ".lock"))  # never through a link, never truncated
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def read_tracking_file(path: Path) -> dict[str, str]:
    """tracking.json of a run folder, as data: a URI of a known store and an MLflow run id."""
    from mdn_experiments.run.layout import read_json

    data = read_json(path)
    uri, run_id = data.get("mlflow_uri"), data.get("mlflow_run_id")
    scheme = uri.split(":", 1)[0].lower() if isinstance(uri, str) and ":" in uri else None
    if scheme not in SAVED_URI_SCHEMES:
        raise UserError(f"{path}: mlflow_uri={uri!r} is not allowed: a URI of {', '.join(SAVED_URI_SCHEMES)}")
    if not (isinstance(run_id, str) and run_id.isalnum() and len(run_id) <= 64):
        raise UserError(f"{path}: mlflow_run_id={run_id!r} is not an MLflow run id")
    return {"mlflow_uri": uri, "mlflow_run_id": run_id}


def local_path(uri: str) -> Path | None:
    """The file a local store's URI names (sqlite:///PATH, file:///PATH or a plain path), or None
    for a server (http, https) or anything else."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    return Path(uri) if ":" not in uri.split("/", 1)[0] else None


def same_store(uri: str, other: str | Path) -> bool:
    """Whether `uri` is the store `other` (another URI), or, when `other` is a folder, a local store
    inside that folder."""
    if isinstance(other, Path):
        path = local_path(uri)
        if path is None:
            return False
        try:
            return path.resolve().is_relative_to(other.resolve())
        except (OSError, RuntimeError):
            return False
    mine, theirs = local_path(uri), local_path(other)
    if mine is not None and theirs is not None:
        return mine.resolve() == theirs.resolve()
    return uri.rstrip("/") == other.rstrip("/")


def check_reachable(uri: str) -> None:
    """An http(s) tracking server answers within CONNECT_SECONDS, or a UserError says it does not."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    import http.client

    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        connection = connection_class(parts.hostname or "localhost", parts.port, timeout=CONNECT_SECONDS)
        connection.request("GET", (parts.path.rstrip("/") or "") + "/health")
        connection.getresponse().read(1024)  # any HTTP answer will do: the server is there
        connection.close()
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise UserError(
            f"tracking.mlflow_uri={uri!r}: no MLflow server answers there within {CONNECT_SECONDS:g} s "
            f"({type(err).__name__}: {err}); start it, or use a local store such as "
            "sqlite:///PATH/mlflow.db"
        ) from None


class MlflowTracker(Tracker):
    STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}

    def __init__(
        self, run_dir: Path, config: dict[str, Any], uri: str | None, experiment: str | None, dataset: str
    ) -> None:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's table creation talks a lot
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        saved = run_dir / TRACKING_FILE
        previous = read_tracking_file(saved) if saved.exists() or saved.is_symlink() else {}
        self.uri = uri or default_mlflow_uri()  # the store chosen now
        recorded = previous.get("mlflow_uri")
        if recorded and same_store(recorded, run_dir):
            self.uri = recorded  # a store inside the run folder goes with the folder
        elif recorded and not same_store(recorded, self.uri):
            log.warning(
                "tracking.json records the MLflow store %s; the store chosen now is used instead: %s "
                "(a new MLflow run there; a folder never chooses where its data is sent)",
                clip(recorded, 200),
                clip(self.uri, 200),
            )
            previous = {}
        check_reachable(self.uri)
        for name, value in HTTP_DEFAULTS.items():  # fail in seconds, not minutes, when a server goes away
            os.environ.setdefault(name, value)
        try:
            with _store_lock(self.uri):
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)  # opens the store now: a bad URI fails here
                if previous.get("mlflow_run_id"):  # a resumed run continues its MLflow run
                    self.run_id = previous["mlflow_run_id"]
                    self.client.update_run(self.run_id, status="RUNNING")
                    log.info("MLflow: continuing run %s in %s", self.run_id, self.uri)
        except Exception as err:  # noqa: BLE001 - a URI that cannot be opened, a store that refuses
            raise UserError(
                f"tracking.mlflow_uri={self.uri!r} cannot be used by MLflow "
                f"({type(err).__name__}: {' '.join(str(err).split())[:200]}): give a tracking URI "
                f"such as sqlite:///PATH/mlflow.db or http://HOST:PORT"
            ) from None
        if not previous.get("mlflow_run_id"):
            default_experiment, run_name = job_context(run_dir, dataset)
            name = experiment or default_experiment
            try:
                with _store_lock(self.uri):
                    experiment_id = self._experiment(name)
            except Exception as err:  # noqa: BLE001 - the store refused the experiment (its name)
                raise UserError(
                    f"MLflow refused the experiment {name[:80]!r}{'...' if len(name) > 80 else ''} "
                    f"({' '.join(str(err).split())[:160]}): set tracking.experiment=NAME"
                ) from None
            try:
                self.run_id = self.client.create_run(
                    experiment_id, run_name=run_name[:250], tags={"run_dir": str(run_dir.resolve())}
                ).info.run_id
                self.client.log_batch(
                    self.run_id,
                    params=[
                        Param(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
                        for key, value in flatten(config).items()
                    ],
                )
            except Exception as err:  # noqa: BLE001
                raise UserError(
                    f"MLflow could not start a run in {self.uri!r} "
                    f"({type(err).__name__}: {' '.join(str(err).split())[:200]})"
                ) from None
        files.write_text(saved, json.dumps({"mlflow_uri": self.uri, "mlflow_run_id": self.run_id}, indent=2) + "\n")
        self.pending: list = []
        self.last_flush = time.monotonic()

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working folder
            location = (Path(self.uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
            location += "/" + "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.client.create_experiment(name, artifact_location=location)

    def _flush(self) -> None:
        if self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
            self.pending = []
        self.last_flush = time.monotonic()

    def epoch(self, phase: str, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["epoch"])
        self.pending += [
            Metric(f"{phase}/{key}", value, now, step) for key, value in numbers(row).items() if key != "epoch"
        ]
        if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self._flush()

    def final(self, metrics: dict[str, Any], run_dir: Path) -> None:
        from mlflow.entities import Metric, RunTag

        self._flush()
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(key, value, now, 0) for key, value in numbers(metrics).items()],
            tags=[
                RunTag(key, str(value))
                for key, value in metrics.items()
                if isinstance(value, (str, bool)) and str(value)
            ],
        )
        for name in ("metrics.json", "model.pt", "history.csv", "baseline_history.csv"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if (run_dir / "figures").is_dir():
            self.client.log_artifacts(self.run_id, str(run_dir / "figures"), "figures")

    def close(self, status: str) -> None:
        self._flush()
        self.client.set_terminated(self.run_id, self.STATUS[status])


class Trackers:
    """The chosen loggers of one run, used as one: a hook per training phase, the final metrics,
    and closing (with the run's fate) whatever happens."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def hook(self, phase: str):
        """An epoch hook for Trainer (hook(trainer, row)): each history row, named as in its csv."""

        def log_epoch(trainer, row: dict[str, Any]) -> None:
            for tracker in self.trackers:
                tracker.epoch(phase, row)

        return log_epoch

    def final(self, metrics: dict[str, Any], run_dir: Path) -> None:
        for tracker in self.trackers:
            try:
                tracker.final(metrics, run_dir)
            except Exception as err:  # noqa: BLE001 - the run's files are written: warn, never lose them
                log.warning(
                    "%s could not log the final results (%s: %s); the run folder holds them all",
                    type(tracker).__name__,
                    type(err).__name__,
                    err,
                )

    def close(self, status: str) -> None:
        for tracker in self.trackers:
            try:
                tracker.close(status)
            except Exception as err:  # noqa: BLE001
                log.warning("%s could not be closed (%s: %s)", type(tracker).__name__, type(err).__name__, err)


def check(names: Iterable[str]) -> None:
    """The chosen loggers' packages are installed (UserError naming the extra otherwise)."""
    for name in names:
        require(name)


def open_trackers(settings: TrackingSettings, run_dir: Path, config: dict[str, Any], dataset: str) -> Trackers:
    """The trackers `settings` asks for, opened for run_dir (`config`: the run's plain config,
    `dataset`: its name, the default experiment of a single run)."""
    check(settings.loggers)
    trackers: list[Tracker] = []
    for name in settings.loggers:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir, config))
        elif name == "mlflow":
            trackers.append(MlflowTracker(run_dir, config, settings.mlflow_uri, settings.experiment, dataset))
    return Trackers(trackers)
