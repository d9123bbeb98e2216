"""Small typed settings objects: where the DictConfig stops. A run's entry turns its composed
config into these (`RunSettings.from_config`), and the trainer, the evaluation and the trackers
receive them instead of the whole config. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from omegaconf import DictConfig

from mdn_experiments.config.ranges import logger_names
from mdn_experiments.config.schema import LrSchedule, OnNonfinite


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


STEPS_PER_EPOCH = 20  # a step budget's minibatch: about this many minibatches per epoch ...
BUDGET_BATCH = (32, 1024)  # ... of this many rows at least and at most
BUDGET_MIN_EPOCHS = 20  # and never fewer epochs than this


def step_budget(n_train: int, steps: int, max_epochs: int) -> tuple[int, int]:
    """(minibatch, epochs) for a budget of `steps` optimizer steps on n_train training rows, from
    the size alone (make uci's protocol, any table's default): about STEPS_PER_EPOCH minibatches
    per epoch, a power of two within BUDGET_BATCH, and the epochs that spend the budget (at least
    BUDGET_MIN_EPOCHS, at most max_epochs). A table of a million rows trains a few epochs, not
    hundreds."""
    low, high = BUDGET_BATCH
    batch = int(min(high, max(low, 2 ** round(math.log2(max(n_train, 1) / STEPS_PER_EPOCH)))))
    per_epoch = math.ceil(max(n_train, 1) / batch)
    return batch, int(min(max_epochs, max(BUDGET_MIN_EPOCHS, round(steps / per_epoch))))


@dataclass(frozen=True)
class TrainSettings:
    """One training phase's loop (train.Trainer): epochs, step size, minibatches, clipping, the
    learning-rate schedule, early stopping, input jitter and the non-finite guard."""

    epochs: int
    lr: float = 1e-3
    batch_size: int | None = None  # None: full batch
    grad_clip: float | None = None  # max total gradient norm; None: no clipping
    lr_schedule: LrSchedule = LrSchedule.constant
    lr_min_factor: float = 0.0  # the cosine schedule ends at lr * lr_min_factor
    patience: int | None = None  # epochs without a better validation loss before stopping
    input_noise: float = 0.0  # Gaussian input jitter, in input standard deviations
    target_noise: float = 0.0  # Gaussian target jitter, in target standard deviations
    random_shift: int = 0  # image inputs: each training image moved by up to this many pixels (0: off)
    ema: float | None = None  # decay per step of the weights' moving average (validated and kept); None: off
    on_nonfinite: OnNonfinite = OnNonfinite.rollback
    rollback_lr_factor: float = 0.5
    max_consecutive_rollbacks: int = 5

    def __post_init__(self) -> None:
        # the choices are enums: a name is taken (fit(..., lr_schedule="cosine")), anything else refused
        object.__setattr__(self, "lr_schedule", LrSchedule(_plain(self.lr_schedule)))
        object.__setattr__(self, "on_nonfinite", OnNonfinite(_plain(self.on_nonfinite)))

    FIELDS = (
        "epochs",
        "lr",
        "batch_size",
        "grad_clip",
        "lr_schedule",
        "lr_min_factor",
        "patience",
        "input_noise",
        "target_noise",
        "random_shift",
        "ema",
        "on_nonfinite",
        "rollback_lr_factor",
        "max_consecutive_rollbacks",
    )

    @classmethod
    def from_trainer(cls, trainer: DictConfig, epochs: int | None = None, budget: int | None = None) -> TrainSettings:
        """From the `trainer` node (a phase may train for other `epochs`, e.g. the MSE baseline);
        `budget`: the training rows over which trainer.steps sets the minibatch and cuts the epochs."""
        values = {name: trainer[name] for name in cls.FIELDS if name in trainer}
        if epochs is not None:
            values["epochs"] = epochs
        if budget is not None:
            values["batch_size"], values["epochs"] = step_budget(budget, trainer.steps, values["epochs"])
        return cls(**values)


@dataclass(frozen=True)
class ModelSettings:
    """The MDN head's settings (the backbone is an object built from its own config node)."""

    K: int
    sigma_min: float
    sigma_transform: str = "softplus"
    covariance: str = "diag"
    standardize: bool = True
    init: str = "default"
    members: int = 1  # an ensemble of this many MDNs (model.members)


@dataclass(frozen=True)
class TrackingSettings:
    """Where the numbers go besides the run folder (run.tracking)."""

    loggers: tuple[str, ...] = ("csv",)
    mlflow_uri: str | None = None  # None: sqlite:///<cwd>/outputs/mlflow.db
    experiment: str | None = None  # None: the sweep folder (a sweep's jobs), else the dataset's name


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs from its config besides the objects built from it (dataset, backbone,
    optimizer: run.build)."""

    seed: int
    baseline: bool
    gaussian: bool | None
    figures: bool
    model: ModelSettings
    mdn_train: TrainSettings
    baseline_train: TrainSettings
    device: str
    precision: str
    threads: int | None
    progress: bool | None
    checkpoint_seconds: float
    revive_dead: bool
    revive_after: int
    tracking: TrackingSettings
    search_role: str | None = None  # "trial": validation scores only; "final": a search's test run
    search_trial: int | None = None  # search_role="final": the trial whose settings it runs

    @classmethod
    def from_config(cls, cfg: DictConfig, n_train: int | None = None) -> RunSettings:
        """From a composed (and validated) config; `n_train` (the training part's rows) turns a step
        budget (trainer.steps with batch_size null) into the minibatch and the epochs."""
        t, m = cfg.trainer, cfg.model
        tracking = cfg.get("tracking") or {}
        search = cfg.get("search") or {}  # runs saved before the key existed: an ordinary run
        steps = t.get("steps")
        budget = n_train if steps is not None and t.batch_size is None and n_train is not None else None
        return cls(
            seed=cfg.seed,
            baseline=cfg.baseline,
            gaussian=cfg.get("gaussian"),  # runs saved before the key existed: None
            figures=cfg.figures,
            model=ModelSettings(
                K=cfg.K,
                sigma_min=m.sigma_min,
                sigma_transform=_plain(m.sigma_transform),
                covariance=_plain(m.get("covariance", "diag")),  # runs saved before it existed: diag
                standardize=m.standardize,
                init=_plain(m.init),
                members=int(m.get("members") or 1),  # runs saved before the key existed: one network
            ),
            mdn_train=TrainSettings.from_trainer(t, budget=budget),
            baseline_train=TrainSettings.from_trainer(t, t.get("baseline_epochs") or t.epochs, budget=budget),
            device=t.device,
            precision=_plain(t.get("precision", "float32")),  # runs saved before the key existed: float32
            threads=t.threads,
            progress=t.progress,
            checkpoint_seconds=t.checkpoint_seconds,
            revive_dead=t.revive_dead,
            revive_after=t.revive_after,
            tracking=TrackingSettings(
                loggers=tuple(logger_names(cfg.get("logger", "csv"))),
                mlflow_uri=tracking.get("mlflow_uri"),
                experiment=tracking.get("experiment"),
            ),
            search_role=_plain(search.get("role")),
            search_trial=search.get("trial"),
        )
