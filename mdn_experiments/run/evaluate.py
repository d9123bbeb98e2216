"""A trained run's metrics and figures: the common scores, the dataset's task metrics, calibration,
component health, and the run's status (ok, diverged, degenerate, nonfinite)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mdn_experiments import memory
from mdn_experiments.config import RunSettings
from mdn_experiments.datasets.base import Dataset, Splits
from mdn_experiments.evaluation import contract as C
from mdn_experiments.evaluation.calibration import LEVELS, calibrate_parts
from mdn_experiments.evaluation.health import HEALTH_KEYS
from mdn_experiments.evaluation.scores import means_over_parts, rmse, unconditional_nll
from mdn_experiments.mdn import Mixture
from mdn_experiments.models import Network, count_parameters, predict_parts
from mdn_experiments.train.trainer import FitResult, evaluate_loss, predict

TEST_WORD = re.compile(r"(?<![a-z])test(?![a-z])")  # `test` as a word of a metric key
TRAIN_NLL_POINTS = 10_000  # train_nll: on the first this many training points (all of the synthetic sets)


def _rollback_metrics(result: FitResult, rule: str | None = None) -> dict[str, Any]:
    return {
        C.key("rollbacks", rule): len(result.rollbacks),
        C.key("rollback_at", rule): "; ".join(
            f"epoch {r['epoch']} step {r['step']} ({r['reason']})" for r in result.rollbacks
        ),
    }


def _finite_rows(mixture: Mixture) -> Tensor:
    """(N,) whether each input's mixture has finite weights, means and scales."""
    fields = (mixture.pi, mixture.mu, mixture.component_std())
    return torch.stack([torch.isfinite(t).flatten(1).all(1) for t in fields]).all(0)


@torch.no_grad()
def _gaussian_metrics(network: Network, result: FitResult, splits: Splits) -> dict[str, Any]:
    """The K=1 MDN's scores on the test set (its NLL, mean, CRPS, 90 % coverage) and its training."""
    means = means_over_parts(
        predict_parts(network, *splits.test),
        log_lik=lambda mixture, y: mixture.log_prob(y),
        squared=lambda mixture, y: (mixture.mean().double() - y.double()).square().sum(-1),
        finite=lambda mixture, y: _finite_rows(mixture),
    )
    nll = -float(means["log_lik"])
    out: dict[str, Any] = {
        C.key(C.TEST_NLL, C.GAUSSIAN): nll,
        C.key(C.TEST_LL, C.GAUSSIAN): -nll,
        C.key(C.VAL_NLL, C.GAUSSIAN): result.best_val_loss,
        C.key("rmse", C.GAUSSIAN): float(means["squared"].sqrt()),
        C.key("n_params", C.GAUSSIAN): count_parameters(network),
        C.key("train_seconds", C.GAUSSIAN): result.seconds,
        **_rollback_metrics(result, C.GAUSSIAN),
    }
    if float(means["finite"]) == 1.0:
        calibration = calibrate_parts(predict_parts(network, *splits.test), len(splits.test[1]))
        out[C.key(C.COVERAGE_90, C.GAUSSIAN)] = calibration.coverage(0.9)
        if calibration.crps is not None:
            out[C.key(C.CRPS, C.GAUSSIAN)] = calibration.crps
    return out


def validation_only(metrics: dict[str, Any]) -> dict[str, Any]:
    """A search trial's metrics (evaluate_run given the validation part in the test part's place):
    every key named after the test part is renamed after the validation part, so that no key says
    test where no test score was computed; where the validation key exists already (val_nll: the
    kept weights' NLL during training, the same number) it is kept."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        renamed = TEST_WORD.sub("val", key)
        if renamed != key and renamed in metrics:
            continue
        out[renamed] = TEST_WORD.sub("val", value) if key == "main_metric" and isinstance(value, str) else value
    out["scored_on"] = "validation"
    return out


@memory.mapped_blocks()  # predictions and draws: large arrays, freed at once
def evaluate_run(
    settings: RunSettings,
    dataset: Dataset,
    splits: Splits,
    mdn_net: Network,
    baseline: Network | None,
    result: FitResult,
    baseline_result: FitResult | None,
    fig_dir: Path,
    *,
    gaussian: Network | None = None,
    gaussian_result: FitResult | None = None,
) -> dict[str, Any]:
    """metrics.json's content (wall time aside) and the figures, with the run's status
    (contract.run_status). `gaussian`: the K=1 MDN trained beside the MDN, if any."""
    metrics_start = time.perf_counter()
    test_nll, _ = evaluate_loss(mdn_net, *splits.test)
    train_nll, _ = evaluate_loss(mdn_net, *(part[:TRAIN_NLL_POINTS] for part in splits.train))
    _, val_diagnostics = evaluate_loss(mdn_net, *splits.val)  # component health of the kept weights
    metrics: dict[str, Any] = {
        "dataset": dataset.name,
        "main_metric": dataset.main_metric,
        "K": settings.model.K,
        "seed": settings.seed,
        "status": "ok",
        "status_reason": "",
        C.TEST_NLL: test_nll,
        C.UNCONDITIONAL_NLL: unconditional_nll(splits.train[1], splits.test[1]),
        C.VAL_NLL: result.best_val_loss,
        C.TRAIN_NLL: train_nll,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        **_rollback_metrics(result),
        **{key: val_diagnostics[key] for key in HEALTH_KEYS},
        "revivals": len(result.revivals),
        "revived_at": "; ".join(f"component {r['component'] + 1} at epoch {r['epoch']}" for r in result.revivals),
        "n_train": int(splits.train[0].shape[0]),
        "n_params": count_parameters(mdn_net),
        "precision": "bf16" if mdn_net.backbone_dtype is not None else "float32",
        "train_seconds": result.seconds,
        dataset.throughput_key: len(result.history) * splits.train[0].shape[0] / max(result.seconds, 1e-9),
    }
    unusable = not all(bool(_finite_rows(mixture).all()) for mixture, _ in predict_parts(mdn_net, *splits.test))
    if baseline is not None:
        with torch.no_grad():
            metrics[C.RMSE_BASELINE] = rmse(predict(baseline, splits.test[0]), splits.test[1])
        metrics[C.key("n_params", C.BASELINE)] = count_parameters(baseline)
        metrics[C.key("train_seconds", C.BASELINE)] = baseline_result.seconds
        metrics.update(_rollback_metrics(baseline_result, C.BASELINE))
    if gaussian is not None:
        metrics.update(_gaussian_metrics(gaussian, gaussian_result, splits))
    if unusable:  # modes, samples and figures of a mixture with inf/nan parameters mean nothing
        metrics["metrics_seconds"] = time.perf_counter() - metrics_start
        metrics["status"], metrics["status_reason"] = C.run_status(metrics, [], unusable=True)
        return metrics
    metrics.update(dataset.metrics(mdn_net, baseline, splits))
    foil = metrics.get(C.key(C.TEST_LL, C.GAUSSIAN))
    if isinstance(metrics.get(C.TEST_LL), float) and isinstance(foil, float):  # both in the target's units
        metrics[C.LL_GAIN] = metrics[C.TEST_LL] - foil
        metrics[C.FOIL_SENTENCE] = C.foil_sentence(metrics[C.TEST_LL], foil)
    with torch.no_grad():
        calibration = calibrate_parts(predict_parts(mdn_net, *splits.test), len(splits.test[1]))
        metrics.update(calibration.metrics())
        if baseline is not None and calibration.crps is not None:  # a point forecast's CRPS: |y - y_hat|
            metrics[C.CRPS_BASELINE] = float((predict(baseline, splits.test[0]) - splits.test[1]).abs().mean())
    if C.BAYES_NLL in metrics:
        metrics[C.NLL_GAP] = metrics[C.TEST_NLL] - metrics[C.BAYES_NLL]
    diverged = [
        f"{name}: {r.diverged}"
        for name, r in (("MDN", result), ("K=1 MDN", gaussian_result), ("baseline", baseline_result))
        if r is not None and r.diverged
    ]
    metrics["status"], metrics["status_reason"] = C.run_status(metrics, diverged)

    metrics["metrics_seconds"] = time.perf_counter() - metrics_start
    figures_start = time.perf_counter()
    if settings.figures:
        from mdn_experiments.figures import common  # matplotlib only when figures are drawn
        from mdn_experiments.run.figures import draw_task

        draw_task(dataset, mdn_net=mdn_net, baseline=baseline, splits=splits, fig_dir=fig_dir)
        common.calibration(
            fig_dir / "calibration.png",
            nominal=LEVELS,
            observed=[calibration.coverage(a) for a in LEVELS],
            pit=calibration.pit,
            title=f"{dataset.name}, K={settings.model.K}: calibration on the test set",
        )
        common.health(
            fig_dir / "health.png",
            history=result.history,
            n_components=settings.model.K * settings.model.members,  # an ensemble's mixture has them all
            title=f"{dataset.name}, K={settings.model.K}"
            + (f", {settings.model.members} members" if settings.model.members > 1 else "")
            + ": component health on the validation set",
        )
        common.loss_curves(
            fig_dir / "loss.png",
            history=result.history,
            baseline_history=baseline_result.history if baseline_result else None,
            title=f"{dataset.name}, K={settings.model.K}",
        )
    metrics["figures_seconds"] = time.perf_counter() - figures_start
    return metrics
