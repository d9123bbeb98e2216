"""Datasets: each generates or loads its splits and knows its own metrics and figures."""

from mdn_experiments.datasets.base import Dataset, Splits

__all__ = ["Dataset", "Splits"]
