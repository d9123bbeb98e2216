"""Training: the one loop (trainer.py) and the training-state files it resumes from (state.py)."""

from mdn_experiments.train.trainer import (LR_SCHEDULES, NONFINITE_POLICIES, FitResult, ReviveDead, Trainer,
                                           cached_predictions, evaluate_loss, fit, predict, resolve_device)

__all__ = ["LR_SCHEDULES", "NONFINITE_POLICIES", "FitResult", "ReviveDead", "Trainer", "cached_predictions",
           "evaluate_loss", "fit", "predict", "resolve_device"]
