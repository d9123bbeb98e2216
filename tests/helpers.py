"""Shared helpers: compose configs like the CLI does, and run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from mdn_experiments.config.compose import compose
from mdn_experiments.evaluation.contract import is_timing

REPO = Path(__file__).resolve().parents[1]

# tiny budgets: every end-to-end test finishes in a few seconds
TINY = [
    "dataset.n_train=200", "dataset.n_val=100", "dataset.n_test=500",
    "trainer.epochs=3", "trainer.batch_size=64", "trainer.progress=false", "trainer.threads=1",
]


def without_timings(metrics: dict) -> dict:
    """metrics.json less its timings (every key ending in _seconds or _per_second): what two runs
    of the same config must agree on."""
    return {key: value for key, value in metrics.items() if not is_timing(key)}


def compose_config(overrides: list[str] | None = None):
    """The composed config for these overrides, exactly as `mdn-run` would see it."""
    return compose(overrides)


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `mdn-run ARGS` in a fresh interpreter (the console script calls cli.main)."""
    return subprocess.run(
        [sys.executable, "-m", "mdn_experiments.cli", *args],
        cwd=cwd or REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})},
    )
