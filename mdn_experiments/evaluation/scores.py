"""Scores shared by every task: the RMSE of point predictions, the NLL of a model that learned
nothing about the input, and means of per-row scores over a set streamed a part at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


@torch.no_grad()
def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared Euclidean error over samples: sqrt(mean_n ||pred_n - target_n||^2), in
    float64 (float32 squares overflow beyond 1e19 and underflow below 1e-19: any scale keeps its units)."""
    return float((pred.double() - target.double()).square().sum(-1).mean().sqrt())


@torch.no_grad()
def unconditional_nll(train_y: torch.Tensor, test_y: torch.Tensor) -> float:
    """Test NLL (nats/sample) of one Gaussian fitted by maximum likelihood to the training targets,
    ignoring x: the score of a model that learned nothing about the input."""
    y = train_y.double().cpu()
    mean = y.mean(0)
    centred = y - mean
    cov = centred.T @ centred / y.shape[0]
    cov = cov + 1e-12 * cov.diagonal().mean() * torch.eye(y.shape[1], dtype=torch.float64)  # relative: any scale
    gaussian = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return float(-gaussian.log_prob(test_y.double().cpu()).mean())


def means_over_parts(
    parts: Iterable[tuple[Any, torch.Tensor]], **per_row: Callable[[Any, torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The mean over a set's rows of each per-row score, the set given a part at a time as
    (prediction, targets) pairs (models.predict_parts): `per_row` maps a name to fn(prediction, y)
    -> (n, ...), summed along the rows in float64. Returns name -> mean, its trailing shape kept."""
    sums: dict[str, torch.Tensor] = {}
    n = 0
    for prediction, y in parts:
        n += len(y)
        for name, score in per_row.items():
            total = score(prediction, y).double().sum(0)
            sums[name] = total if name not in sums else sums[name] + total
    return {name: total / n for name, total in sums.items()}
