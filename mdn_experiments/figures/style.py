"""The figures' common style: matplotlib without a display, one resolution, component colours."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from mdn_experiments import files

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

DPI = 120


def component_colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(k % cmap.N) for k in range(n)]


def save(fig, path: Path) -> Path:
    """Lay out, write and close a figure; returns its path."""
    fig.tight_layout()
    # tight_layout leaves a placeholder layout engine behind, and savefig draws the whole figure
    # once more (unrendered) for any engine: a fifth of its time. The layout is done; the PNG is
    # the same byte for byte without the engine (tests/unit/test_figures_style.py)
    fig.set_layout_engine(None)
    return write(fig, path)


def write(fig, path: Path) -> Path:
    """Write a figure as PNG, whole or not at all and never through a link (files.replaced), and
    close it; returns its path."""
    path = Path(path)
    files.make_folder(path.parent)
    try:
        with files.replaced(path) as fh:
            fig.savefig(fh, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


def scatter_data(ax, x, y) -> None:
    ax.scatter(x, y, s=4, c="0.55", alpha=0.5, linewidths=0, label="training data")
