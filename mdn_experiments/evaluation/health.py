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
    return HealthSum().add(mixture, y).result()


class HealthSum:
    """health() gathered a batch at a time (the trainer's validation and the test set are scored in
    batches; their mixtures need not be kept): the sums and maxima it is made of."""

    def __init__(self) -> None:
        self.n, self.pi_sum, self.pi_max, self.entropy_sum = 0, None, None, 0.0

    @torch.no_grad()
    def add(self, mixture: Mixture, y: Tensor) -> HealthSum:
        pi = mixture.pi.double()
        r = mixture.responsibilities(y).double()
        pi_sum, pi_max = pi.sum(0), mixture.pi.amax(0)
        self.pi_sum = pi_sum if self.pi_sum is None else self.pi_sum + pi_sum
        self.pi_max = pi_max if self.pi_max is None else torch.maximum(self.pi_max, pi_max)
        self.entropy_sum += float(-(r * r.clamp_min(1e-300).log()).sum())
        self.n += pi.shape[0]
        return self

    def result(self) -> dict[str, float]:
        average = self.pi_sum / self.n
        entropy = -(average * average.clamp_min(1e-300).log()).sum()
        return {
            "effective_components": float(entropy.exp()),
            "dead_components": int((self.pi_max < DEAD_PI).sum()),
            "responsibility_entropy": self.entropy_sum / self.n,
        }


def dead_mask(mixture: Mixture) -> Tensor:
    """(K,) which components have pi < DEAD_PI on every input of the batch (N,)."""
    return mixture.pi.amax(0) < DEAD_PI
