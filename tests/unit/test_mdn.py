"""The MDN maths against independent truths: torch.distributions, closed forms, grid searches."""

import math

import pytest
import torch

from mdn_experiments import mdn
from mdn_experiments.mdn import DiagonalMixture, FullMixture, IsotropicMixture, MDNHead

KINDS = ["diag", "isotropic", "full"]


def random_mixture(kind: str, n: int, K: int, D: int, dtype=torch.float64, seed: int = 0) -> mdn.Mixture:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, mdn.MIXTURES[kind].n_raw(K, D), generator=g, dtype=dtype) * 2
    return mdn.mixture_from_raw(raw, K, D, kind, sigma_min=1e-3)


def reference(m: mdn.Mixture) -> torch.distributions.MixtureSameFamily:
    """Built from torch.distributions directly from the stored fields, not through to_distribution."""
    D = torch.distributions
    if isinstance(m, FullMixture):
        components = D.MultivariateNormal(m.mu, scale_tril=m.scale_tril)
    else:  # diag: sigma (N, K, D); isotropic: sigma (N, K, 1), the same in every dimension
        components = D.Independent(D.Normal(m.mu, m.sigma.expand_as(m.mu)), 1)
    return D.MixtureSameFamily(D.Categorical(logits=m.log_pi), components)


def assert_covariance_close(draws, cov):
    """Sample covariance of draws (S, N, D) against cov (N, D, D), each entry within 5 of its own
    standard errors (estimated from the centred products: mixtures with far, rare components
    have heavy tails, so a fixed relative tolerance would be either loose or flaky)."""
    centred = draws - draws.mean(0)
    products = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # (S, N, D, D)
    n = draws.shape[0]
    error = (products.mean(0) * n / (n - 1) - cov).abs()
    assert (error <= 5 * products.std(0) / math.sqrt(n)).all(), error


def draw(shape, seed=1, scale=1.0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale


def hand_made(pi, mu, sigma) -> DiagonalMixture:
    """A batch of one hand-made 1-D mixture."""
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return DiagonalMixture(t(pi).log()[None], t(mu)[None, :, None], t(sigma)[None, :, None])


def grid_modes(m: mdn.Mixture, lo=-10.0, hi=10.0, n=200_001):
    """Independent truth for 1-D mixtures: the local maxima of the density on a fine grid."""
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    density = m.unsqueeze(0).log_prob(grid[:, None, None])[:, 0]
    inner = (density[1:-1] > density[:-2]) & (density[1:-1] > density[2:])
    return grid[1:-1][inner], density[1:-1][inner]


class TestLogDensity:
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("D", [1, 2, 3])
    @pytest.mark.parametrize("K", [1, 3, 7])
    def test_log_prob_matches_torch_distributions(self, kind, K, D):
        m = random_mixture(kind, 256, K, D)
        y = draw((256, D), scale=3)
        expected = reference(m).log_prob(y)
        torch.testing.assert_close(m.log_prob(y), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(mdn.nll(m, y), -expected.mean(), atol=1e-5, rtol=0)

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("D", [1, 2, 3])
    def test_float32_matches_float64(self, kind, D):
        m = random_mixture(kind, 128, 3, D)
        y = draw((128, D))
        torch.testing.assert_close(
            m.to(torch.float32).log_prob(y.float()).double(), m.log_prob(y), atol=1e-4, rtol=1e-5
        )

    def test_nll_includes_the_gaussian_constant(self):
        """One standard normal component at y = 0: -log p = D/2 log(2 pi), exactly."""
        for D in (1, 2, 5):
            m = DiagonalMixture(torch.zeros(1, 1), torch.zeros(1, 1, D), torch.ones(1, 1, D))
            assert m.nll(torch.zeros(1, D)).item() == pytest.approx(0.5 * D * math.log(2 * math.pi))

    @pytest.mark.parametrize("D", [1, 2, 5])
    def test_identical_components_equal_one_gaussian(self, D):
        g = torch.Generator().manual_seed(3)
        n, K = 64, 5
        mu, sigma = torch.randn(n, 1, D, generator=g), torch.rand(n, 1, D, generator=g) + 0.1
        log_pi = torch.log_softmax(torch.randn(n, K, generator=g), -1)  # any weights
        m = DiagonalMixture(log_pi, mu.expand(n, K, D), sigma.expand(n, K, D))
        y = torch.randn(n, D, generator=g)
        single = torch.distributions.Normal(mu[:, 0], sigma[:, 0]).log_prob(y).sum(-1)
        torch.testing.assert_close(m.log_prob(y), single, atol=1e-5, rtol=1e-6)

    def test_the_three_kinds_agree_where_they_describe_the_same_mixture(self):
        """An isotropic mixture written as diagonal, and a diagonal one as a Cholesky factor."""
        iso = random_mixture("isotropic", 40, 3, 2)
        diag = DiagonalMixture(iso.log_pi, iso.mu, iso.sigma.expand_as(iso.mu))
        full = FullMixture(iso.log_pi, iso.mu, torch.diag_embed(diag.sigma))
        y = draw((40, 2))
        torch.testing.assert_close(iso.log_prob(y), diag.log_prob(y))
        torch.testing.assert_close(full.log_prob(y), diag.log_prob(y))

    def test_responsibilities_are_the_posterior_over_components(self):
        for kind in KINDS:
            m = random_mixture(kind, 20, 5, 3)
            y = draw((20, 3))
            r = m.responsibilities(y)
            torch.testing.assert_close(r.sum(-1), torch.ones(20, dtype=torch.float64))
            joint = m.log_pi + m.component_log_prob(y)
            torch.testing.assert_close(r, (joint - m.log_prob(y)[:, None]).exp())


class TestRawOutputs:
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("transform", ["softplus", "exp"])
    def test_extreme_values_stay_finite_with_finite_gradients(self, kind, transform):
        """Scales at the floor, residuals of 1e3 sigma and logits of +-50."""
        K, D, sigma_min = 3, 2, 1e-3
        n_raw = mdn.MIXTURES[kind].n_raw(K, D)
        logits = torch.tensor([[50.0, -50.0, 0.0], [-50.0, -50.0, 50.0]])
        rest = torch.full((2, n_raw - K * (1 + D)), -1e4)  # scale entries -> the floor; off-diagonal -1e4
        raw = torch.cat([logits, torch.zeros(2, K * D), rest], -1).requires_grad_(True)
        if kind == "full":  # the off-diagonal entries stay moderate here; the badly conditioned case is below
            raw.data[:, -K:] = 0.0
        m = mdn.mixture_from_raw(raw, K, D, kind, sigma_min, transform)
        torch.testing.assert_close(m.floored_scales(), torch.full_like(m.floored_scales(), sigma_min))
        y = torch.full((2, D), 1e3 * sigma_min)  # 1e3 sigma away from every mean
        loss = m.nll(y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(raw.grad).all()
        # the value is the closed form for the dominant component
        expected = 0.5 * D * 1e6 + D * math.log(sigma_min) + 0.5 * D * math.log(2 * math.pi)
        assert loss.item() == pytest.approx(expected, rel=1e-6)

    @pytest.mark.parametrize("off", [1e2, 1e4, 1e7, -1e7])
    def test_full_covariance_with_badly_conditioned_factors_stays_finite(self, off):
        """L = [[floor, 0], [off * floor, floor]]: condition number ~ off^2 up to 1e14, in float32."""
        K, D, sigma_min = 2, 2, 1e-3
        raw = torch.cat(
            [torch.zeros(4, K), torch.randn(4, K * D), torch.full((4, K * D), -1e4), torch.full((4, K), off)], -1
        ).requires_grad_(True)
        m = mdn.mixture_from_raw(raw, K, D, "full", sigma_min)
        loss = m.nll(torch.randn(4, D))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(raw.grad).all()
        ref = reference(m.to(torch.float64)).log_prob(torch.zeros(4, D, dtype=torch.float64))
        torch.testing.assert_close(m.to(torch.float64).log_prob(torch.zeros(4, D, dtype=torch.float64)), ref)

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("transform", ["softplus", "exp"])
    def test_scales_never_drop_below_the_floor(self, kind, transform):
        sigma_min, K, D = 0.05, 1, 2
        n_raw = mdn.MIXTURES[kind].n_raw(K, D)
        raw = torch.linspace(-1e4, 50, 4001).reshape(-1, 1).expand(-1, n_raw).contiguous()
        m = mdn.mixture_from_raw(raw, K, D, kind, sigma_min, transform)
        assert (m.floored_scales() >= sigma_min).all() and torch.isfinite(m.floored_scales()).all()
        assert m.floored_scales().min().item() == pytest.approx(sigma_min)

    def test_head_rejects_invalid_settings(self):
        with pytest.raises(ValueError, match="n_components"):
            MDNHead(4, 1, 0)
        with pytest.raises(ValueError, match="sigma_min"):
            MDNHead(4, 1, 3, sigma_min=0.0)
        with pytest.raises(ValueError, match="sigma_transform"):
            MDNHead(4, 1, 3, sigma_transform="square")
        with pytest.raises(ValueError, match="covariance must be one of"):
            MDNHead(4, 1, 3, covariance="spherical")

    @pytest.mark.parametrize(
        "kind, n_raw, mixture_type",
        [("diag", 4 * 5, DiagonalMixture), ("isotropic", 4 * 4, IsotropicMixture), ("full", 4 * 6, FullMixture)],
    )
    def test_head_shapes_and_pi_sums_to_one(self, kind, n_raw, mixture_type):
        head = MDNHead(in_features=8, out_dim=2, n_components=4, covariance=kind)
        assert head.linear.out_features == n_raw  # K logits, K*D means, then the kind's scales
        m = head(torch.randn(10, 8))
        assert type(m) is mixture_type
        assert m.log_pi.shape == (10, 4) and m.mu.shape == (10, 4, 2)
        assert m.component_covariance().shape == (10, 4, 2, 2)
        torch.testing.assert_close(m.pi.sum(-1), torch.ones(10))

    def test_full_factor_is_lower_triangular_with_raw_entries_in_units_of_their_column_diagonal(self):
        K, D = 2, 3
        raw = torch.randn(5, mdn.FullMixture.n_raw(K, D), dtype=torch.float64)
        m = mdn.mixture_from_raw(raw, K, D, "full", sigma_min=1e-3)
        L = m.scale_tril
        assert torch.equal(L, L.tril())
        diag = 1e-3 + torch.nn.functional.softplus(raw[:, K + K * D : K + 2 * K * D]).reshape(5, K, D)
        torch.testing.assert_close(L.diagonal(dim1=-2, dim2=-1), diag)
        rows, cols = torch.tril_indices(D, D, offset=-1)
        off = raw[:, -K * 3 :].reshape(5, K, 3)
        torch.testing.assert_close(L[..., rows, cols], off * diag[..., cols])


class TestMoments:
    @pytest.mark.parametrize("kind", KINDS)
    def test_mean_variance_and_point_predictions_match_torch_distributions(self, kind):
        m = random_mixture(kind, 100, 4, 2)
        dist = reference(m)
        torch.testing.assert_close(m.mean(), dist.mean)
        torch.testing.assert_close(m.variance(), dist.variance)
        best = m.log_pi.argmax(-1)
        torch.testing.assert_close(m.most_probable_mean(), m.mu[torch.arange(100), best])

    @pytest.mark.parametrize("kind", KINDS)
    def test_covariance_matches_the_sample_covariance(self, kind):
        m = random_mixture(kind, 3, 3, 2)
        assert_covariance_close(m.sample(400_000, generator=torch.Generator().manual_seed(0)), m.covariance())

    @pytest.mark.parametrize("kind", KINDS)
    def test_to_distribution_is_the_same_mixture(self, kind):
        m = random_mixture(kind, 50, 3, 2)
        y = draw((50, 2))
        torch.testing.assert_close(m.to_distribution().log_prob(y), reference(m).log_prob(y))

    @pytest.mark.parametrize("kind", KINDS)
    def test_affine_rescales_the_density(self, kind):
        """p_{a+by}(a + b y) = p_y(y) / prod_d b_d."""
        m = random_mixture(kind, 30, 3, 2)
        shift, scale = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([3.0, 0.5], dtype=torch.float64)
        y = draw((30, 2))
        moved = m.affine(shift, scale)
        torch.testing.assert_close(moved.log_prob(shift + scale * y), m.log_prob(y) - scale.log().sum())

    def test_isotropic_stays_isotropic_under_equal_scales_only(self):
        m = random_mixture("isotropic", 5, 2, 2)
        assert (
            type(m.affine(torch.zeros(2, dtype=torch.float64), torch.full((2,), 2.0, dtype=torch.float64)))
            is IsotropicMixture
        )
        assert (
            type(m.affine(torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64)))
            is DiagonalMixture
        )

    def test_batching_indexes_and_concatenates_every_field(self):
        for kind in KINDS:
            m = random_mixture(kind, 10, 3, 2)
            y = draw((10, 2))
            torch.testing.assert_close(m[2:5].log_prob(y[2:5]), m.log_prob(y)[2:5])
            torch.testing.assert_close(type(m).cat([m[:4], m[4:]]).log_prob(y), m.log_prob(y))
            assert m.unsqueeze(0).log_prob(y[None]).shape == (1, 10)


class TestSampling:
    """Sample moments against the closed-form moments of the tempered mixture:
    pi'_k = softmax(log pi_k / T_pi), Sigma'_k = T_sigma^2 Sigma_k (L'_k = T_sigma L_k),
    mean = sum pi'_k mu_k, Cov = sum pi'_k (Sigma'_k + mu_k mu_k^T) - mean mean^T."""

    def test_samples_follow_the_mixture(self):
        m = DiagonalMixture(
            torch.tensor([[0.3, 0.7]]).log(), torch.tensor([[[-2.0], [3.0]]]), torch.tensor([[[0.5], [0.2]]])
        )
        draws = m.sample(20000, generator=torch.Generator().manual_seed(0))
        assert draws.shape == (20000, 1, 1)
        assert (draws > 0.5).float().mean().item() == pytest.approx(0.7, abs=0.015)
        assert draws.mean().item() == pytest.approx(0.3 * -2 + 0.7 * 3, abs=0.05)
        assert draws[draws > 0.5].std().item() == pytest.approx(0.2, rel=0.05)

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("t_pi, t_sigma", [(1.0, 1.0), (0.5, 1.0), (2.0, 0.5), (1.0, 3.0)])
    def test_sample_moments_match_the_tempered_mixture(self, kind, t_pi, t_sigma):
        m = random_mixture(kind, 4, 3, 2)
        pi = torch.softmax(m.log_pi / t_pi, -1)
        mean = (pi[..., None] * m.mu).sum(-2)
        outer = m.mu.unsqueeze(-1) * m.mu.unsqueeze(-2)
        cov = (pi[..., None, None] * (t_sigma**2 * m.component_covariance() + outer)).sum(-3) - mean.unsqueeze(
            -1
        ) * mean.unsqueeze(-2)
        n = 400_000
        draws = m.sample(n, generator=torch.Generator().manual_seed(0), temperature_pi=t_pi, temperature_sigma=t_sigma)
        assert draws.shape == (n, 4, 2)
        var = cov.diagonal(dim1=-2, dim2=-1)
        torch.testing.assert_close(draws.mean(0), mean, atol=5 * (var / n).sqrt().max().item(), rtol=0)
        assert_covariance_close(draws, cov)
        torch.testing.assert_close(var, m.tempered(t_pi, t_sigma).variance())

    def test_a_cold_pi_temperature_keeps_only_the_most_probable_component(self):
        m = hand_made([0.6, 0.3, 0.1], [-5.0, 0.0, 5.0], [0.1, 0.1, 0.1])
        draws = m.sample(2000, generator=torch.Generator().manual_seed(1), temperature_pi=0.01)
        assert (draws - -5.0).abs().max() < 1.0
        assert m.tempered(1.0, 1.0).log_pi.allclose(m.log_pi)
        with pytest.raises(ValueError, match="temperatures must be > 0"):
            m.tempered(0.0)


class TestModes:
    def test_two_far_apart_components_give_two_modes_at_their_means(self):
        found = hand_made([0.7, 0.3], [-3.0, 4.0], [0.5, 0.8]).modes()
        assert found.valid[0].tolist() == [True, True]
        torch.testing.assert_close(
            found.location[0, :, 0], torch.tensor([-3.0, 4.0], dtype=torch.float64), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(found.mass[0], torch.tensor([0.7, 0.3], dtype=torch.float64))

    def test_two_heavily_overlapping_equal_components_give_one_mode_between_them(self):
        # |mu1 - mu2| = sigma < 2 sigma: the sum is unimodal, its peak at the midpoint
        m = hand_made([0.5, 0.5], [1.0, 2.0], [1.0, 1.0])
        found = m.modes()
        assert found.valid[0].tolist() == [True, False]
        assert found.location[0, 0, 0].item() == pytest.approx(1.5, abs=1e-4)
        assert found.mass[0, 0].item() == pytest.approx(1.0)
        assert found.log_density[0, 0].item() == pytest.approx(
            m.log_prob(torch.tensor([[1.5]], dtype=torch.float64)).item()
        )

    def test_the_most_probable_component_is_not_always_the_highest_mode(self):
        # pi = 0.4 for a wide component at 0; two narrow ones of 0.3 each at 3 and 3.2 make a higher peak
        m = hand_made([0.4, 0.3, 0.3], [0.0, 3.0, 3.2], [1.0, 0.5, 0.5])
        found = m.modes()
        assert m.most_probable_mean()[0, 0].item() == 0.0
        assert found.valid[0].sum().item() == 2
        assert found.location[0, 0, 0].item() == pytest.approx(3.1, abs=0.05)  # the highest mode first
        assert found.mass[0, 0].item() == pytest.approx(0.6) and found.mass[0, 1].item() == pytest.approx(0.4)
        assert found.significant(0.5)[0].tolist() == [True, False, False]

    @pytest.mark.parametrize("seed", range(6))
    def test_modes_of_random_mixtures_match_a_grid_search(self, seed):
        g = torch.Generator().manual_seed(seed)
        K = 4
        m = hand_made(
            torch.softmax(torch.randn(K, generator=g), 0).tolist(),
            (torch.rand(K, generator=g) * 8 - 4).tolist(),
            (0.2 + torch.rand(K, generator=g)).tolist(),
        )
        found = m.modes()
        expected, expected_density = grid_modes(m)
        got = found.location[0, found.valid[0], 0].sort().values
        assert got.shape == expected.shape, (got, expected)
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)
        assert found.mass[0, found.valid[0]].sum().item() == pytest.approx(1.0)
        assert found.log_density[0, 0].item() == pytest.approx(expected_density.max().item(), abs=1e-6)

    @pytest.mark.parametrize("kind", KINDS)
    def test_modes_are_stationary_maxima_vectorised_over_the_batch(self, kind):
        m = random_mixture(kind, 32, 5, 2)
        found = m.modes()
        assert found.location.shape == (32, 5, 2) and found.valid.shape == (32, 5)
        for i in (0, 7, 31):  # each row alone gives the same answer
            one = m[i : i + 1].modes()
            assert torch.equal(one.valid[0], found.valid[i])
            torch.testing.assert_close(one.location[0], found.location[i])
        # at a mode the gradient of the log density vanishes and the Hessian is negative definite
        rows = found.valid.nonzero()[:, 0]
        selected, points = m[rows], found.location[found.valid]
        y = points.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(selected.log_prob(y).sum(), y)
        assert grad.abs().max().item() < 1e-3 / m.component_std().min().item()
        for j in range(0, len(rows), 7):
            hessian = torch.autograd.functional.hessian(lambda v: selected[j : j + 1].log_prob(v[None])[0], points[j])
            assert torch.linalg.eigvalsh(hessian).max() < 0

    def test_full_covariance_modes_match_a_2d_grid_search(self):
        """Two correlated components whose sum has its peak away from both means."""
        L = torch.tensor([[[1.0, 0.0], [0.9, 0.5]], [[0.6, 0.0], [-0.5, 0.6]]], dtype=torch.float64)
        m = FullMixture(
            torch.tensor([[0.55, 0.45]], dtype=torch.float64).log(),
            torch.tensor([[[0.0, 0.0], [0.8, 0.4]]], dtype=torch.float64),
            L[None],
        )
        found = m.modes()
        axis = torch.linspace(-2, 3, 1001, dtype=torch.float64)
        grid = torch.cartesian_prod(axis, axis)
        density = m.unsqueeze(0).log_prob(grid[:, None, :])[:, 0]
        best = grid[density.argmax()]
        torch.testing.assert_close(found.location[0, 0], best, atol=6e-3, rtol=0)  # grid step 5e-3
        assert found.log_density[0, 0].item() >= density.max().item() - 1e-9


def test_a_fresh_full_head_starts_without_correlations():
    head = MDNHead(in_features=8, out_dim=3, n_components=4, covariance="full")
    L = head(torch.randn(20, 8)).scale_tril
    assert torch.equal(L, torch.diag_embed(L.diagonal(dim1=-2, dim2=-1)))
    assert head.linear.weight[: 4 * 7].abs().sum() > 0  # the other outputs keep their random start
