"""Mixture density network maths: a self-contained module (torch only).

An MDN maps features h to the parameters of a Gaussian mixture over a D-dimensional target,

    p(y | x) = sum_k pi_k(x) N(y; mu_k(x), Sigma_k(x)),

with pi from a softmax (kept as log pi), mu unconstrained and Sigma_k one of three kinds:

    diag       Sigma_k = diag(sigma_k)^2,  sigma_k = sigma_min + softplus(raw)   (K*D scales)
    isotropic  Sigma_k = sigma_k^2 I,      one sigma per component (Bishop's kernels)
    full       Sigma_k = L_k L_k^T,        L_k lower triangular, diagonal sigma_min + softplus(raw),
                                           free entries below it, each in units of its column's
                                           diagonal entry (a Cholesky factor)

Each kind is one small class (`DiagonalMixture`, `IsotropicMixture`, `FullMixture`) with the same
methods; the shared ones (log-density, NLL, mean, covariance, tempered sampling, modes, batching)
live in `Mixture`. Everything is computed in log space, so the negative log-likelihood stays
finite for tiny scales, huge residuals and extreme logits.

Nothing here knows about Hydra, datasets or plotting: copy this file into another project as is.
Shapes: *N is any batch shape, K the number of components, D the target dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2.0 * math.pi)
SIGMA_TRANSFORMS = ("softplus", "exp")
COVARIANCES = ("diag", "isotropic", "full")


def positive_inverse(value: Tensor, sigma_min: float, transform: str) -> Tensor:
    """The raw value that `positive` maps to `value` (clamped just above the floor)."""
    v = (value - sigma_min).clamp_min(1e-6 * max(sigma_min, 1e-12) + 1e-12)
    if transform == "softplus":
        return v + torch.log(-torch.expm1(-v))  # log(exp(v) - 1), stable for small and large v
    if transform == "exp":
        return v.log()
    raise ValueError(f"sigma_transform must be one of {SIGMA_TRANSFORMS}, got {transform!r}")


def positive(raw: Tensor, sigma_min: float, transform: str) -> Tensor:
    """sigma_min + softplus(raw) (or exp(raw)): >= sigma_min exactly whatever raw is. The floor
    sits outside the nonlinearity, so the gradient never vanishes at it as it would with a clamp."""
    if transform == "softplus":
        return sigma_min + F.softplus(raw)
    if transform == "exp":
        # exp overflows float32 at ~88; 30 already means sigma ~ 1e13, far beyond any data scale
        return sigma_min + torch.exp(raw.clamp(max=30.0))
    raise ValueError(f"sigma_transform must be one of {SIGMA_TRANSFORMS}, got {transform!r}")


MODES_CHUNK = 8192  # mixtures whose modes are sought at once


class Mixture:
    """A batch of Gaussian mixtures: log_pi (*N, K), mu (*N, K, D) and a per-kind scale field.

    Subclasses are dataclasses whose fields all carry the batch dimensions first and the
    component dimension next, so batching (indexing, unsqueeze, cat, dtype) is written once here.
    Each subclass supplies the covariance-specific maths: `n_raw`/`from_raw` (the head's output
    layout), `component_log_prob`, `component_covariance`, `component_std`, `floored_scales`,
    `scaled`, `affine`, `_noise` and `to_distribution`.
    """

    log_pi: Tensor
    mu: Tensor
    covariance_kind: ClassVar[str]

    # --- batching, written once for every kind ---------------------------------------------------

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Mixture:
        return type(self)(*(fn(getattr(self, f.name)) for f in fields(self)))

    def __getitem__(self, index) -> Mixture:
        """Index the (first) batch dimension: mixture[3], mixture[:10], mixture[tensor_of_ids]."""
        return self._map(lambda t: t[index])

    def unsqueeze(self, dim: int) -> Mixture:
        """Insert a batch dimension (dim counts batch dimensions only, 0-based)."""
        return self._map(lambda t: t.unsqueeze(dim))

    def to(self, *args, **kwargs) -> Mixture:
        """Tensor.to on every field (dtype, device)."""
        return self._map(lambda t: t.to(*args, **kwargs))

    @classmethod
    def cat(cls, parts: list[Mixture]) -> Mixture:
        """Concatenate mixtures of one kind along the first batch dimension."""
        return type(parts[0])(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(parts[0])))

    @property
    def pi(self) -> Tensor:
        return self.log_pi.exp()

    @property
    def n_components(self) -> int:
        return self.mu.shape[-2]

    @property
    def dim(self) -> int:
        return self.mu.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        return self.log_pi.shape[:-1]

    # --- densities ---------------------------------------------------------------------------------

    def log_prob(self, y: Tensor) -> Tensor:
        """log p(y | x) of the mixture: y (*N, D) -> (*N,), via logsumexp over components."""
        return torch.logsumexp(self.log_pi + self.component_log_prob(y), dim=-1)

    def nll(self, y: Tensor) -> Tensor:
        """Mean negative log-likelihood in nats per sample (full -D/2 log 2pi constant included)."""
        return -self.log_prob(y).mean()

    def member_nll(self, y: Tensor, members: int) -> Tensor:
        """Mean NLL of each member of an ensemble (members side by side, K = members * K_m, each
        member's weights summing to 1 / members), averaged over the members: the objective that
        trains them independently, as deep ensembles are trained."""
        log_pi = self.log_pi.unflatten(-1, (members, -1))
        member_log_pi = log_pi - torch.logsumexp(log_pi, dim=-1, keepdim=True)
        joint = member_log_pi + self.component_log_prob(y).unflatten(-1, (members, -1))
        return -torch.logsumexp(joint, dim=-1).mean()

    def responsibilities(self, y: Tensor) -> Tensor:
        """Posterior component probabilities p(k | x, y): (*N, K), rows sum to one."""
        return torch.softmax(self.log_pi + self.component_log_prob(y), dim=-1)

    def marginal(self, d: int) -> Mixture:
        """The 1-D mixture of target dimension d (a Gaussian mixture's marginals are Gaussian
        mixtures with the same weights): a DiagonalMixture with D = 1."""
        variance = self.component_covariance().diagonal(dim1=-2, dim2=-1)[..., d : d + 1]
        return DiagonalMixture(self.log_pi, self.mu[..., d : d + 1], variance.sqrt())

    # --- moments and point predictions -------------------------------------------------------------

    def mean(self) -> Tensor:
        """E[y | x] = sum_k pi_k mu_k: (*N, D). What an MSE-trained network estimates."""
        return (self.pi.unsqueeze(-1) * self.mu).sum(-2)

    def covariance(self) -> Tensor:
        """Cov[y | x] = sum_k pi_k (Sigma_k + mu_k mu_k^T) - mean mean^T: (*N, D, D)."""
        pi = self.pi[..., None, None]
        second = (pi * (self.component_covariance() + self.mu.unsqueeze(-1) * self.mu.unsqueeze(-2))).sum(-3)
        mean = self.mean()
        return second - mean.unsqueeze(-1) * mean.unsqueeze(-2)

    def variance(self) -> Tensor:
        """Per-dimension Var[y | x], the diagonal of `covariance()`: (*N, D)."""
        return self.covariance().diagonal(dim1=-2, dim2=-1)

    def most_probable_mean(self) -> Tensor:
        """Mean of the component with the largest pi (Bishop's 'best mixture'): (*N, D)."""
        k = self.log_pi.argmax(dim=-1, keepdim=True)
        return self.mu.gather(-2, k.unsqueeze(-1).expand(*k.shape, self.dim)).squeeze(-2)

    # --- temperature and sampling --------------------------------------------------------------------

    def tempered(self, temperature_pi: float = 1.0, temperature_sigma: float = 1.0) -> Mixture:
        """The mixture with its weights and spreads tempered.

        The mixing logits are divided by `temperature_pi` (log pi_k / T, renormalised: T < 1
        sharpens towards the most probable component, T -> 0 picks it alone, T > 1 flattens
        towards uniform). Every component's standard deviation -- for `full`, its Cholesky factor,
        so the covariance is multiplied by T^2 -- is multiplied by `temperature_sigma`; the means
        stay. Both 1: the mixture itself.
        """
        if not (temperature_pi > 0 and temperature_sigma > 0):
            raise ValueError(f"temperatures must be > 0, got pi={temperature_pi}, sigma={temperature_sigma}")
        out = self.scaled(temperature_sigma) if temperature_sigma != 1.0 else self
        if temperature_pi != 1.0:
            out = replace(out, log_pi=F.log_softmax(self.log_pi / temperature_pi, dim=-1))
        return out

    def sample(
        self,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        temperature_pi: float = 1.0,
        temperature_sigma: float = 1.0,
    ) -> Tensor:
        """Draw samples of the tempered mixture (see `tempered`): (n_samples, *N, D)."""
        mix = self.tempered(temperature_pi, temperature_sigma)
        batch, K = mix.batch_shape, mix.n_components
        k = torch.multinomial(mix.pi.reshape(-1, K), n_samples, replacement=True, generator=generator)
        k = k.reshape(*batch, n_samples)  # (*N, S): the component each sample comes from
        nb = len(batch)
        # gather every field's chosen component: a "mixture" whose S components are the draws
        chosen = mix._map(
            lambda t: t.gather(nb, k.reshape(*k.shape, *[1] * (t.dim() - nb - 1)).expand(*k.shape, *t.shape[nb + 1 :]))
        )
        eps = torch.randn(chosen.mu.shape, generator=generator, dtype=chosen.mu.dtype, device=chosen.mu.device)
        return (chosen.mu + chosen._noise(eps)).movedim(-2, 0)

    # --- modes ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def modes(self, max_iter: int = 500, tol: float = 1e-6, merge: float = 1e-2) -> Modes:
        """Every mode of each mixture, by the Gaussian-mixture fixed-point (mean-shift) iteration
        started from every component mean (Carreira-Perpinan 2000):

            y <- (sum_k r_k(y) P_k)^-1 sum_k r_k(y) P_k mu_k,   r_k = p(k | y),  P_k = Sigma_k^-1

        which climbs the density monotonically to a stationary point. Iterates until every point
        moves by less than `tol` times the mixture's smallest component standard deviation (per
        dimension) or for `max_iter` steps. End points closer than `merge` times that scale, in
        every dimension, are one mode. Vectorised over the batch; float64 inside.
        """
        batch, K, D = self.batch_shape, self.n_components, self.dim
        B, nb = math.prod(batch), len(batch)
        if B > MODES_CHUNK:  # each mixture's climb is its own: a chunk at a time bounds the memory
            flat = self._map(lambda t: t.reshape(B, *t.shape[nb:]))
            first = flat[:MODES_CHUNK].modes(max_iter, tol, merge)

            # each chunk written into the whole answer: a list of parts, kept from chunk to chunk,
            # would sit between the climbs' freed temporaries and keep the heap from shrinking
            def parts(m: Modes) -> list[Tensor]:
                return [getattr(m, f.name) for f in fields(m)]

            whole = [t.new_empty((B, *t.shape[1:])) for t in parts(first)]
            for i in range(0, B, MODES_CHUNK):
                part = first if i == 0 else flat[i : i + MODES_CHUNK].modes(max_iter, tol, merge)
                for out, value in zip(whole, parts(part)):
                    out[i : i + MODES_CHUNK] = value
            return Modes(*(t.reshape(*batch, *t.shape[1:]) for t in whole))
        p = self.to(torch.float64)._map(lambda t: t.reshape(B, *t.shape[nb:]))  # one batch dimension
        precision = torch.linalg.inv(p.component_covariance())  # (B, K, D, D)
        weighted_mu = (precision @ p.mu.unsqueeze(-1)).squeeze(-1)  # (B, K, D)
        scale = p.component_std().amin(dim=-2)  # (B, D): the finest scale of each mixture
        y = p.mu.clone()  # (B, K starts, D)
        active = torch.arange(B, device=y.device)  # mixtures whose points still move
        for _ in range(max_iter):
            # the components of each active mixture (b, 1, K) against its K starting points (b, K, D)
            r = p[active].unsqueeze(1).responsibilities(y[active])  # (b, starts, K)
            a = (r[..., None, None] * precision[active].unsqueeze(1)).sum(-3)  # (b, starts, D, D)
            b = (r[..., None] * weighted_mu[active].unsqueeze(1)).sum(-2)  # (b, starts, D)
            new = b / a[..., 0] if D == 1 else torch.linalg.solve(a, b)
            step = ((new - y[active]).abs() / scale[active].unsqueeze(1)).amax(dim=(-1, -2))
            y[active] = new
            active = active[step >= tol]  # slow mixtures go on alone
            if active.numel() == 0:
                break
        expanded = p.unsqueeze(1)  # (B, 1, K)
        log_density = expanded.log_prob(y)  # (B, starts)
        # sort the end points by density; each takes the id of the densest point within `merge`
        order = log_density.argsort(dim=-1, descending=True)
        y = y.gather(-2, order.unsqueeze(-1).expand_as(y))
        log_density = log_density.gather(-1, order)
        pi = p.pi.gather(-1, order)
        distance = ((y.unsqueeze(-2) - y.unsqueeze(-3)).abs() / scale[..., None, None, :]).amax(-1)
        first = (distance < merge).float().argmax(dim=-1)  # the densest end point close to each
        for _ in range(K):  # follow chains of merges to their densest end
            first = first.gather(-1, first)
        valid = first == torch.arange(K, device=y.device).expand_as(first)
        mass = torch.zeros_like(pi).scatter_add_(-1, first, pi)
        # the distinct modes first, densest first; merged duplicates after them
        order = torch.where(valid, log_density, -math.inf).argsort(dim=-1, descending=True, stable=True)
        y = y.gather(-2, order.unsqueeze(-1).expand_as(y))
        log_density, mass, valid = log_density.gather(-1, order), mass.gather(-1, order), valid.gather(-1, order)
        dtype = self.mu.dtype
        return Modes(
            y.to(dtype).reshape(*batch, K, D),
            log_density.to(dtype).reshape(*batch, K),
            mass.to(dtype).reshape(*batch, K),
            valid.reshape(*batch, K),
        )

    # --- supplied by each kind -----------------------------------------------------------------------

    @staticmethod
    def n_raw(n_components: int, dim: int) -> int:
        """Raw network outputs per input: K logits, K*D means, then the kind's scale entries."""
        raise NotImplementedError

    @classmethod
    def from_raw(
        cls, raw: Tensor, n_components: int, dim: int, sigma_min: float = 1e-3, sigma_transform: str = "softplus"
    ) -> Mixture:
        """Split raw network outputs (*N, n_raw(K, D)) into this kind's parameters."""
        raise NotImplementedError

    @staticmethod
    def init_head(linear: nn.Linear, n_components: int, dim: int) -> None:
        """Adjust the freshly initialised output layer producing the raw outputs (default: nothing)."""

    @classmethod
    def raw_from(
        cls, log_pi: Tensor, mu: Tensor, covariance: Tensor, sigma_min: float = 1e-3, sigma_transform: str = "softplus"
    ) -> Tensor:
        """The raw outputs (n_raw,) that `from_raw` turns into this one mixture: log_pi (K,),
        mu (K, D), covariance (K, D, D) (for diag and isotropic only its diagonal is used).
        Scales below the floor are raised to it."""
        raise NotImplementedError

    @staticmethod
    def component_rows(k: int, n_components: int, dim: int) -> tuple[list[int], list[int], list[int]]:
        """Which raw outputs belong to component k: (its logit, its mean, its scale entries)."""
        K, D = n_components, dim
        return [k], [K + k * D + d for d in range(D)], [K + K * D + k * D + d for d in range(D)]

    def component_log_prob(self, y: Tensor) -> Tensor:
        """log N(y; mu_k, Sigma_k) for every component: y (*N, D) -> (*N, K)."""
        raise NotImplementedError

    def component_covariance(self) -> Tensor:
        """Sigma_k: (*N, K, D, D)."""
        raise NotImplementedError

    def component_std(self) -> Tensor:
        """Marginal standard deviation of each component in each dimension, sqrt(diag Sigma_k):
        (*N, K, D). For D = 1 it is the component's whole scale, whatever the kind."""
        raise NotImplementedError

    def floored_scales(self) -> Tensor:
        """The quantities that carry the floor sigma_min (sigmas, or the Cholesky diagonal): (*N, K, D)."""
        raise NotImplementedError

    def scaled(self, factor: float) -> Mixture:
        """Every component's spread multiplied by `factor` (standard deviations or Cholesky factor)."""
        raise NotImplementedError

    def affine(self, shift: Tensor, scale: Tensor) -> Mixture:
        """The mixture of y' = shift + scale * y; shift and scale are (D,), scale > 0."""
        raise NotImplementedError

    def _noise(self, eps: Tensor) -> Tensor:
        """Standard normal draws eps (*N, K, D) turned into each component's zero-mean noise."""
        raise NotImplementedError

    def to_distribution(self) -> torch.distributions.MixtureSameFamily:
        """The same mixture as a torch.distributions object."""
        raise NotImplementedError


def _log_normal_diag(y: Tensor, mu: Tensor, sigma: Tensor, log_det: Tensor) -> Tensor:
    """log N(y; mu_k, diag sigma_k^2) for y (*N, D) against mu, sigma (*N, K, D|1)."""
    z = (y.unsqueeze(-2) - mu) / sigma
    return -0.5 * z.square().sum(-1) - log_det - 0.5 * mu.shape[-1] * LOG_2PI


@dataclass
class DiagonalMixture(Mixture):
    """Diagonal covariances: sigma (*N, K, D), one standard deviation per component and dimension."""

    log_pi: Tensor
    mu: Tensor
    sigma: Tensor
    covariance_kind: ClassVar[str] = "diag"

    @staticmethod
    def n_raw(n_components: int, dim: int) -> int:
        return n_components * (1 + 2 * dim)

    @classmethod
    def from_raw(cls, raw, n_components, dim, sigma_min=1e-3, sigma_transform="softplus"):
        K, D = n_components, dim
        logits, mu, raw_sigma = raw.split([K, K * D, K * D], dim=-1)
        batch = raw.shape[:-1]
        return cls(
            F.log_softmax(logits, dim=-1),
            mu.reshape(*batch, K, D),
            positive(raw_sigma, sigma_min, sigma_transform).reshape(*batch, K, D),
        )

    @classmethod
    def raw_from(cls, log_pi, mu, covariance, sigma_min=1e-3, sigma_transform="softplus"):
        sigma = covariance.diagonal(dim1=-2, dim2=-1).sqrt()
        return torch.cat([log_pi, mu.reshape(-1), positive_inverse(sigma, sigma_min, sigma_transform).reshape(-1)])

    def component_log_prob(self, y):
        return _log_normal_diag(y, self.mu, self.sigma, self.sigma.log().sum(-1))

    def component_covariance(self):
        return torch.diag_embed(self.sigma.square())

    def component_std(self):
        return self.sigma

    def floored_scales(self):
        return self.sigma

    def scaled(self, factor):
        return DiagonalMixture(self.log_pi, self.mu, self.sigma * factor)

    def affine(self, shift, scale):
        return DiagonalMixture(self.log_pi, shift + scale * self.mu, scale * self.sigma)

    def _noise(self, eps):
        return self.sigma * eps

    def to_distribution(self):
        D = torch.distributions
        return D.MixtureSameFamily(D.Categorical(logits=self.log_pi), D.Independent(D.Normal(self.mu, self.sigma), 1))


@dataclass
class IsotropicMixture(Mixture):
    """Isotropic covariances sigma_k^2 I: sigma (*N, K, 1), one standard deviation per component.

    An affine map with unequal scales per dimension makes the components axis-aligned ellipses:
    `affine` then returns the equivalent DiagonalMixture (with standardised targets, the
    components are isotropic in standardised units)."""

    log_pi: Tensor
    mu: Tensor
    sigma: Tensor
    covariance_kind: ClassVar[str] = "isotropic"

    @staticmethod
    def n_raw(n_components: int, dim: int) -> int:
        return n_components * (2 + dim)

    @classmethod
    def from_raw(cls, raw, n_components, dim, sigma_min=1e-3, sigma_transform="softplus"):
        K, D = n_components, dim
        logits, mu, raw_sigma = raw.split([K, K * D, K], dim=-1)
        return cls(
            F.log_softmax(logits, dim=-1),
            mu.reshape(*raw.shape[:-1], K, D),
            positive(raw_sigma, sigma_min, sigma_transform).unsqueeze(-1),
        )

    @classmethod
    def raw_from(cls, log_pi, mu, covariance, sigma_min=1e-3, sigma_transform="softplus"):
        sigma = covariance.diagonal(dim1=-2, dim2=-1).mean(-1).sqrt()  # (K,): the average variance
        return torch.cat([log_pi, mu.reshape(-1), positive_inverse(sigma, sigma_min, sigma_transform)])

    @staticmethod
    def component_rows(k, n_components, dim):
        K, D = n_components, dim
        return [k], [K + k * D + d for d in range(D)], [K + K * D + k]

    def component_log_prob(self, y):
        return _log_normal_diag(y, self.mu, self.sigma, self.dim * self.sigma[..., 0].log())

    def component_covariance(self):
        return torch.diag_embed(self.component_std().square())

    def component_std(self):
        return self.sigma.expand_as(self.mu)

    def floored_scales(self):
        return self.component_std()

    def scaled(self, factor):
        return IsotropicMixture(self.log_pi, self.mu, self.sigma * factor)

    def affine(self, shift, scale):
        scale = torch.as_tensor(scale, dtype=self.mu.dtype, device=self.mu.device)
        mu = shift + scale * self.mu
        if scale.numel() == 1 or bool((scale == scale.reshape(-1)[0]).all()):
            return IsotropicMixture(self.log_pi, mu, scale.reshape(-1)[:1] * self.sigma)
        return DiagonalMixture(self.log_pi, mu, scale * self.sigma)

    def _noise(self, eps):
        return self.sigma * eps

    def to_distribution(self):
        D = torch.distributions
        return D.MixtureSameFamily(
            D.Categorical(logits=self.log_pi), D.Independent(D.Normal(self.mu, self.component_std()), 1)
        )


def _solve_lower(L: Tensor, b: Tensor) -> Tensor:
    """z with L z = b, L (..., D, D) lower triangular, b (..., D); broadcasts. For small D a
    forward substitution in elementwise ops: the batched LAPACK call pays a per-matrix overhead
    that dominates for 2 x 2 systems."""
    D = L.shape[-1]
    if D > 4:
        return torch.linalg.solve_triangular(L, b.unsqueeze(-1), upper=False).squeeze(-1)
    z: list[Tensor] = []
    for i in range(D):
        rest = b[..., i]
        if i:
            rest = rest - (L[..., i, :i] * torch.stack(z, -1)).sum(-1)
        z.append(rest / L[..., i, i])
    return torch.stack(z, -1)


@dataclass
class FullMixture(Mixture):
    """Full covariances through a Cholesky factor: scale_tril (*N, K, D, D), lower triangular
    with a positive diagonal (sigma_min + softplus), Sigma_k = L_k L_k^T. From raw outputs the
    entries below the diagonal are raw_ij * L_jj (see `from_raw`)."""

    log_pi: Tensor
    mu: Tensor
    scale_tril: Tensor
    covariance_kind: ClassVar[str] = "full"

    @staticmethod
    def n_raw(n_components: int, dim: int) -> int:
        return n_components * (1 + 2 * dim + dim * (dim - 1) // 2)

    @classmethod
    def from_raw(cls, raw, n_components, dim, sigma_min=1e-3, sigma_transform="softplus"):
        K, D = n_components, dim
        n_off = D * (D - 1) // 2
        logits, mu, raw_diag, off = raw.split([K, K * D, K * D, K * n_off], dim=-1)
        batch = raw.shape[:-1]
        diag = positive(raw_diag, sigma_min, sigma_transform).reshape(*batch, K, D)
        rows, cols = torch.tril_indices(D, D, offset=-1, device=raw.device)
        lower = raw.new_zeros(*batch, K, D, D)
        # entry (i, j) below the diagonal is raw * L_jj: L = U diag(L_11..L_DD) with U unit lower
        # triangular and free, i.e. Sigma = U diag(d)^2 U^T. Any factor is still reachable, but a
        # component that shrinks towards the floor takes its correlations down with it instead of
        # having to learn D(D-1)/2 tiny raw outputs: on the robot arm (noise-free targets) the
        # unscaled form reached test NLL -7.7 / -5.8 (two runs), this one -9.8.
        lower[..., rows, cols] = (
            off.reshape(*batch, K, n_off) * diag[..., cols]
        )  # a fresh tensor: autograd sees the copy
        return cls(F.log_softmax(logits, dim=-1), mu.reshape(*batch, K, D), lower + torch.diag_embed(diag))

    @staticmethod
    @torch.no_grad()
    def init_head(linear, n_components, dim):
        # start without correlations (the off-diagonal rows output 0 for every input), i.e. as the
        # diagonal model: on the robot arm, random off-diagonal outputs at the start left two seeds
        # of three with one elongated component across both elbow branches (positioning RMSE 0.005
        # and 0.068); from zero all three found both branches (0.0007-0.0010)
        start = n_components * (1 + 2 * dim)  # K logits, K*D means, K*D diagonal entries, then these
        linear.weight[start:] = 0.0
        linear.bias[start:] = 0.0

    @classmethod
    def raw_from(cls, log_pi, mu, covariance, sigma_min=1e-3, sigma_transform="softplus"):
        K, D = mu.shape
        L = torch.linalg.cholesky(covariance)
        diag = L.diagonal(dim1=-2, dim2=-1).clamp_min(sigma_min * (1 + 1e-6))  # (K, D)
        rows, cols = torch.tril_indices(D, D, offset=-1, device=mu.device)
        off = L[..., rows, cols] / diag[..., cols]  # from_raw multiplies by the column's diagonal
        return torch.cat(
            [log_pi, mu.reshape(-1), positive_inverse(diag, sigma_min, sigma_transform).reshape(-1), off.reshape(-1)]
        )

    @staticmethod
    def component_rows(k, n_components, dim):
        K, D = n_components, dim
        n_off = D * (D - 1) // 2
        return (
            [k],
            [K + k * D + d for d in range(D)],
            [K + K * D + k * D + d for d in range(D)] + [K + 2 * K * D + k * n_off + j for j in range(n_off)],
        )

    def component_log_prob(self, y):
        z = _solve_lower(self.scale_tril, y.unsqueeze(-2) - self.mu)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # log sqrt det Sigma_k
        return -0.5 * z.square().sum(-1) - log_det - 0.5 * self.dim * LOG_2PI

    def component_covariance(self):
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)

    def component_std(self):
        return self.scale_tril.square().sum(-1).sqrt()

    def floored_scales(self):
        return self.scale_tril.diagonal(dim1=-2, dim2=-1)

    def scaled(self, factor):
        return FullMixture(self.log_pi, self.mu, self.scale_tril * factor)

    def affine(self, shift, scale):
        # diag(scale) L is still lower triangular with a positive diagonal
        return FullMixture(self.log_pi, shift + scale * self.mu, scale.unsqueeze(-1) * self.scale_tril)

    def _noise(self, eps):
        return (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)

    def to_distribution(self):
        D = torch.distributions
        return D.MixtureSameFamily(
            D.Categorical(logits=self.log_pi), D.MultivariateNormal(self.mu, scale_tril=self.scale_tril)
        )


MIXTURES: dict[str, type[Mixture]] = {"diag": DiagonalMixture, "isotropic": IsotropicMixture, "full": FullMixture}


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

    def significant(self, min_mass: float = 0.05) -> Tensor:
        """(*N, K) the valid slots holding at least `min_mass` of probability."""
        return self.valid & (self.mass >= min_mass)


def mixture_from_raw(
    raw: Tensor,
    n_components: int,
    dim: int,
    covariance: str = "diag",
    sigma_min: float = 1e-3,
    sigma_transform: str = "softplus",
) -> Mixture:
    """Raw network outputs (*N, n_raw) -> the mixture of the given covariance kind."""
    if covariance not in MIXTURES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    return MIXTURES[covariance].from_raw(raw, n_components, dim, sigma_min, sigma_transform)


def nll(mixture: Mixture, y: Tensor) -> Tensor:
    """The MDN loss: mean negative log-likelihood of targets y (*N, D), nats per sample."""
    return mixture.nll(y)


class MaskedLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by a fixed 0/1 mask (None: no mask): the blocks of an
    ensemble's members, side by side in one layer, never see each other's units. The weights of a
    masked layer are scaled at the start so that each block is initialised as a layer of its own
    (fan-in of its block, not of the whole layer)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor | None = None) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask, persistent=False)
        if mask is not None:
            with torch.no_grad():
                fan_in = mask.sum(1).clamp_min(1)  # per output row
                scale = (in_features / fan_in).sqrt()[:, None]
                self.weight.mul_(scale).mul_(mask)
                self.bias.mul_(scale[:, 0])

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight if self.mask is None else self.weight * self.mask
        return F.linear(x, weight, self.bias)


def block_mask(members: int, in_features: int, out_features: int) -> Tensor | None:
    """The mask of a layer between two ensembles' feature blocks: member m's outputs see only member
    m's inputs (None for one member)."""
    if members == 1:
        return None
    rows = torch.arange(out_features) // (out_features // members)
    cols = torch.arange(in_features) // (in_features // members)
    return (rows[:, None] == cols[None, :]).float()


def _member_mask(mixture_type, members: int, in_features: int, n_raw: int, K: int, D: int) -> Tensor | None:
    """The head's mask: the raw outputs of member m's components see only member m's features."""
    if members == 1:
        return None
    mask = torch.zeros(n_raw, in_features)
    width = in_features // members
    for k in range(members * K):
        m = k // K
        rows = sum(mixture_type.component_rows(k, members * K, D), [])
        mask[rows, m * width : (m + 1) * width] = 1.0
    return mask


class MDNHead(nn.Module):
    """Linear layer from features (*N, F) to a K-component mixture over D-dimensional targets,
    of covariance kind `covariance` (diag, isotropic or full)."""

    def __init__(
        self,
        in_features: int,
        out_dim: int,
        n_components: int,
        sigma_min: float = 1e-3,
        sigma_transform: str = "softplus",
        covariance: str = "diag",
        members: int = 1,
    ) -> None:
        super().__init__()
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if members < 1 or in_features % members:
            raise ValueError(f"members must be >= 1 and divide in_features={in_features}, got {members}")
        if not sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
        if sigma_transform not in SIGMA_TRANSFORMS:
            raise ValueError(f"sigma_transform must be one of {SIGMA_TRANSFORMS}, got {sigma_transform!r}")
        if covariance not in MIXTURES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        # an ensemble of `members` MDNs of n_components each is one mixture of members * n_components
        self.members, self.member_components = members, n_components
        n_components = members * n_components
        self.n_components, self.out_dim = n_components, out_dim
        self.sigma_min, self.sigma_transform, self.covariance = sigma_min, sigma_transform, covariance
        self.mixture_type = MIXTURES[covariance]
        n_raw = self.mixture_type.n_raw(n_components, out_dim)
        self.linear = MaskedLinear(
            in_features,
            n_raw,
            _member_mask(self.mixture_type, members, in_features, n_raw, self.member_components, out_dim),
        )
        self.mixture_type.init_head(self.linear, n_components, out_dim)

    @torch.no_grad()
    def init_means(self, means: Tensor, weight_scale: float = 0.1) -> None:
        """Start component k near means[k] ((K, D), in this head's output units): the mean
        biases are set, the mean weights shrunk, so the components begin spread over the targets
        instead of on top of each other."""
        K, D = self.n_components, self.out_dim
        rows = slice(K, K + K * D)  # every kind's raw layout: K logits, K*D means, then scales
        self.linear.bias[rows] = means.reshape(K * D).to(self.linear.bias)
        self.linear.weight[rows] *= weight_scale

    @torch.no_grad()
    def init_mixture(self, log_pi: Tensor, mu: Tensor, covariance: Tensor, weight_scale: float = 0.01) -> None:
        """Start every input at the mixture (log_pi (K,), mu (K, D), covariance (K, D, D), in this
        head's output units): the biases produce it, and all weights are shrunk by `weight_scale`,
        so the features move it only a little until training makes use of them."""
        raw = self.mixture_type.raw_from(
            log_pi.double(), mu.double(), covariance.double(), self.sigma_min, self.sigma_transform
        )
        self.linear.bias.copy_(raw.to(self.linear.bias))
        self.linear.weight.mul_(weight_scale)

    @torch.no_grad()
    def split_into(self, k: int, donor: int, shift: float = 0.05) -> list[int]:
        """Re-seed component k as a copy of component `donor` (the EM "split" move): k takes the
        donor's rows of weights and biases, both logits drop by log 2 (so the two share the donor's
        weight), and their mean biases move apart by +-`shift` (output units) so that training can
        pull them to different targets. Returns the raw-output rows rewritten (k's and the donor's)."""
        rows = self.mixture_type.component_rows
        K, D = self.n_components, self.out_dim
        (lk, mk, sk), (ld, md, sd) = rows(k, K, D), rows(donor, K, D)
        w, b = self.linear.weight, self.linear.bias
        w[lk + mk + sk], b[lk + mk + sk] = w[ld + md + sd], b[ld + md + sd]
        b[lk + ld] -= math.log(2)
        b[mk] += shift
        b[md] -= shift
        return lk + mk + sk + ld + md + sd

    def forward(self, features: Tensor) -> Mixture:
        mixture = self.mixture_type.from_raw(
            self.linear(features), self.n_components, self.out_dim, self.sigma_min, self.sigma_transform
        )
        if self.members == 1:
            return mixture
        # each member's weights sum to one over its own components; the members weigh 1/M each
        M, K = self.members, self.member_components
        grouped = mixture.log_pi.unflatten(-1, (M, K))
        log_pi = (torch.log_softmax(grouped, dim=-1) - math.log(M)).flatten(-2)
        return replace(mixture, log_pi=log_pi)
