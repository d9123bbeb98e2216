"""The interface every experiment's dataset implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor

from mdn_experiments.errors import ConfigError
from mdn_experiments.models import Network


@dataclass
class Splits:
    """(inputs, targets) pairs; inputs (N, *input_shape), targets (N, D), float32."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]

    def to(self, device) -> Splits:
        move = lambda pair: (pair[0].to(device), pair[1].to(device))  # noqa: E731
        return Splits(move(self.train), move(self.val), move(self.test))


class Dataset(ABC):
    """An experiment: its data and its task-specific metrics (its figures: mdn_experiments.figures).

    Subclasses set `name`, `input_shape`, `output_dim`, and may set
    `per_feature_standardization = False` and `throughput_key = "images_per_second"` (images).
    """

    name: str
    input_shape: tuple[int, ...]
    output_dim: int
    per_feature_standardization: bool = True
    throughput_key: str = "samples_per_second"  # metrics.json key of the training throughput
    main_metric: str = "test_nll"  # the metric sweep summaries report for this task
    compare_gaussian: bool = False  # train the K=1 MDN beside the MDN unless `gaussian` says otherwise
    figure_set: str = ""  # the task's own figures (run.figures.FIGURE_SETS); "": none

    @abstractmethod
    def load(self, seed: int) -> Splits:
        """Train/validation/test splits, reproducible from `seed`."""

    def metrics(self, mdn_net: Network, baseline: Network | None, splits: Splits) -> dict[str, float]:
        """Task-specific metrics beyond the common NLL and RMSE ones."""
        return {}


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    """Range check for dataset constructor arguments (reported as dataset.<key>)."""
    if not ok:
        raise ConfigError(f"dataset.{key}", value, allowed)


def require_split_sizes(n_train: int, n_val: int, n_test: int) -> None:
    """The usual checks on generated splits: at least two training points, one of the others."""
    require(n_train >= 2, "n_train", n_train, "an integer >= 2")
    require(n_val >= 1, "n_val", n_val, "an integer >= 1")
    require(n_test >= 1, "n_test", n_test, "an integer >= 1")
