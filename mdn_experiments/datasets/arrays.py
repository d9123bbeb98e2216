"""Arrays already in memory as a dataset (the scikit-learn estimator's `fit(X, y)`): every row trains
but a validation share drawn with the seed, which chooses the kept weights as a run's does. There
is no test part: the estimator's caller holds the data it scores on."""

from __future__ import annotations

import math

import numpy as np
import torch

from mdn_experiments.datasets.base import Dataset, Splits


class ArrayDataset(Dataset):
    """x (N, F) and y (N, D), finite numbers; `val_fraction` of the rows (at least one) validate."""

    name = "arrays"

    def __init__(self, x: np.ndarray, y: np.ndarray, val_fraction: float = 0.1) -> None:
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.y = np.ascontiguousarray(y, dtype=np.float32)
        n = self.x.shape[0]
        self.input_shape, self.output_dim = (self.x.shape[1],), self.y.shape[1]
        self.n_val = min(n - 2, max(1, math.ceil(val_fraction * n)))
        self.n_train, self.n_test = n - self.n_val, 0

    def load(self, seed: int) -> Splits:
        order = np.random.default_rng(seed).permutation(self.x.shape[0])
        val, train = order[: self.n_val], order[self.n_val :]

        def part(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(self.x[rows]), torch.from_numpy(self.y[rows])

        empty = (torch.zeros(0, *self.input_shape), torch.zeros(0, self.output_dim))
        return Splits(part(train), part(val), empty)
