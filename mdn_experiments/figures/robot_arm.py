"""Figures of the two-link robot arm (Bishop 1994, figures 4 and 5): the workspace and its doubled
region, where the MDN is sure, pi_k over the workspace, the positioning errors, and p(theta|x) at a
few positions against the analytic inverse kinematics."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from mdn_experiments.figures.style import component_colors, plt, save, write


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points (Andrew's monotone chain) as a closed polygon (M + 1, 2)."""
    pts = sorted(map(tuple, np.unique(np.asarray(points, dtype=float), axis=0)))

    def half(sequence):
        chain: list = []
        for px, py in sequence:
            # pop while the last two points and p turn clockwise (or go straight)
            while len(chain) >= 2:
                (ax, ay), (bx, by) = chain[-2], chain[-1]
                if (bx - ax) * (py - ay) - (by - ay) * (px - ax) > 0:
                    break
                chain.pop()
            chain.append((px, py))
        return chain[:-1]

    hull = np.array(half(pts) + half(pts[::-1]))
    return np.vstack([hull, hull[:1]])


def _workspace_axes(ax, hull) -> None:
    ax.plot(hull[:, 0], hull[:, 1], color="k", lw=1, label="convex hull of the reachable region")
    ax.set(xlabel="$x_1$", ylabel="$x_2$", aspect="equal")


def arm_workspace(path: Path, *, positions, upper_branch, doubled, hull) -> Path:
    """Figure 4a: end-effector samples coloured by elbow branch; where both configurations reach."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    ax = axes[0]
    for mask, color, label in (
        (~upper_branch, "tab:blue", r"$\theta_2 < \pi$"),
        (upper_branch, "tab:orange", r"$\theta_2 > \pi$"),
    ):
        ax.scatter(positions[mask, 0], positions[mask, 1], s=5, color=color, alpha=0.6, linewidths=0, label=label)
    _workspace_axes(ax, hull)
    ax.set_title("samples by elbow branch", fontsize=10)
    ax.legend(fontsize=8, markerscale=3)
    ax = axes[1]
    ax.scatter(
        positions[~doubled, 0],
        positions[~doubled, 1],
        s=5,
        color="0.7",
        linewidths=0,
        label="one configuration in the angle box",
    )
    ax.scatter(
        positions[doubled, 0],
        positions[doubled, 1],
        s=5,
        color="tab:red",
        linewidths=0,
        label=f"two configurations ({doubled.mean():.0%} of samples)",
    )
    _workspace_axes(ax, hull)
    ax.set_title("where the inverse problem has two answers", fontsize=10)
    ax.legend(fontsize=8, markerscale=3)
    return save(fig, Path(path))


def scalar_map(path: Path, *, positions, values, hull, label: str, title: str) -> Path:
    """Figure 4b: a value at each test position (here the largest mixing coefficient)."""
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    sc = ax.scatter(positions[:, 0], positions[:, 1], c=values, s=10, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(sc, ax=ax, label=label)
    _workspace_axes(ax, hull)
    ax.set_title(title, fontsize=10)
    return save(fig, Path(path))


def pi_maps(path: Path, *, positions, pi, hull, title: str) -> Path:
    """pi_k(x) over the workspace, one panel per component."""
    K = pi.shape[1]
    cols = min(K, 4)
    rows = -(-K // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= K:
            ax.axis("off")
            continue
        sc = ax.scatter(positions[:, 0], positions[:, 1], c=pi[:, k], s=6, cmap="viridis", vmin=0, vmax=1)
        ax.plot(hull[:, 0], hull[:, 1], color="k", lw=0.8)
        ax.set(aspect="equal", xticks=[], yticks=[], title=f"$\\pi_{{{k + 1}}}(x)$")
    fig.colorbar(sc, ax=axes, shrink=0.8, label="mixing coefficient")
    fig.suptitle(f"mixing coefficients over the workspace, {title}", fontsize=10)
    return write(fig, path)  # no tight_layout: it fights the shared colour bar


def error_lines(path: Path, *, desired, panels, hull) -> Path:
    """Figure 5: a line from each desired position to the position the predicted angles reach."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.0), squeeze=False)
    for ax, (name, reached) in zip(axes.flat, panels):
        segments = np.stack([desired, reached], axis=1)
        ax.add_collection(matplotlib.collections.LineCollection(segments, colors="tab:red", linewidths=0.8))
        ax.scatter(desired[:, 0], desired[:, 1], s=1.5, color="k", linewidths=0)
        _workspace_axes(ax, hull)
        errors = np.linalg.norm(reached - desired, axis=1)
        ax.set_title(f"{name}\nRMS positioning error {np.sqrt(np.mean(errors**2)):.4f}", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
    return save(fig, Path(path))


def angle_components(path: Path, *, mixtures, positions, solutions, box, title: str, modes=None) -> Path:
    """p(theta | x) at a few positions, drawn as its components: a disc at each mean mu_k with
    area proportional to pi_k (the components are far narrower than any plotting grid), the
    analytic inverse-kinematics solutions marked with crosses; modes: per position (location
    (M, 2), mass (M,)), drawn as rings labelled with their mass."""
    n = len(mixtures)
    fig, axes = plt.subplots(1, n, figsize=(3.5 * n, 3.8), squeeze=False)
    (lo1, hi1), (lo2, hi2) = box
    for i, (ax, (pi, mu, sigma), x, sols) in enumerate(zip(axes.flat, mixtures, positions, solutions)):
        ax.plot([lo1, hi1, hi1, lo1, lo1], [lo2, lo2, hi2, hi2, lo2], color="0.6", lw=0.8, ls="--")
        colors = component_colors(len(pi))
        ax.scatter(mu[:, 0], mu[:, 1], s=600 * pi, color=colors, alpha=0.55, linewidths=0)
        for k in np.flatnonzero(pi >= 0.01):
            ax.annotate(
                f"$\\pi$={pi[k]:.2f}\n$\\sigma$={sigma[k].mean():.0e}",
                mu[k],
                fontsize=7,
                xytext=(6, 6),
                textcoords="offset points",
            )
        ax.scatter(sols[:, 0], sols[:, 1], marker="x", s=50, color="k", linewidths=1.5, label="analytic solutions")
        if modes is not None:
            location, mass = modes[i]
            ax.scatter(
                location[:, 0],
                location[:, 1],
                s=160,
                facecolors="none",
                edgecolors="tab:red",
                linewidths=1.2,
                label="modes",
            )
            for point, m in zip(location, mass):
                ax.annotate(
                    f"mass {m:.2f}", point, fontsize=7, color="tab:red", xytext=(6, -12), textcoords="offset points"
                )
        ax.set(
            xlabel=r"$\theta_1$",
            ylabel=r"$\theta_2$",
            xlim=(lo1 - 0.25, hi1 + 0.35),
            ylim=(lo2 - 0.3, hi2 + 0.3),
            title=f"x = ({x[0]:.2f}, {x[1]:.2f}), {len(sols)} solution{'s' * (len(sols) > 1)}",
        )
        ax.title.set_fontsize(9)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"{title}: component means (disc area ∝ $\\pi_k$)"
        + (", modes (rings)" if modes is not None else "")
        + " vs the analytic inverse (dashed: angle box)",
        fontsize=10,
    )
    return save(fig, Path(path))
