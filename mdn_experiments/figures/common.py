"""The figures every run (and every sweep) draws: losses, component health, calibration, and the
sweep over K. Plain arrays and keyword arguments in, one PNG out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdn_experiments.figures.style import plt, save


def loss_curves(path: Path, *, history, baseline_history, title: str) -> Path:
    """Training and validation NLL per epoch; the baseline's MSE on a second panel."""
    panels = 2 if baseline_history else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.0), squeeze=False)
    ax = axes[0, 0]
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["train_nll"] for row in history], label="train NLL")
    ax.plot(epochs, [row["val_nll"] for row in history], label="validation NLL")
    best = min(history, key=lambda row: row["val_nll"])
    ax.axvline(best["epoch"], color="0.5", ls="--", lw=1, label=f"kept (epoch {best['epoch']})")
    ax.set(xlabel="epoch", ylabel="NLL (nats/sample)", title=f"MDN, {title}")
    _clip_ylim(ax, history)
    ax.legend(fontsize=8)
    if baseline_history:
        ax = axes[0, 1]
        epochs = [row["epoch"] for row in baseline_history]
        ax.plot(epochs, [row["train_mse"] for row in baseline_history], label="train MSE")
        ax.plot(epochs, [row["val_mse"] for row in baseline_history], label="validation MSE")
        ax.set(xlabel="epoch", ylabel="MSE (standardised targets)", yscale="log", title="MSE baseline")
        ax.legend(fontsize=8)
    return save(fig, Path(path))


def health(path: Path, *, history, n_components: int, title: str) -> Path:
    """Component health against the epoch: effective and dead components, responsibility entropy
    and the share of scales at the floor; dotted lines mark revivals (if any)."""
    epochs = [row["epoch"] for row in history]
    panels = [
        ("effective_components", "effective components\n(exp entropy of mean $\\pi$)"),
        ("dead_components", "dead components\n($\\pi$ < 0.01 everywhere)"),
        ("responsibility_entropy", "responsibility entropy\n(nats)"),
        ("sigma_floor_share", "share of scales\nat the floor"),
    ]
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
    return save(fig, Path(path))


def _clip_ylim(ax, history) -> None:
    """Keep the first epochs' large losses from squashing the interesting part of the curve."""
    values = np.array([[row["train_nll"], row["val_nll"]] for row in history]).ravel()
    low, high = values.min(), np.quantile(values, 0.98)
    pad = 0.05 * ((high - low) or abs(high) or 1.0)  # relative: any scale
    ax.set_ylim(low - pad, high + pad)


def calibration(path: Path, *, nominal, observed, pit, title: str) -> Path:
    """Coverage of the highest-density regions against their nominal level (on the diagonal when
    calibrated) and, for 1-D targets (pit not None), the histogram of PIT values (flat when
    calibrated)."""
    panels = 2 if pit is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="calibrated")
    ax.plot(nominal, observed, "o-", color="tab:blue", lw=1.5, ms=4, label="MDN")
    ax.set(
        xlabel="nominal level of the highest-density region",
        ylabel="share of test targets inside",
        xlim=(0, 1),
        ylim=(0, 1),
        title="coverage",
    )
    ax.legend(fontsize=8, loc="lower right")
    if pit is not None:
        ax = axes[0, 1]
        ax.hist(pit, bins=20, range=(0, 1), density=True, color="tab:blue", alpha=0.75)
        ax.axhline(1.0, color="0.6", ls="--", lw=1)
        ax.set(xlabel="PIT = F(y | x)", ylabel="density", xlim=(0, 1), title="PIT histogram")
    fig.suptitle(title, fontsize=10)
    return save(fig, Path(path))


def k_sweep(path: Path, *, table) -> Path:
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
        row[0].annotate(
            f"mean ± std over {'/'.join(map(str, seeds))} seed(s)",
            (0.02, 0.02),
            xycoords="axes fraction",
            fontsize=7,
            color="0.4",
        )
    return save(fig, Path(path))
