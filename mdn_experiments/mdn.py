"""Mixture density network maths: a self-contained module (torch only).

An MDN maps features h to the parameters of a Gaussian mixture over a D-dimensional target,

    p(y | x) = sum_k pi_k(x) N(y; mu_k(x), diag sigma_k(x)^2),

with pi from a softmax (kept as log pi), mu unconstrained and sigma = sigma_min + softplus(raw)
(or exp(raw)). Everything is computed in log space, so the negative log-likelihood stays finite
for tiny sigmas, huge residuals and extreme logits.

Nothing here knows about Hydra, datasets or plotting: copy this file into another project as is.
Shapes: N is any batch shape, K the number of components, D the target dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2.0 * math.pi)
SIGMA_TRANSFORMS = ("softplus", "exp")


@dataclass
class MixtureParams:
    """Parameters of a batch of diagonal Gaussian mixtures.

    log_pi: (*N, K) log mixing coefficients (log-softmax output).
    mu:     (*N, K, D) component means.
    sigma:  (*N, K, D) component standard deviations, > 0.
    """

    log_pi: Tensor
    mu: Tensor
    sigma: Tensor

    @property
    def pi(self) -> Tensor:
        return self.log_pi.exp()

    @property
    def n_components(self) -> int:
        return self.mu.shape[-2]

    @property
    def dim(self) -> int:
        return self.mu.shape[-1]

    def affine(self, shift: Tensor, scale: Tensor) -> MixtureParams:
        """The mixture of y' = shift + scale * y; shift and scale are (D,), scale > 0."""
        return MixtureParams(self.log_pi, shift + scale * self.mu, scale * self.sigma)

    def unsqueeze(self, dim: int) -> MixtureParams:
        """Insert a batch dimension (dim counts batch dimensions only, 0-based)."""
        return MixtureParams(
            self.log_pi.unsqueeze(dim), self.mu.unsqueeze(dim), self.sigma.unsqueeze(dim)
        )

    @staticmethod
    def cat(parts: list[MixtureParams]) -> MixtureParams:
        """Concatenate along the first batch dimension."""
        return MixtureParams(*(torch.cat([getattr(p, f) for p in parts]) for f in ("log_pi", "mu", "sigma")))


def params_from_raw(
    raw: Tensor,
    n_components: int,
    dim: int,
    sigma_min: float = 1e-3,
    sigma_transform: str = "softplus",
) -> MixtureParams:
    """Split raw network outputs (*N, K * (1 + 2D)) into mixture parameters.

    The floor sigma_min is added outside the nonlinearity, so sigma >= sigma_min holds exactly
    whatever the raw value, and the gradient never vanishes at the floor the way clamping would.
    """
    K, D = n_components, dim
    logits, mu, raw_sigma = raw.split([K, K * D, K * D], dim=-1)
    batch = raw.shape[:-1]
    if sigma_transform == "softplus":
        positive = F.softplus(raw_sigma)
    elif sigma_transform == "exp":
        # exp overflows float32 at ~88; 30 already means sigma ~ 1e13, far beyond any data scale.
        positive = torch.exp(raw_sigma.clamp(max=30.0))
    else:
        raise ValueError(f"sigma_transform must be one of {SIGMA_TRANSFORMS}, got {sigma_transform!r}")
    return MixtureParams(
        log_pi=F.log_softmax(logits, dim=-1),
        mu=mu.reshape(*batch, K, D),
        sigma=(sigma_min + positive).reshape(*batch, K, D),
    )


def component_log_prob(params: MixtureParams, y: Tensor) -> Tensor:
    """log N(y; mu_k, diag sigma_k^2) for every component: y (*N, D) -> (*N, K)."""
    z = (y.unsqueeze(-2) - params.mu) / params.sigma
    D = params.dim
    return -0.5 * z.square().sum(-1) - params.sigma.log().sum(-1) - 0.5 * D * LOG_2PI


def log_prob(params: MixtureParams, y: Tensor) -> Tensor:
    """log p(y | x) of the mixture: y (*N, D) -> (*N,), via logsumexp over components."""
    return torch.logsumexp(params.log_pi + component_log_prob(params, y), dim=-1)


def nll(params: MixtureParams, y: Tensor) -> Tensor:
    """Mean negative log-likelihood in nats per sample (full -D/2 log 2pi constant included)."""
    return -log_prob(params, y).mean()


def responsibilities(params: MixtureParams, y: Tensor) -> Tensor:
    """Posterior component probabilities p(k | x, y): (*N, K), rows sum to one."""
    joint = params.log_pi + component_log_prob(params, y)
    return torch.softmax(joint, dim=-1)


def most_probable_mean(params: MixtureParams) -> Tensor:
    """Mean of the component with the largest pi (Bishop's 'best mixture'): (*N, D)."""
    k = params.log_pi.argmax(dim=-1, keepdim=True)
    return params.mu.gather(-2, k.unsqueeze(-1).expand(*k.shape, params.dim)).squeeze(-2)


def mixture_mean(params: MixtureParams) -> Tensor:
    """E[y | x] = sum_k pi_k mu_k: (*N, D). What an MSE-trained network estimates."""
    return (params.pi.unsqueeze(-1) * params.mu).sum(-2)


def mixture_variance(params: MixtureParams) -> Tensor:
    """Per-dimension Var[y | x] = sum_k pi_k (sigma_k^2 + mu_k^2) - mean^2: (*N, D)."""
    pi = params.pi.unsqueeze(-1)
    second_moment = (pi * (params.sigma.square() + params.mu.square())).sum(-2)
    return second_moment - mixture_mean(params).square()


def tempered(params: MixtureParams, temperature_pi: float = 1.0, temperature_sigma: float = 1.0) -> MixtureParams:
    """The mixture with its weights and spreads tempered.

    The mixing logits are divided by `temperature_pi` (log pi_k / T, renormalised: T < 1 sharpens
    towards the most probable component, T -> 0 picks it alone, T > 1 flattens towards uniform);
    every component's standard deviation is multiplied by `temperature_sigma` (the means stay).
    Both 1: the mixture itself.
    """
    if not (temperature_pi > 0 and temperature_sigma > 0):
        raise ValueError(f"temperatures must be > 0, got pi={temperature_pi}, sigma={temperature_sigma}")
    return MixtureParams(F.log_softmax(params.log_pi / temperature_pi, dim=-1), params.mu,
                         params.sigma * temperature_sigma)


def sample(
    params: MixtureParams,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    temperature_pi: float = 1.0,
    temperature_sigma: float = 1.0,
) -> Tensor:
    """Draw samples y ~ p(y | x) of the tempered mixture (see `tempered`): (n_samples, *N, D)."""
    params = tempered(params, temperature_pi, temperature_sigma)
    batch = params.log_pi.shape[:-1]
    flat_pi = params.pi.reshape(-1, params.n_components)
    k = torch.multinomial(flat_pi, n_samples, replacement=True, generator=generator)  # (B, S)
    k = k.T.reshape(n_samples, *batch)  # (S, *N)
    index = k.unsqueeze(-1).unsqueeze(-1).expand(n_samples, *batch, 1, params.dim)
    mu = params.mu.unsqueeze(0).expand(n_samples, *params.mu.shape).gather(-2, index).squeeze(-2)
    sigma = (
        params.sigma.unsqueeze(0).expand(n_samples, *params.sigma.shape).gather(-2, index).squeeze(-2)
    )
    noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + sigma * noise


@dataclass
class Modes:
    """The modes of a batch of mixtures, one slot per component (a mode found from several
    starting points fills one slot; the others are marked invalid).

    location: (*N, K, D) where each mode is (meaningful where `valid`).
    log_density: (*N, K) log p(mode | x).
    mass: (*N, K) the probability mass of the mode: the summed pi of the components whose means
          climb to it (its basin of attraction, counted by components); sums to 1 over valid slots.
    valid: (*N, K) which slots hold a distinct mode. The valid slots come first, highest density
           first, so location[..., 0, :] is the highest mode.
    """

    location: Tensor
    log_density: Tensor
    mass: Tensor
    valid: Tensor


@torch.no_grad()
def modes(params: MixtureParams, max_iter: int = 500, tol: float = 1e-6, merge: float = 1e-2) -> Modes:
    """Every mode of each mixture, by the Gaussian-mixture fixed-point (mean-shift) iteration
    started from every component mean (Carreira-Perpinan 2000):

        y <- (sum_k r_k(y) Lambda_k)^-1 sum_k r_k(y) Lambda_k mu_k,  r_k = p(k | y), Lambda_k = Sigma_k^-1

    which climbs the density monotonically to a stationary point. Iterates until every point moves
    by less than `tol` times the mixture's smallest component sigma (or for `max_iter` steps). End
    points closer than `merge` times that sigma, in every dimension, are one mode. Vectorised over
    the batch; float64 inside.
    """
    p = MixtureParams(params.log_pi.double(), params.mu.double(), params.sigma.double())
    K = p.n_components
    precision = p.sigma.pow(-2)  # (*N, K, D)
    scale = p.sigma.amin(dim=-2)  # (*N, D): the finest scale of each mixture, per dimension
    y = p.mu.clone()  # (*N, K starts, D)
    expanded = p.unsqueeze(p.log_pi.dim() - 1)  # (*N, 1, K): components against the K starting points
    for _ in range(max_iter):
        r = responsibilities(expanded, y)  # (*N, K starts, K components)
        weight = r.unsqueeze(-1) * precision.unsqueeze(-3)  # (*N, starts, K, D)
        new = (weight * p.mu.unsqueeze(-3)).sum(-2) / weight.sum(-2)
        step = ((new - y).abs() / scale.unsqueeze(-2)).amax()
        y = new
        if step < tol:
            break
    log_density = log_prob(expanded, y)  # (*N, starts)
    # sort the end points by density; each takes the id of the densest point within `merge`
    order = log_density.argsort(dim=-1, descending=True)
    y = y.gather(-2, order.unsqueeze(-1).expand_as(y))
    log_density = log_density.gather(-1, order)
    pi = p.pi.gather(-1, order)
    distance = ((y.unsqueeze(-2) - y.unsqueeze(-3)).abs() / scale.unsqueeze(-2).unsqueeze(-2)).amax(-1)
    close = distance < merge  # (*N, starts, starts), reflexive
    first = close.float().argmax(dim=-1)  # the densest end point close to each (itself at worst)
    for _ in range(K):  # follow chains of merges to their densest end
        first = first.gather(-1, first)
    slots = torch.arange(K, device=y.device).expand_as(first)
    valid = first == slots
    mass = torch.zeros_like(pi).scatter_add_(-1, first, pi)
    # the distinct modes first, densest first; merged duplicates after them
    order = torch.where(valid, log_density, -math.inf).argsort(dim=-1, descending=True, stable=True)
    y = y.gather(-2, order.unsqueeze(-1).expand_as(y))
    log_density, mass, valid = log_density.gather(-1, order), mass.gather(-1, order), valid.gather(-1, order)
    return Modes(y.to(params.mu.dtype), log_density.to(params.mu.dtype), mass.to(params.mu.dtype), valid)


def to_distribution(params: MixtureParams) -> torch.distributions.MixtureSameFamily:
    """The same mixture as a torch.distributions object (for sampling, cdf-free tooling, tests)."""
    D = torch.distributions
    components = D.Independent(D.Normal(params.mu, params.sigma), 1)
    return D.MixtureSameFamily(D.Categorical(logits=params.log_pi), components)


class MDNHead(nn.Module):
    """Linear layer from features (*N, F) to a K-component mixture over D-dimensional targets."""

    def __init__(
        self,
        in_features: int,
        out_dim: int,
        n_components: int,
        sigma_min: float = 1e-3,
        sigma_transform: str = "softplus",
    ) -> None:
        super().__init__()
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if not sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
        if sigma_transform not in SIGMA_TRANSFORMS:
            raise ValueError(f"sigma_transform must be one of {SIGMA_TRANSFORMS}, got {sigma_transform!r}")
        self.n_components, self.out_dim = n_components, out_dim
        self.sigma_min, self.sigma_transform = sigma_min, sigma_transform
        self.linear = nn.Linear(in_features, n_components * (1 + 2 * out_dim))

    @torch.no_grad()
    def init_means(self, means: Tensor, weight_scale: float = 0.1) -> None:
        """Start component k near means[k] ((K, D), in this head's output units): the mean
        biases are set, the mean weights shrunk, so the components begin spread over the targets
        instead of on top of each other."""
        K, D = self.n_components, self.out_dim
        rows = slice(K, K + K * D)  # raw layout: K logits, K*D means, K*D sigmas
        self.linear.bias[rows] = means.reshape(K * D).to(self.linear.bias)
        self.linear.weight[rows] *= weight_scale

    def forward(self, features: Tensor) -> MixtureParams:
        raw = self.linear(features)
        return params_from_raw(
            raw, self.n_components, self.out_dim, self.sigma_min, self.sigma_transform
        )
