"""The typed schema of mdn-run's config, registered in Hydra's ConfigStore: every YAML option
extends one of these dataclasses, so Hydra itself refuses a wrong type or an unknown choice
(`K=three`, `model.covariance=fulll`) before any code of ours runs. Torch-free.

Choices are enums (str-valued, so they compare equal to their names); the objects a config builds
name their classes in `_target_` in the YAML files, checked against `safety`'s allow-lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Covariance(str, Enum):
    """How each component's covariance is parametrised (mdn.MIXTURES)."""

    diag = "diag"  # a sigma per target dimension
    isotropic = "isotropic"  # one sigma per component
    full = "full"  # a Cholesky factor


class SigmaTransform(str, Enum):
    softplus = "softplus"
    exp = "exp"


class Init(str, Enum):
    """How the MDN head starts (models.Network.init_from_targets)."""

    default = "default"  # the layer's random initialisation
    quantiles = "quantiles"  # component means spread over the targets' quantiles
    gmm = "gmm"  # a Gaussian mixture fitted to the targets (scikit-learn)


class LrSchedule(str, Enum):
    constant = "constant"
    cosine = "cosine"


class Precision(str, Enum):
    """The backbone's arithmetic: float32, or bfloat16 autocast (the head, the log-sum-exp of the
    NLL and a Cholesky factor stay float32), or auto: bf16 where the device computes bfloat16 in
    hardware (a CUDA GPU that supports it, a CPU with AVX512-BF16 or AMX), else float32."""

    float32 = "float32"
    bf16 = "bf16"
    auto = "auto"


class OnNonfinite(str, Enum):
    """What a non-finite loss or gradient does: roll back the epoch with a smaller lr, or stop."""

    rollback = "rollback"
    stop = "stop"


@dataclass
class TrainerConfig:
    optimizer: Any = MISSING  # {_target_: torch.optim.Adam, _partial_: true, ...}
    lr: float = MISSING
    epochs: int = MISSING
    baseline_epochs: Optional[int] = None  # the MSE baseline's epochs; None: the same as epochs
    batch_size: Optional[int] = None  # None: full batch (with `steps`: from the training part's size)
    steps: Optional[int] = None  # a budget in optimizer steps (settings.step_budget); None: epochs alone
    grad_clip: Optional[float] = None  # max total gradient norm; None: no clipping
    lr_schedule: LrSchedule = LrSchedule.constant
    lr_min_factor: float = 0.0  # cosine schedule ends at lr * lr_min_factor
    patience: Optional[int] = None  # stop after this many epochs without a better val loss
    input_noise: float = 0.0  # std of Gaussian input jitter, in input standard deviations
    target_noise: float = 0.0  # std of Gaussian target jitter, in target standard deviations
    random_shift: int = 0  # image inputs: each training image moved by up to this many pixels; 0: off
    ema: Optional[float] = None  # decay per step of an exponential moving average of the weights; None: off
    device: str = "auto"
    precision: Precision = Precision.float32  # bf16: the backbone under bfloat16 autocast; auto: bf16 where native
    threads: Optional[int] = None  # torch intra-op threads; None: torch's default
    progress: Optional[bool] = None  # None: a progress bar only on a terminal
    checkpoint_seconds: float = 60.0  # save the training state this often (and on SIGTERM/SIGINT)
    on_nonfinite: OnNonfinite = OnNonfinite.rollback
    rollback_lr_factor: float = 0.5  # each rollback multiplies the learning rate by this
    max_consecutive_rollbacks: int = 5  # one more failure in a row stops training (status diverged)
    revive_dead: bool = False  # re-seed a component dead for revive_after epochs (train.ReviveDead)
    revive_after: int = 10


@dataclass
class ModelConfig:
    backbone: Any = MISSING  # {_target_: ..., architecture kwargs}; input shape filled by code
    sigma_min: float = MISSING
    sigma_transform: SigmaTransform = SigmaTransform.softplus
    covariance: Covariance = Covariance.diag
    standardize: bool = True
    init: Init = Init.default
    members: int = 1  # an ensemble of this many MDNs (one mixture of members * K components); MLP only


@dataclass
class InverseSineConfig:
    _target_: str = MISSING  # in conf/dataset/inverse_sine.yaml
    name: str = "inverse_sine"
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    noise: float = MISSING
    amplitude: float = MISSING
    direction: str = MISSING  # inverse | forward (checked by the dataset)


@dataclass
class RobotArmConfig:
    _target_: str = MISSING  # in conf/dataset/robot_arm.yaml
    name: str = "robot_arm"
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    l1: float = MISSING
    l2: float = MISSING
    theta1_range: List[float] = MISSING
    theta2_range: List[float] = MISSING
    noise: float = MISSING


@dataclass
class MnistConfig:
    _target_: str = MISSING  # in conf/dataset/mnist.yaml
    name: str = "mnist"
    root: str = MISSING
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    download: bool = True
    mirrors: Optional[List[str]] = None


@dataclass
class TableConfig:
    _target_: str = MISSING  # in conf/dataset/table.yaml
    name: str = "table"
    path: Optional[str] = None
    target: Any = None  # a column name or 0-based index, or a list of them
    features: Any = None  # None: every other column; or a list of names/indices
    format: str = "auto"  # auto (by suffix) | csv | tsv | whitespace | npy | npz | parquet
    split: str = "random"  # random | index
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    train_index: Optional[str] = None
    test_index: Optional[str] = None
    missing: str = "error"  # error | drop
    constant: str = "error"  # error | drop
    dequantize: bool = False
    resolution: Optional[float] = None


@dataclass
class UciConfig:
    _target_: str = MISSING  # in conf/dataset/uci.yaml
    name: str = "concrete"
    root: str = MISSING
    split: int = 0
    val_fraction: float = 0.2
    missing: str = "error"
    constant: str = "drop"
    dequantize: bool = False
    resolution: Optional[float] = None


class SearchRole(str, Enum):
    """A run's part in a validation-only search (mdn_experiments.search)."""

    trial = "trial"  # scores the validation part only: its metrics.json holds no test score
    final = "final"  # the best trial's settings, scoring the test part once


@dataclass
class SearchConfig:
    role: Optional[SearchRole] = None  # None: an ordinary run; set by the search for its jobs
    trial: Optional[int] = None  # role=final: the trial whose settings it runs


@dataclass
class TrackingConfig:
    mlflow_uri: Optional[str] = None  # None: sqlite:///<cwd>/outputs/mlflow.db
    experiment: Optional[str] = None  # None: the sweep folder (a sweep's jobs), else the dataset's name


@dataclass
class RunConfig:
    K: int = MISSING
    seed: int = 0
    baseline: bool = True
    gaussian: Optional[bool] = None  # also train the K=1 MDN; None: the dataset's default (tables: yes)
    figures: bool = True
    logger: Any = "csv"  # csv | tensorboard | mlflow, or a list of them (ranges.logger_names)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    dataset: Any = MISSING
    model: Any = MISSING
    trainer: Any = MISSING


DATASET_SCHEMAS = {
    "mdn_experiments.datasets.inverse_sine.InverseSine": InverseSineConfig,
    "mdn_experiments.datasets.robot_arm.RobotArm": RobotArmConfig,
    "mdn_experiments.datasets.mnist.Mnist": MnistConfig,
    "mdn_experiments.datasets.table.TableDataset": TableConfig,
    "mdn_experiments.datasets.uci.Uci": UciConfig,
}


def register_configs() -> None:
    """Store the schemas; each YAML option extends its schema with `/schema/<group>/...@_here_`."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/dataset", name="inverse_sine", node=InverseSineConfig)
    cs.store(group="schema/dataset", name="robot_arm", node=RobotArmConfig)
    cs.store(group="schema/dataset", name="mnist", node=MnistConfig)
    cs.store(group="schema/dataset", name="table", node=TableConfig)
    cs.store(group="schema/dataset", name="uci", node=UciConfig)


register_configs()
