"""Bishop's (1994) two-link robot arm: predict the joint angles from the end-effector position.

Forward kinematics (the second link folds back, as in the paper):
    x1 = L1 cos(th1) - L2 cos(th1 + th2),    x2 = L1 sin(th1) - L2 sin(th1 + th2),
with th1 ~ U(0.3, 1.2) and th2 ~ U(pi/2, 3pi/2). Every reachable position has two arm
configurations (elbow branches th2 < pi and th2 > pi); in part of the workspace both lie inside
the angle box, and the MSE network averages them into a configuration that misses the target.
The closed-form inverse below gives both, so the metrics can check what the MDN found.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mdn_experiments.datasets.base import Dataset, Splits, require, require_split_sizes
from mdn_experiments.evaluation import contract as C
from mdn_experiments.evaluation.contract import BRANCH_RADIUS, MIN_MODE_MASS, point
from mdn_experiments.mdn import Modes
from mdn_experiments.models import Network


def forward_kinematics(theta: Tensor, l1: float = 0.8, l2: float = 0.2) -> Tensor:
    """End-effector position (N, 2) of joint angles theta (N, 2)."""
    th1, th12 = theta[..., 0], theta[..., 0] + theta[..., 1]
    return torch.stack([l1 * torch.cos(th1) - l2 * torch.cos(th12), l1 * torch.sin(th1) - l2 * torch.sin(th12)], -1)


def inverse_kinematics(position: Tensor, l1: float = 0.8, l2: float = 0.2) -> tuple[Tensor, Tensor]:
    """Both closed-form solutions of forward_kinematics(theta) = position.

    Returns (solutions (N, 2, 2), reachable (N,)): solutions[:, 0] is the elbow branch with
    th2 in [0, pi], solutions[:, 1] the branch with th2 in [pi, 2pi]; th1 in (-pi, pi].
    Writing -L2 e(a) = L2 e(a + pi) turns the arm into the textbook one with relative angle
    s = th2 - pi, so cos s = (r^2 - L1^2 - L2^2) / (2 L1 L2).
    """
    x1, x2 = position[..., 0], position[..., 1]
    cos_s = (x1.square() + x2.square() - l1**2 - l2**2) / (2 * l1 * l2)
    reachable = cos_s.abs() <= 1 + 1e-6
    s_abs = torch.acos(cos_s.clamp(-1, 1))
    solutions = []
    for s in (-s_abs, s_abs):  # th2 = s + pi: below pi, then above pi
        th1 = torch.atan2(x2, x1) - torch.atan2(l2 * torch.sin(s), l1 + l2 * torch.cos(s))
        th1 = torch.remainder(th1 + math.pi, 2 * math.pi) - math.pi
        solutions.append(torch.stack([th1, s + math.pi], -1))
    return torch.stack(solutions, -2), reachable


def _rms(errors: Tensor) -> float:
    """Root mean square of per-point distances (N,)."""
    return float(errors.square().mean().sqrt())


class RobotArm(Dataset):
    figure_set = "robot_arm"  # run.figures draws these for a trained run
    main_metric = C.POSITIONING_RMSE_TOP_PI
    input_shape = (2,)
    output_dim = 2

    def __init__(
        self,
        name: str = "robot_arm",
        n_train: int = 1000,
        n_val: int = 1000,
        n_test: int = 1000,
        l1: float = 0.8,
        l2: float = 0.2,
        theta1_range: tuple[float, float] = (0.3, 1.2),
        theta2_range: tuple[float, float] = (math.pi / 2, 3 * math.pi / 2),
        noise: float = 0.0,
    ) -> None:
        require_split_sizes(n_train, n_val, n_test)
        require(l1 > 0, "l1", l1, "a length > 0")
        require(l2 > 0, "l2", l2, "a length > 0")
        for key, bounds in (("theta1_range", theta1_range), ("theta2_range", theta2_range)):
            require(len(bounds) == 2 and bounds[0] < bounds[1], key, list(bounds), "[low, high] with low < high")
        require(
            -math.pi <= theta1_range[0] and theta1_range[1] <= math.pi,
            "theta1_range",
            list(theta1_range),
            "inside [-pi, pi]",
        )
        require(
            0 <= theta2_range[0] and theta2_range[1] <= 2 * math.pi,
            "theta2_range",
            list(theta2_range),
            "inside [0, 2 pi]",
        )
        require(noise >= 0, "noise", noise, "a float >= 0 (std of Gaussian noise on the positions)")
        self.name = name
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.l1, self.l2, self.noise = l1, l2, noise
        self.theta1_range, self.theta2_range = tuple(theta1_range), tuple(theta2_range)

    # --- data -------------------------------------------------------------------------------

    def fk(self, theta: Tensor) -> Tensor:
        return forward_kinematics(theta, self.l1, self.l2)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(positions, angles), each (n, 2) float32."""
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        lo = torch.tensor([self.theta1_range[0], self.theta2_range[0]], dtype=torch.float64)
        hi = torch.tensor([self.theta1_range[1], self.theta2_range[1]], dtype=torch.float64)
        theta = lo + (hi - lo) * u
        position = self.fk(theta)
        if self.noise > 0:
            position = position + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return position.float(), theta.float()

    def load(self, seed: int) -> Splits:
        g = torch.Generator().manual_seed(seed)
        return Splits(self.sample(self.n_train, g), self.sample(self.n_val, g), self.sample(self.n_test, g))

    def valid_solutions(self, position: Tensor) -> tuple[Tensor, Tensor]:
        """Both IK solutions (N, 2, 2) and which of them lie inside the angle box (N, 2)."""
        solutions, reachable = inverse_kinematics(position.double(), self.l1, self.l2)
        th1, th2 = solutions[..., 0], solutions[..., 1]
        eps = 1e-9
        inside = (
            (th1 >= self.theta1_range[0] - eps)
            & (th1 <= self.theta1_range[1] + eps)
            & (th2 >= self.theta2_range[0] - eps)
            & (th2 <= self.theta2_range[1] + eps)
        )
        return solutions, inside & reachable[..., None]

    # --- metrics ----------------------------------------------------------------------------

    def positioning_errors(self, position: Tensor, theta_pred: Tensor) -> Tensor:
        """Euclidean distance (N,) from the desired position to where the predicted angles reach."""
        return (self.fk(theta_pred.double()) - position.double()).norm(dim=-1)

    def branch_coverage(self, modes: Modes, position: Tensor, radius: float = BRANCH_RADIUS) -> tuple[float, int]:
        """Share of points with both IK solutions in the box where each solution lies within
        `radius` rad (Euclidean in angle space) of a mode holding >= MIN_MODE_MASS of probability.
        Returns (share, number of such points)."""
        solutions, inside = self.valid_solutions(position)
        doubled = inside.all(-1)
        # distance from each solution (N, 2, 1, 2) to each mode (N, 1, K, 2)
        dist = (solutions[:, :, None, :] - modes.location.double()[:, None, :, :]).norm(dim=-1)  # (N, 2, K)
        found = ((dist <= radius) & modes.significant(MIN_MODE_MASS)[:, None, :]).any(-1).all(-1)
        n = int(doubled.sum())
        return (float(found[doubled].float().mean()) if n else float("nan")), n

    def best_of_modes_errors(self, modes: Modes, position: Tensor) -> Tensor:
        """Per point, the smallest positioning error among the modes holding >= MIN_MODE_MASS: (N,)."""
        n, K, _ = modes.location.shape
        errors = self.positioning_errors(position.repeat_interleave(K, 0), modes.location.reshape(n * K, 2))
        errors = errors.reshape(n, K).masked_fill(~modes.significant(MIN_MODE_MASS), math.inf)
        return errors.min(-1).values

    @torch.no_grad()
    def metrics(self, mdn_net: Network, baseline: Network | None, splits: Splits) -> dict[str, float]:
        x, _ = splits.test
        params = mdn_net(x)
        modes = params.modes()
        errors = self.positioning_errors(x, point(params, C.TOP_PI))
        coverage, n_doubled = self.branch_coverage(modes, x)
        out = {
            C.POSITIONING_RMSE_TOP_PI: _rms(errors),
            C.key("positioning_mean_error", C.TOP_PI): float(errors.mean()),
            C.key("positioning_max_error", C.TOP_PI): float(errors.max()),
            C.key(C.POSITIONING_RMSE, C.TOP_MODE): _rms(self.positioning_errors(x, modes.location[:, 0])),
            C.key(C.POSITIONING_RMSE, C.BEST_OF_MODES): _rms(self.best_of_modes_errors(modes, x)),
            C.key(C.POSITIONING_RMSE, C.PEAK_DENSITY): _rms(self.positioning_errors(x, point(params, C.PEAK_DENSITY))),
            C.key(C.POSITIONING_RMSE, C.MIXTURE_MEAN): _rms(self.positioning_errors(x, point(params, C.MIXTURE_MEAN))),
            C.BRANCH_COVERAGE: coverage,
            "doubled_share": n_doubled / x.shape[0],
            C.MEAN_ACTIVE_COMPONENTS: float((params.pi >= C.ACTIVE_PI).sum(-1).float().mean()),
            "mean_modes": float(modes.significant(C.MIN_MODE_MASS).sum(-1).float().mean()),
        }
        if baseline is not None:
            baseline_errors = self.positioning_errors(x, baseline(x))
            out[C.POSITIONING_RMSE_BASELINE] = _rms(baseline_errors)
            out[C.key("positioning_mean_error", C.BASELINE)] = float(baseline_errors.mean())
        return out
