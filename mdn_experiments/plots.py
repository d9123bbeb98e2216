"""Figures. Each function takes plain numpy arrays, writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 120


def component_colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(k % cmap.N) for k in range(n)]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _scatter_data(ax, x, y) -> None:
    ax.scatter(x, y, s=4, c="0.55", alpha=0.5, linewidths=0, label="training data")


def density_contour(path, x_train, y_train, grid_x, grid_y, density, labels, title) -> Path:
    """Filled contours of p(y|x) (density: (len(grid_y), len(grid_x))) over the training data."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    # cap the colour scale at a high quantile: a few very sharp peaks would wash out the rest
    vmax = float(np.quantile(density, 0.995))
    levels = np.linspace(0, vmax, 13)
    cs = ax.contourf(grid_x, grid_y, np.minimum(density, vmax), levels=levels, cmap="viridis")
    ax.contour(grid_x, grid_y, density, levels=levels[1::2], colors="white", linewidths=0.4, alpha=0.6)
    ax.scatter(x_train, y_train, s=3, c="white", alpha=0.35, linewidths=0, label="training data")
    fig.colorbar(cs, ax=ax, label=f"p({labels[1]}|{labels[0]})")
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    ax.title.set_fontsize(10)
    ax.legend(loc="upper left", fontsize=8, markerscale=3)
    return _save(fig, Path(path))


def mixing_coefficients(path, grid_x, pi, xlabel, title) -> Path:
    """alpha_k(x) for each component k (pi: (len(grid_x), K))."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for k, color in enumerate(component_colors(pi.shape[1])):
        ax.plot(grid_x, pi[:, k], color=color, lw=2, label=f"$\\alpha_{{{k + 1}}}$")
    ax.set(xlabel=xlabel, ylabel="mixing coefficient", ylim=(-0.02, 1.02), title=title)
    ax.title.set_fontsize(10)
    ax.legend(ncol=min(pi.shape[1], 5), fontsize=8, loc="center right")
    return _save(fig, Path(path))


def component_means(path, x_train, y_train, grid_x, mu, sigma, pi, labels, title) -> Path:
    """mu_k(x) with +-sigma_k bands; opacity follows alpha_k so unused components fade out."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    _scatter_data(ax, x_train, y_train)
    for k, color in enumerate(component_colors(mu.shape[1])):
        rgba = np.tile(np.array(color), (len(grid_x), 1))
        rgba[:, 3] = 0.1 + 0.9 * pi[:, k]
        # a line collection lets the opacity vary along the curve
        points = np.stack([grid_x, mu[:, k]], axis=1)
        segments = np.stack([points[:-1], points[1:]], axis=1)
        ax.add_collection(matplotlib.collections.LineCollection(segments, colors=rgba[:-1], linewidths=2.2))
        ax.fill_between(grid_x, mu[:, k] - sigma[:, k], mu[:, k] + sigma[:, k], color=color,
                        alpha=0.12, linewidth=0)
        ax.plot([], [], color=color, lw=2, label=f"$\\mu_{{{k + 1}}}$")
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    ax.set_ylim(y_train.min() - 0.15, y_train.max() + 0.15)
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, ncol=2, markerscale=3)
    return _save(fig, Path(path))


def comparison(path, x_train, y_train, grid_x, best_mean, mse_pred, ideal_mean, labels, title) -> Path:
    """Figure 2a: the MSE network against the mean of the most probable MDN component."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    _scatter_data(ax, x_train, y_train)
    ax.plot(grid_x, ideal_mean, color="k", ls=":", lw=1.5, label=f"true E[{labels[1]}|{labels[0]}]")
    if mse_pred is not None:
        ax.plot(grid_x, mse_pred, color="tab:red", lw=2, label="MSE network")
    ax.scatter(grid_x, best_mean, s=5, color="tab:blue", label="MDN: mean of most probable component")
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, markerscale=2)
    return _save(fig, Path(path))


def loss_curves(path, history, baseline_history, title) -> Path:
    """Training and validation NLL per epoch; the baseline's MSE on a second panel."""
    panels = 2 if baseline_history else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.0), squeeze=False)
    ax = axes[0, 0]
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["train_loss"] for row in history], label="train NLL")
    ax.plot(epochs, [row["val_loss"] for row in history], label="validation NLL")
    best = min(history, key=lambda row: row["val_loss"])
    ax.axvline(best["epoch"], color="0.5", ls="--", lw=1, label=f"kept (epoch {best['epoch']})")
    ax.set(xlabel="epoch", ylabel="NLL (nats/sample)", title=f"MDN, {title}")
    _clip_ylim(ax, history)
    ax.legend(fontsize=8)
    if baseline_history:
        ax = axes[0, 1]
        epochs = [row["epoch"] for row in baseline_history]
        ax.plot(epochs, [row["train_loss"] for row in baseline_history], label="train MSE")
        ax.plot(epochs, [row["val_loss"] for row in baseline_history], label="validation MSE")
        ax.set(xlabel="epoch", ylabel="MSE (standardised targets)", yscale="log", title="MSE baseline")
        ax.legend(fontsize=8)
    return _save(fig, Path(path))


def _clip_ylim(ax, history) -> None:
    """Keep the first epochs' large losses from squashing the interesting part of the curve."""
    values = np.array([[row["train_loss"], row["val_loss"]] for row in history]).ravel()
    low, high = values.min(), np.quantile(values, 0.98)
    pad = 0.05 * (high - low + 1e-9)
    ax.set_ylim(low - pad, high + pad)
