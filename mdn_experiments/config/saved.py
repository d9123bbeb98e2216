"""Configs read back from run folders (model.pt, state.pt) as typed DictConfigs: data checked
before anything is built from it."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mdn_experiments.config.safety import check_targets
from mdn_experiments.config.schema import DATASET_SCHEMAS, ModelConfig, RunConfig, TrainerConfig
from mdn_experiments.errors import RunFolderError
from mdn_experiments.files import check_shape


def saved_config(data: Any, source: str) -> DictConfig:
    """A config read back from a run folder (model.pt, state.pt), as a typed DictConfig.

    The file is data: every `_target_` is checked against the allow-lists of `safety` before
    anything else, no value may be an interpolation, and the values are merged into the typed
    schema (the run's, its dataset's, the model's and the trainer's), so a wrong type or an
    unknown key is refused here. Raises RunFolderError naming `source` and the key."""
    if not isinstance(data, dict):
        raise RunFolderError(f"{source}: the saved config is not a mapping ({type(data).__name__})")
    check_shape(data, source)  # depth and size bounded before any recursive walk (aliases count per path)
    check_targets(data, source, saved=True)
    dataset = data.get("dataset")
    schema = DATASET_SCHEMAS.get(dataset.get("_target_") if isinstance(dataset, dict) else None)
    if schema is None:  # check_targets let it through only when dataset names no class at all
        raise RunFolderError(f"{source}: dataset._target_ is missing: the saved config names no dataset")
    try:
        typed = OmegaConf.merge(
            OmegaConf.structured(RunConfig),
            {
                "dataset": OmegaConf.structured(schema),
                "model": OmegaConf.structured(ModelConfig),
                "trainer": OmegaConf.structured(TrainerConfig),
            },
            data,
        )
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        raise RunFolderError(
            f"{source}: {key}: {str(err).splitlines()[0]}: not a config this version of mdn-experiments wrote"
        ) from None
    missing = sorted(OmegaConf.missing_keys(typed))
    if missing:
        raise RunFolderError(f"{source}: the saved config has no value for {', '.join(missing[:5])}")
    return typed
