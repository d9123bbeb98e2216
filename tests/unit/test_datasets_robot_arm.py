"""The two-link arm: kinematics against each other, the metrics against oracles, a tiny run."""

import math

import pytest
import torch
from torch import nn

from mdn_experiments.datasets.robot_arm import RobotArm, forward_kinematics, inverse_kinematics
from mdn_experiments.errors import ConfigError
from mdn_experiments.mdn import DiagonalMixture


class Oracle(nn.Module):
    """Predicts mixtures whose means are the analytic solutions; stands in for a trained MDN."""

    def __init__(self, ds: RobotArm, both: bool):
        super().__init__()
        self.ds, self.both = ds, both

    def forward(self, x):
        solutions, inside = self.ds.valid_solutions(x)
        first = torch.where(inside[:, :1], solutions[:, 0], solutions[:, 1])  # a valid one
        if not self.both:
            mu = first[:, None, :]
            return DiagonalMixture(torch.zeros(len(x), 1), mu.float(), torch.full_like(mu, 1e-3).float())
        mu = solutions.float()  # (N, 2, 2): both branches
        log_pi = torch.where(inside, 0.0, -30.0).float().log_softmax(-1)
        return DiagonalMixture(log_pi, mu, torch.full_like(mu, 1e-3))


class BranchAverage(nn.Module):
    """The MSE-style answer: the average of the valid configurations."""

    def __init__(self, ds: RobotArm):
        super().__init__()
        self.ds = ds

    def forward(self, x):
        solutions, inside = self.ds.valid_solutions(x)
        weights = inside.double() / inside.double().sum(-1, keepdim=True)
        return (weights[..., None] * solutions).sum(1).float()


def test_fk_of_both_ik_solutions_returns_the_position():
    g = torch.Generator().manual_seed(0)
    # random angles over the whole circle give random reachable positions
    theta = torch.rand(5000, 2, generator=g, dtype=torch.float64) * 2 * math.pi - math.pi
    x = forward_kinematics(theta)
    solutions, reachable = inverse_kinematics(x)
    assert reachable.all()
    for branch in (0, 1):
        torch.testing.assert_close(forward_kinematics(solutions[:, branch]), x, atol=1e-9, rtol=0)
    # the two branches are distinct configurations, one on each side of th2 = pi
    assert (solutions[:, 0, 1] <= math.pi + 1e-9).all() and (solutions[:, 1, 1] >= math.pi - 1e-9).all()


def test_ik_recovers_the_generating_angles():
    ds = RobotArm()
    x, theta = ds.sample(2000, torch.Generator().manual_seed(1))
    solutions, inside = ds.valid_solutions(x)
    branch = (theta[:, 1] > math.pi).long()
    recovered = solutions[torch.arange(2000), branch]
    assert inside[torch.arange(2000), branch].all()
    # float32 positions: angles agree to what float32 allows near the folded-arm singularity
    assert (recovered - theta.double()).abs().max() < 2e-3
    assert (recovered - theta.double()).abs().median() < 1e-5


def test_unreachable_positions_are_flagged():
    _, reachable = inverse_kinematics(torch.tensor([[2.0, 0.0], [0.1, 0.0], [0.7, 0.0]], dtype=torch.float64))
    assert reachable.tolist() == [False, False, True]


def test_generated_data_lies_in_the_stated_ranges():
    ds = RobotArm(n_train=5000)
    x, theta = ds.load(seed=0).train
    assert x.shape == theta.shape == (5000, 2)
    assert theta[:, 0].min() >= 0.3 and theta[:, 0].max() <= 1.2
    assert theta[:, 1].min() >= math.pi / 2 and theta[:, 1].max() <= 3 * math.pi / 2
    torch.testing.assert_close(forward_kinematics(theta.double()).float(), x, atol=1e-6, rtol=0)
    radius = x.norm(dim=-1)
    assert radius.min() >= 0.8 - 0.2 - 1e-6 and radius.max() <= 1.0 + 1e-6


def test_noise_and_sizes_are_configurable():
    ds = RobotArm(n_train=10, n_val=5, n_test=7, noise=0.01, l1=1.0, l2=0.5)
    splits = ds.load(seed=0)
    assert [s[0].shape[0] for s in (splits.train, splits.val, splits.test)] == [10, 5, 7]
    x, theta = splits.train
    assert (forward_kinematics(theta.double(), 1.0, 0.5).float() - x).abs().max() > 1e-3


def test_positioning_rmse_is_zero_for_true_angles_and_large_for_the_branch_average():
    ds = RobotArm()
    splits = ds.load(seed=0)
    metrics = ds.metrics(Oracle(ds, both=True), BranchAverage(ds), splits)
    assert metrics["positioning_rmse_top_pi"] < 1e-5  # float32 angles
    assert metrics["positioning_rmse_peak_density"] < 1e-5
    assert metrics["positioning_rmse_top_mode"] < 1e-5  # the modes sit on the (far-apart) means
    assert metrics["positioning_rmse_best_of_modes"] < 1e-5
    assert metrics["positioning_rmse_baseline"] > 0.01
    assert metrics["branch_coverage"] == 1.0
    assert 0.3 < metrics["doubled_share"] < 0.9


def test_branch_coverage_needs_both_branches():
    ds = RobotArm()
    splits = ds.load(seed=0)
    one = ds.metrics(Oracle(ds, both=False), None, splits)
    assert one["positioning_rmse_top_pi"] < 1e-5
    # one component sits on one solution: it covers both only where they are within 0.05 rad
    solutions, inside = ds.valid_solutions(splits.test[0])
    doubled = inside.all(-1)
    close = (solutions[:, 0] - solutions[:, 1]).norm(dim=-1) <= 0.05
    assert one["branch_coverage"] == pytest.approx(close[doubled].double().mean().item())
    assert one["branch_coverage"] < 0.05
    assert "positioning_rmse_baseline" not in one


def test_bad_arguments_name_the_config_key():
    for kwargs, key in [
        ({"l2": 0}, "dataset.l2"),
        ({"theta1_range": (1.0, 0.5)}, "dataset.theta1_range"),
        ({"noise": -1}, "dataset.noise"),
    ]:
        with pytest.raises(ConfigError) as err:
            RobotArm(**kwargs)
        assert err.value.key == key
