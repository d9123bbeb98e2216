"""Component health, data-driven initialisation and revival of dead components."""

import math

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from helpers import forced_dead_network, toy_data
from mdn_experiments.evaluation import health as evaluation
from mdn_experiments.mdn import DiagonalMixture
from mdn_experiments.models import MLP, build_network
from mdn_experiments.train.trainer import ReviveDead, fit


def mixture_1d(pi, mu, sigma, n=50):
    t = lambda v: torch.tensor(v, dtype=torch.float64).expand(n, len(v))  # noqa: E731
    return DiagonalMixture(t(pi).log(), t(mu)[..., None], t(sigma)[..., None])


class TestHealthMetrics:
    def test_one_live_component_of_three(self):
        m = mixture_1d([1 - 2e-4, 1e-4, 1e-4], [0.0, 5.0, 10.0], [1.0, 1.0, 1.0])
        h = evaluation.health(m, torch.zeros(50, 1, dtype=torch.float64))
        assert h["dead_components"] == 2
        assert h["effective_components"] == pytest.approx(1.0, abs=0.01)

    def test_three_equal_components(self):
        m = mixture_1d([1 / 3] * 3, [0.0, 5.0, 10.0], [1.0, 1.0, 1.0])
        y = torch.tensor([0.0, 5.0, 10.0], dtype=torch.float64).repeat(17)[:50, None]
        h = evaluation.health(m, y)
        assert h["dead_components"] == 0
        assert h["effective_components"] == pytest.approx(3.0)
        assert h["responsibility_entropy"] < 1e-4  # each target sits on one far-apart component

    def test_identical_components_share_every_target(self):
        m = mixture_1d([0.25] * 4, [0.0] * 4, [1.0] * 4)
        h = evaluation.health(m, torch.randn(50, 1, dtype=torch.float64))
        assert h["responsibility_entropy"] == pytest.approx(math.log(4))

    def test_a_component_alive_on_some_inputs_is_not_dead(self):
        log_pi = torch.tensor([[0.0, -20.0], [-20.0, 0.0]]).log_softmax(-1)
        m = DiagonalMixture(log_pi, torch.zeros(2, 2, 1), torch.ones(2, 2, 1))
        assert evaluation.health(m, torch.zeros(2, 1))["dead_components"] == 0


@pytest.mark.parametrize("kind", ["diag", "isotropic", "full"])
def test_gmm_init_starts_every_input_at_the_fitted_mixture(kind):
    """Against an independent scikit-learn fit on the same standardised targets (same seed)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-2.0, 1.0], [1.5, -1.0], [0.0, 2.5]])
    y = centres[torch.randint(0, 3, (600,), generator=g)] + 0.3 * torch.randn(600, 2, generator=g) @ torch.tensor(
        [[1.0, 0.6], [0.0, 0.5]]
    )
    x = torch.randn(600, 3, generator=g)
    net = build_network(MLP([3], hidden=[32]), [3], 2, "mdn", n_components=3, covariance=kind)
    net.fit_standardization(x, y)
    net.init_from_targets("gmm", y, seed=4)
    z = ((y - net.y_mean) / net.y_std).double().numpy()
    sk_kind = {"diag": "diag", "isotropic": "spherical", "full": "full"}[kind]
    ref = GaussianMixture(3, covariance_type=sk_kind, reg_covar=1e-6, random_state=4).fit(z)
    with torch.no_grad():
        m = net.head(net.backbone((torch.randn(40, 3, generator=g) * 3 - net.x_mean) / net.x_std)).to(torch.float64)
    cov = torch.as_tensor(ref.covariances_)
    cov = {
        "diag": lambda c: torch.diag_embed(c),
        "isotropic": lambda c: c[:, None, None] * torch.eye(2),
        "full": lambda c: c,
    }[kind](cov)
    # the shrunk weights (x 0.01) move each raw output by at most a few hundredths
    np.testing.assert_allclose(m.pi.numpy(), np.broadcast_to(ref.weights_, (40, 3)), atol=0.02)
    np.testing.assert_allclose(m.mu.numpy(), np.broadcast_to(ref.means_, (40, 3, 2)), atol=0.03)
    np.testing.assert_allclose(
        m.component_covariance().numpy(), np.broadcast_to(cov.numpy(), (40, 3, 2, 2)), atol=0.01, rtol=0.05
    )


def test_a_dead_component_is_revived_and_the_revival_is_logged():
    train, val = toy_data(400, 0), toy_data(200, 1)
    net = forced_dead_network()
    net.fit_standardization(*train)
    result = fit(net, train, val, epochs=6, lr=3e-3, epoch_hooks=[ReviveDead(after=2)])
    assert result.history[0]["dead_components"] == 1 and result.history[0]["revived"] == 0
    assert result.history[1]["revived"] == 1  # dead after epochs 1 and 2: revived at the end of epoch 2
    assert [r["component"] for r in result.revivals][:1] == [2] and result.revivals[0]["epoch"] == 2
    assert result.revivals[0]["from"] in (0, 1)  # split from a live component
    # the revived component lives again: pi above the dead threshold on some validation inputs,
    # to the end
    assert all(row["dead_components"] == 0 for row in result.history[2:])


def test_without_revival_the_forced_dead_component_stays_dead():
    train, val = toy_data(400, 0), toy_data(200, 1)
    net = forced_dead_network()
    net.fit_standardization(*train)
    result = fit(net, train, val, epochs=6, lr=3e-3)
    assert all(row["dead_components"] == 1 for row in result.history)
    assert result.revivals == [] and "revived" not in result.history[0]


def test_health_gathered_a_batch_at_a_time_is_health_of_the_whole_set():
    from mdn_experiments.mdn import mixture_from_raw

    torch.manual_seed(4)
    mixture = mixture_from_raw(torch.randn(1000, DiagonalMixture.n_raw(4, 2)), 4, 2)
    y = torch.randn(1000, 2)
    whole = evaluation.health(mixture, y)
    parts = evaluation.HealthSum()
    for start in range(0, 1000, 128):
        parts.add(mixture[start : start + 128], y[start : start + 128])
    gathered = parts.result()
    assert gathered["dead_components"] == whole["dead_components"]
    for key in ("effective_components", "responsibility_entropy"):
        assert gathered[key] == pytest.approx(whole[key], rel=1e-12)
