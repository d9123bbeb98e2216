"""The two-link arm: kinematics against each other, the metrics against oracles, a tiny run."""

import json
import math

import pytest

from helpers import compose_config
from mdn_experiments.run.artifacts import load_run
from mdn_experiments.run.runner import run_experiment

FIGURES = ["workspace.png", "top_pi.png", "positioning_errors.png", "contour.png", "pi.png", "loss.png"]


@pytest.mark.parametrize("covariance", ["diag", "isotropic", "full"])
def test_a_tiny_arm_run_writes_every_artifact(tmp_path, tiny_overrides, covariance):
    cfg = compose_config(["dataset=robot_arm", "K=2", f"model.covariance={covariance}", *tiny_overrides])
    metrics = run_experiment(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics and saved["dataset"] == "robot_arm" and saved["K"] == 2
    for key in [
        "positioning_rmse_top_pi",
        "positioning_rmse_peak_density",
        "positioning_mean_error_top_pi",
        "positioning_rmse_top_mode",
        "positioning_rmse_best_of_modes",
        "coverage_50",
        "coverage_90",
        "positioning_rmse_baseline",
        "branch_coverage",
        "test_nll",
        "val_nll",
        "rmse_baseline",
    ]:
        assert math.isfinite(saved[key]), key
    assert "crps" not in saved  # 2-D targets: coverage only
    net, _, _ = load_run(tmp_path)
    assert net.head.covariance == covariance
    for name in FIGURES:
        path = tmp_path / "figures" / name
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5_000, name
