"""The search's figure: what each trial scored on the validation part, in order and per K.
Plain arrays and keyword arguments in, one PNG out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdn_experiments.figures.style import plt, save


def search_trials(path: Path, *, trial, val_nll, K, best: int, title: str) -> Path:
    """Left: validation NLL per trial (colour: K) with the best so far; right: the same per K.
    `trial`, `val_nll`, `K`: one entry per finished trial; `best`: the chosen trial's number.
    A trial far worse than the rest is drawn as a triangle at the top edge."""
    trial, val_nll, K = np.asarray(trial), np.asarray(val_nll, dtype=float), np.asarray(K)
    low, top = _range(val_nll)
    shown, above = np.minimum(val_nll, top), val_nll > top
    ks = sorted(set(K.tolist()))
    cmap = plt.get_cmap("viridis")
    colour = {k: cmap(i / max(len(ks) - 1, 1)) for i, k in enumerate(ks)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    order = np.argsort(trial)
    left.step(
        trial[order],
        np.minimum.accumulate(val_nll[order]),
        where="post",
        color="0.3",
        lw=1.2,
        label="best so far",
        zorder=2,
    )
    rng = np.random.default_rng(0)  # horizontal jitter on the right panel only, to tell points apart
    for i, k in enumerate(ks):
        for marker, at in (("o", (K == k) & ~above), ("^", (K == k) & above)):
            left.scatter(
                trial[at],
                shown[at],
                color=colour[k],
                marker=marker,
                s=28,
                zorder=3,
                label=f"K={k}" if marker == "o" else None,
            )
            right.scatter(i + rng.uniform(-0.15, 0.15, at.sum()), shown[at], color=colour[k], marker=marker, s=22)
        right.hlines(val_nll[K == k].min(), i - 0.3, i + 0.3, color=colour[k], lw=2)
    chosen = trial == best
    left.scatter(
        trial[chosen],
        shown[chosen],
        marker="*",
        s=260,
        facecolor="none",
        edgecolor="tab:red",
        lw=1.5,
        label=f"chosen: trial {best}",
        zorder=4,
    )
    left.set(xlabel="trial", ylabel="validation NLL (nats/sample)", title=title, ylim=(low, top))
    left.xaxis.get_major_locator().set_params(integer=True)
    left.legend(fontsize=8, ncol=2)
    right.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
    right.set(ylabel="validation NLL (nats/sample)", title="per K (bar: the best of each)", ylim=(low, top))
    return save(fig, Path(path))


def _range(values) -> tuple[float, float]:
    """The y-range: every trial, unless a few are far worse than the rest (then up to the 90 %
    quantile plus a margin)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = finite.min(), finite.max()
    if finite.size >= 5:
        high = min(high, np.quantile(finite, 0.9) + (np.quantile(finite, 0.9) - low))
    span = max(high - low, 1e-6)
    return low - 0.08 * span, high + 0.12 * span
