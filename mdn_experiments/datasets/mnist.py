"""MNIST digit value regressed as a scalar: a CNN with an MDN head offers candidate digits.

Each training image has one label, yet an ambiguous digit (a 4 that could be a 9) gets several
components, where an MSE network would answer a meaningless average (6.5).

Splits (deterministic, independent of the seed): validation = the last `n_val` images of the
training file, training = the first `n_train` of the others, test = the first `n_test` images of
the test file. Inputs (N, 1, 28, 28) in [0, 1]; targets (N, 1) the digit as a float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mdn_experiments.datasets.base import Dataset, Splits, require
from mdn_experiments.datasets.idx import MNIST_MIRRORS, DataError, ensure_mnist_files, read_idx
from mdn_experiments.evaluation import contract as C
from mdn_experiments.evaluation.contract import point
from mdn_experiments.models import Network, predict

N_TRAIN_FILE, N_TEST_FILE = 60000, 10000


class Mnist(Dataset):
    figure_set = "mnist"  # run.figures draws these for a trained run
    main_metric = C.ACCURACY_TOP_PI
    input_shape = (1, 28, 28)
    output_dim = 1
    per_feature_standardization = False  # one scale for all pixels
    throughput_key = "images_per_second"

    def __init__(
        self,
        name: str = "mnist",
        root: str = "data/mnist",
        n_train: int = 55000,
        n_val: int = 5000,
        n_test: int = 10000,
        download: bool = True,
        mirrors: list[str] | None = None,
    ) -> None:
        require(n_val >= 1, "n_val", n_val, "an integer >= 1")
        require(
            1 <= n_train <= N_TRAIN_FILE - n_val,
            "n_train",
            n_train,
            f"an integer in [1, {N_TRAIN_FILE} - dataset.n_val]",
        )
        require(1 <= n_test <= N_TEST_FILE, "n_test", n_test, f"an integer in [1, {N_TEST_FILE}]")
        self.name, self.root = name, Path(root).expanduser()
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.download, self.mirrors = download, tuple(mirrors) if mirrors else MNIST_MIRRORS

    def load(self, seed: int) -> Splits:
        files = ensure_mnist_files(self.root, self.download, self.mirrors)
        train_x = read_idx(files["train-images-idx3-ubyte.gz"])
        train_y = read_idx(files["train-labels-idx1-ubyte.gz"])
        test_x = read_idx(files["t10k-images-idx3-ubyte.gz"])
        test_y = read_idx(files["t10k-labels-idx1-ubyte.gz"])
        if (
            train_x.shape != (N_TRAIN_FILE, 28, 28)
            or train_y.shape != (N_TRAIN_FILE,)
            or test_x.shape != (N_TEST_FILE, 28, 28)
            or test_y.shape != (N_TEST_FILE,)
        ):
            raise DataError(
                f"{self.root}: unexpected MNIST shapes {train_x.shape}, {train_y.shape}, {test_x.shape}, {test_y.shape}"
            )

        def pair(images: np.ndarray, labels: np.ndarray):
            # converted and scaled by torch in place: the same floats as numpy's astype and
            # division, in a twelfth of the time (numpy's two fresh arrays cost 0.8 s)
            x = torch.tensor(images).to(torch.float32).div_(255.0).unsqueeze(1)
            return x, torch.tensor(labels).to(torch.float32).unsqueeze(1)

        val_start = N_TRAIN_FILE - self.n_val
        return Splits(
            train=pair(train_x[: self.n_train], train_y[: self.n_train]),
            val=pair(train_x[val_start:], train_y[val_start:]),
            test=pair(test_x[: self.n_test], test_y[: self.n_test]),
        )

    # --- metrics ----------------------------------------------------------------------------

    @staticmethod
    def digit(values: torch.Tensor) -> torch.Tensor:
        """The digit a real-valued prediction stands for: rounded and clipped to 0..9."""
        return values.round().clamp(0, 9).long()

    @torch.no_grad()
    def metrics(self, mdn_net: Network, baseline: Network | None, splits: Splits) -> dict[str, float]:
        x, y = splits.test
        label = y[:, 0].long()
        params = predict(mdn_net, x)
        accuracy = lambda values: float((self.digit(values[:, 0]) == label).float().mean())  # noqa: E731
        active = params.pi >= C.ACTIVE_PI
        hit = (self.digit(params.mu[..., 0]) == label[:, None]) & active
        out = {
            C.ACCURACY_TOP_PI: accuracy(point(params, C.TOP_PI)),
            C.key("accuracy", C.TOP_MODE): accuracy(point(params, C.TOP_MODE)),
            C.ACCURACY_ANY_ACTIVE: float(hit.any(-1).float().mean()),
            C.MEAN_ACTIVE_COMPONENTS: float(active.sum(-1).float().mean()),
            C.key("accuracy", C.MIXTURE_MEAN): accuracy(point(params, C.MIXTURE_MEAN)),
        }
        if baseline is not None:
            out[C.ACCURACY_BASELINE] = accuracy(predict(baseline, x))
        return out
