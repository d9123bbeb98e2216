"""The mixture maths of a prediction, in numpy alone: what `mdn-predict` reports about each input
(components, modes with their mass, samples, mean, spread and quantiles) for a run folder and for
an exported ONNX file alike, so that the two answers come from one piece of code.

A `Mixture` here is a batch (N,) of Gaussian mixtures in the target's units, as the exported model
gives it: log-weights (N, K), means (N, K, D), and either per-dimension standard deviations `scales`
(N, K, D) (diagonal and isotropic covariances) or lower-triangular `cholesky` factors (N, K, D, D)
(full covariances). Everything is computed in float64. `mdn_experiments.mdn` holds the same maths in
torch for training; tests/unit/test_serve_mixture.py pins this module to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)
SERIES_BELOW = 2.0  # |x| below: erf by its power series; from here on erfc by its continued fraction
SERIES_TERMS = 90
HDR_CHUNK = 256  # inputs whose draws are held at once by hdr_levels
MODES_CHUNK = 8192  # mixtures whose modes are sought at once (as mdn.MODES_CHUNK)
FRACTION_TERMS = 120


def erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function, elementwise, to about 2e-13 relative (numpy has none).

    Below SERIES_BELOW, erf x = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)), a
    series of positive terms (no cancellation); beyond, Laplace's continued fraction
    erfc x = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated from its tail.
    Negative arguments by erfc(-x) = 2 - erfc(x)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    near = np.minimum(a, SERIES_BELOW)  # the series on every element, used where |x| is small
    term = near.copy()
    total = near.copy()
    for n in range(1, SERIES_TERMS):
        term = term * (2.0 * near * near) / (2 * n + 1)
        total = total + term
    erf_near = 2.0 / math.sqrt(math.pi) * np.exp(-near * near) * total
    far = np.maximum(a, SERIES_BELOW)
    tail = far.copy()
    for n in range(FRACTION_TERMS, 0, -1):
        tail = far + (n / 2.0) / tail
    with np.errstate(under="ignore", over="ignore"):  # exp(-inf) = 0: erfc of a huge argument
        erfc_far = np.exp(-far * far) / math.sqrt(math.pi) / tail
    out = np.where(a < SERIES_BELOW, 1.0 - erf_near, erfc_far)
    return np.where(x < 0, 2.0 - out, out)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z) = erfc(-z / sqrt 2) / 2."""
    return 0.5 * erfc(-np.asarray(z, dtype=np.float64) / math.sqrt(2.0))


def _logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - top).sum(axis)) + np.squeeze(top, axis)


def _solve_lower(lower: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z with L z = b by forward substitution: L (..., D, D) lower triangular, b (..., D); broadcasts."""
    lower, b = np.broadcast_arrays(lower, b[..., None])
    b = b[..., 0]
    z = np.zeros(b.shape)
    for d in range(b.shape[-1]):
        z[..., d] = (b[..., d] - (lower[..., d, :d] * z[..., :d]).sum(-1)) / lower[..., d, d]
    return z


def component_log_prob(y: np.ndarray, means: np.ndarray, spread: np.ndarray, full: bool) -> np.ndarray:
    """log N(y; mu_k, Sigma_k) for every component: y (..., D) against means (..., K, D) and
    `spread` (scales (..., K, D), or Cholesky factors (..., K, D, D) when `full`) -> (..., K)."""
    diff = y[..., None, :] - means
    if full:
        z = _solve_lower(spread, diff)
        log_det = np.log(np.diagonal(spread, axis1=-2, axis2=-1)).sum(-1)
    else:
        z = diff / spread
        log_det = np.log(spread).sum(-1)
    return -0.5 * np.square(z).sum(-1) - log_det - 0.5 * means.shape[-1] * LOG_2PI


@dataclass
class Modes:
    """The modes of a batch of mixtures, one slot per component, as `mdn.Modes`: location (N, K, D),
    log_density (N, K), mass (N, K) and valid (N, K); the valid slots first, densest first."""

    location: np.ndarray
    log_density: np.ndarray
    mass: np.ndarray
    valid: np.ndarray


@dataclass
class Mixture:
    """A batch (N,) of Gaussian mixtures (see the module's text). `covariance_kind` names how it was
    trained (diag, isotropic or full); the maths needs only whether `cholesky` is given."""

    log_weights: np.ndarray
    means: np.ndarray
    scales: np.ndarray | None = None
    cholesky: np.ndarray | None = None
    covariance_kind: str = "diag"

    def __post_init__(self) -> None:
        self.log_weights = np.asarray(self.log_weights, dtype=np.float64)
        self.means = np.asarray(self.means, dtype=np.float64)
        if (self.scales is None) == (self.cholesky is None):
            raise ValueError("a mixture has either scales (diag, isotropic) or cholesky factors (full)")
        if self.scales is not None:
            self.scales = np.asarray(self.scales, dtype=np.float64)
        else:
            self.cholesky = np.tril(np.asarray(self.cholesky, dtype=np.float64))

    @property
    def full(self) -> bool:
        return self.cholesky is not None

    @property
    def spread(self) -> np.ndarray:
        return self.cholesky if self.full else self.scales

    @property
    def n(self) -> int:
        return self.log_weights.shape[0]

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def pi(self) -> np.ndarray:
        return np.exp(self.log_weights)

    def __getitem__(self, index) -> Mixture:
        return Mixture(
            self.log_weights[index],
            self.means[index],
            None if self.full else self.scales[index],
            self.cholesky[index] if self.full else None,
            self.covariance_kind,
        )

    # --- densities and moments ---------------------------------------------------------------------

    def component_covariance(self) -> np.ndarray:
        """Sigma_k: (N, K, D, D)."""
        if self.full:
            return self.cholesky @ np.swapaxes(self.cholesky, -1, -2)
        return np.einsum("...d,de->...de", np.square(self.scales), np.eye(self.dim))

    def component_std(self) -> np.ndarray:
        """sqrt(diag Sigma_k): (N, K, D)."""
        return np.sqrt(np.square(self.cholesky).sum(-1)) if self.full else self.scales

    def log_prob(self, y: np.ndarray) -> np.ndarray:
        """log p(y | x): y (..., N, D) -> (..., N)."""
        return _logsumexp(
            self.log_weights + component_log_prob(np.asarray(y, np.float64), self.means, self.spread, self.full)
        )

    def mean(self) -> np.ndarray:
        """E[y | x]: (N, D)."""
        return (self.pi[..., None] * self.means).sum(-2)

    def covariance(self) -> np.ndarray:
        """Cov[y | x] = sum_k pi_k (Sigma_k + mu_k mu_k^T) - mean mean^T: (N, D, D)."""
        second = self.component_covariance() + self.means[..., :, None] * self.means[..., None, :]
        mean = self.mean()
        return (self.pi[..., None, None] * second).sum(-3) - mean[..., :, None] * mean[..., None, :]

    def marginal(self, d: int) -> Mixture:
        """The 1-D mixture of target dimension d: the same weights, the d-th means and spreads."""
        return Mixture(self.log_weights, self.means[..., d : d + 1], self.component_std()[..., d : d + 1])

    # --- tempering and sampling ----------------------------------------------------------------------

    def tempered(self, temperature_pi: float = 1.0, temperature_sigma: float = 1.0) -> Mixture:
        """Log-weights divided by temperature_pi (renormalised), every spread (standard deviations,
        or the Cholesky factor) multiplied by temperature_sigma; as `mdn.Mixture.tempered`."""
        if not (temperature_pi > 0 and temperature_sigma > 0):
            raise ValueError(f"temperatures must be > 0, got pi={temperature_pi}, sigma={temperature_sigma}")
        logits = self.log_weights / temperature_pi
        log_weights = logits - _logsumexp(logits)[..., None]
        spread = self.spread * temperature_sigma
        return Mixture(
            log_weights, self.means, None if self.full else spread, spread if self.full else None, self.covariance_kind
        )

    def sample(
        self, n_samples: int, seed: int = 0, temperature_pi: float = 1.0, temperature_sigma: float = 1.0
    ) -> np.ndarray:
        """Draws of the tempered mixture: (n_samples, N, D), from numpy's generator seeded `seed`
        (a component per draw by its weight, then its Gaussian)."""
        mix = self.tempered(temperature_pi, temperature_sigma)
        rng = np.random.default_rng(seed)
        cumulative = np.cumsum(mix.pi, axis=-1)
        u = rng.random((mix.n, n_samples)) * cumulative[:, -1:]
        k = np.minimum((u[..., None] >= cumulative[:, None, :]).sum(-1), mix.n_components - 1)  # (N, S)
        rows = np.arange(mix.n)[:, None]
        eps = rng.standard_normal((mix.n, n_samples, mix.dim))
        if mix.full:
            noise = (mix.cholesky[rows, k] @ eps[..., None])[..., 0]
        else:
            noise = mix.scales[rows, k] * eps
        return np.moveaxis(mix.means[rows, k] + noise, 1, 0)

    # --- modes and quantiles -------------------------------------------------------------------------

    def modes(self, max_iter: int = 500, tol: float = 1e-6, merge: float = 1e-2) -> Modes:
        """Every mode, by the Gaussian-mixture fixed-point iteration started from each component
        mean, merged and ranked exactly as `mdn.Mixture.modes` does (see its text)."""
        B, K, D = self.n, self.n_components, self.dim
        if B > MODES_CHUNK:  # each mixture's climb is its own: a chunk at a time bounds the memory
            parts = [self[i : i + MODES_CHUNK].modes(max_iter, tol, merge) for i in range(0, B, MODES_CHUNK)]
            return Modes(
                *(np.concatenate([getattr(m, f) for m in parts]) for f in ("location", "log_density", "mass", "valid"))
            )
        covariance = self.component_covariance()
        precision = np.linalg.inv(covariance)  # (B, K, D, D)
        weighted_mu = (precision @ self.means[..., None])[..., 0]  # (B, K, D)
        scale = self.component_std().min(axis=-2)  # (B, D)
        y = self.means.copy()  # (B, starts, D)
        active = np.arange(B)
        for _ in range(max_iter):
            spread = self.spread[active][:, None]
            logits = self.log_weights[active][:, None] + component_log_prob(
                y[active], self.means[active][:, None], spread, self.full
            )  # (b, starts, K)
            r = np.exp(logits - _logsumexp(logits)[..., None])
            a = (r[..., None, None] * precision[active][:, None]).sum(-3)  # (b, starts, D, D)
            b = (r[..., None] * weighted_mu[active][:, None]).sum(-2)  # (b, starts, D)
            new = b / a[..., 0] if D == 1 else np.linalg.solve(a, b[..., None])[..., 0]
            step = (np.abs(new - y[active]) / scale[active][:, None]).max(axis=(-1, -2))
            y[active] = new
            active = active[step >= tol]
            if active.size == 0:
                break
        log_density = _logsumexp(
            self.log_weights[:, None] + component_log_prob(y, self.means[:, None], self.spread[:, None], self.full)
        )  # (B, starts)
        order = np.argsort(-log_density, axis=-1, kind="stable")
        y = np.take_along_axis(y, order[..., None], -2)
        log_density = np.take_along_axis(log_density, order, -1)
        pi = np.take_along_axis(self.pi, order, -1)
        distance = (np.abs(y[..., :, None, :] - y[..., None, :, :]) / scale[:, None, None, :]).max(-1)
        first = np.argmax(distance < merge, axis=-1)  # the densest end point close to each
        for _ in range(K):
            first = np.take_along_axis(first, first, -1)
        valid = first == np.arange(K)
        mass = np.zeros_like(pi)
        np.add.at(mass, (np.arange(B)[:, None], first), pi)
        order = np.argsort(-np.where(valid, log_density, -np.inf), axis=-1, kind="stable")
        return Modes(
            np.take_along_axis(y, order[..., None], -2),
            np.take_along_axis(log_density, order, -1),
            np.take_along_axis(mass, order, -1),
            np.take_along_axis(valid, order, -1),
        )

    def cdf(self, y: np.ndarray) -> np.ndarray:
        """F(y | x) of 1-D mixtures, y (N, 1) -> (N,): the PIT values, uniform for a calibrated model."""
        if self.dim != 1:
            raise ValueError(f"the CDF is defined here for 1-D targets, got D={self.dim}")
        z = (np.asarray(y, np.float64) - self.means[..., 0]) / self.component_std()[..., 0]
        return (self.pi * normal_cdf(z)).sum(-1)

    def hdr_levels(self, y: np.ndarray, n_samples: int = 1000, seed: int = 0) -> np.ndarray:
        """The smallest highest-density region holding each target, as its probability (N,), by
        Monte Carlo as `evaluation.calibration.hdr_levels` (its own draws: numpy's generator):
        the share of n_samples draws denser than the target. Coverage at level a is the share of
        targets whose level is at most a."""
        y = np.asarray(y, np.float64)
        out = np.empty(self.n)
        for start in range(0, self.n, HDR_CHUNK):
            part = self[start : start + HDR_CHUNK]
            draws = part.sample(n_samples, seed + start)
            target = part.log_prob(y[start : start + HDR_CHUNK])
            out[start : start + HDR_CHUNK] = (part.log_prob(draws) > target).mean(0)
        return out

    def quantiles(self, levels: Sequence[float], iterations: int = 60) -> np.ndarray:
        """Quantiles of 1-D mixtures by bisection on their CDF: (N, L), as
        `evaluation.calibration.quantiles`."""
        if self.dim != 1:
            raise ValueError(f"quantiles are defined here for 1-D targets, got D={self.dim}")
        mu, s, pi = self.means[..., 0], self.component_std()[..., 0], self.pi
        q = np.asarray(levels, dtype=np.float64)
        low = np.repeat((mu - 12 * s).min(-1)[:, None], q.size, axis=1)
        high = np.repeat((mu + 12 * s).max(-1)[:, None], q.size, axis=1)
        for _ in range(iterations):
            mid = (low + high) / 2
            cdf = (pi[:, None, :] * normal_cdf((mid[..., None] - mu[:, None, :]) / s[:, None, :])).sum(-1)
            below = cdf < q
            low, high = np.where(below, mid, low), np.where(below, high, mid)
        return (low + high) / 2
