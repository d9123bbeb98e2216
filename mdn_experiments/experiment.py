"""One run: data -> MDN (and its MSE baseline) -> fit -> evaluate -> metrics.json, figures,
history.csv, model.pt in the run folder. Knows nothing of the command line."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mdn_experiments import plots
from mdn_experiments.config import validate
from mdn_experiments.datasets.base import Dataset, Splits
from mdn_experiments.errors import RunFolderError, UserError
from mdn_experiments.models import Network, build_network, count_parameters
from mdn_experiments.train import FitResult, evaluate_loss, fit, predict, resolve_device

log = logging.getLogger(__name__)


def instantiate_checked(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a UserError raised by the target comes out unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def build(cfg: DictConfig, dataset: Dataset, head: str) -> Network:
    """Instantiate the configured backbone with the dataset's input shape and attach a head."""
    backbone = instantiate_checked(cfg.model.backbone, input_shape=list(dataset.input_shape))
    return build_network(
        backbone, dataset.input_shape, dataset.output_dim, head,
        n_components=cfg.K, sigma_min=cfg.model.sigma_min, sigma_transform=cfg.model.sigma_transform,
    )


def train_network(
    cfg: DictConfig, dataset: Dataset, network: Network, splits: Splits, progress: bool, desc: str
) -> FitResult:
    t = cfg.trainer
    if cfg.model.standardize:
        network.fit_standardization(*splits.train, per_feature=dataset.per_feature_standardization)
    if network.is_mdn and cfg.model.mu_init == "quantiles":
        network.init_means_from_targets(splits.train[1])
    return fit(
        network, splits.train, splits.val,
        optimizer_factory=instantiate(t.optimizer),
        lr=t.lr, epochs=t.epochs, batch_size=t.batch_size, grad_clip=t.grad_clip,
        lr_schedule=t.lr_schedule, lr_min_factor=t.lr_min_factor, patience=t.patience,
        input_noise=t.input_noise,
        seed=cfg.seed, progress=progress, desc=desc,
    )


def write_history(path: Path, history: list[dict[str, float]], loss_name: str) -> None:
    """history.csv: one row per epoch; the loss columns are named after the objective."""
    rename = {"train_loss": f"train_{loss_name}", "val_loss": f"val_{loss_name}"}
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([rename.get(key, key) for key in history[0]])
        writer.writerows([row.values() for row in history])


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


@torch.no_grad()
def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared Euclidean error over samples: sqrt(mean_n ||pred_n - target_n||^2)."""
    return float((pred - target).square().sum(-1).mean().sqrt())


def run_experiment(cfg: DictConfig, run_dir: Path, progress: bool = False) -> dict[str, Any]:
    """Run one configured experiment into run_dir and return its metrics."""
    validate(cfg)
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").exists():
        raise RunFolderError(f"{run_dir} already holds a finished run (metrics.json); choose another folder")
    dataset: Dataset = instantiate_checked(cfg.dataset)  # dataset-specific range checks happen here
    device = resolve_device(cfg.trainer.device)
    splits = dataset.load(cfg.seed).to(device)
    log.info("run folder: %s", run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    wall_start = time.perf_counter()

    torch.manual_seed(cfg.seed)
    mdn_net = build(cfg, dataset, "mdn").to(device)
    result = train_network(cfg, dataset, mdn_net, splits, progress, desc=f"MDN K={cfg.K}")
    write_history(run_dir / "history.csv", result.history, "nll")
    log.info("MDN: best val NLL %.4f at epoch %d (%.1fs)", result.best_val_loss, result.best_epoch, result.seconds)

    baseline, baseline_result = None, None
    if cfg.baseline:
        torch.manual_seed(cfg.seed)
        baseline = build(cfg, dataset, "mse").to(device)
        baseline_result = train_network(cfg, dataset, baseline, splits, progress, desc="MSE baseline")
        write_history(run_dir / "baseline_history.csv", baseline_result.history, "mse")
        log.info("MSE baseline: best val MSE %.4g at epoch %d", baseline_result.best_val_loss,
                 baseline_result.best_epoch)

    test_nll, _ = evaluate_loss(mdn_net, *splits.test)
    train_nll, _ = evaluate_loss(mdn_net, *splits.train)
    metrics: dict[str, Any] = {
        "dataset": dataset.name,
        "main_metric": dataset.main_metric,
        "K": cfg.K,
        "seed": cfg.seed,
        "test_nll": test_nll,
        "val_nll": result.best_val_loss,
        "train_nll": train_nll,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "n_train": int(splits.train[0].shape[0]),
        "n_params": count_parameters(mdn_net),
        "train_seconds": result.seconds,
        dataset.throughput_key: len(result.history) * splits.train[0].shape[0] / result.seconds,
    }
    if baseline is not None:
        with torch.no_grad():
            metrics["baseline_test_rmse"] = rmse(predict(baseline, splits.test[0]), splits.test[1])
        metrics["baseline_n_params"] = count_parameters(baseline)
        metrics["baseline_train_seconds"] = baseline_result.seconds
    metrics.update(dataset.metrics(mdn_net, baseline, splits))
    if "bayes_nll" in metrics:
        metrics["nll_gap"] = metrics["test_nll"] - metrics["bayes_nll"]

    dataset.figures(mdn_net, baseline, splits, fig_dir)
    plots.loss_curves(fig_dir / "loss.png", result.history,
                      baseline_result.history if baseline_result else None, f"{dataset.name}, K={cfg.K}")

    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    checkpoint = {"config": plain_cfg, "state_dict": mdn_net.state_dict(), "metrics": metrics}
    if baseline is not None:
        checkpoint["baseline_state_dict"] = baseline.state_dict()
    torch.save(checkpoint, run_dir / "model.pt")

    metrics["wall_seconds"] = time.perf_counter() - wall_start
    if not all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)):
        log.warning("some metrics are not finite: %s", {k: v for k, v in metrics.items() if v != v})
    write_json_atomic(run_dir / "metrics.json", metrics)  # last: its presence means the run finished
    return metrics


def load_run(run_dir: Path | str, map_location: str = "cpu") -> tuple[Network, Network | None, dict]:
    """Rebuild the trained MDN (and baseline, if saved) of a run folder from model.pt alone."""
    checkpoint = torch.load(Path(run_dir) / "model.pt", map_location=map_location, weights_only=True)
    cfg = OmegaConf.create(checkpoint["config"])
    dataset = instantiate(cfg.dataset)
    mdn_net = build(cfg, dataset, "mdn")
    mdn_net.load_state_dict(checkpoint["state_dict"])
    baseline = None
    if "baseline_state_dict" in checkpoint:
        baseline = build(cfg, dataset, "mse")
        baseline.load_state_dict(checkpoint["baseline_state_dict"])
    return mdn_net.eval(), baseline.eval() if baseline is not None else None, checkpoint["config"]
