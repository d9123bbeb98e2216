"""Calibration and proper scores against independent implementations and closed forms:
scoringrules (CRPS), scipy (normal and chi-square laws, the KS statistic)."""

import numpy as np
import pytest
import scoringrules
import torch
from scipy import stats

from mdn_experiments import mdn
from mdn_experiments.evaluation import calibration as evaluation
from mdn_experiments.mdn import DiagonalMixture, FullMixture


def random_1d(n: int, K: int, seed: int = 0) -> DiagonalMixture:
    g = torch.Generator().manual_seed(seed)
    return DiagonalMixture(
        torch.log_softmax(torch.randn(n, K, generator=g, dtype=torch.float64), -1),
        torch.randn(n, K, 1, generator=g, dtype=torch.float64) * 2,
        0.1 + torch.rand(n, K, 1, generator=g, dtype=torch.float64),
    )


class TestCRPS:
    @pytest.mark.parametrize("K", [1, 3, 8])
    def test_closed_form_matches_scoringrules(self, K):
        m = random_1d(200, K)
        y = torch.randn(200, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 3
        expected = scoringrules.crps_mixnorm(
            y[:, 0].numpy(), m.mu[..., 0].numpy(), m.component_std()[..., 0].numpy(), m.pi.numpy(), backend="numpy"
        )
        np.testing.assert_allclose(evaluation.crps(m, y).numpy(), expected, rtol=1e-9, atol=1e-12)

    def test_every_covariance_kind_scores_the_same_1d_mixture_alike(self):
        m = random_1d(50, 3)
        y = torch.randn(50, 1, dtype=torch.float64)
        iso = mdn.IsotropicMixture(m.log_pi, m.mu, m.sigma)
        full = FullMixture(m.log_pi, m.mu, m.sigma.unsqueeze(-1))
        for other in (iso, full):
            torch.testing.assert_close(evaluation.crps(other, y), evaluation.crps(m, y))

    def test_a_sharp_component_gives_the_absolute_error(self):
        """sigma -> 0: the forecast is a point and the CRPS is |y - mu|."""
        m = DiagonalMixture(
            torch.zeros(3, 1, dtype=torch.float64),
            torch.tensor([[[0.0]], [[1.0]], [[-2.0]]]).double(),
            torch.full((3, 1, 1), 1e-9, dtype=torch.float64),
        )
        y = torch.tensor([[0.5], [1.0], [1.0]], dtype=torch.float64)
        torch.testing.assert_close(evaluation.crps(m, y), torch.tensor([0.5, 0.0, 3.0], dtype=torch.float64))


class TestPIT:
    def test_pit_is_the_mixture_cdf(self):
        m = random_1d(100, 4)
        y = torch.randn(100, 1, dtype=torch.float64)
        expected = (m.pi.numpy() * stats.norm.cdf(y.numpy(), m.mu[..., 0].numpy(), m.sigma[..., 0].numpy())).sum(-1)
        np.testing.assert_allclose(evaluation.pit(m, y).numpy(), expected, rtol=1e-10)

    def test_ks_distance_matches_scipy(self):
        u = np.random.default_rng(0).beta(2, 3, size=500)
        assert evaluation.ks_uniform(u) == pytest.approx(stats.kstest(u, "uniform").statistic, abs=1e-12)

    def test_targets_drawn_from_the_model_are_calibrated(self):
        m = random_1d(20000, 3, seed=2)
        y = m.sample(1, generator=torch.Generator().manual_seed(3))[0]
        calibration = evaluation.calibrate(m, y, n_samples=500)
        assert calibration.metrics()["pit_ks"] < 0.02  # ~1.5/sqrt(n) under the null
        for level in (0.1, 0.5, 0.9):
            assert calibration.coverage(level) == pytest.approx(level, abs=0.02)


class TestHighestDensityRegions:
    def test_hdr_level_of_a_gaussian_is_the_central_interval(self):
        """One N(0, 1): the HDR holding a is |y| <= z, so the level of y is 2 Phi(|y|) - 1."""
        n = 400
        m = DiagonalMixture(
            torch.zeros(n, 1, dtype=torch.float64),
            torch.zeros(n, 1, 1, dtype=torch.float64),
            torch.ones(n, 1, 1, dtype=torch.float64),
        )
        y = torch.linspace(-3, 3, n, dtype=torch.float64)[:, None]
        levels = evaluation.hdr_levels(m, y, n_samples=20000)
        expected = 2 * stats.norm.cdf(np.abs(y[:, 0].numpy())) - 1
        np.testing.assert_allclose(levels.numpy(), expected, atol=0.015)  # MC error <= 0.5/sqrt(20000) ~ 0.0035

    def test_hdr_level_of_a_correlated_2d_gaussian_follows_chi_square(self):
        """One N(mu, L L^T): the level of y is the chi-square(2) cdf of its squared Mahalanobis distance."""
        n = 300
        L = torch.tensor([[1.0, 0.0], [1.5, 0.3]], dtype=torch.float64).expand(n, 1, 2, 2)
        m = FullMixture(torch.zeros(n, 1, dtype=torch.float64), torch.zeros(n, 1, 2, dtype=torch.float64), L)
        y = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
        z = torch.linalg.solve_triangular(L[:, 0], y.unsqueeze(-1), upper=False).squeeze(-1)
        expected = stats.chi2.cdf(z.square().sum(-1).numpy(), df=2)
        np.testing.assert_allclose(evaluation.hdr_levels(m, y, n_samples=20000).numpy(), expected, atol=0.015)

    def test_a_bimodal_hdr_leaves_out_the_valley(self):
        """Two far-apart equal components: their 50 % HDR is two intervals, not one around the mean."""
        m = DiagonalMixture(
            torch.tensor([[0.5, 0.5]]).log().double(),
            torch.tensor([[[-5.0], [5.0]]]).double(),
            torch.ones(1, 2, 1, dtype=torch.float64),
        )
        inside = evaluation.hdr_levels(m.__getitem__([0, 0]), torch.tensor([[5.0], [0.0]], dtype=torch.float64))
        assert inside[0] < 0.05  # at a peak
        assert inside[1] > 0.99  # the mixture's mean sits in the valley


def test_scores_computed_a_chunk_at_a_time_are_the_whole_computation_bit_for_bit(monkeypatch):
    """HDR levels (densities of the draws a slice at a time), the CRPS and the PIT (a chunk of
    inputs at a time) and the modes (a chunk of mixtures at a time) bound the memory of a large
    test set without changing a bit of the answer."""
    from mdn_experiments import mdn
    from mdn_experiments.evaluation import calibration

    torch.manual_seed(0)
    for covariance, D in (("diag", 1), ("full", 2)):
        m = mdn.mixture_from_raw(torch.randn(3000, mdn.MIXTURES[covariance].n_raw(9, D)), 9, D, covariance)
        y = torch.randn(3000, D)
        monkeypatch.setattr(calibration, "HDR_DENSITY_ELEMENTS", 10**12)
        monkeypatch.setattr(calibration, "SCORE_CHUNK", 10**9)
        monkeypatch.setattr(calibration, "CRPS_PAIR_ELEMENTS", 10**12)
        monkeypatch.setattr(mdn, "MODES_CHUNK", 10**9)
        whole = calibration.hdr_levels(m, y), m[:1000].modes()
        crps_whole, pit_whole = (calibration.crps(m, y), calibration.pit(m, y)) if D == 1 else (None, None)
        monkeypatch.setattr(calibration, "HDR_DENSITY_ELEMENTS", 50_000)
        monkeypatch.setattr(calibration, "SCORE_CHUNK", 128)
        monkeypatch.setattr(calibration, "CRPS_PAIR_ELEMENTS", 81 * 100)  # 100 inputs of 9 components
        monkeypatch.setattr(mdn, "MODES_CHUNK", 100)
        assert torch.equal(calibration.hdr_levels(m, y), whole[0])
        parts = m[:1000].modes()
        for name in ("location", "log_density", "mass", "valid"):
            assert torch.equal(getattr(parts, name), getattr(whole[1], name))
        if D == 1:
            assert torch.equal(calibration.crps(m, y), crps_whole)
            assert torch.equal(calibration.pit(m, y), pit_whole)
