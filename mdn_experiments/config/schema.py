"""Typed config schema (registered in Hydra's ConfigStore) and the range checks run before
anything is built.

Types are enforced by Hydra at composition time (`K=three` fails before any code of ours runs);
ranges are checked by `validate()`, which raises a ConfigError naming the key and what is allowed.
Dataset-specific ranges are checked by each dataset's constructor, also before training.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mdn_experiments.errors import ConfigError, RunFolderError
from mdn_experiments.config.safety import check_targets
from mdn_experiments.mdn import COVARIANCES, SIGMA_TRANSFORMS
from mdn_experiments.models import INITS
from mdn_experiments.run.tracking import logger_names
from mdn_experiments.train import LR_SCHEDULES, NONFINITE_POLICIES


@dataclass
class TrainerConfig:
    optimizer: Any = MISSING  # {_target_: torch.optim.Adam, _partial_: true, ...}
    lr: float = MISSING
    epochs: int = MISSING
    baseline_epochs: Optional[int] = None  # the MSE baseline's epochs; None: the same as epochs
    batch_size: Optional[int] = None  # None: full batch
    grad_clip: Optional[float] = None  # max total gradient norm; None: no clipping
    lr_schedule: str = "constant"
    lr_min_factor: float = 0.0  # cosine schedule ends at lr * lr_min_factor
    patience: Optional[int] = None  # stop after this many epochs without a better val loss
    input_noise: float = 0.0  # std of Gaussian input jitter, in input standard deviations
    device: str = "auto"
    threads: Optional[int] = None  # torch intra-op threads; None: torch's default
    progress: Optional[bool] = None  # None: a progress bar only on a terminal
    checkpoint_seconds: float = 60.0  # save the training state this often (and on SIGTERM/SIGINT)
    on_nonfinite: str = "rollback"  # or "stop": what a non-finite loss or gradient does
    rollback_lr_factor: float = 0.5  # each rollback multiplies the learning rate by this
    max_consecutive_rollbacks: int = 5  # one more failure in a row stops training (status diverged)
    revive_dead: bool = False  # re-seed a component dead for revive_after epochs (train.ReviveDead)
    revive_after: int = 10


@dataclass
class ModelConfig:
    backbone: Any = MISSING  # {_target_: ..., architecture kwargs}; input shape filled by code
    sigma_min: float = MISSING
    sigma_transform: str = "softplus"
    covariance: str = "diag"  # diag | isotropic | full (Cholesky factor)
    standardize: bool = True
    init: str = "default"  # default | quantiles | gmm: how the MDN head starts (models.Network.init_from_targets)


@dataclass
class InverseSineConfig:
    _target_: str = "mdn_experiments.datasets.inverse_sine.InverseSine"
    name: str = "inverse_sine"
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    noise: float = MISSING
    amplitude: float = MISSING
    direction: str = MISSING


@dataclass
class RobotArmConfig:
    _target_: str = "mdn_experiments.datasets.robot_arm.RobotArm"
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
    _target_: str = "mdn_experiments.datasets.mnist.Mnist"
    name: str = "mnist"
    root: str = MISSING
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    download: bool = True
    mirrors: Optional[List[str]] = None


@dataclass
class TrackingConfig:
    mlflow_uri: Optional[str] = None  # None: sqlite:///<cwd>/outputs/mlflow.db
    experiment: Optional[str] = None  # None: the sweep folder (a sweep's jobs), else the dataset's name


@dataclass
class RunConfig:
    K: int = MISSING
    seed: int = 0
    baseline: bool = True
    figures: bool = True
    logger: Any = "csv"  # csv | tensorboard | mlflow, or a list of them (mdn_experiments.run.tracking)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    dataset: Any = MISSING
    model: Any = MISSING
    trainer: Any = MISSING


def register_configs() -> None:
    """Store the schemas; each YAML option extends its schema with `/schema/<group>/...@_here_`."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/dataset", name="inverse_sine", node=InverseSineConfig)
    cs.store(group="schema/dataset", name="robot_arm", node=RobotArmConfig)
    cs.store(group="schema/dataset", name="mnist", node=MnistConfig)


register_configs()

DATASET_SCHEMAS = {"mdn_experiments.datasets.inverse_sine.InverseSine": InverseSineConfig,
                   "mdn_experiments.datasets.robot_arm.RobotArm": RobotArmConfig,
                   "mdn_experiments.datasets.mnist.Mnist": MnistConfig}


def saved_config(data: Any, source: str) -> DictConfig:
    """A config read back from a run folder (model.pt, state.pt), as a typed DictConfig.

    The file is data: every `_target_` is checked against the allow-lists of `safety` before
    anything else, no value may be an interpolation, and the values are merged into the typed
    schema (the run's, its dataset's, the model's and the trainer's), so a wrong type or an
    unknown key is refused here. Raises RunFolderError naming `source` and the key."""
    if not isinstance(data, dict):
        raise RunFolderError(f"{source}: the saved config is not a mapping ({type(data).__name__})")
    check_targets(data, source, saved=True)
    dataset = data.get("dataset")
    schema = DATASET_SCHEMAS.get(dataset.get("_target_") if isinstance(dataset, dict) else None)
    if schema is None:  # check_targets let it through only when dataset names no class at all
        raise RunFolderError(f"{source}: dataset._target_ is missing: the saved config names no dataset")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(RunConfig), {
            "dataset": OmegaConf.structured(schema), "model": OmegaConf.structured(ModelConfig),
            "trainer": OmegaConf.structured(TrainerConfig)}, data)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        raise RunFolderError(f"{source}: {key}: {str(err).splitlines()[0]}: not a config this version of "
                             "mdn-experiments wrote") from None
    missing = sorted(OmegaConf.missing_keys(typed))
    if missing:
        raise RunFolderError(f"{source}: the saved config has no value for {', '.join(missing[:5])}")
    return typed


# --- folder names ---------------------------------------------------------------------------------

_PROCESS_TOKEN = secrets.token_hex(3)  # one per process: two runs started in the same second differ
MAX_NAME_BYTES = 200  # file systems allow 255 bytes per name


def safe_name(text: Any, fallback: str = "job") -> str:
    """`text` as one folder name that cannot leave its parent: '/', '\\', '%' and control
    characters are %-encoded (so distinct texts stay distinct), '.' and '..' are escaped, and a
    name too long for the file system is cut and ends in a hash of the whole."""
    text = str(text)
    if not text:
        return fallback
    out = "".join(f"%{ord(c):02X}" if c in "%/\\" or ord(c) < 32 or ord(c) == 127 else c for c in text)
    if out in (".", ".."):
        out = out.replace(".", "%2E")
    if len(out.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        out = out.encode()[:MAX_NAME_BYTES - 13].decode("utf-8", "ignore") + "~" + digest
    return out


OmegaConf.register_new_resolver("mdn.token", lambda: _PROCESS_TOKEN, use_cache=True, replace=True)
OmegaConf.register_new_resolver("mdn.safe_name", lambda text, fallback="job": safe_name(text, str(fallback)),
                                replace=True)


MAX_K = 1_000_000  # beyond memory long before this; the memory estimate refuses what cannot fit
MAX_SEED = 2**32 - 1  # what numpy and scikit-learn take as a seed
MAX_EXPERIMENT_NAME = 500  # MLflow refuses longer experiment names
MAX_LR = 1e30  # beyond float32's range an optimizer step overflows
MAX_THREADS = 1024


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _non_finite(node: Any, prefix: str = "") -> tuple[str, float] | None:
    """The first key (dotted) whose value is a non-finite float (nan, inf), or None."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        name = f"{prefix}.{key}" if prefix and isinstance(key, str) else f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            return name, value
        found = _non_finite(value, name)
        if found:
            return found
    return None


def validate(cfg: DictConfig) -> None:
    """Range checks on the composed config; raises ConfigError on the first violation."""
    found = _non_finite(OmegaConf.to_container(cfg, resolve=True))
    if found:
        raise ConfigError(found[0], found[1], "a finite number (nan and inf are not allowed)")
    validate_model(cfg)
    _check(0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, f"an integer from 0 to {MAX_SEED}")
    logger_names(cfg.get("logger", "csv"))
    experiment = (cfg.get("tracking") or {}).get("experiment")
    _check(experiment is None or 1 <= len(str(experiment)) <= MAX_EXPERIMENT_NAME, "tracking.experiment", experiment,
           f"a name of 1 to {MAX_EXPERIMENT_NAME} characters (MLflow's limit), or null")
    validate_trainer(cfg)


def validate_model(cfg: DictConfig) -> None:
    """The keys that decide the trained network's shape (what loading a finished run needs)."""
    found = _non_finite(OmegaConf.to_container(cfg.model, resolve=True), "model")
    if found:
        raise ConfigError(found[0], found[1], "a finite number (nan and inf are not allowed)")
    _check(1 <= cfg.K <= MAX_K, "K", cfg.K, f"an integer from 1 to {MAX_K} (the number of mixture components)")
    m = cfg.model
    _check(m.sigma_min > 0, "model.sigma_min", m.sigma_min, "a float > 0 (the floor on sigma)")
    _check(
        m.sigma_transform in SIGMA_TRANSFORMS,
        "model.sigma_transform", m.sigma_transform, f"one of {', '.join(SIGMA_TRANSFORMS)}",
    )
    _check(m.covariance in COVARIANCES, "model.covariance", m.covariance,
           f"one of {', '.join(COVARIANCES)} (per-dimension sigmas, one sigma per component, full Cholesky factor)")
    _check(m.init in INITS, "model.init", m.init,
           "one of default (random), quantiles (means spread over the targets), gmm (a Gaussian mixture fitted to them)")
    # the backbone's own arguments are checked by its constructor (models.py), before training


def validate_trainer(cfg: DictConfig) -> None:
    t = cfg.trainer
    _check(0 < t.lr <= MAX_LR, "trainer.lr", t.lr, f"a float > 0 and at most {MAX_LR:g} (optimizers compute in float32)")
    _check(t.epochs >= 1, "trainer.epochs", t.epochs, "an integer >= 1")
    _check(t.get("baseline_epochs") is None or t.baseline_epochs >= 1, "trainer.baseline_epochs",
           t.get("baseline_epochs"), "an integer >= 1, or null for the same as trainer.epochs")
    _check(t.batch_size is None or t.batch_size >= 1, "trainer.batch_size", t.batch_size,
           "an integer >= 1, or null for full batch")
    _check(t.grad_clip is None or t.grad_clip > 0, "trainer.grad_clip", t.grad_clip,
           "a float > 0, or null for no clipping")
    _check(t.lr_schedule in LR_SCHEDULES, "trainer.lr_schedule", t.lr_schedule,
           f"one of {', '.join(LR_SCHEDULES)}")
    _check(0 <= t.lr_min_factor <= 1, "trainer.lr_min_factor", t.lr_min_factor, "a float in [0, 1]")
    _check(t.patience is None or t.patience >= 1, "trainer.patience", t.patience,
           "an integer >= 1, or null to train every epoch")
    _check(t.input_noise >= 0, "trainer.input_noise", t.input_noise, "a float >= 0")
    _check(t.threads is None or 1 <= t.threads <= MAX_THREADS, "trainer.threads", t.threads,
           f"an integer from 1 to {MAX_THREADS}, or null for torch's default")
    _check(t.checkpoint_seconds >= 0, "trainer.checkpoint_seconds", t.checkpoint_seconds,
           "a number of seconds >= 0 (0: after every optimizer step)")
    _check(t.on_nonfinite in NONFINITE_POLICIES, "trainer.on_nonfinite", t.on_nonfinite,
           f"one of {', '.join(NONFINITE_POLICIES)}")
    _check(0 < t.rollback_lr_factor <= 1, "trainer.rollback_lr_factor", t.rollback_lr_factor, "a float in (0, 1]")
    _check(t.revive_after >= 1, "trainer.revive_after", t.revive_after, "an integer >= 1 (epochs)")
    _check(t.max_consecutive_rollbacks >= 0, "trainer.max_consecutive_rollbacks", t.max_consecutive_rollbacks,
           "an integer >= 0")
    _check(t.device == "auto" or t.device.split(":")[0] in ("cpu", "cuda", "mps"), "trainer.device",
           t.device, "auto, cpu, cuda, cuda:N or mps")
