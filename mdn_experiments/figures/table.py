"""Figures of a table's run: the predicted against the observed test targets, with each input's
central 50 % and 90 % predictive intervals, one panel per target column (the MDN beside the
K=1 MDN and the MSE network's point prediction when they were trained)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdn_experiments.figures.style import plt, save

LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)  # the 90 % and 50 % central intervals and the median
MAX_POINTS = 400  # test points drawn per panel (a random subset, fixed, of larger test sets)


def predicted_vs_observed(path: Path, *, panels, baseline, title: str) -> Path:
    """panels: (column name, observed (n,), quantiles (n, 5) at LEVELS); baseline (n, D) or None."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    for d, (ax, (name, observed, q)) in enumerate(zip(axes[0], panels)):
        inside50 = (observed >= q[:, 1]) & (observed <= q[:, 3])
        inside90 = (observed >= q[:, 0]) & (observed <= q[:, 4])
        ax.vlines(observed, q[:, 0], q[:, 4], color="tab:blue", alpha=0.25, lw=1.0, label="MDN 90 % interval")
        ax.vlines(observed, q[:, 1], q[:, 3], color="tab:blue", alpha=0.7, lw=2.0, label="MDN 50 % interval")
        ax.scatter(observed, q[:, 2], s=8, color="tab:blue", zorder=3, label="MDN median")
        if baseline is not None:
            ax.scatter(observed, baseline[:, d], s=8, marker="x", color="tab:red", zorder=3, label="MSE network")
        low, high = np.nanmin([observed.min(), q[:, 0].min()]), np.nanmax([observed.max(), q[:, 4].max()])
        ax.plot([low, high], [low, high], color="0.3", lw=1, ls="--", label="predicted = observed")
        ax.set_xlabel(f"observed {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(
            f"{title}: {name}\ninside the 50 % interval: {inside50.mean():.0%}, the 90 %: {inside90.mean():.0%}",
            fontsize=10,
        )
        ax.legend(fontsize=7, loc="upper left")
    return save(fig, path)
