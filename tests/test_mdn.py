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
