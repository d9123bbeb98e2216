"""MNIST: IDX parsing, MD5 checks, the downloader against a loopback server, a short real run."""

import json

from helpers import compose_config
from mdn_experiments.run.runner import run_experiment


def test_a_short_real_run_writes_every_artifact_and_beats_chance(tmp_path, mnist_root):
    cfg = compose_config(
        [
            "dataset=mnist",
            f"dataset.root={mnist_root}",
            "dataset.n_train=2000",
            "dataset.n_val=1000",
            "dataset.n_test=1000",
            "trainer.epochs=3",
            "trainer.progress=false",
        ]
    )
    assert cfg.K == 10 and cfg.model.backbone._target_.endswith("CNN")
    metrics = run_experiment(cfg, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for key in [
        "test_nll",
        "accuracy_top_pi",
        "accuracy_top_mode",
        "accuracy_any_active",
        "mean_active_components",
        "accuracy_baseline",
        "train_seconds",
        "images_per_second",
        "coverage_50",
        "coverage_90",
        "crps",
        "crps_baseline",
        "pit_ks",
    ]:
        assert key in metrics, key
    assert metrics["accuracy_top_pi"] > 0.5  # chance is 0.1
    assert metrics["accuracy_any_active"] >= metrics["accuracy_top_pi"]
    assert metrics["accuracy_top_mode"] > 0.5
    for name in ["samples.png", "confusions.png", "loss.png", "calibration.png"]:
        path = tmp_path / "figures" / name
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000, name
