"""The configuration, torch-free: the typed schema Hydra composes into (schema.py), every range in
one table (ranges.py), the small settings objects a run receives (settings.py), configs read back
from run folders (saved.py), folder names (names.py) and what a config may build (safety.py)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from mdn_experiments.config import names  # noqa: F401  (registers the folder-name resolvers)
from mdn_experiments.config.ranges import logger_names, validate, validate_model
from mdn_experiments.config.saved import saved_config
from mdn_experiments.config.schema import DATASET_SCHEMAS, register_configs  # noqa: F401  (registers the schemas)
from mdn_experiments.config.settings import ModelSettings, RunSettings, TrackingSettings, TrainSettings


def plain(cfg: DictConfig) -> dict[str, Any]:
    """A config as plain data (resolved; enums as their names): what run folders store."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


__all__ = [
    "DATASET_SCHEMAS",
    "ModelSettings",
    "RunSettings",
    "TrackingSettings",
    "TrainSettings",
    "logger_names",
    "plain",
    "saved_config",
    "validate",
    "validate_model",
]
