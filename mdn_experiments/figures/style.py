"""The figures' common style: matplotlib without a display, one resolution, component colours."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

DPI = 120


def component_colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(k % cmap.N) for k in range(n)]


def save(fig, path: Path) -> Path:
    """Lay out, write and close a figure; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def scatter_data(ax, x, y) -> None:
    ax.scatter(x, y, s=4, c="0.55", alpha=0.5, linewidths=0, label="training data")
