"""Figures of MNIST (the poster's figure 7): test digits beside their mixtures over 0-9, and where
the most probable component goes wrong, beside the rounded MSE network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdn_experiments.figures.style import plt, save


def confusion(label: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(10, 10) counts: row = true digit, column = predicted digit (integer arrays)."""
    return np.bincount(np.asarray(label) * 10 + np.asarray(predicted), minlength=100).reshape(10, 10)


def digit_mixtures(path: Path, *, images, labels, top_pi, pi, mu, grid, density, n_typical: int, modes=None) -> Path:
    """Figure 7: each test digit beside its predicted mixture over 0..9 (stems: pi_k at mu_k,
    line: the density scaled to the tallest stem, dashed: the label); modes: per digit
    (location (M,), mass (M,)), drawn as triangles on the density with their mass."""
    n = len(images)
    cols = 4
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, 2 * cols, figsize=(2.3 * 2 * cols, 1.9 * rows), gridspec_kw={"width_ratios": [1, 2.2] * cols}
    )
    axes = np.atleast_2d(axes)
    for i in range(rows * cols):
        ax_img, ax_mix = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        if i >= n:
            ax_img.axis("off")
            ax_mix.axis("off")
            continue
        ax_img.imshow(images[i], cmap="gray_r")
        ax_img.set(xticks=[], yticks=[])
        kind = "typical" if i < n_typical else "ambiguous"
        ax_img.set_title(f"{kind}: label {labels[i]}", fontsize=7)
        ax_mix.plot(grid, density[i] / max(density[i].max(), 1e-12) * pi[i].max(), color="0.6", lw=0.8)
        keep = pi[i] >= 0.01
        ax_mix.vlines(mu[i][keep], 0, pi[i][keep], color="tab:blue", lw=2)
        ax_mix.scatter(mu[i][keep], pi[i][keep], s=10, color="tab:blue", zorder=3)
        ax_mix.axvline(labels[i], color="tab:green", ls="--", lw=1)
        if modes is not None:
            location, mass = modes[i]
            ax_mix.scatter(location, np.full(len(location), 1.1), marker="v", s=14, color="tab:orange", zorder=4)
            for value, m in zip(location, mass):
                ax_mix.annotate(
                    f"{m:.2f}",
                    (value, 1.1),
                    fontsize=6,
                    color="tab:orange",
                    ha="center",
                    xytext=(0, 4),
                    textcoords="offset points",
                )
        ax_mix.set(xlim=(-0.7, 9.7), ylim=(0, 1.32), xticks=range(10), yticks=[0, 0.5, 1])
        ax_mix.tick_params(labelsize=6)
        color = "tab:green" if top_pi[i] == labels[i] else "tab:red"
        ax_mix.set_title(f"top-1: {top_pi[i]}", fontsize=7, color=color)
    fig.suptitle(
        "MDN output over the digit value: stems = mixing coefficients at the component means, "
        "grey = density (scaled), triangles = modes with their mass, dashed = label",
        fontsize=9,
    )
    return save(fig, Path(path))


def confusion_matrices(path: Path, *, matrices) -> Path:
    """Where top-1 goes wrong: counts of (true, predicted) digits, the diagonal greyed out."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.2 * len(matrices), 4.6), squeeze=False)
    for ax, (title, counts) in zip(axes.flat, matrices):
        errors = counts.astype(float).copy()
        np.fill_diagonal(errors, np.nan)
        image = ax.imshow(errors, cmap="Reds", vmin=0, vmax=max(np.nanmax(errors), 1))
        for t in range(10):
            for p in range(10):
                if t == p:
                    ax.text(p, t, counts[t, p], ha="center", va="center", fontsize=6, color="0.5")
                elif counts[t, p]:
                    ax.text(p, t, counts[t, p], ha="center", va="center", fontsize=7)
        accuracy = np.trace(counts) / counts.sum()
        ax.set(
            xticks=range(10),
            yticks=range(10),
            xlabel="predicted digit",
            ylabel="true digit",
            title=f"{title}\naccuracy {accuracy:.2%}, {counts.sum() - np.trace(counts)} errors",
        )
        ax.title.set_fontsize(9)
        fig.colorbar(image, ax=ax, shrink=0.8, label="errors")
    return save(fig, Path(path))
