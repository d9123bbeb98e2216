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


def comparison(path, x_train, y_train, grid_x, best_mean, mse_pred, ideal_mean, labels, title, modes=None) -> Path:
    """Figure 2a: the MSE network against the mean of the most probable MDN component; with
    modes=(x, y, mass) the MDN's modes too (marker area proportional to their mass)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    _scatter_data(ax, x_train, y_train)
    ax.plot(grid_x, ideal_mean, color="k", ls=":", lw=1.5, label=f"true E[{labels[1]}|{labels[0]}]")
    if mse_pred is not None:
        ax.plot(grid_x, mse_pred, color="tab:red", lw=2, label="MSE network")
    if modes is not None:
        mx, my, mass = modes
        ax.scatter(mx, my, s=2 + 18 * mass, facecolors="none", edgecolors="tab:orange", linewidths=0.6,
                   label="MDN modes (area ∝ mass)")
    ax.scatter(grid_x, best_mean, s=4, color="tab:blue", label="MDN: mean of most probable component")
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


def health(path, history, n_components, title) -> Path:
    """Component health against the epoch: effective and dead components, responsibility entropy
    and the share of scales at the floor; dotted lines mark revivals (if any)."""
    epochs = [row["epoch"] for row in history]
    panels = [("effective_components", "effective components\n(exp entropy of mean $\\pi$)"),
              ("dead_components", "dead components\n($\\pi$ < 0.01 everywhere)"),
              ("responsibility_entropy", "responsibility entropy\n(nats)"),
              ("sigma_floor_share", "share of scales\nat the floor")]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    revived = [row["epoch"] for row in history if row.get("revived")]
    for ax, (key, label) in zip(axes, panels):
        ax.plot(epochs, [row.get(key, np.nan) for row in history], color="tab:blue", lw=1.5)
        for epoch in revived:
            ax.axvline(epoch, color="tab:red", ls=":", lw=1)
        ax.set(xlabel="epoch", ylabel=label)
        ax.yaxis.label.set_fontsize(9)
    axes[0].set_ylim(0.8, n_components + 0.2)
    axes[1].set_ylim(-0.3, n_components - 0.7)
    axes[1].yaxis.get_major_locator().set_params(integer=True)
    axes[2].set_ylim(bottom=0)
    axes[3].set_ylim(-0.02, 1.02)
    if revived:
        axes[0].plot([], [], color="tab:red", ls=":", label="revival")
        axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, Path(path))


def _clip_ylim(ax, history) -> None:
    """Keep the first epochs' large losses from squashing the interesting part of the curve."""
    values = np.array([[row["train_loss"], row["val_loss"]] for row in history]).ravel()
    low, high = values.min(), np.quantile(values, 0.98)
    pad = 0.05 * (high - low + 1e-9)
    ax.set_ylim(low - pad, high + pad)


# --- two-dimensional inputs (robot arm) -------------------------------------------------------


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


def arm_workspace(path, positions, upper_branch, doubled, hull) -> Path:
    """Figure 4a: end-effector samples coloured by elbow branch; where both configurations reach."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    ax = axes[0]
    for mask, color, label in ((~upper_branch, "tab:blue", r"$\theta_2 < \pi$"),
                               (upper_branch, "tab:orange", r"$\theta_2 > \pi$")):
        ax.scatter(positions[mask, 0], positions[mask, 1], s=5, color=color, alpha=0.6, linewidths=0, label=label)
    _workspace_axes(ax, hull)
    ax.set_title("samples by elbow branch", fontsize=10)
    ax.legend(fontsize=8, markerscale=3)
    ax = axes[1]
    ax.scatter(positions[~doubled, 0], positions[~doubled, 1], s=5, color="0.7", linewidths=0,
               label="one configuration in the angle box")
    ax.scatter(positions[doubled, 0], positions[doubled, 1], s=5, color="tab:red", linewidths=0,
               label=f"two configurations ({doubled.mean():.0%} of samples)")
    _workspace_axes(ax, hull)
    ax.set_title("where the inverse problem has two answers", fontsize=10)
    ax.legend(fontsize=8, markerscale=3)
    return _save(fig, Path(path))


def scalar_map(path, positions, values, hull, label, title) -> Path:
    """Figure 4b: a value at each test position (here the largest mixing coefficient)."""
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    sc = ax.scatter(positions[:, 0], positions[:, 1], c=values, s=10, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(sc, ax=ax, label=label)
    _workspace_axes(ax, hull)
    ax.set_title(title, fontsize=10)
    return _save(fig, Path(path))


def alpha_maps(path, positions, pi, hull, title) -> Path:
    """alpha_k(x) over the workspace, one panel per component."""
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
        ax.set(aspect="equal", xticks=[], yticks=[], title=f"$\\alpha_{{{k + 1}}}(x)$")
    fig.colorbar(sc, ax=axes, shrink=0.8, label="mixing coefficient")
    fig.suptitle(f"mixing coefficients over the workspace, {title}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no tight_layout: it fights the shared colour bar
    plt.close(fig)
    return path


def error_lines(path, desired, panels, hull) -> Path:
    """Figure 5: a line from each desired position to the position the predicted angles reach."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.0), squeeze=False)
    for ax, (name, reached) in zip(axes.flat, panels):
        segments = np.stack([desired, reached], axis=1)
        ax.add_collection(matplotlib.collections.LineCollection(segments, colors="tab:red", linewidths=0.8))
        ax.scatter(desired[:, 0], desired[:, 1], s=1.5, color="k", linewidths=0)
        _workspace_axes(ax, hull)
        errors = np.linalg.norm(reached - desired, axis=1)
        ax.set_title(f"{name}\nRMS positioning error {np.sqrt(np.mean(errors ** 2)):.4f}", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
    return _save(fig, Path(path))


def angle_components(path, mixtures, positions, solutions, box, title, modes=None) -> Path:
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
            ax.annotate(f"$\\pi$={pi[k]:.2f}\n$\\sigma$={sigma[k].mean():.0e}", mu[k], fontsize=7,
                        xytext=(6, 6), textcoords="offset points")
        ax.scatter(sols[:, 0], sols[:, 1], marker="x", s=50, color="k", linewidths=1.5, label="analytic solutions")
        if modes is not None:
            location, mass = modes[i]
            ax.scatter(location[:, 0], location[:, 1], s=160, facecolors="none", edgecolors="tab:red",
                       linewidths=1.2, label="modes")
            for point, m in zip(location, mass):
                ax.annotate(f"mass {m:.2f}", point, fontsize=7, color="tab:red", xytext=(6, -12),
                            textcoords="offset points")
        ax.set(xlabel=r"$\theta_1$", ylabel=r"$\theta_2$", xlim=(lo1 - 0.25, hi1 + 0.35), ylim=(lo2 - 0.3, hi2 + 0.3),
               title=f"x = ({x[0]:.2f}, {x[1]:.2f}), {len(sols)} solution{'s' * (len(sols) > 1)}")
        ax.title.set_fontsize(9)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{title}: component means (disc area ∝ $\\pi_k$)" + (", modes (rings)" if modes is not None else "")
                 + " vs the analytic inverse (dashed: angle box)",
                 fontsize=10)
    return _save(fig, Path(path))


# --- images (MNIST) ---------------------------------------------------------------------------


def digit_mixtures(path, images, labels, top1, pi, mu, grid, density, n_typical, modes=None) -> Path:
    """Figure 7: each test digit beside its predicted mixture over 0..9 (stems: pi_k at mu_k,
    line: the density scaled to the tallest stem, dashed: the label); modes: per digit
    (location (M,), mass (M,)), drawn as triangles on the density with their mass."""
    n = len(images)
    cols = 4
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.3 * 2 * cols, 1.9 * rows),
                             gridspec_kw={"width_ratios": [1, 2.2] * cols})
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
                ax_mix.annotate(f"{m:.2f}", (value, 1.1), fontsize=6, color="tab:orange", ha="center",
                                xytext=(0, 4), textcoords="offset points")
        ax_mix.set(xlim=(-0.7, 9.7), ylim=(0, 1.32), xticks=range(10), yticks=[0, 0.5, 1])
        ax_mix.tick_params(labelsize=6)
        color = "tab:green" if top1[i] == labels[i] else "tab:red"
        ax_mix.set_title(f"top-1: {top1[i]}", fontsize=7, color=color)
    fig.suptitle("MDN output over the digit value: stems = mixing coefficients at the component means, "
                 "grey = density (scaled), triangles = modes with their mass, dashed = label", fontsize=9)
    return _save(fig, Path(path))


def confusion_matrices(path, matrices) -> Path:
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
        ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit",
               title=f"{title}\naccuracy {accuracy:.2%}, {counts.sum() - np.trace(counts)} errors")
        ax.title.set_fontsize(9)
        fig.colorbar(image, ax=ax, shrink=0.8, label="errors")
    return _save(fig, Path(path))


# --- sweeps -----------------------------------------------------------------------------------


def k_sweep(path, table) -> Path:
    """NLL, the task's main metric and BIC against K (mean ± std over seeds), one row per dataset."""
    fig, axes = plt.subplots(len(table), 3, figsize=(13, 3.6 * len(table)), squeeze=False)
    for row, (dataset, entries) in zip(axes, table.items()):
        K = [e["K"] for e in entries]
        get = lambda key: ([e[key] for e in entries], [e[f"{key}_std"] for e in entries])  # noqa: E731
        for key, label in (("test_nll", "test"), ("val_nll", "validation")):
            mean, std = get(key)
            row[0].errorbar(K, mean, yerr=std, marker="o", capsize=3, label=label)
        row[0].set(xlabel="K", ylabel="NLL (nats/sample)", title=f"{dataset}: NLL")
        row[0].legend(fontsize=8)
        mean, std = get("main_value")
        row[1].errorbar(K, mean, yerr=std, marker="o", capsize=3, color="tab:green")
        row[1].set(xlabel="K", ylabel=entries[0]["main_metric"], title=f"{dataset}: {entries[0]['main_metric']}")
        mean, std = get("bic")
        row[2].errorbar(K, mean, yerr=std, marker="o", capsize=3, color="tab:purple")
        row[2].set(xlabel="K", ylabel="BIC on the training set", title=f"{dataset}: BIC (lower is better)")
        seeds = sorted({e["n_seeds"] for e in entries})
        for ax in row:
            ax.set_xticks(K)
            ax.title.set_fontsize(10)
        row[0].annotate(f"mean ± std over {'/'.join(map(str, seeds))} seed(s)", (0.02, 0.02),
                        xycoords="axes fraction", fontsize=7, color="0.4")
    return _save(fig, Path(path))


# --- calibration (every dataset) ----------------------------------------------------------------


def calibration(path, nominal, observed, pit, title) -> Path:
    """Coverage of the highest-density regions against their nominal level (on the diagonal when
    calibrated) and, for 1-D targets (pit not None), the histogram of PIT values (flat when
    calibrated)."""
    panels = 2 if pit is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="calibrated")
    ax.plot(nominal, observed, "o-", color="tab:blue", lw=1.5, ms=4, label="MDN")
    ax.set(xlabel="nominal level of the highest-density region", ylabel="share of test targets inside",
           xlim=(0, 1), ylim=(0, 1), title="coverage")
    ax.legend(fontsize=8, loc="lower right")
    if pit is not None:
        ax = axes[0, 1]
        ax.hist(pit, bins=20, range=(0, 1), density=True, color="tab:blue", alpha=0.75)
        ax.axhline(1.0, color="0.6", ls="--", lw=1)
        ax.set(xlabel="PIT = F(y | x)", ylabel="density", xlim=(0, 1), title="PIT histogram")
    fig.suptitle(title, fontsize=10)
    return _save(fig, Path(path))
