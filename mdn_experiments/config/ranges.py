"""Every range of mdn-run's config in one table, checked before anything is built.

Types and choices are Hydra's to check (the schema); what remains are ranges. Each rule names its
key and what is allowed, and a violation is one ConfigError line. A dataset's own arguments
(sizes, noise, lengths) are checked by the dataset's constructor and a backbone's by its own,
which are the only places they are checked. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from mdn_experiments.errors import ConfigError

MAX_K = 1_000_000  # beyond memory long before this; the memory estimate refuses what cannot fit
MAX_SEED = 2**32 - 1  # what numpy and scikit-learn take as a seed
MAX_EXPERIMENT_NAME = 500  # MLflow refuses longer experiment names
MAX_LR = 1e30  # beyond float32's range an optimizer step overflows
MAX_THREADS = 1024
LOGGERS = ("csv", "tensorboard", "mlflow")
# launchers: how many processes a sweep may start at once (checked on every composed config, so a
# value replayed from a folder is bounded as one typed on the command line is)
JOBS_PER_CORE = 2  # parallel jobs per core at most (make reproduce runs 3 one-thread jobs on 2 cores)
MAX_SLURM_NODES = 1024
MAX_TASKS_PER_NODE = 256
MAX_ARRAY_PARALLELISM = 10_000
MAX_TIMEOUT_MIN = 60 * 24 * 366
LOCAL_LAUNCHERS = (
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
)
DEVICE_KINDS = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class Rule:
    key: str  # dotted config key
    ok: Callable[[Any], bool]  # the value's check (None values reach it too)
    allowed: str  # what is allowed, as the error line says it


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


MODEL_RULES = (
    Rule("K", lambda v: 1 <= v <= MAX_K, f"an integer from 1 to {MAX_K} (the number of mixture components)"),
    Rule("model.sigma_min", lambda v: v > 0, "a float > 0 (the floor on sigma)"),
    Rule("model.members", _optional(lambda v: 1 <= v <= 1000), "an integer from 1 to 1000 (MDNs in the ensemble)"),
)
RUN_RULES = (
    Rule("seed", lambda v: 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}"),
    Rule(
        "tracking.experiment",
        _optional(lambda v: 1 <= len(str(v)) <= MAX_EXPERIMENT_NAME),
        f"a name of 1 to {MAX_EXPERIMENT_NAME} characters (MLflow's limit), or null",
    ),
)
TRAINER_RULES = (
    Rule(
        "trainer.lr", lambda v: 0 < v <= MAX_LR, f"a float > 0 and at most {MAX_LR:g} (optimizers compute in float32)"
    ),
    Rule("trainer.epochs", lambda v: v >= 1, "an integer >= 1"),
    Rule(
        "trainer.baseline_epochs",
        _optional(lambda v: v >= 1),
        "an integer >= 1, or null for the same as trainer.epochs",
    ),
    Rule("trainer.batch_size", _optional(lambda v: v >= 1), "an integer >= 1, or null for full batch"),
    Rule("trainer.steps", _optional(lambda v: 1 <= v <= 10**9), "an integer from 1 to 10^9, or null (epochs alone)"),
    Rule("trainer.grad_clip", _optional(lambda v: v > 0), "a float > 0, or null for no clipping"),
    Rule("trainer.lr_min_factor", lambda v: 0 <= v <= 1, "a float in [0, 1]"),
    Rule("trainer.patience", _optional(lambda v: v >= 1), "an integer >= 1, or null to train every epoch"),
    Rule("trainer.input_noise", lambda v: v >= 0, "a float >= 0"),
    Rule("trainer.target_noise", lambda v: v >= 0, "a float >= 0"),
    Rule("trainer.random_shift", lambda v: 0 <= v <= 8, "an integer from 0 (off) to 8 pixels"),
    Rule(
        "trainer.ema",
        _optional(lambda v: 0 < v < 1),
        "a float in (0, 1), the moving average's decay per optimizer step (e.g. 0.999), or null for off",
    ),
    Rule(
        "trainer.threads",
        _optional(lambda v: 1 <= v <= MAX_THREADS),
        f"an integer from 1 to {MAX_THREADS}, or null for torch's default",
    ),
    Rule("trainer.checkpoint_seconds", lambda v: v >= 0, "a number of seconds >= 0 (0: after every optimizer step)"),
    Rule("trainer.rollback_lr_factor", lambda v: 0 < v <= 1, "a float in (0, 1]"),
    Rule("trainer.revive_after", lambda v: v >= 1, "an integer >= 1 (epochs)"),
    Rule("trainer.max_consecutive_rollbacks", lambda v: v >= 0, "an integer >= 0"),
    Rule(
        "trainer.device",
        lambda v: v == "auto" or str(v).split(":")[0] in DEVICE_KINDS,
        "auto, cpu, cuda, cuda:N or mps",
    ),
)
RULES = MODEL_RULES + RUN_RULES + TRAINER_RULES  # the one table


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def launcher_rules(target: str, cores: int) -> tuple[Rule, ...]:
    """The ranges of a launcher's settings (keys under hydra.launcher): on this machine (joblib,
    submitit's local launcher) bounded by its cores, on SLURM by stated limits."""
    local = target in LOCAL_LAUNCHERS
    most = JOBS_PER_CORE * cores
    return (
        Rule(
            "n_jobs",
            lambda v: v == -1 or _int_in(1, most)(v),
            f"-1 (one job per core) or an integer from 1 to {most} ({JOBS_PER_CORE} per core of this machine)",
        ),
        Rule(
            "tasks_per_node",
            _int_in(1, most if local else MAX_TASKS_PER_NODE),
            f"an integer from 1 to {most if local else MAX_TASKS_PER_NODE}",
        ),
        Rule(
            "nodes",
            _int_in(1, 1 if local else MAX_SLURM_NODES),
            "1" if local else f"an integer from 1 to {MAX_SLURM_NODES}",
        ),
        Rule("array_parallelism", _int_in(1, MAX_ARRAY_PARALLELISM), f"an integer from 1 to {MAX_ARRAY_PARALLELISM}"),
        Rule("cpus_per_task", _optional(_int_in(1, MAX_THREADS)), f"an integer from 1 to {MAX_THREADS}, or null"),
        Rule("gpus_per_node", _optional(_int_in(0, 64)), "an integer from 0 to 64, or null"),
        Rule("timeout_min", _optional(_int_in(1, MAX_TIMEOUT_MIN)), f"an integer from 1 to {MAX_TIMEOUT_MIN}, or null"),
        Rule("max_num_timeout", _optional(_int_in(0, 100)), "an integer from 0 to 100, or null"),
        Rule("signal_delay_s", _optional(_int_in(0, 86_400)), "an integer from 0 to 86400, or null"),
    )


MAX_TRIALS = 10_000  # a search's trials (hydra.sweeper.n_trials)
MAX_SEARCH_BATCH = 1024  # trials asked at once (the launcher's own limits bound what runs at once)
SWEEPER_RULES = (
    Rule("n_trials", _int_in(1, MAX_TRIALS), f"an integer from 1 to {MAX_TRIALS}"),
    Rule("seed", _int_in(0, MAX_SEED), f"an integer from 0 to {MAX_SEED}"),
    Rule("startup_trials", _int_in(1, MAX_TRIALS), f"an integer from 1 to {MAX_TRIALS}"),
    Rule("batch_size", _optional(_int_in(1, MAX_SEARCH_BATCH)), f"an integer from 1 to {MAX_SEARCH_BATCH}, or null"),
)


def check_sweeper(sweeper: DictConfig) -> None:
    """A composed `hydra.sweeper` of the search within SWEEPER_RULES (ConfigError naming the key)."""
    if not str(sweeper.get("_target_", "")).endswith(".SearchSweeper"):
        return
    for rule in SWEEPER_RULES:
        value = OmegaConf.select(sweeper, rule.key, default=None, throw_on_resolution_failure=False)
        if not rule.ok(value):
            raise ConfigError(f"hydra.sweeper.{rule.key}", value, rule.allowed)


def check_launcher(launcher: DictConfig) -> None:
    """A composed `hydra.launcher` within launcher_rules (ConfigError naming hydra.launcher.KEY)."""
    import os

    target = str(launcher.get("_target_", ""))
    for rule in launcher_rules(target, os.cpu_count() or 1):
        if rule.key not in launcher:
            continue
        value = OmegaConf.select(launcher, rule.key, default=None, throw_on_resolution_failure=False)
        if not rule.ok(value):
            raise ConfigError(f"hydra.launcher.{rule.key}", value, rule.allowed)


def _apply(cfg: DictConfig, rules: tuple[Rule, ...]) -> None:
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=None)
        if not rule.ok(value):
            raise ConfigError(rule.key, value, rule.allowed)


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


def _finite(node: Any, prefix: str = "") -> None:
    found = _non_finite(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node, prefix)
    if found:
        raise ConfigError(found[0], found[1], "a finite number (nan and inf are not allowed)")


def logger_names(value: Any) -> list[str]:
    """The configured `logger` as a list of known names (csv always included), or ConfigError."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    names = [value] if isinstance(value, str) else value
    allowed = f"one of {', '.join(LOGGERS)}, or a list of them, e.g. logger=[tensorboard,mlflow]"
    if not isinstance(names, (list, tuple)) or not names or any(name not in LOGGERS for name in names):
        raise ConfigError("logger", value, allowed)
    return ["csv"] + [name for name in LOGGERS[1:] if name in names]


def validate(cfg: DictConfig) -> None:
    """Every range of a composed config (RULES), finite numbers everywhere and a known logger;
    raises ConfigError on the first violation."""
    _finite(cfg)
    _apply(cfg, MODEL_RULES + RUN_RULES)
    logger_names(cfg.get("logger", "csv"))
    _apply(cfg, TRAINER_RULES)


def validate_model(cfg: DictConfig) -> None:
    """The keys that decide a trained network's shape: what loading a finished run needs."""
    _finite(cfg.model, "model")
    _apply(cfg, MODEL_RULES)
