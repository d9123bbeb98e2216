"""Mixture density network experiments (Bishop 1994) from the command line, and an MDN library.

    from mdn_experiments import MLP, build_network, fit

The MDN maths (the head, the mixture types, the loss, modes, tempered sampling) is in
`mdn_experiments.mdn` (torch only, copyable); calibration and proper scores in
`mdn_experiments.evaluation`; `mdn-run`, `mdn-predict` and `mdn-resume` are the command-line tools.
The names below are imported on first use, so `import mdn_experiments` alone does not load torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # the scikit-learn estimator
    "MDNRegressor": "estimator",
    # the MDN maths
    "MDNHead": "mdn",
    "Mixture": "mdn",
    "DiagonalMixture": "mdn",
    "IsotropicMixture": "mdn",
    "FullMixture": "mdn",
    "Modes": "mdn",
    "mixture_from_raw": "mdn",
    "nll": "mdn",
    "COVARIANCES": "mdn",
    # networks and training
    "MLP": "models",
    "CNN": "models",
    "Network": "models",
    "build_network": "models",
    "fit": "train.trainer",
    "Trainer": "train.trainer",
    "FitResult": "train.trainer",
    "predict": "train.trainer",
    # scores, trained runs
    "calibrate": "evaluation.calibration",
    "crps": "evaluation.calibration",
    "pit": "evaluation.calibration",
    "hdr_levels": "evaluation.calibration",
    "load_run": "run.artifacts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"mdn_experiments.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mdn_experiments' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
