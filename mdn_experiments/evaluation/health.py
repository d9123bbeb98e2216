"""Component health: how a mixture uses its K components on a data set (effective and dead
components, responsibility entropy). Mixture and targets in, numbers out."""

from __future__ import annotations

import torch
from torch import Tensor

from mdn_experiments.evaluation.contract import DEAD_PI
from mdn_experiments.mdn import Mixture

HEALTH_KEYS = ("effective_components", "dead_components", "responsibility_entropy", "sigma_floor_share")


@torch.no_grad()
def health(mixture: Mixture, y: Tensor) -> dict[str, float]:
    """How the mixture uses its components on a data set (mixture batch (N,), y (N, D)):

    effective_components   exp of the entropy of the average pi: K when all are used equally, 1 when
                           one takes everything (whatever the inputs)
    dead_components        how many components have pi < DEAD_PI on every input
    responsibility_entropy mean entropy (nats) of the posterior p(k | x, y): 0 when each target is
                           explained by one component, log K when all explain it alike
    """
    pi = mixture.pi.double()
    average = pi.mean(0)
    entropy = -(average * average.clamp_min(1e-300).log()).sum()
    r = mixture.responsibilities(y).double()
    r_entropy = -(r * r.clamp_min(1e-300).log()).sum(-1).mean()
    return {
        "effective_components": float(entropy.exp()),
        "dead_components": int(dead_mask(mixture).sum()),
        "responsibility_entropy": float(r_entropy),
    }


def dead_mask(mixture: Mixture) -> Tensor:
    """(K,) which components have pi < DEAD_PI on every input of the batch (N,)."""
    return mixture.pi.amax(0) < DEAD_PI
