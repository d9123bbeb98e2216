"""Figures of the inverse-sine problem (Bishop 1994, figures 2 and 3): p(t|x) over the data, the
mixing coefficients pi_k(x), the component means, and the MSE network against the MDN's answer."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from mdn_experiments.figures.style import component_colors, plt, save, scatter_data


def density_contour(path: Path, *, x_train, y_train, grid_x, grid_y, density, labels, title: str) -> Path:
    """Filled contours of p(y|x) (density: (len(grid_y), len(grid_x))) over the training data."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    # cap the colour scale at a high quantile: a few very sharp peaks would wash out the rest
    vmax = max(float(np.quantile(density, 0.995)), 1e-12)  # > 0, so the levels increase
    # levels and colours on a square-root scale: a narrow one-branch window peaks several times
    # higher than each of three overlapping branches, and a linear scale leaves those flat
    levels = vmax * np.linspace(0, 1, 13) ** 2
    norm = matplotlib.colors.PowerNorm(gamma=0.5, vmin=0, vmax=vmax)
    cs = ax.contourf(grid_x, grid_y, np.minimum(density, vmax), levels=levels, cmap="viridis", norm=norm)
    ax.contour(grid_x, grid_y, density, levels=levels[1::2], colors="white", linewidths=0.4, alpha=0.6)
    ax.scatter(x_train, y_train, s=3, c="white", alpha=0.35, linewidths=0, label="training data")
    fig.colorbar(cs, ax=ax, label=f"p({labels[1]}|{labels[0]})")
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    ax.title.set_fontsize(10)
    ax.legend(loc="upper left", fontsize=8, markerscale=3)
    return save(fig, Path(path))


def pi_curves(path: Path, *, grid_x, pi, xlabel: str, title: str) -> Path:
    """pi_k(x) for each component k (pi: (len(grid_x), K))."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for k, color in enumerate(component_colors(pi.shape[1])):
        ax.plot(grid_x, pi[:, k], color=color, lw=2, label=f"$\\pi_{{{k + 1}}}$")
    ax.set(xlabel=xlabel, ylabel="mixing coefficient", ylim=(-0.02, 1.02), title=title)
    ax.title.set_fontsize(10)
    ax.legend(ncol=min(pi.shape[1], 5), fontsize=8, loc="center right")
    return save(fig, Path(path))


def component_means(path: Path, *, x_train, y_train, grid_x, mu, sigma, pi, labels, title: str) -> Path:
    """mu_k(x) with +-sigma_k bands; opacity follows pi_k so unused components fade out."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    scatter_data(ax, x_train, y_train)
    for k, color in enumerate(component_colors(mu.shape[1])):
        rgba = np.tile(np.array(color), (len(grid_x), 1))
        rgba[:, 3] = 0.1 + 0.9 * pi[:, k]
        # a line collection lets the opacity vary along the curve
        points = np.stack([grid_x, mu[:, k]], axis=1)
        segments = np.stack([points[:-1], points[1:]], axis=1)
        ax.add_collection(matplotlib.collections.LineCollection(segments, colors=rgba[:-1], linewidths=2.2))
        ax.fill_between(grid_x, mu[:, k] - sigma[:, k], mu[:, k] + sigma[:, k], color=color, alpha=0.12, linewidth=0)
        ax.plot([], [], color=color, lw=2, label=f"$\\mu_{{{k + 1}}}$")
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    ax.set_ylim(y_train.min() - 0.15, y_train.max() + 0.15)
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, ncol=2, markerscale=3)
    return save(fig, Path(path))


def comparison(
    path: Path, *, x_train, y_train, grid_x, best_mean, mse_pred, ideal_mean, labels, title: str, modes=None
) -> Path:
    """Figure 2a: the MSE network against the mean of the most probable MDN component; with
    modes=(x, y, mass) the MDN's modes too (marker area proportional to their mass)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    scatter_data(ax, x_train, y_train)
    ax.plot(grid_x, ideal_mean, color="k", ls=":", lw=1.5, label=f"true E[{labels[1]}|{labels[0]}]")
    if mse_pred is not None:
        ax.plot(grid_x, mse_pred, color="tab:red", lw=2, label="MSE network")
    if modes is not None:
        mx, my, mass = modes
        ax.scatter(
            mx,
            my,
            s=2 + 18 * mass,
            facecolors="none",
            edgecolors="tab:orange",
            linewidths=0.6,
            label="MDN modes (area ∝ mass)",
        )
    ax.scatter(grid_x, best_mean, s=4, color="tab:blue", label="MDN: mean of most probable component")
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, markerscale=2)
    return save(fig, Path(path))
