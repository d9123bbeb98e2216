"""One run: data -> MDN (and its MSE baseline) -> fit -> evaluate -> metrics.json, figures,
history.csv, model.pt in the run folder. Knows nothing of the command line.

A run is resumable: its training state (both networks, optimizers, schedules, RNGs, progress,
best weights, history, phase) is saved to state.pt in the run folder every
`trainer.checkpoint_seconds`, at each phase boundary and on SIGTERM/SIGINT; calling
run_experiment on a folder that holds one continues from it, and the result is the same, bit
for bit (CPU), as if the run had never stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from mdn_experiments import files
from mdn_experiments.config import plain, saved_config
from mdn_experiments.datasets.base import Splits
from mdn_experiments.errors import DISK_ERRORS, UserError, disk_error
from mdn_experiments.models import Network
from mdn_experiments.run import locking
from mdn_experiments.run.artifacts import (
    RESUME_FREE_KEYS,
    check_run_folder,
    finite_metrics,
    remove_state,
    write_history,
    write_json_atomic,
)
from mdn_experiments.run.build import RunObjects, build_run
from mdn_experiments.run.evaluate import evaluate_run, validation_only
from mdn_experiments.run.tracking import Trackers, open_trackers
from mdn_experiments.train.state import (
    STATE_FILE,
    Interrupted,
    StopFlag,
    rng_state,
    set_rng_state,
    stop_on_signals,
    write_state,
)
from mdn_experiments.train.trainer import FitResult, ReviveDead, Trainer, cached_predictions

log = logging.getLogger(__name__)

# fault injection for the resume tests: "SIGNAL@PHASE:EPOCH:STEP" (e.g. "KILL@mdn:3:2") sends
# SIGNAL to this process after that optimizer step (before any checkpoint of it); "between" as
# the phase means after the MDN phase's final state is written. MDN_FAULT_RUN, if set, limits
# it to run folders whose path contains that text (one job of a sweep).
FAULT_ENV, FAULT_RUN_ENV = "MDN_FAULT", "MDN_FAULT_RUN"
PHASES = ("mdn", "gaussian", "baseline")  # the training phases, in the order they run


def make_trainer(
    objects: RunObjects,
    network: Network,
    splits: Splits,
    progress: bool,
    desc: str,
    on_event=None,
    trackers: Trackers | None = None,
    phase: str | None = None,
) -> Trainer:
    """The trainer of one phase (the MDN, the K=1 MDN or the MSE baseline) with the run's hooks."""
    s = objects.settings
    hooks = [ReviveDead(s.revive_after)] if s.revive_dead and network.is_mdn else []
    if trackers is not None:  # after the revival hook: its column is logged too
        hooks.append(trackers.hook(phase or ("mdn" if network.is_mdn else "baseline")))
    return Trainer(
        network,
        splits.train,
        splits.val,
        s.mdn_train if network.is_mdn else s.baseline_train,
        optimizer_factory=objects.optimizer_factory,
        seed=s.seed,
        epoch_hooks=hooks,
        progress=progress,
        desc=desc,
        on_event=on_event,
    )


class RunCheckpoint:
    """The run's training state on disk: what is saved, when, and the reaction to a stop signal.

    Called by the trainers after every step and epoch: saves when `interval` seconds have passed
    since the last save, and on a stop signal saves and raises Interrupted.
    """

    def __init__(self, run_dir: Path, config: dict, interval: float, stop: StopFlag) -> None:
        self.run_dir, self.config, self.interval, self.stop = run_dir, config, interval, stop
        self.phase = "mdn"
        self.trainers: dict[str, Trainer] = {}
        self.finished: dict[str, dict] = {}  # the final state of each finished phase
        self.last_save = time.monotonic()
        fault = os.environ.get(FAULT_ENV, "")
        scope = os.environ.get(FAULT_RUN_ENV, "")
        self.fault = fault if fault and scope in str(run_dir) else ""

    def save(self) -> None:
        payload: dict[str, Any] = {"format": 1, "config": self.config, "phase": self.phase, "rng": rng_state()}
        for name in PHASES:
            if name in self.finished:
                payload[name] = self.finished[name]
            elif name in self.trainers:
                payload[name] = self.trainers[name].state_dict()
        write_state(self.run_dir, payload)
        self.last_save = time.monotonic()

    def finish_phase(self, name: str, next_phase: str) -> None:
        self.finished[name] = self.trainers[name].state_dict()
        self.phase = next_phase
        self.save()
        self.inject_fault("between", 0, 0)
        self.check_stop()

    def check_stop(self) -> None:
        if self.stop:
            self.save()
            self.stop.hand_on()  # SIGUSR2 under submitit: requeue (and exit) now that the state is saved
            where = {
                "mdn": "in the MDN phase",
                "gaussian": "in the K=1 MDN phase",
                "baseline": "in the baseline phase",
            }.get(self.phase, "after training")
            raise Interrupted(self.stop.signum, where)

    def inject_fault(self, phase: str, epoch: int, step: int) -> None:
        if self.fault and self.fault.split("@", 1)[1] == f"{phase}:{epoch}:{step}":
            os.kill(os.getpid(), getattr(signal, "SIG" + self.fault.split("@", 1)[0]))

    def __call__(self, trainer: Trainer, event: str) -> None:
        p = trainer.progress
        if event == "step":
            self.inject_fault(self.phase, p.epoch + 1, p.batch)
        self.check_stop()
        if time.monotonic() - self.last_save >= self.interval:
            self.save()


def _train_phase(name: str, trainer: Trainer, ckpt: RunCheckpoint, saved: dict | None, next_phase: str) -> FitResult:
    """Run (or continue, or just restore) one training phase."""
    ckpt.trainers[name] = trainer
    if saved is not None and name in saved:
        trainer.load_state_dict(saved[name])
        if trainer.progress.finished:
            ckpt.finished[name] = saved[name]
            return trainer.progress.result()
        log.info(
            "%s: resuming at epoch %d, step %d", trainer.desc, trainer.progress.epoch + 1, trainer.progress.batch + 1
        )
    ckpt.phase = name
    ckpt.stop.polled = True
    try:
        result = trainer.run()
    finally:
        ckpt.stop.polled = False
    ckpt.finish_phase(name, next_phase)
    return result


def run_experiment(
    cfg: DictConfig, run_dir: Path, progress: bool = False, trust_saved_config: bool = False
) -> dict[str, Any]:
    """Run one configured experiment into run_dir (continuing its saved state, if it holds one)
    and return its metrics.

    A saved state carries the config it was made with. It is used as is; a `cfg` that differs
    from it in a key that changes results is refused (RunFolderError), unless
    `trust_saved_config` (what mdn-resume sets) says to take the saved one regardless.
    """
    run_dir = files.make_folder(Path(run_dir), named=True).resolve()  # writes go to the real folder
    with locking.FolderLock(run_dir, "run"):  # one writer per folder (mdn-run took it already: re-entrant)
        saved = check_run_folder(run_dir, plain(cfg), trust_saved_config)
        if saved is not None:
            keep = {key: OmegaConf.select(cfg, key) for key in RESUME_FREE_KEYS}
            cfg = saved_config(saved["config"], str(run_dir / STATE_FILE))
            for key, value in keep.items():  # progress bar, threads, interval, figures: this session's choice
                OmegaConf.update(cfg, key, value, force_add=True)
            log.info("resuming from the training state in %s (phase: %s)", run_dir, saved["phase"])
        return _run_locked(cfg, run_dir, saved, progress)


FINITE_CHUNK = 1 << 16  # rows checked at a time (a table's whole mask would cost a quarter of its size)


def all_finite(values: torch.Tensor) -> bool:
    """Whether every value is finite, checked a chunk of rows at a time."""
    return all(bool(torch.isfinite(values[i : i + FINITE_CHUNK]).all()) for i in range(0, len(values), FINITE_CHUNK))


def _run_locked(cfg: DictConfig, run_dir: Path, saved: dict | None, progress: bool) -> dict[str, Any]:
    """run_experiment's work, with the folder's lock held and its state read: the config becomes
    settings and objects here, and no code below sees it."""
    objects = build_run(cfg, str(run_dir / STATE_FILE) if saved else "")
    dataset, settings = objects.dataset, objects.settings
    data_start = time.perf_counter()
    splits = dataset.load(settings.seed)
    for part, (x, y) in (("training", splits.train), ("validation", splits.val), ("test", splits.test)):
        if not (all_finite(x) and all_finite(y)):
            keys = [
                f"dataset.{key}"
                for key, value in cfg.dataset.items()
                if isinstance(value, float) or OmegaConf.is_list(value)
            ]
            raise UserError(
                f"the {part} set of {dataset.name} holds inf or nan with these settings: choose finite, "
                f"moderate values for {', '.join(keys) or 'the dataset keys'}"
            )
    if settings.search_role == "trial":  # a search's trial never sees the test part: scored on validation
        splits = Splits(splits.train, splits.val, splits.val)
    splits = splits.to(objects.device)
    data_seconds = time.perf_counter() - data_start
    log.info("run folder: %s", run_dir)
    fig_dir = files.make_folder(run_dir / "figures")
    (run_dir / "error.txt").unlink(missing_ok=True)  # an earlier failed attempt's
    wall_start = time.perf_counter()

    with stop_on_signals() as stop:
        ckpt = RunCheckpoint(run_dir, saved["config"] if saved else plain(cfg), settings.checkpoint_seconds, stop)
        trackers = open_trackers(settings.tracking, run_dir, ckpt.config, dataset.name)
        try:
            metrics = _train_and_evaluate(
                objects, run_dir, splits, saved, ckpt, trackers, progress, fig_dir, wall_start, data_seconds
            )
        except Interrupted:
            trackers.close("killed")  # resumable: a resume continues the same tracked run
            raise
        except BaseException:
            trackers.close("failed")
            raise
        trackers.final(metrics, run_dir)
        trackers.close("finished")
    remove_state(run_dir)  # the finished run lives in model.pt and metrics.json
    return metrics


def _train_and_evaluate(
    objects: RunObjects,
    run_dir: Path,
    splits: Splits,
    saved: dict | None,
    ckpt: RunCheckpoint,
    trackers: Trackers,
    progress: bool,
    fig_dir: Path,
    wall_start: float,
    data_seconds: float,
) -> dict[str, Any]:
    """run_experiment's work once the run folder, the data and the trackers are ready."""
    settings = objects.settings
    torch.manual_seed(settings.seed)  # each network starts from the seed, whatever ran before it
    mdn_net = objects.prepared("mdn", splits)
    trainer = make_trainer(
        objects, mdn_net, splits, progress, f"MDN K={settings.model.K}", on_event=ckpt, trackers=trackers
    )
    phases = [p for p, on in zip(PHASES, (True, objects.gaussian, settings.baseline)) if on] + ["evaluate"]
    result = _train_phase("mdn", trainer, ckpt, saved, phases[1])
    write_history(run_dir / "history.csv", result.history)
    log.info("MDN: best val NLL %.4f at epoch %d (%.1fs)", result.best_val_loss, result.best_epoch, result.seconds)

    gaussian, gaussian_result = None, None
    if objects.gaussian:
        torch.manual_seed(settings.seed)
        gaussian = objects.prepared("mdn", splits, K=1, members=1)  # one Gaussian per input, never an ensemble
        trainer = make_trainer(
            objects, gaussian, splits, progress, "MDN K=1", on_event=ckpt, trackers=trackers, phase="gaussian"
        )
        gaussian_result = _train_phase("gaussian", trainer, ckpt, saved, phases[phases.index("gaussian") + 1])
        write_history(run_dir / "gaussian_history.csv", gaussian_result.history)
        log.info("K=1 MDN: best val NLL %.4f at epoch %d", gaussian_result.best_val_loss, gaussian_result.best_epoch)

    baseline, baseline_result = None, None
    if settings.baseline:
        torch.manual_seed(settings.seed)
        baseline = objects.prepared("mse", splits)
        trainer = make_trainer(objects, baseline, splits, progress, "MSE baseline", on_event=ckpt, trackers=trackers)
        baseline_result = _train_phase("baseline", trainer, ckpt, saved, "evaluate")
        write_history(run_dir / "baseline_history.csv", baseline_result.history)
        log.info(
            "MSE baseline: best val MSE %.4g at epoch %d", baseline_result.best_val_loss, baseline_result.best_epoch
        )
    if saved is not None and saved["phase"] == "evaluate":
        set_rng_state(saved["rng"])  # the RNGs as they were when training ended

    with cached_predictions():  # the networks are trained: each is asked about each set once
        metrics = evaluate_run(
            settings,
            objects.dataset,
            splits,
            mdn_net,
            baseline,
            result,
            baseline_result,
            fig_dir,
            gaussian=gaussian,
            gaussian_result=gaussian_result,
        )
    if settings.search_role == "trial":
        metrics = validation_only(metrics)
    checkpoint = {"config": ckpt.config, "state_dict": mdn_net.state_dict(), "metrics": metrics}
    if baseline is not None:
        checkpoint["baseline_state_dict"] = baseline.state_dict()
    if gaussian is not None:
        checkpoint["gaussian_state_dict"] = gaussian.state_dict()
    columns = getattr(objects.dataset, "columns", None)
    if columns is not None:  # a table's: mdn-predict --file finds the features by name
        checkpoint["columns"] = columns()
    with files.replaced(run_dir / "model.pt") as fh:  # whole or not at all, never through a link
        torch.save(checkpoint, fh)

    metrics["wall_seconds"] = time.perf_counter() - wall_start
    metrics["data_seconds"] = data_seconds
    if settings.search_role == "final":  # the search it came from: the sweep folder it runs in
        metrics["search"] = str(run_dir.parent)
        metrics["search_trial"] = settings.search_trial
    metrics = finite_metrics(metrics)
    write_json_atomic(run_dir / "metrics.json", metrics)  # last: its presence means the run finished
    return metrics


def run_sweep_job(
    cfg: DictConfig, run_dir: Path, progress: bool = False, trust_saved_config: bool = False
) -> dict[str, Any] | None:
    """One job of a sweep, under its folder's lock: its metrics, or None when it finished earlier,
    failed (recorded in its folder as error.txt; the sweep goes on) or is another process's."""
    try:
        with locking.FolderLock(run_dir, "job"):
            if (run_dir / "metrics.json").exists():  # a resumed sweep: this job finished earlier
                log.info("%s already finished: skipped", run_dir)
                return None
            return _run_job_locked(cfg, run_dir, progress, trust_saved_config)
    except UserError as err:  # the job's folder is another process's: leave it alone
        log.error("job not run: %s", err)
        return None


def _run_job_locked(cfg: DictConfig, run_dir: Path, progress: bool, trust_saved_config: bool) -> dict[str, Any] | None:
    try:
        return run_experiment(cfg, run_dir, progress=progress, trust_saved_config=trust_saved_config)
    except Exception as err:  # noqa: BLE001 - every failure, ours or not, is the job's own
        expected = isinstance(err, (UserError, InstantiationException)) or (
            isinstance(err, OSError) and err.errno in DISK_ERRORS
        )
        message = disk_error(err) if isinstance(err, OSError) and expected else " ".join(str(err).split())
        detail = "" if expected else "\n" + traceback.format_exc()
        try:
            files.write_text(run_dir / "error.txt", f"{type(err).__name__}: {message}{detail}\n")
        except (OSError, UserError) as write_err:
            log.error(
                "could not write %s: %s", run_dir / "error.txt", getattr(write_err, "strerror", None) or write_err
            )
        log.error("job failed: %s (details in %s)", message, run_dir / "error.txt")
        return None
