"""The inverse-sine data and its closed-form conditional density against independent numerics."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize

from mdn_experiments.datasets.inverse_sine import InverseSine
from mdn_experiments.errors import ConfigError
from mdn_experiments.mdn import DiagonalMixture

F = lambda t: t + 0.3 * np.sin(2 * np.pi * t)  # noqa: E731


def window_intervals(x: float, w: float = 0.1) -> list[tuple[float, float]]:
    """{t in [0,1] : |x - f(t)| < w} as intervals, by root finding on f (independent of the grid)."""
    g = lambda t: np.abs(x - F(t)) - w  # noqa: E731
    grid = np.linspace(0, 1, 4001)
    vals = g(grid)
    crossings = [
        optimize.brentq(g, a, b) for a, b, va, vb in zip(grid[:-1], grid[1:], vals[:-1], vals[1:]) if va * vb < 0
    ]
    cuts = [0.0, *crossings, 1.0]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if g((a + b) / 2) < 0]


class OneModePerInterval(torch.nn.Module):
    """Stands in for a trained MDN: one narrow component at the centre of each interval of the true
    support (from root finding), the spare components far away with negligible weight."""

    def forward(self, x):
        K = 3
        log_pi = torch.full((len(x), K), -40.0, dtype=torch.float64)
        mu = torch.full((len(x), K, 1), 10.0, dtype=torch.float64) + torch.arange(K)[None, :, None]
        for i, value in enumerate(x[:, 0].tolist()):
            for k, (lo, hi) in enumerate(window_intervals(value)):
                log_pi[i, k], mu[i, k, 0] = 0.0, (lo + hi) / 2
        return DiagonalMixture(log_pi.log_softmax(-1), mu, torch.full_like(mu, 0.01))


def test_generated_data_lies_in_the_stated_ranges():
    ds = InverseSine(n_train=5000)
    x, t = ds.load(seed=0).train
    assert x.shape == t.shape == (5000, 1) and x.dtype == torch.float32
    assert t.min() >= 0 and t.max() <= 1
    residual = (x - ds.curve(t.double()).float()).abs()
    assert residual.max() <= 0.1 + 1e-6
    assert residual.mean().item() == pytest.approx(0.05, abs=0.003)  # U(-0.1, 0.1) noise


def test_forward_direction_swaps_inputs_and_targets():
    inv = InverseSine(direction="inverse").load(seed=3).test
    fwd = InverseSine(direction="forward").load(seed=3).test
    torch.testing.assert_close(inv[0], fwd[1])
    torch.testing.assert_close(inv[1], fwd[0])


def test_splits_are_distinct_and_seeded():
    a, b = InverseSine().load(seed=0), InverseSine().load(seed=0)
    torch.testing.assert_close(a.test[0], b.test[0])
    assert not torch.equal(a.train[0][:100], a.val[0][:100])
    assert not torch.equal(InverseSine().load(seed=1).train[0], a.train[0])


@pytest.mark.parametrize("x", [-0.05, 0.2, 0.35, 0.5, 0.62, 0.8, 1.05])
def test_true_density_matches_root_finding(x):
    ds = InverseSine()
    intervals = window_intervals(x)
    length = sum(hi - lo for lo, hi in intervals)
    mean = sum((hi**2 - lo**2) / 2 for lo, hi in intervals) / length
    # a target inside the window: log p = -log L(x)
    t_inside = torch.tensor([[(intervals[0][0] + intervals[0][1]) / 2]])
    logp = ds.true_log_density(torch.tensor([[x]]), t_inside)[0]
    assert logp == pytest.approx(-math.log(length), abs=2e-3)
    assert ds.conditional_mean(torch.tensor([[x]]))[0] == pytest.approx(mean, abs=1e-4)
    # a target outside every interval has zero density
    assert ds.true_log_density(torch.tensor([[x]]), torch.tensor([[2.0]]))[0] == -np.inf


def test_true_density_integrates_to_one():
    ds = InverseSine()
    for x in (0.1, 0.45, 0.9):
        value, _ = integrate.quad(
            lambda t: math.exp(ds.true_log_density(torch.tensor([[x]]), torch.tensor([[t]]))[0]),
            0,
            1,
            points=[lo for lo, _ in window_intervals(x)],
            limit=200,
        )
        assert value == pytest.approx(1.0, abs=5e-3)


def test_bayes_nll_matches_the_reference_value():
    """REFERENCE.md: the Bayes-optimal test NLL is -1.28 nats (Monte Carlo, 2e5 samples)."""
    ds = InverseSine(n_test=200_000)
    x, t = ds.sample(200_000, torch.Generator().manual_seed(123))
    bayes = -ds.true_log_density(x, t).mean()
    assert bayes == pytest.approx(-1.28, abs=0.01)


def test_forward_bayes_nll_is_log_of_the_noise_width():
    ds = InverseSine(direction="forward")
    x, y = ds.load(seed=0).test
    assert -ds.true_log_density(x, y).mean() == pytest.approx(math.log(0.2), abs=1e-6)
    np.testing.assert_allclose(ds.conditional_mean(x), F(x[:, 0].double().numpy()))


@pytest.mark.parametrize(
    "kwargs, key",
    [({"n_train": 1}, "dataset.n_train"), ({"noise": 0}, "dataset.noise"), ({"direction": "up"}, "dataset.direction")],
)
def test_bad_arguments_name_the_config_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        InverseSine(**kwargs)
    assert err.value.key == key


@pytest.mark.parametrize("x", [0.05, 0.2, 0.36, 0.5, 0.62, 0.8, 0.95])
def test_branch_count_is_the_number_of_solutions_of_the_noise_free_curve(x):
    g = lambda t: F(t) - x  # noqa: E731
    grid = np.linspace(0, 1, 997)  # a different grid from the one in the code
    roots = [optimize.brentq(g, a, b) for a, b in zip(grid[:-1], grid[1:]) if g(a) * g(b) < 0]
    assert InverseSine().branch_count(torch.tensor([[x]]))[0] == len(roots)


def test_the_middle_has_three_branches_and_the_ends_one():
    counts = InverseSine().branch_count(torch.tensor([[0.1], [0.5], [0.9]]))
    assert counts.tolist() == [1, 3, 1]


@pytest.mark.parametrize("x", [-0.05, 0.2, 0.35, 0.4, 0.5, 0.62, 0.8, 1.05])
def test_support_intervals_match_root_finding(x):
    assert InverseSine().support_intervals(torch.tensor([[x]]))[0] == len(window_intervals(x))


def test_branch_count_accuracy_counts_modes_against_the_support_intervals():
    ds = InverseSine(n_train=2, n_val=1, n_test=300)
    splits = ds.load(seed=0)
    assert ds.metrics(OneModePerInterval(), None, splits)["branch_count_accuracy"] == 1.0
    # one component everywhere: right exactly where the support is a single interval
    single = lambda x: DiagonalMixture(
        torch.zeros(len(x), 1),
        torch.full((len(x), 1, 1), 0.5),  # noqa: E731
        torch.full((len(x), 1, 1), 0.3),
    )
    expected = (ds.support_intervals(splits.test[0]) == 1).mean()
    assert 0 < expected < 1
    assert ds.metrics(single, None, splits)["branch_count_accuracy"] == pytest.approx(expected)
