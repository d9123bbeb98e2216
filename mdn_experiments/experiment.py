"""One run: data -> MDN (and its MSE baseline) -> fit -> evaluate -> metrics.json, figures,
history.csv, model.pt in the run folder. Knows nothing of the command line.

A run is resumable: its training state (both networks, optimizers, schedules, RNGs, progress,
best weights, history, phase) is saved to state.pt in the run folder every
`trainer.checkpoint_seconds`, at each phase boundary and on SIGTERM/SIGINT; calling
run_experiment on a folder that holds one continues from it, and the result is the same, bit
for bit (CPU), as if the run had never stopped.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mdn_experiments import locking, plots, resources, tracking
from mdn_experiments.checkpoint import (PREVIOUS_FILE, STATE_FILE, Interrupted, StopFlag, read_state,
                                        rng_state, set_rng_state, stop_on_signals, write_state)
from mdn_experiments.config import saved_config, validate, validate_model
from mdn_experiments.safety import TASK_SLOTS, check_targets
from mdn_experiments.datasets.base import Dataset, Splits
from mdn_experiments.errors import ConfigError, RunFolderError, UserError
from mdn_experiments.evaluation import HEALTH_KEYS, LEVELS, calibrate
from mdn_experiments.models import Network, build_network, count_parameters, require_sklearn
from mdn_experiments.tracking import Trackers, open_trackers
from mdn_experiments.train import (FitResult, ReviveDead, Trainer, cached_predictions, evaluate_loss, predict,
                                   resolve_device)

log = logging.getLogger(__name__)

PHASES = ("mdn", "baseline", "evaluate")  # what a saved state says the run was doing
# keys that may differ between a run and its resumption: they do not change the results
RESUME_FREE_KEYS = ("trainer.progress", "trainer.threads", "trainer.checkpoint_seconds", "figures", "logger",
                    "tracking.mlflow_uri", "tracking.experiment")
# fault injection for the resume tests: "SIGNAL@PHASE:EPOCH:STEP" (e.g. "KILL@mdn:3:2") sends
# SIGNAL to this process after that optimizer step (before any checkpoint of it); "between" as
# the phase means after the MDN phase's final state is written. MDN_FAULT_RUN, if set, limits
# it to run folders whose path contains that text (one job of a sweep).
FAULT_ENV, FAULT_RUN_ENV = "MDN_FAULT", "MDN_FAULT_RUN"


def instantiate_checked(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a UserError raised by the target comes out unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def locate(path: str) -> Any:
    """The object at a dotted import path ("torch.optim.Adam"), quietly; ImportError if none."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {path!r}")


def _target_class(node: Any, key: str, kind: str, example: str) -> type:
    """The class a `{_target_: ...}` node names; ConfigError when it is not such a node."""
    if not OmegaConf.is_dict(node) or "_target_" not in node:
        raise ConfigError(key, node if not OmegaConf.is_config(node) else OmegaConf.to_container(node),
                          f"a config node naming {kind}, e.g. {example}")
    allowed = TASK_SLOTS[key]
    if str(node._target_) not in allowed:  # nothing outside the allow-list is ever imported
        raise ConfigError(f"{key}._target_", node._target_, f"one of {', '.join(allowed)}")
    try:
        return locate(str(node._target_))
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{key}._target_", node._target_, f"the import path of {kind}, e.g. "
                          f"{example.split('=')[-1]}") from None


def _check_arguments(node: DictConfig, cls: type, key: str, reserved: tuple[str, ...]) -> None:
    """Every key of `node` is an argument of cls (and none of the ones set by code)."""
    accepted = [name for name in inspect.signature(cls).parameters if name not in ("self", "params", *reserved)]
    for name in node:
        if name.startswith("_"):
            continue
        if name in reserved:
            raise ConfigError(f"{key}.{name}", node[name], f"left out: {key.split('.')[0]}.{name} sets it"
                              if name == "lr" else "left out: it is set from the dataset")
        if name not in accepted:
            raise ConfigError(f"{key}.{name}", node[name], f"one of the arguments of {cls.__name__}: "
                              f"{', '.join(accepted)}")


def optimizer_factory(cfg: DictConfig):
    """The configured torch.optim class as a partial, checked before any training."""
    node = cfg.trainer.optimizer
    cls = _target_class(node, "trainer.optimizer", "a torch.optim optimizer",
                        "trainer.optimizer._target_=torch.optim.Adam")
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError("trainer.optimizer._target_", node._target_, "a torch.optim.Optimizer class, "
                          "e.g. torch.optim.Adam, torch.optim.SGD or torch.optim.LBFGS")
    _check_arguments(node, cls, "trainer.optimizer", reserved=("lr",))
    if node.get("_partial_") is not True:
        raise ConfigError("trainer.optimizer._partial_", node.get("_partial_"),
                          "true (the parameters and the learning rate are passed in by the trainer)")
    factory = instantiate_checked(node)
    try:  # the arguments' ranges are the optimizer's own: ask it, on a throwaway parameter
        factory([torch.zeros(1, requires_grad=True)], lr=cfg.trainer.lr)
    except (ValueError, TypeError, RuntimeError) as err:
        arguments = {key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
                     for key, value in node.items() if not key.startswith("_")}
        raise ConfigError("trainer.optimizer", arguments, f"arguments {cls.__name__} accepts "
                          f"({' '.join(str(err).split())[:160]})") from None
    return factory


def build(cfg: DictConfig, dataset: Dataset, head: str) -> Network:
    """Instantiate the configured backbone with the dataset's input shape and attach a head."""
    cls = _target_class(cfg.model.backbone, "model.backbone", "a backbone class",
                        "model.backbone._target_=mdn_experiments.models.MLP")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ConfigError("model.backbone._target_", cfg.model.backbone._target_,
                          "a torch.nn.Module class with an out_features attribute, e.g. mdn_experiments.models.MLP")
    _check_arguments(cfg.model.backbone, cls, "model.backbone", reserved=("input_shape",))
    backbone = instantiate_checked(cfg.model.backbone, input_shape=list(dataset.input_shape))
    return build_network(
        backbone, dataset.input_shape, dataset.output_dim, head,
        n_components=cfg.K, sigma_min=cfg.model.sigma_min, sigma_transform=cfg.model.sigma_transform,
        covariance=cfg.model.get("covariance", "diag"),  # runs saved before the key existed: diag
    )


def device_for(name: str) -> torch.device:
    """resolve_device, refusing (as bad input) a device this machine does not have."""
    available = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        available.append("mps")
    try:
        device = resolve_device(name)
    except RuntimeError:
        device = None
    ok = device is not None and (device.type == "cpu" or name == "auto" or (
        device.type == "cuda" and (device.index or 0) < torch.cuda.device_count()) or (
        device.type == "mps" and torch.backends.mps.is_available()))
    if not ok:
        raise ConfigError("trainer.device", name, f"a device this machine has: {', '.join(available)}"
                          + ("" if torch.cuda.device_count() else " (no CUDA GPU here)"))
    return device


def make_dataset(cfg: DictConfig) -> Dataset:
    """The configured dataset object (its constructor checks its own ranges)."""
    cls = _target_class(cfg.dataset, "dataset", "a dataset class", "dataset=inverse_sine")
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise ConfigError("dataset._target_", cfg.dataset._target_, "a subclass of mdn_experiments.datasets.Dataset")
    return instantiate_checked(cfg.dataset)


def check_config(cfg: DictConfig, source: str = "") -> tuple[Dataset, torch.device]:
    """Every check that can be made before training: the objects the config names (allow-lists,
    at every depth), ranges, the dataset's arguments, the device, the optimizer, the backbone and
    the memory the run needs. Raises a UserError (one line for the CLI) on bad input; `source`
    names where the config came from."""
    check_targets(OmegaConf.to_container(cfg, resolve=True), source)
    validate(cfg)
    dataset = make_dataset(cfg)
    device = device_for(cfg.trainer.device)
    optimizer_factory(cfg)  # refuses a bad optimizer now, not after the MDN has trained
    if cfg.model.init == "gmm":
        require_sklearn()
        if cfg.K > dataset.n_train:
            raise ConfigError("K", cfg.K, f"at most dataset.n_train={dataset.n_train} with model.init=gmm (a "
                              "Gaussian mixture needs a training point per component)")
    tracking.check(cfg)  # a chosen logger's package is installed
    with torch.device("meta"):  # built without memory: a bad backbone is refused, sizes are counted
        networks = [build(cfg, dataset, head) for head in ("mdn", "mse")]
    check_memory(cfg, dataset, device, networks)
    return dataset, device


def check_memory(cfg: DictConfig, dataset: Dataset, device: torch.device, networks: list[Network]) -> None:
    """Refuse (ResourceError, with the estimate) a run whose memory cannot fit on `device`."""
    sizes = [dataset.n_train, dataset.n_val, dataset.n_test]
    batch = cfg.trainer.batch_size or dataset.n_train
    estimate = resources.run_estimate(
        n_data=sum(sizes), input_size=math.prod(dataset.input_shape), out_dim=dataset.output_dim, K=cfg.K,
        n_eval=max(dataset.n_val, dataset.n_test), parameters=sum(count_parameters(n) for n in networks),
        activations_per_input=max(resources.activation_count(n, dataset.input_shape) for n in networks),
        batch=min(batch, dataset.n_train))
    estimate.check(resources.available_memory(str(device)), f"this run (K={cfg.K}, {sum(sizes)} examples)",
                   "use a smaller K, smaller data sets (dataset.n_train, n_val, n_test), a smaller "
                   "trainer.batch_size or a smaller model")


def prepare_network(cfg: DictConfig, network: Network, dataset: Dataset, splits: Splits) -> None:
    """Data-dependent initialisation: standardisation and (MDN) the head's start (model.init)."""
    if cfg.model.standardize:
        network.fit_standardization(*splits.train, per_feature=dataset.per_feature_standardization)
    if network.is_mdn:
        network.init_from_targets(cfg.model.init, splits.train[1], seed=cfg.seed)


TRAIN_NLL_POINTS = 10_000  # train_nll: on the first this many training points (all of the synthetic sets)
LOSS_NAMES = {"mdn": "nll", "baseline": "mse"}  # history.csv's loss columns per phase


def make_trainer(cfg: DictConfig, network: Network, splits: Splits, progress: bool, desc: str,
                 on_event=None, trackers: Trackers | None = None) -> Trainer:
    t = cfg.trainer
    hooks = [ReviveDead(t.revive_after)] if t.revive_dead and network.is_mdn else []
    if trackers is not None:  # after the revival hook: its column is logged too
        phase = "mdn" if network.is_mdn else "baseline"
        hooks.append(trackers.hook(phase, loss_renames(LOSS_NAMES[phase])))
    return Trainer(
        network, splits.train, splits.val,
        optimizer_factory=optimizer_factory(cfg),
        lr=t.lr, epochs=t.epochs if network.is_mdn or t.get("baseline_epochs") is None else t.baseline_epochs,
        batch_size=t.batch_size, grad_clip=t.grad_clip,
        lr_schedule=t.lr_schedule, lr_min_factor=t.lr_min_factor, patience=t.patience,
        input_noise=t.input_noise, seed=cfg.seed,
        on_nonfinite=t.on_nonfinite, rollback_lr_factor=t.rollback_lr_factor,
        max_consecutive_rollbacks=t.max_consecutive_rollbacks,
        epoch_hooks=hooks,
        progress=progress, desc=desc, on_event=on_event,
    )


def loss_renames(loss_name: str) -> dict[str, str]:
    return {"train_loss": f"train_{loss_name}", "val_loss": f"val_{loss_name}"}


def write_history(path: Path, history: list[dict[str, float]], loss_name: str) -> None:
    """history.csv: one row per epoch; the loss columns are named after the objective."""
    if not history:
        return
    rename = loss_renames(loss_name)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([rename.get(key, key) for key in history[0]])
        writer.writerows([row.values() for row in history])


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Standard JSON (a non-finite float is refused: see finite_metrics), written whole or not at all."""
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def non_finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics whose value is a float that is not finite (nan, inf, -inf)."""
    return {key: value for key, value in metrics.items() if isinstance(value, float) and not math.isfinite(value)}


def finite_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics as standard JSON holds them: a non-finite value becomes null, and `non_finite`
    says which keys they were and what they held ("bayes_nll=inf; nll_gap=-inf")."""
    bad = non_finite(metrics)
    out = {key: None if key in bad else value for key, value in metrics.items()}
    out["non_finite"] = "; ".join(f"{key}={value}" for key, value in bad.items())
    return out


@torch.no_grad()
def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared Euclidean error over samples: sqrt(mean_n ||pred_n - target_n||^2)."""
    return float((pred - target).square().sum(-1).mean().sqrt())


@torch.no_grad()
def unconditional_nll(train_y: torch.Tensor, test_y: torch.Tensor) -> float:
    """Test NLL (nats/sample) of one Gaussian fitted by maximum likelihood to the training targets,
    ignoring x: the score of a model that learned nothing about the input."""
    y = train_y.double().cpu()
    mean = y.mean(0)
    centred = y - mean
    cov = centred.T @ centred / y.shape[0] + 1e-12 * torch.eye(y.shape[1], dtype=torch.float64)
    gaussian = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return float(-gaussian.log_prob(test_y.double().cpu()).mean())


def config_changes(saved: dict, current: dict) -> list[str]:
    """`key: saved -> current` for every result-affecting key that differs."""
    a, b = tracking.flatten(saved), tracking.flatten(current)
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b))
            if key not in RESUME_FREE_KEYS and a.get(key) != b.get(key)]


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
        for name in ("mdn", "baseline"):
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
            where = {"mdn": "in the MDN phase", "baseline": "in the baseline phase"}.get(self.phase, "after training")
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
        log.info("%s: resuming at epoch %d, step %d", trainer.desc, trainer.progress.epoch + 1,
                 trainer.progress.batch + 1)
    ckpt.phase = name
    ckpt.stop.polled = True
    try:
        result = trainer.run()
    finally:
        ckpt.stop.polled = False
    ckpt.finish_phase(name, next_phase)
    return result


def remove_state(run_dir: Path) -> None:
    for name in (STATE_FILE, PREVIOUS_FILE, STATE_FILE + ".tmp"):
        (run_dir / name).unlink(missing_ok=True)


def run_experiment(cfg: DictConfig, run_dir: Path, progress: bool = False,
                   trust_saved_config: bool = False) -> dict[str, Any]:
    """Run one configured experiment into run_dir (continuing its saved state, if it holds one)
    and return its metrics.

    A saved state carries the config it was made with. It is used as is; a `cfg` that differs
    from it in a key that changes results is refused (RunFolderError), unless
    `trust_saved_config` (what mdn-resume sets) says to take the saved one regardless.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with locking.FolderLock(run_dir, "run"):  # one writer per folder (mdn-run took it already: re-entrant)
        saved = check_run_folder(run_dir, OmegaConf.to_container(cfg, resolve=True), trust_saved_config)
        if saved is not None:
            keep = {key: OmegaConf.select(cfg, key) for key in RESUME_FREE_KEYS}
            cfg = saved_config(saved["config"], str(run_dir / STATE_FILE))
            for key, value in keep.items():  # progress bar, threads, interval, figures: this session's choice
                OmegaConf.update(cfg, key, value, force_add=True)
            log.info("resuming from the training state in %s (phase: %s)", run_dir, saved["phase"])
        return _run_locked(cfg, run_dir, saved, progress)


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
            f"resume it with `mdn-resume {run_dir}` or choose another folder")
    if changes:
        log.warning("using the config saved in the run folder; the current one differs: %s", "; ".join(changes))
    return saved


def _run_locked(cfg: DictConfig, run_dir: Path, saved: dict | None, progress: bool) -> dict[str, Any]:
    """run_experiment's work, with the folder's lock held and its state read."""
    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    dataset, device = check_config(cfg, str(run_dir / STATE_FILE) if saved else "")
    data_start = time.perf_counter()
    splits = dataset.load(cfg.seed)
    for part, (x, y) in (("training", splits.train), ("validation", splits.val), ("test", splits.test)):
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            keys = [f"dataset.{key}" for key, value in cfg.dataset.items()
                    if isinstance(value, float) or OmegaConf.is_list(value)]
            raise UserError(f"the {part} set of {dataset.name} holds inf or nan with these settings: choose finite, "
                            f"moderate values for {', '.join(keys) or 'the dataset keys'}")
    splits = splits.to(device)
    data_seconds = time.perf_counter() - data_start
    log.info("run folder: %s", run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").unlink(missing_ok=True)  # an earlier failed attempt's
    wall_start = time.perf_counter()

    with stop_on_signals() as stop:
        ckpt = RunCheckpoint(run_dir, saved["config"] if saved else plain_cfg, cfg.trainer.checkpoint_seconds, stop)
        trackers = open_trackers(cfg, run_dir, ckpt.config)
        try:
            metrics = _train_and_evaluate(cfg, run_dir, dataset, splits, device, saved, ckpt, trackers, progress,
                                          fig_dir, wall_start, data_seconds)
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


def _train_and_evaluate(cfg: DictConfig, run_dir: Path, dataset: Dataset, splits: Splits, device: torch.device,
                        saved: dict | None, ckpt: RunCheckpoint, trackers: Trackers, progress: bool,
                        fig_dir: Path, wall_start: float, data_seconds: float) -> dict[str, Any]:
    """run_experiment's work once the run folder, the data and the trackers are ready."""
    torch.manual_seed(cfg.seed)
    mdn_net = build(cfg, dataset, "mdn").to(device)
    prepare_network(cfg, mdn_net, dataset, splits)
    trainer = make_trainer(cfg, mdn_net, splits, progress, f"MDN K={cfg.K}", on_event=ckpt,
                           trackers=trackers)
    result = _train_phase("mdn", trainer, ckpt, saved, "baseline" if cfg.baseline else "evaluate")
    write_history(run_dir / "history.csv", result.history, "nll")
    log.info("MDN: best val NLL %.4f at epoch %d (%.1fs)", result.best_val_loss, result.best_epoch, result.seconds)

    baseline, baseline_result = None, None
    if cfg.baseline:
        torch.manual_seed(cfg.seed)
        baseline = build(cfg, dataset, "mse").to(device)
        prepare_network(cfg, baseline, dataset, splits)
        trainer = make_trainer(cfg, baseline, splits, progress, "MSE baseline", on_event=ckpt,
                               trackers=trackers)
        baseline_result = _train_phase("baseline", trainer, ckpt, saved, "evaluate")
        write_history(run_dir / "baseline_history.csv", baseline_result.history, "mse")
        log.info("MSE baseline: best val MSE %.4g at epoch %d", baseline_result.best_val_loss,
                 baseline_result.best_epoch)
    if saved is not None and saved["phase"] == "evaluate":
        set_rng_state(saved["rng"])  # the RNGs as they were when training ended

    with cached_predictions():  # the networks are trained: each is asked about each set once
        metrics = evaluate_run(cfg, dataset, splits, mdn_net, baseline, result, baseline_result, fig_dir)
    checkpoint = {"config": ckpt.config, "state_dict": mdn_net.state_dict(), "metrics": metrics}
    if baseline is not None:
        checkpoint["baseline_state_dict"] = baseline.state_dict()
    torch.save(checkpoint, run_dir / "model.pt")

    metrics["wall_seconds"] = time.perf_counter() - wall_start
    metrics["data_seconds"] = data_seconds
    metrics = finite_metrics(metrics)
    write_json_atomic(run_dir / "metrics.json", metrics)  # last: its presence means the run finished
    return metrics


def _rollback_metrics(prefix: str, result: FitResult) -> dict[str, Any]:
    return {f"{prefix}rollbacks": len(result.rollbacks),
            f"{prefix}rollback_at": "; ".join(f"epoch {r['epoch']} step {r['step']} ({r['reason']})"
                                              for r in result.rollbacks)}


def evaluate_run(cfg: DictConfig, dataset: Dataset, splits: Splits, mdn_net: Network, baseline: Network | None,
                 result: FitResult, baseline_result: FitResult | None, fig_dir: Path) -> dict[str, Any]:
    """metrics.json's content (wall time aside) and the figures; sets `status`:
    ok, diverged (a phase stopped by the non-finite guard) or degenerate (the MDN's test NLL is
    no better than `unconditional_nll`)."""
    metrics_start = time.perf_counter()
    test_nll, _ = evaluate_loss(mdn_net, *splits.test)
    train_nll, _ = evaluate_loss(mdn_net, *(part[:TRAIN_NLL_POINTS] for part in splits.train))
    _, val_diagnostics = evaluate_loss(mdn_net, *splits.val)  # component health of the kept weights
    metrics: dict[str, Any] = {
        "dataset": dataset.name,
        "main_metric": dataset.main_metric,
        "K": cfg.K,
        "seed": cfg.seed,
        "status": "ok",
        "status_reason": "",
        "test_nll": test_nll,
        "unconditional_nll": unconditional_nll(splits.train[1], splits.test[1]),
        "val_nll": result.best_val_loss,
        "train_nll": train_nll,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        **_rollback_metrics("", result),
        **{key: val_diagnostics[key] for key in HEALTH_KEYS},
        "revivals": len(result.revivals),
        "revived_at": "; ".join(f"component {r['component'] + 1} at epoch {r['epoch']}" for r in result.revivals),
        "n_train": int(splits.train[0].shape[0]),
        "n_params": count_parameters(mdn_net),
        "train_seconds": result.seconds,
        dataset.throughput_key: len(result.history) * splits.train[0].shape[0] / max(result.seconds, 1e-9),
    }
    test_mixture = predict(mdn_net, splits.test[0])
    unusable = not all(bool(torch.isfinite(t).all()) for t in (test_mixture.pi, test_mixture.mu,
                                                               test_mixture.component_std()))
    if baseline is not None:
        with torch.no_grad():
            metrics["baseline_test_rmse"] = rmse(predict(baseline, splits.test[0]), splits.test[1])
        metrics["baseline_n_params"] = count_parameters(baseline)
        metrics["baseline_train_seconds"] = baseline_result.seconds
        metrics.update(_rollback_metrics("baseline_", baseline_result))
    if unusable:  # modes, samples and figures of a mixture with inf/nan parameters mean nothing
        metrics["metrics_seconds"] = time.perf_counter() - metrics_start
        metrics["status"], metrics["status_reason"] = "nonfinite", (
            "the MDN's predictions on the test set are not finite (inf or nan parameters): the task metrics, "
            "calibration and figures were not computed")
        return metrics
    metrics.update(dataset.metrics(mdn_net, baseline, splits))
    with torch.no_grad():
        calibration = calibrate(test_mixture, splits.test[1])
        metrics.update(calibration.metrics())
        if baseline is not None and calibration.crps is not None:  # a point forecast's CRPS: |y - y_hat|
            metrics["baseline_crps"] = float((predict(baseline, splits.test[0]) - splits.test[1]).abs().mean())
    if "bayes_nll" in metrics:
        metrics["nll_gap"] = metrics["test_nll"] - metrics["bayes_nll"]

    diverged = [f"{name}: {r.diverged}" for name, r in (("MDN", result), ("baseline", baseline_result))
                if r is not None and r.diverged]
    if diverged:
        metrics["status"] = "diverged"
        metrics["status_reason"] = "training stopped by the non-finite guard (" + "; ".join(diverged) + \
            "); the best weights before it were evaluated"
    elif not test_nll < metrics["unconditional_nll"]:
        metrics["status"] = "degenerate"
        metrics["status_reason"] = (f"test NLL {test_nll:.4g} is no better than {metrics['unconditional_nll']:.4g}, "
                                    f"the NLL of one Gaussian fitted to the training targets")
    elif non_finite(metrics):
        metrics["status"] = "nonfinite"
        metrics["status_reason"] = ("metrics that are not finite numbers (null in metrics.json): "
                                    + "; ".join(f"{key}={value}" for key, value in non_finite(metrics).items()))

    metrics["metrics_seconds"] = time.perf_counter() - metrics_start
    figures_start = time.perf_counter()
    if cfg.figures:
        dataset.figures(mdn_net, baseline, splits, fig_dir)
        plots.calibration(fig_dir / "calibration.png", LEVELS, [calibration.coverage(a) for a in LEVELS],
                          calibration.pit, f"{dataset.name}, K={cfg.K}: calibration on the test set")
        plots.health(fig_dir / "health.png", result.history, cfg.K, f"{dataset.name}, K={cfg.K}: component health "
                     "on the validation set")
        plots.loss_curves(fig_dir / "loss.png", result.history,
                          baseline_result.history if baseline_result else None, f"{dataset.name}, K={cfg.K}")
    metrics["figures_seconds"] = time.perf_counter() - figures_start
    return metrics


def load_run(run_dir: Path | str, map_location: str = "cpu") -> tuple[Network, Network | None, dict]:
    """Rebuild the trained MDN (and baseline, if saved) of a run folder from model.pt alone.

    The folder is data: its config is checked (allow-lists, types) before anything is built from
    it, and only the project's own classes are. Raises RunFolderError (one line) when the file is
    missing, damaged, tampered with or does not fit its weights."""
    mdn_net, baseline, _, checkpoint = load_trained(run_dir, map_location)
    return mdn_net, baseline, checkpoint["config"]


def load_trained(run_dir: Path | str, map_location: str = "cpu") -> tuple[Network, Network | None, Dataset, dict]:
    """load_run's work: (MDN, baseline or None, the dataset object, the checkpoint dict)."""
    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise RunFolderError(f"{path} does not exist: {run_dir} holds no finished run"
                             + (" (it has a training state: finish it with `mdn-resume "
                                f"{run_dir}`)" if (Path(run_dir) / STATE_FILE).exists() else ""))
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, wrong format, unpickling refused
        raise RunFolderError(f"{path} cannot be loaded: truncated or not a model.pt of mdn-experiments "
                             f"({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        raise RunFolderError(f"{path} is not a model.pt of mdn-experiments (no config and state_dict)")
    cfg = saved_config(checkpoint["config"], str(path))
    try:
        validate_model(cfg)  # the trainer's settings do not matter for a trained network
        dataset = make_dataset(cfg)
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
            raise RunFolderError(f"{path}: the weights in {key} do not fit the network its config describes "
                                 f"({first})") from None
        networks.append(network.eval())
    return networks[0], networks[1], dataset, checkpoint
