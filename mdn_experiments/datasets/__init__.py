"""Datasets: each generates or loads its splits and knows its own metrics and figures.

`Dataset` and `Splits` are imported on first use, so that `datasets.reading` (the table reader,
torch-free) can serve the torch-free predictor."""

from __future__ import annotations

import importlib

__all__ = ["Dataset", "Splits"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("mdn_experiments.datasets.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
