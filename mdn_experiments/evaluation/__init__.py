"""Scores of predicted mixtures against observed targets: calibration and proper scores
(calibration.py) and component health (health.py)."""

from mdn_experiments.evaluation.calibration import (LEVELS, Calibration, calibrate, crps, hdr_levels, ks_uniform,
                                                    pit)
from mdn_experiments.evaluation.health import DEAD_PI, HEALTH_KEYS, dead_mask, health

__all__ = ["LEVELS", "Calibration", "calibrate", "crps", "hdr_levels", "ks_uniform", "pit", "DEAD_PI",
           "HEALTH_KEYS", "dead_mask", "health"]
