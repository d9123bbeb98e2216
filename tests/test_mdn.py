"""The MDN maths against independent truths: torch.distributions and closed forms."""

import math

import pytest
import torch

from mdn_experiments import mdn
from mdn_experiments.mdn import MDNHead, MixtureParams


def random_params(n: int, K: int, D: int, dtype=torch.float64, seed: int = 0) -> MixtureParams:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, K * (1 + 2 * D), generator=g, dtype=dtype) * 2
    return mdn.params_from_raw(raw, K, D, sigma_min=1e-3)


def reference(params: MixtureParams) -> torch.distributions.MixtureSameFamily:
    """Built from torch.distributions directly, not through mdn.to_distribution."""
    D = torch.distributions
    return D.MixtureSameFamily(
        D.Categorical(logits=params.log_pi), D.Independent(D.Normal(params.mu, params.sigma), 1)
    )


@pytest.mark.parametrize("D", [1, 2, 3])
@pytest.mark.parametrize("K", [1, 3, 7])
def test_log_prob_matches_torch_distributions(K, D):
    params = random_params(256, K, D)
    y = torch.randn(256, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    expected = reference(params).log_prob(y)
    torch.testing.assert_close(mdn.log_prob(params, y), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(mdn.nll(params, y), -expected.mean(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("D", [1, 2, 3])
@pytest.mark.parametrize("K", [1, 3, 7])
def test_log_prob_float32_matches_float64(K, D):
    params = random_params(128, K, D)
    y = torch.randn(128, D, dtype=torch.float64)
    p32 = MixtureParams(params.log_pi.float(), params.mu.float(), params.sigma.float())
    torch.testing.assert_close(mdn.log_prob(p32, y.float()).double(), mdn.log_prob(params, y),
                               atol=1e-4, rtol=1e-5)


def test_nll_includes_the_gaussian_constant():
    """One standard normal component at y = 0: -log p = D/2 log(2 pi), exactly."""
    for D in (1, 2, 5):
        params = MixtureParams(torch.zeros(1, 1), torch.zeros(1, 1, D), torch.ones(1, 1, D))
        assert mdn.nll(params, torch.zeros(1, D)).item() == pytest.approx(0.5 * D * math.log(2 * math.pi))


@pytest.mark.parametrize("D", [1, 2, 5])
def test_identical_components_equal_one_gaussian(D):
    g = torch.Generator().manual_seed(3)
    n, K = 64, 5
    mu, sigma = torch.randn(n, 1, D, generator=g), torch.rand(n, 1, D, generator=g) + 0.1
    log_pi = torch.log_softmax(torch.randn(n, K, generator=g), -1)  # any weights
    params = MixtureParams(log_pi, mu.expand(n, K, D), sigma.expand(n, K, D))
    y = torch.randn(n, D, generator=g)
    single = torch.distributions.Normal(mu[:, 0], sigma[:, 0]).log_prob(y).sum(-1)
    torch.testing.assert_close(mdn.log_prob(params, y), single, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("transform", ["softplus", "exp"])
def test_extreme_values_stay_finite_with_finite_gradients(transform):
    """sigma at the floor, residuals of 1e3 sigma and logits of +-50."""
    K, D, sigma_min = 3, 2, 1e-3
    logits = torch.tensor([[50.0, -50.0, 0.0], [-50.0, -50.0, 50.0]])
    mu = torch.zeros(2, K * D)
    raw_sigma = torch.full((2, K * D), -1e4)  # -> sigma == sigma_min up to float precision
    raw = torch.cat([logits, mu, raw_sigma], -1).requires_grad_(True)
    params = mdn.params_from_raw(raw, K, D, sigma_min, transform)
    torch.testing.assert_close(params.sigma, torch.full_like(params.sigma, sigma_min))
    y = torch.full((2, D), 1e3 * sigma_min)  # 1e3 sigma away from every mean
    loss = mdn.nll(params, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(raw.grad).all()
    # the value is the closed form for the dominant component
    expected = 0.5 * D * 1e6 + D * math.log(sigma_min) + 0.5 * D * math.log(2 * math.pi)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("transform", ["softplus", "exp"])
def test_sigma_never_drops_below_the_floor(transform):
    sigma_min = 0.05
    raw = torch.linspace(-1e4, 50, 4001).reshape(-1, 1).expand(-1, 3).contiguous()  # K=1, D=1
    params = mdn.params_from_raw(raw, 1, 1, sigma_min, transform)
    assert (params.sigma >= sigma_min).all()
    assert torch.isfinite(params.sigma).all()
    assert params.sigma.min().item() == pytest.approx(sigma_min)


def test_head_rejects_invalid_settings():
    with pytest.raises(ValueError, match="n_components"):
        MDNHead(4, 1, 0)
    with pytest.raises(ValueError, match="sigma_min"):
        MDNHead(4, 1, 3, sigma_min=0.0)
    with pytest.raises(ValueError, match="sigma_transform"):
        MDNHead(4, 1, 3, sigma_transform="square")


def test_head_shapes_and_pi_sums_to_one():
    head = MDNHead(in_features=8, out_dim=2, n_components=4)
    params = head(torch.randn(10, 8))
    assert params.log_pi.shape == (10, 4)
    assert params.mu.shape == params.sigma.shape == (10, 4, 2)
    torch.testing.assert_close(params.pi.sum(-1), torch.ones(10))


def test_point_predictions_and_moments_match_torch_distributions():
    params = random_params(100, 4, 2)
    dist = reference(params)
    torch.testing.assert_close(mdn.mixture_mean(params), dist.mean)
    torch.testing.assert_close(mdn.mixture_variance(params), dist.variance)
    best = params.log_pi.argmax(-1)
    torch.testing.assert_close(mdn.most_probable_mean(params), params.mu[torch.arange(100), best])


def test_to_distribution_is_the_same_mixture():
    params = random_params(50, 3, 2)
    y = torch.randn(50, 2, dtype=torch.float64)
    torch.testing.assert_close(mdn.to_distribution(params).log_prob(y), mdn.log_prob(params, y))


def test_responsibilities_are_the_posterior_over_components():
    params = random_params(20, 5, 3)
    y = torch.randn(20, 3, dtype=torch.float64)
    r = mdn.responsibilities(params, y)
    torch.testing.assert_close(r.sum(-1), torch.ones(20, dtype=torch.float64))
    joint = params.log_pi + mdn.component_log_prob(params, y)
    torch.testing.assert_close(r, (joint - mdn.log_prob(params, y)[:, None]).exp())


def test_samples_follow_the_mixture():
    # a bimodal 1-D mixture: weights 0.3 / 0.7 at -2 and +3
    params = MixtureParams(
        torch.tensor([[0.3, 0.7]]).log(), torch.tensor([[[-2.0], [3.0]]]), torch.tensor([[[0.5], [0.2]]])
    )
    draws = mdn.sample(params, 20000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (20000, 1, 1)
    assert (draws > 0.5).float().mean().item() == pytest.approx(0.7, abs=0.015)
    assert draws.mean().item() == pytest.approx(0.3 * -2 + 0.7 * 3, abs=0.05)
    upper = draws[draws > 0.5]
    assert upper.std().item() == pytest.approx(0.2, rel=0.05)


def test_affine_rescales_the_density():
    """p_{a+by}(a + b y) = p_y(y) / b per dimension."""
    params = random_params(30, 3, 2)
    shift, scale = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([3.0, 0.5], dtype=torch.float64)
    y = torch.randn(30, 2, dtype=torch.float64)
    moved = params.affine(shift, scale)
    torch.testing.assert_close(mdn.log_prob(moved, shift + scale * y), mdn.log_prob(params, y) - scale.log().sum())


def mixture(pi, mu, sigma) -> MixtureParams:
    """A batch of one hand-made 1-D mixture."""
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return MixtureParams(t(pi).log()[None], t(mu)[None, :, None], t(sigma)[None, :, None])


class TestTemperedSampling:
    """Sample moments against the closed-form moments of the tempered mixture:
    pi'_k = softmax(log pi_k / T_pi), sigma'_k = T_sigma sigma_k, mean = sum pi'_k mu_k,
    Var = sum pi'_k (sigma'_k^2 + mu_k^2) - mean^2."""

    @pytest.mark.parametrize("t_pi, t_sigma", [(1.0, 1.0), (0.5, 1.0), (2.0, 0.5), (1.0, 3.0)])
    def test_sample_moments_match_the_tempered_mixture(self, t_pi, t_sigma):
        params = random_params(4, 3, 2)
        pi = torch.softmax(params.log_pi / t_pi, -1)
        mean = (pi[..., None] * params.mu).sum(-2)
        var = (pi[..., None] * ((t_sigma * params.sigma) ** 2 + params.mu**2)).sum(-2) - mean**2
        n = 400_000
        draws = mdn.sample(params, n, generator=torch.Generator().manual_seed(0), temperature_pi=t_pi,
                           temperature_sigma=t_sigma)
        assert draws.shape == (n, 4, 2)
        torch.testing.assert_close(draws.mean(0), mean, atol=5 * (var / n).sqrt().max().item(), rtol=0)
        torch.testing.assert_close(draws.var(0), var, rtol=0.02, atol=1e-4)

    def test_a_cold_pi_temperature_keeps_only_the_most_probable_component(self):
        params = mixture([0.6, 0.3, 0.1], [-5.0, 0.0, 5.0], [0.1, 0.1, 0.1])
        draws = mdn.sample(params, 2000, generator=torch.Generator().manual_seed(1), temperature_pi=0.01)
        assert (draws - -5.0).abs().max() < 1.0
        assert mdn.tempered(params, 1.0, 1.0).log_pi.allclose(params.log_pi)
        with pytest.raises(ValueError, match="temperatures must be > 0"):
            mdn.tempered(params, 0.0)


def grid_modes(params: MixtureParams, lo=-10.0, hi=10.0, n=200_001):
    """Independent truth for 1-D mixtures: the local maxima of the density on a fine grid."""
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    density = mdn.log_prob(params.unsqueeze(0), grid[:, None, None])[:, 0]
    inner = (density[1:-1] > density[:-2]) & (density[1:-1] > density[2:])
    return grid[1:-1][inner], density[1:-1][inner]


class TestModes:
    def test_two_far_apart_components_give_two_modes_at_their_means(self):
        found = mdn.modes(mixture([0.7, 0.3], [-3.0, 4.0], [0.5, 0.8]))
        assert found.valid[0].tolist() == [True, True]
        torch.testing.assert_close(found.location[0, :, 0], torch.tensor([-3.0, 4.0], dtype=torch.float64),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(found.mass[0], torch.tensor([0.7, 0.3], dtype=torch.float64))

    def test_two_heavily_overlapping_equal_components_give_one_mode_between_them(self):
        # |mu1 - mu2| = sigma < 2 sigma: the sum is unimodal, its peak at the midpoint
        found = mdn.modes(mixture([0.5, 0.5], [1.0, 2.0], [1.0, 1.0]))
        assert found.valid[0].tolist() == [True, False]
        assert found.location[0, 0, 0].item() == pytest.approx(1.5, abs=1e-4)
        assert found.mass[0, 0].item() == pytest.approx(1.0)
        assert found.log_density[0, 0].item() == pytest.approx(
            mdn.log_prob(mixture([0.5, 0.5], [1.0, 2.0], [1.0, 1.0]), torch.tensor([[1.5]], dtype=torch.float64)).item())

    def test_the_most_probable_component_is_not_always_the_highest_mode(self):
        # pi = 0.4 for a wide component at 0; two narrow ones of 0.3 each at 3 and 3.2 make a higher peak
        params = mixture([0.4, 0.3, 0.3], [0.0, 3.0, 3.2], [1.0, 0.5, 0.5])
        found = mdn.modes(params)
        assert mdn.most_probable_mean(params)[0, 0].item() == 0.0
        assert found.valid[0].sum().item() == 2
        top = found.location[0, 0, 0].item()  # slots are sorted: the highest mode first
        assert top == pytest.approx(3.1, abs=0.05)
        assert found.mass[0, 0].item() == pytest.approx(0.6) and found.mass[0, 1].item() == pytest.approx(0.4)

    @pytest.mark.parametrize("seed", range(6))
    def test_modes_of_random_mixtures_match_a_grid_search(self, seed):
        g = torch.Generator().manual_seed(seed)
        K = 4
        params = mixture(torch.softmax(torch.randn(K, generator=g), 0).tolist(),
                         (torch.rand(K, generator=g) * 8 - 4).tolist(), (0.2 + torch.rand(K, generator=g)).tolist())
        found = mdn.modes(params)
        expected, expected_density = grid_modes(params)
        got = found.location[0, found.valid[0], 0].sort().values
        assert got.shape == expected.shape, (got, expected)
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)
        assert found.mass[0, found.valid[0]].sum().item() == pytest.approx(1.0)
        assert found.log_density[0, 0].item() == pytest.approx(expected_density.max().item(), abs=1e-6)

    def test_modes_are_vectorised_over_the_batch_and_dimensions(self):
        params = random_params(32, 5, 2)
        found = mdn.modes(params)
        assert found.location.shape == (32, 5, 2) and found.valid.shape == (32, 5)
        for i in (0, 7, 31):  # each row alone gives the same answer
            one = mdn.modes(MixtureParams(params.log_pi[i : i + 1], params.mu[i : i + 1], params.sigma[i : i + 1]))
            assert torch.equal(one.valid[0], found.valid[i])
            torch.testing.assert_close(one.location[0], found.location[i])
        # at a mode the gradient of the log density vanishes
        y = found.location[found.valid].clone().requires_grad_(True)
        rows = found.valid.nonzero()[:, 0]
        selected = MixtureParams(params.log_pi[rows], params.mu[rows], params.sigma[rows])
        (grad,) = torch.autograd.grad(mdn.log_prob(selected, y).sum(), y)
        assert grad.abs().max().item() < 1e-3 / params.sigma.min().item()
