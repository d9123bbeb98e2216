"""Each task's figures of a trained run: the task (its dataset) declares its figure set
(`Dataset.figure_set`); the functions here ask the trained networks and hand the figure modules
arrays (inputs, targets, mixture parameters, densities on grids). The figure modules import
neither datasets nor models, so the same drawings serve any source of arrays (a run here,
`MDNRegressor.predict_dist` in a notebook)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mdn_experiments.datasets.base import Dataset, Splits
from mdn_experiments.datasets.inverse_sine import InverseSine
from mdn_experiments.datasets.mnist import Mnist
from mdn_experiments.datasets.robot_arm import RobotArm
from mdn_experiments.datasets.table import TableDataset
from mdn_experiments.evaluation.calibration import quantiles
from mdn_experiments.evaluation.contract import MIN_MODE_MASS
from mdn_experiments.figures import inverse_sine as inverse_sine_figures
from mdn_experiments.figures import mnist as mnist_figures
from mdn_experiments.figures import robot_arm as robot_arm_figures
from mdn_experiments.figures import table as table_figures
from mdn_experiments.models import Network, predict


def draw_task(
    dataset: Dataset, *, mdn_net: Network, baseline: Network | None, splits: Splits, fig_dir: Path
) -> list[Path]:
    """The figures the dataset declares (its `figure_set`; none for a set without one)."""
    draw = FIGURE_SETS.get(dataset.figure_set)
    return draw(dataset=dataset, mdn_net=mdn_net, baseline=baseline, splits=splits, fig_dir=fig_dir) if draw else []


@torch.no_grad()
def draw_inverse_sine(
    *, dataset: InverseSine, mdn_net: Network, baseline: Network | None, splits: Splits, fig_dir: Path
) -> list[Path]:
    """contour.png, pi.png, means.png and comparison.png of a trained run, on a grid over the data."""
    x_train, y_train = (a[:, 0].cpu().numpy() for a in splits.train)
    labels = ("x", "t") if dataset.direction == "inverse" else ("t", "x")
    grid_x = np.linspace(x_train.min(), x_train.max(), 400)
    grid_y = np.linspace(y_train.min() - 0.1, y_train.max() + 0.1, 300)
    device = next(mdn_net.parameters()).device
    params = mdn_net(torch.tensor(grid_x, dtype=torch.float32, device=device)[:, None])
    # density on the (x, y) grid: broadcast the 400 mixtures against the 300 target values
    y_col = torch.tensor(grid_y, dtype=torch.float32, device=device)[:, None]
    density = params.unsqueeze(0).log_prob(y_col[:, None, :]).exp().cpu().numpy()  # (300, 400)
    pi = params.pi.cpu().numpy()
    mu, sigma = params.mu[..., 0].cpu().numpy(), params.component_std()[..., 0].cpu().numpy()
    best = params.most_probable_mean()[:, 0].cpu().numpy()
    found = params.modes()
    keep = found.significant(MIN_MODE_MASS).cpu().numpy()
    modes = (
        np.broadcast_to(grid_x[:, None], keep.shape)[keep],
        found.location[..., 0].cpu().numpy()[keep],
        found.mass.cpu().numpy()[keep],
    )
    grid_t = torch.tensor(grid_x, dtype=torch.float32)[:, None]
    ideal = dataset.conditional_mean(grid_t)
    mse_pred = baseline(grid_t.to(device))[:, 0].cpu().numpy() if baseline is not None else None
    title = f"{dataset.name} ({dataset.direction}), K={params.n_components}"
    return [
        inverse_sine_figures.density_contour(
            fig_dir / "contour.png",
            x_train=x_train,
            y_train=y_train,
            grid_x=grid_x,
            grid_y=grid_y,
            density=density,
            labels=labels,
            title=f"p({labels[1]}|{labels[0]}) of the MDN, {title}",
        ),
        inverse_sine_figures.pi_curves(
            fig_dir / "pi.png",
            grid_x=grid_x,
            pi=pi,
            xlabel=labels[0],
            title=f"mixing coefficients $\\pi_k({labels[0]})$ (Bishop's $\\alpha_k$), {title}",
        ),
        inverse_sine_figures.component_means(
            fig_dir / "means.png",
            x_train=x_train,
            y_train=y_train,
            grid_x=grid_x,
            mu=mu,
            sigma=sigma,
            pi=pi,
            labels=labels,
            title=f"component means $\\mu_k$ ± $\\sigma_k$ (opacity ∝ $\\pi_k$), {title}",
        ),
        inverse_sine_figures.comparison(
            fig_dir / "comparison.png",
            x_train=x_train,
            y_train=y_train,
            grid_x=grid_x,
            best_mean=best,
            mse_pred=mse_pred,
            ideal_mean=ideal,
            labels=labels,
            title=f"MSE network vs the MDN's most probable component and modes, {title}",
            modes=modes,
        ),
    ]


def workspace_hull(dataset: RobotArm, n: int = 400) -> np.ndarray:
    """Convex hull (closed polygon, (M, 2)) of the reachable positions.

    A linear function of the position is extreme on the image of the angle box either on the
    image of the box's edges or where the Jacobian is singular (th2 = 0, pi, 2pi: the arm folded
    straight), so the hull of those curves is the hull of the whole workspace."""
    (a1, b1), (a2, b2) = dataset.theta1_range, dataset.theta2_range
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    th1, th2 = a1 + (b1 - a1) * t, a2 + (b2 - a2) * t
    curves = [
        torch.stack([th1, torch.full_like(t, a2)], -1),
        torch.stack([th1, torch.full_like(t, b2)], -1),
        torch.stack([torch.full_like(t, a1), th2], -1),
        torch.stack([torch.full_like(t, b1), th2], -1),
    ]
    curves += [torch.stack([th1, torch.full_like(t, s)], -1) for s in (0.0, math.pi, 2 * math.pi) if a2 < s < b2]
    return robot_arm_figures.convex_hull(dataset.fk(torch.cat(curves)).numpy())


@torch.no_grad()
def draw_robot_arm(
    *, dataset: RobotArm, mdn_net: Network, baseline: Network | None, splits: Splits, fig_dir: Path
) -> list[Path]:
    """workspace.png, top_pi.png, pi.png, positioning_errors.png and contour.png of a trained run."""
    x_train, theta_train = (a.cpu() for a in splits.train)
    x_test = splits.test[0]
    params = mdn_net(x_test)
    hull = workspace_hull(dataset)
    x_np = x_test.cpu().numpy()
    K = params.n_components
    paths = [
        robot_arm_figures.arm_workspace(
            fig_dir / "workspace.png",
            positions=x_train.numpy(),
            upper_branch=theta_train[:, 1].numpy() > math.pi,
            doubled=dataset.valid_solutions(x_train)[1].all(-1).numpy(),
            hull=hull,
        ),
        robot_arm_figures.scalar_map(
            fig_dir / "top_pi.png",
            positions=x_np,
            values=params.pi.max(-1).values.cpu().numpy(),
            hull=hull,
            label="largest mixing coefficient max$_k\\,\\pi_k(x)$",
            title=f"{dataset.name}, K={K}: where the MDN is sure (1) or split between branches",
        ),
        robot_arm_figures.pi_maps(
            fig_dir / "pi.png", positions=x_np, pi=params.pi.cpu().numpy(), hull=hull, title=f"{dataset.name}, K={K}"
        ),
    ]
    reached_mdn = dataset.fk(params.most_probable_mean().double()).cpu().numpy()
    panels = [("MDN (mean of most probable component)", reached_mdn)]
    if baseline is not None:
        panels.insert(0, ("MSE network", dataset.fk(baseline(x_test).double()).cpu().numpy()))
    paths.append(
        robot_arm_figures.error_lines(fig_dir / "positioning_errors.png", desired=x_np, panels=panels, hull=hull)
    )
    # p(theta | x) at four test positions: two where both branches are valid, two where one is
    solutions, inside = dataset.valid_solutions(x_test)
    doubled = inside.all(-1).cpu()
    picks = torch.cat([torch.nonzero(doubled)[:2, 0], torch.nonzero(~doubled)[:2, 0]])
    std = params.component_std()
    mixtures = [(params.pi[i].cpu().numpy(), params.mu[i].cpu().numpy(), std[i].cpu().numpy()) for i in picks.tolist()]
    found = params[picks].modes()
    keep = found.significant(MIN_MODE_MASS)
    modes = [
        (found.location[j][keep[j]].cpu().numpy(), found.mass[j][keep[j]].cpu().numpy()) for j in range(len(picks))
    ]
    paths.append(
        robot_arm_figures.angle_components(
            fig_dir / "contour.png",
            mixtures=mixtures,
            positions=x_np[picks.numpy()],
            solutions=[solutions[i][inside[i]].cpu().numpy() for i in picks.tolist()],
            box=(dataset.theta1_range, dataset.theta2_range),
            title=f"p($\\theta$|x) of the MDN, {dataset.name}, K={K}",
            modes=modes,
        )
    )
    return paths


@torch.no_grad()
def draw_mnist(
    *, dataset: Mnist, mdn_net: Network, baseline: Network | None, splits: Splits, fig_dir: Path
) -> list[Path]:
    """samples.png and confusions.png of a trained run, on the test set."""
    x, y = splits.test
    label = y[:, 0].long()
    params = predict(mdn_net, x)
    pi = params.pi
    entropy = -(pi * params.log_pi).sum(-1)
    # 8 test digits in file order, then the 16 with the most spread-out mixing coefficients
    ambiguous = torch.argsort(entropy, descending=True)[:16]
    picks = torch.cat([torch.arange(min(8, x.shape[0])), ambiguous]).tolist()
    grid = torch.linspace(-1.0, 10.0, 1101)
    chosen = params[picks]
    density = chosen.unsqueeze(0).log_prob(grid[:, None, None].to(x.device)).exp().T  # (picks, grid)
    found = chosen.modes()
    keep = found.significant(MIN_MODE_MASS)
    modes = [
        (found.location[j, keep[j], 0].cpu().numpy(), found.mass[j, keep[j]].cpu().numpy()) for j in range(len(picks))
    ]
    top_pi = dataset.digit(params.most_probable_mean()[:, 0])
    paths = [
        mnist_figures.digit_mixtures(
            fig_dir / "samples.png",
            images=x[picks, 0].cpu().numpy(),
            labels=label[picks].cpu().numpy(),
            top_pi=top_pi[picks].cpu().numpy(),
            pi=pi[picks].cpu().numpy(),
            mu=params.mu[picks, :, 0].cpu().numpy(),
            grid=grid.numpy(),
            density=density.cpu().numpy(),
            n_typical=min(8, x.shape[0]),
            modes=modes,
        )
    ]
    matrices = [("MDN (most probable component)", mnist_figures.confusion(label.cpu().numpy(), top_pi.cpu().numpy()))]
    if baseline is not None:
        matrices.append(
            (
                "MSE network (rounded)",
                mnist_figures.confusion(label.cpu().numpy(), dataset.digit(predict(baseline, x)[:, 0]).cpu().numpy()),
            )
        )
    paths.append(mnist_figures.confusion_matrices(fig_dir / "confusions.png", matrices=matrices))
    return paths


@torch.no_grad()
def draw_table(
    *, dataset: TableDataset, mdn_net: Network, baseline: Network | None, splits: Splits, fig_dir: Path
) -> list[Path]:
    """predicted.png: per target column, predicted (median, 50 % and 90 % intervals) against observed."""
    x, y = splits.test
    shown = np.sort(np.random.default_rng(0).permutation(len(y))[: table_figures.MAX_POINTS])
    x_shown = x[torch.as_tensor(shown)]  # only the rows drawn are asked about (a test part can be large)
    mixture = predict(mdn_net, x_shown)
    panels = []
    for d, name in enumerate(dataset.data.target_names):
        q = quantiles(mixture.marginal(d), table_figures.LEVELS).cpu().numpy()
        panels.append((name, y[shown, d].cpu().numpy(), q))
    point = predict(baseline, x_shown).cpu().numpy() if baseline is not None else None
    return [
        table_figures.predicted_vs_observed(
            fig_dir / "predicted.png", panels=panels, baseline=point, title=dataset.name
        )
    ]


FIGURE_SETS: dict[str, Callable[..., list[Path]]] = {
    "inverse_sine": draw_inverse_sine,
    "robot_arm": draw_robot_arm,
    "mnist": draw_mnist,
    "table": draw_table,
}
