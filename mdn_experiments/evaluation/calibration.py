"""Scores of predicted mixtures against observed targets: calibration (highest-density-region
coverage, PIT) and proper scores (CRPS). Mixture and targets in, numbers out; every dataset
reports them beside its task metric.

Highest-density regions. The 100a % HDR of p(y|x) is {y : p(y|x) >= c_a}, with c_a chosen so
that the region holds probability a. A target y lies inside it exactly when the probability of
the denser part, P_{Y ~ p(.|x)}(p(Y|x) > p(y|x)), is at most a. That probability -- the target's
*HDR level* -- is estimated per input from `n_samples` draws of the mixture (fixed seed), for any
dimension and covariance kind; coverage at level a is the share of targets with HDR level <= a.
For a calibrated model the HDR levels are uniform and coverage equals a at every level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mdn_experiments import memory
from mdn_experiments.mdn import Mixture

HDR_SAMPLE_BYTES = 32 * 1024**2  # draws held at once (with the density budget, their chunk)
HDR_DENSITY_ELEMENTS = 250_000  # sample x input x component densities at once (each costs ~60 B in temporaries)
SCORE_CHUNK = 8192  # inputs whose PIT (an (N, K) computation) is computed at once
CRPS_PAIR_ELEMENTS = 65_536  # input x component-pair terms of CRPS at once (each float64 temporary 0.5 MB)
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # nominal levels of calibration.png


@torch.no_grad()
def hdr_levels(
    mixture: Mixture, y: Tensor, n_samples: int = 1000, seed: int = 0, *, generator: torch.Generator | None = None
) -> Tensor:
    """The smallest HDR that contains each target, as its probability: (N,) in [0, 1].

    mixture has batch shape (N,), y is (N, D). Monte Carlo with n_samples draws per input: the
    standard error of each level is at most 0.5 / sqrt(n_samples). `generator` (instead of
    `seed`): a stream that goes on from an earlier part of the same set."""
    if generator is None:
        generator = torch.Generator(device=y.device).manual_seed(seed)
    n, k = y.shape[0], mixture.n_components
    d = max(mixture.dim, 1)
    # inputs drawn for at once: 20M densities, and no more than HDR_SAMPLE_BYTES of draws (a draw
    # costs its component's index and fields: a one-component mixture's chunk would take 600 MB)
    per_draw = 8 + 4 * (3 * d + 3)
    chunk = max(1, min(20_000_000 // (n_samples * k * d), HDR_SAMPLE_BYTES // (n_samples * per_draw)))
    # the counts written in place: pieces kept from chunk to chunk would sit between the chunks'
    # freed temporaries and keep the heap from shrinking, a growth with the number of inputs
    denser = torch.zeros(n, dtype=torch.float64, device=y.device)
    for start in range(0, n, chunk):
        part = mixture[start : start + chunk]
        target = part.log_prob(y[start : start + chunk])  # (n,)
        draws = part.sample(n_samples, generator=generator)  # (S, n, D): the one random stream
        # their densities a slice of draws at a time: (S, n, K) at once would cost hundreds of MB
        step = max(1, HDR_DENSITY_ELEMENTS // (len(target) * k * max(mixture.dim, 1)))
        counts = denser[start : start + chunk]
        for s in range(0, n_samples, step):
            counts += (part.log_prob(draws[s : s + step]) > target).sum(0)
        del part, target, draws
    memory.give_back()  # the draws' blocks: not held under the steps that follow
    return denser.div_(n_samples)


def _in_chunks(score: Callable[[Mixture, Tensor], Tensor], mixture: Mixture, y: Tensor, rows: int) -> Tensor:
    """score (one float64 per input) `rows` inputs at a time, written into one output: the
    temporaries stay the size of a chunk, and no piece kept from chunk to chunk pins the heap."""
    out = torch.empty(len(y), dtype=torch.float64, device=y.device)
    for i in range(0, len(y), rows):
        out[i : i + rows] = score(mixture[i : i + rows], y[i : i + rows])
    return out


def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


def _crps_kernel(m: Tensor, s: Tensor) -> Tensor:
    """E|X| for X ~ N(m, s^2): m (2 Phi(m/s) - 1) + 2 s phi(m/s)."""
    z = m / s
    return m * (2 * _normal_cdf(z) - 1) + 2 * s * torch.exp(-0.5 * z.square()) / math.sqrt(2 * math.pi)


@torch.no_grad()
def crps(mixture: Mixture, y: Tensor) -> Tensor:
    """Continuous ranked probability score of 1-D mixtures, closed form (Grimit et al. 2006):

        CRPS = sum_k pi_k E|y - X_k| - 1/2 sum_jk pi_j pi_k E|X_j - X_k'|,   X_k ~ N(mu_k, s_k^2),

    with E|Z| for a normal Z from `_crps_kernel`. mixture batch (N,), y (N, 1) -> (N,), float64,
    in target units (lower is better; for a point forecast it is the absolute error)."""
    if mixture.dim != 1:
        raise ValueError(f"crps is defined here for 1-D targets, got D={mixture.dim}")
    # the pairwise term is (N, K, K) and a dozen temporaries of it live at once: with an ensemble's
    # nine components, 8192 inputs at a time held 40 MB, the peak of a million-row table's run
    rows = max(1, CRPS_PAIR_ELEMENTS // mixture.pi.shape[-1] ** 2)
    if len(y) > rows:
        return _in_chunks(crps, mixture, y, rows)
    pi = mixture.pi.double()
    mu, s = mixture.mu[..., 0].double(), mixture.component_std()[..., 0].double()
    first = (pi * _crps_kernel(y.double() - mu, s)).sum(-1)
    spread = _crps_kernel(
        mu.unsqueeze(-1) - mu.unsqueeze(-2), (s.unsqueeze(-1).square() + s.unsqueeze(-2).square()).sqrt()
    )
    second = (pi.unsqueeze(-1) * pi.unsqueeze(-2) * spread).sum((-1, -2))
    return first - 0.5 * second


@torch.no_grad()
def pit(mixture: Mixture, y: Tensor) -> Tensor:
    """Probability integral transform F(y | x) of 1-D mixtures: (N,) float64, uniform on [0, 1]
    for a calibrated model."""
    if mixture.dim != 1:
        raise ValueError(f"pit is defined here for 1-D targets, got D={mixture.dim}")
    if len(y) > SCORE_CHUNK:
        return _in_chunks(pit, mixture, y, SCORE_CHUNK)
    z = (y.double() - mixture.mu[..., 0].double()) / mixture.component_std()[..., 0].double()
    return (mixture.pi.double() * _normal_cdf(z)).sum(-1)


@torch.no_grad()
def quantiles(mixture: Mixture, levels: Sequence[float], iterations: int = 60) -> Tensor:
    """Quantiles of 1-D mixtures by bisection on their CDF: batch (N,), levels (L,) -> (N, L),
    float64 (the CDF is increasing, so each bisection halves an interval that holds the answer)."""
    if mixture.dim != 1:
        raise ValueError(f"quantiles are defined here for 1-D targets, got D={mixture.dim}")
    mu, s = mixture.mu[..., 0].double(), mixture.component_std()[..., 0].double()
    pi = mixture.pi.double()
    q = torch.as_tensor(levels, dtype=torch.float64, device=mu.device)
    low = (mu - 12 * s).min(-1).values[:, None].expand(-1, q.numel()).clone()
    high = (mu + 12 * s).max(-1).values[:, None].expand(-1, q.numel()).clone()
    for _ in range(iterations):
        mid = (low + high) / 2
        cdf = (pi[:, None, :] * _normal_cdf((mid[..., None] - mu[:, None, :]) / s[:, None, :])).sum(-1)
        below = cdf < q
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    return (low + high) / 2


def ks_uniform(values: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance sup |F_n(u) - u| of values in [0, 1] from the uniform law."""
    u = np.sort(np.asarray(values, dtype=np.float64))
    n = u.size
    i = np.arange(1, n + 1)
    return float(max((i / n - u).max(), (u - (i - 1) / n).max()))


@dataclass
class Calibration:
    """Calibration of a model's mixtures on a test set: HDR levels of the targets (N,), and for
    1-D targets the PIT values (N,) and the mean CRPS (a float: the per-target values are summed
    as they come, not kept)."""

    hdr: np.ndarray
    pit: np.ndarray | None = None
    crps: float | None = None

    def coverage(self, nominal: float) -> float:
        return float((self.hdr <= nominal).mean())

    def metrics(self) -> dict[str, float]:
        """coverage_50, coverage_90; for 1-D targets crps (mean) and pit_ks."""
        out = {"coverage_50": self.coverage(0.5), "coverage_90": self.coverage(0.9)}
        if self.pit is not None:
            out["crps"] = self.crps
            out["pit_ks"] = ks_uniform(self.pit)
        return out


def calibrate(mixture: Mixture, y: Tensor, n_samples: int = 1000, seed: int = 0) -> Calibration:
    """Calibration of mixtures (batch (N,)) against targets y (N, D)."""
    return calibrate_parts([(mixture, y)], len(y), n_samples, seed)


def calibrate_parts(
    parts: Iterable[tuple[Mixture, Tensor]], n: int, n_samples: int = 1000, seed: int = 0
) -> Calibration:
    """Calibration of a set of n inputs given a part at a time, (mixtures, targets) in the set's
    order (say, predicted a part at a time: models.predict_parts), with one random stream for the
    HDR draws: one part gives calibrate's answer, bit for bit. Only the (n,) scores are kept, and
    of the CRPS its float64 sum."""
    generator = None
    hdr = pits = crps_sum = None
    start = 0
    for mixture, y in parts:
        if generator is None:  # the first part: the stream, and the scores the targets' dimension has
            generator = torch.Generator(device=y.device).manual_seed(seed)
            hdr = np.empty(n)
            pits, crps_sum = (np.empty(n), 0.0) if mixture.dim == 1 else (None, None)
        rows = slice(start, start + len(y))
        hdr[rows] = hdr_levels(mixture, y, n_samples, generator=generator).cpu().numpy()
        if pits is not None:
            pits[rows] = pit(mixture, y).cpu().numpy()
            crps_sum += float(crps(mixture, y).sum())
        start = rows.stop
    if start != n:
        raise ValueError(f"calibrate_parts: the parts held {start} inputs, not the {n} announced")
    return Calibration(hdr, pits, None if crps_sum is None else crps_sum / n)
