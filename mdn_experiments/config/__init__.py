"""The configuration: the typed schema registered in Hydra's ConfigStore (schema.py), the range
checks, the configs read back from run folders, and what a config may build (safety.py)."""

from mdn_experiments.config.schema import *  # noqa: F401,F403
from mdn_experiments.config.schema import saved_config, validate, validate_model, validate_trainer  # noqa: F401
