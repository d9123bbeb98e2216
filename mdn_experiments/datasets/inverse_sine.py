"""Bishop's (1994) toy inverse problem: t ~ U(0,1), x = t + a sin(2 pi t) + U(-w, w).

`direction: inverse` predicts t from x (one, two or three valid answers per x);
`direction: forward` predicts x from t (a single answer: the contrast case).

The true conditional density is known, so the Bayes-optimal NLL and the ideal conditional
mean are computed exactly up to a 1-D integral over t, done on a fine grid:
    p(t | x) = 1[|x - f(t)| < w] / L(x),    L(x) = |{t in [0,1] : |x - f(t)| < w}|.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from mdn_experiments.datasets.base import Dataset, Splits, require, require_split_sizes
from mdn_experiments.evaluation import contract as C
from mdn_experiments.evaluation.contract import point
from mdn_experiments.models import Network

DIRECTIONS = ("inverse", "forward")


class InverseSine(Dataset):
    figure_set = "inverse_sine"  # run.figures draws these for a trained run
    main_metric = C.NLL_GAP
    input_shape = (1,)
    output_dim = 1

    def __init__(
        self,
        name: str = "inverse_sine",
        n_train: int = 1000,
        n_val: int = 1000,
        n_test: int = 10000,
        noise: float = 0.1,
        amplitude: float = 0.3,
        direction: str = "inverse",
    ) -> None:
        require_split_sizes(n_train, n_val, n_test)
        require(noise > 0, "noise", noise, "a float > 0 (half-width of the uniform noise)")
        require(direction in DIRECTIONS, "direction", direction, "inverse or forward")
        self.name, self.direction = name, direction
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.noise, self.amplitude = noise, amplitude

    # --- data -------------------------------------------------------------------------------

    def curve(self, t):
        """f(t) = t + a sin(2 pi t), for numpy arrays or tensors."""
        sin = torch.sin if isinstance(t, Tensor) else np.sin
        return t + self.amplitude * sin(2 * math.pi * t)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(inputs, targets), each (n, 1) float32, in the configured direction."""
        t = torch.rand(n, 1, generator=generator, dtype=torch.float64)
        eps = (2 * torch.rand(n, 1, generator=generator, dtype=torch.float64) - 1) * self.noise
        x = self.curve(t) + eps
        pair = (x, t) if self.direction == "inverse" else (t, x)
        return pair[0].float(), pair[1].float()

    def load(self, seed: int) -> Splits:
        g = torch.Generator().manual_seed(seed)
        return Splits(self.sample(self.n_train, g), self.sample(self.n_val, g), self.sample(self.n_test, g))

    # --- the true conditional density ---------------------------------------------------------

    @cached_property
    def _sorted_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """f on a midpoint grid of [0,1] sorted by value, and the running sum of t in that order.

        Then |{t : f(t) < y}| = searchsorted(f_sorted, y) / n and
        int t 1[f(t) < y] dt = cumsum_t[searchsorted(f_sorted, y)] / n.
        """
        n = 500_000  # L(x) >= ~0.01 on the data, so the relative error stays < 1e-3
        t = (np.arange(n) + 0.5) / n
        f = self.curve(t)
        order = np.argsort(f)
        return f[order], np.concatenate([[0.0], np.cumsum(t[order])])

    def _window(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """L(x) and int_{|x - f(t)| < w} t dt for inverse-direction inputs x."""
        f_sorted, cum_t = self._sorted_curve
        n = f_sorted.size
        lo = np.searchsorted(f_sorted, x - self.noise)
        hi = np.searchsorted(f_sorted, x + self.noise)
        return (hi - lo) / n, (cum_t[hi] - cum_t[lo]) / n

    def true_log_density(self, inputs: Tensor, targets: Tensor) -> np.ndarray:
        """log p(target | input) under the generating process: (N,) float64."""
        x = inputs[:, 0].double().cpu().numpy()
        y = targets[:, 0].double().cpu().numpy()
        if self.direction == "forward":
            inside = np.abs(y - self.curve(x)) < self.noise
            return np.where(inside, -math.log(2 * self.noise), -np.inf)
        length, _ = self._window(x)
        inside = np.abs(x - self.curve(y)) < self.noise
        with np.errstate(divide="ignore"):
            return np.where(inside & (length > 0), -np.log(length), -np.inf)

    def branch_count(self, inputs: Tensor, resolution: int = 4001) -> np.ndarray:
        """Number of branches of the noise-free inverse at each input x: the solutions of
        f(t) = x in [0, 1] (1 at the ends, 3 in the middle); (N,) int. Forward direction: 1."""
        x = inputs[:, 0].double().cpu().numpy()
        if self.direction == "forward":
            return np.ones(x.shape[0], dtype=int)
        curve = self.curve(np.linspace(0, 1, resolution))
        counts = np.empty(x.shape[0], dtype=int)
        for start in range(0, x.shape[0], 2000):  # 2000 x 4001 at a time
            above = curve[None, :] > x[start : start + 2000, None]
            counts[start : start + 2000] = (above[:, 1:] != above[:, :-1]).sum(1)  # sign changes
        return counts

    @cached_property
    def _monotone_pieces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """f on [0, 1] split where it turns: each piece's lowest and highest value (P,), and the
        values at the turning points between pieces (P - 1,). From 200 001 grid points."""
        f = self.curve(np.linspace(0, 1, 200_001))
        turns = np.flatnonzero(np.diff(np.sign(np.diff(f))) != 0) + 1  # local extrema of f
        pieces = np.split(f, turns)
        ends = [np.append(piece, f[turn]) for piece, turn in zip(pieces[:-1], turns)] + [pieces[-1]]
        return (np.array([e.min() for e in ends]), np.array([e.max() for e in ends]), f[turns])

    def support_intervals(self, inputs: Tensor) -> np.ndarray:
        """Number of separate intervals of the true p(target | input)'s support: (N,) int.

        Inverse: {t in [0, 1] : x - w < f(t) < x + w}. On each monotone piece of f this set is one
        interval or empty; the intervals of two neighbouring pieces join where f turns inside
        (x - w, x + w). So: the pieces whose range meets the window, less the turning points in it.
        Forward: 1."""
        x = inputs[:, 0].double().cpu().numpy()[:, None]
        if self.direction == "forward":
            return np.ones(x.shape[0], dtype=int)
        low, high, turn_values = self._monotone_pieces
        lo, hi = x - self.noise, x + self.noise
        meets = ((high[None] > lo) & (low[None] < hi)).sum(1)
        joins = ((turn_values[None] > lo) & (turn_values[None] < hi)).sum(1)
        return meets - joins

    def conditional_mean(self, inputs: Tensor) -> np.ndarray:
        """E[target | input] under the generating process: (N,) float64 (NaN where p(x) = 0)."""
        x = inputs[:, 0].double().cpu().numpy()
        if self.direction == "forward":
            return self.curve(x)
        length, moment = self._window(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(length > 0, moment / length, np.nan)

    # --- metrics --------------------------------------------------------------------

    @torch.no_grad()
    def metrics(self, mdn_net: Network, baseline: Network | None, splits: Splits) -> dict[str, float]:
        x, y = splits.test
        params = mdn_net(x)
        true_logp = self.true_log_density(x, y)
        ideal = self.conditional_mean(x)
        y_np = y[:, 0].double().cpu().numpy()
        rmse = lambda pred: float(np.sqrt(np.mean((pred - y_np) ** 2)))  # noqa: E731
        out = {
            "direction": self.direction,
            C.BAYES_NLL: float(-true_logp.mean()),
            C.RMSE_IDEAL_MEAN: rmse(ideal),
            C.RMSE_TOP_PI: rmse(point(params, C.TOP_PI)[:, 0].double().cpu().numpy()),
            C.RMSE_MIXTURE_MEAN: rmse(point(params, C.MIXTURE_MEAN)[:, 0].double().cpu().numpy()),
            C.MEAN_ACTIVE_COMPONENTS: float((params.pi >= C.ACTIVE_PI).sum(-1).float().mean()),
        }
        # branches: modes holding >= MIN_MODE_MASS of the probability against the true support's intervals
        n_modes = params.modes().significant(C.MIN_MODE_MASS).sum(-1).cpu().numpy()
        out[C.BRANCH_COUNT_ACCURACY] = float((n_modes == self.support_intervals(x)).mean())
        # how many components the MDN uses where the answer has one branch and where it has three;
        # "one branch" asks the whole noise window [x - w, x + w] to sit on a single branch
        active = (params.pi >= C.ACTIVE_PI).sum(-1).cpu().numpy()
        branches = self.branch_count(x)
        one_branch = (
            (branches == 1) & (self.branch_count(x - self.noise) == 1) & (self.branch_count(x + self.noise) == 1)
        )
        for mask, name in ((one_branch, "one_branch"), (branches == 3, "three_branches")):
            if mask.any():
                out[f"active_components_{name}"] = float(active[mask].mean())
        if baseline is not None:
            pred = baseline(x)[:, 0].double().cpu().numpy()
            # how far the MSE network is from the true conditional mean E[y|x]
            out[C.RMSE_TO_IDEAL_MEAN_BASELINE] = float(np.sqrt(np.mean((pred - ideal) ** 2)))
        return out
