"""The metrics contract: one place for the thresholds, the point-prediction rules and the run
statuses that metrics.json, history.csv, the sweep summary, REPORT.md and references.yaml share.
Torch-free constants and small functions; the datasets, the run and the tools read them from here.
"""

from __future__ import annotations

# --- thresholds: one constant per concept ---------------------------------------------------------
ACTIVE_PI = 0.05  # a component with pi >= this at an input is active there (mean_active_components)
MIN_MODE_MASS = 0.05  # a mode holding less probability is not counted as a branch or a candidate answer
DEAD_PI = 0.01  # a component whose pi stays below this on every input is dead
BRANCH_RADIUS = 0.05  # rad: an analytic arm solution within this of a mode counts as found

# --- run statuses -----------------------------------------------------------------------------
# ok, diverged, degenerate, nonfinite come from a run's metrics.json; failed (error.txt: an
# exception), incomplete (neither: interrupted, still running or killed) and damaged (a file of the
# job cannot be read) from its folder. Only `ok` jobs enter means.
RUN_STATUSES = ("ok", "diverged", "degenerate", "nonfinite")
STATUSES = (*RUN_STATUSES, "failed", "incomplete", "damaged")
