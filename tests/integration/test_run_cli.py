"""Whole runs with tiny budgets: every artifact of the run-folder contract, reproducibility."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from helpers import REPO, compose_config, run_cli, without_timings
from mdn_experiments.errors import RunFolderError
from mdn_experiments.run.artifacts import load_run
from mdn_experiments.run.runner import run_experiment

FIGURES = ["contour.png", "pi.png", "means.png", "comparison.png", "loss.png", "calibration.png"]


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_a_tiny_run_writes_every_artifact(tmp_path, tiny_overrides):
    cfg = compose_config(tiny_overrides + ["K=3"])
    metrics = run_experiment(cfg, tmp_path)

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    for key in [
        "dataset",
        "K",
        "seed",
        "test_nll",
        "val_nll",
        "bayes_nll",
        "nll_gap",
        "rmse_baseline",
        "train_seconds",
        "n_params",
        "branch_count_accuracy",
        "coverage_50",
        "coverage_90",
        "crps",
        "crps_baseline",
        "pit_ks",
    ]:
        assert key in saved, key
    for key in ["branch_count_accuracy", "coverage_50", "coverage_90", "pit_ks"]:
        assert 0 <= saved[key] <= 1, key
    assert saved["coverage_50"] <= saved["coverage_90"] and saved["crps"] > 0
    assert saved["dataset"] == "inverse_sine" and saved["K"] == 3 and saved["seed"] == 0
    assert saved["nll_gap"] == pytest.approx(saved["test_nll"] - saved["bayes_nll"])
    assert saved["nll_gap"] > 0  # nothing beats the true density
    # flat snake_case (K keeps the paper's name, as the CLI spells it)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*|K", key) for key in saved)
    assert all(isinstance(value, (int, float, str)) for value in saved.values())

    with (tmp_path / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    assert {"epoch", "train_nll", "val_nll", "grad_norm", "sigma_floor_share"} <= set(rows[0])
    assert (tmp_path / "baseline_history.csv").exists()

    for name in FIGURES:
        assert is_png(tmp_path / "figures" / name), name

    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["config"]["K"] == 3 and "state_dict" in checkpoint


def test_a_saved_run_reloads_to_the_same_predictions(tmp_path, tiny_overrides):
    cfg = compose_config(tiny_overrides)
    metrics = run_experiment(cfg, tmp_path)
    net, baseline, config = load_run(tmp_path)
    x, y = instantiate(config["dataset"]).load(config["seed"]).test  # the data the run saw
    with torch.no_grad():
        assert -net(x).log_prob(y).mean().item() == pytest.approx(metrics["test_nll"], abs=1e-5)
        rmse = (baseline(x) - y).square().sum(-1).mean().sqrt().item()
    assert rmse == pytest.approx(metrics["rmse_baseline"], abs=1e-6)
    assert config["dataset"]["n_test"] == 500


def test_the_same_seed_twice_gives_identical_metrics(tmp_path, tiny_overrides):
    first = run_experiment(compose_config(tiny_overrides), tmp_path / "a")
    second = run_experiment(compose_config(tiny_overrides), tmp_path / "b")
    assert without_timings(first) == without_timings(second)
    other = run_experiment(compose_config(tiny_overrides + ["seed=1"]), tmp_path / "c")
    assert other["test_nll"] != first["test_nll"]


def test_baseline_can_be_turned_off(tmp_path, tiny_overrides):
    metrics = run_experiment(compose_config(tiny_overrides + ["baseline=false"]), tmp_path)
    assert "rmse_baseline" not in metrics
    assert not (tmp_path / "baseline_history.csv").exists()
    assert is_png(tmp_path / "figures" / "comparison.png")


def test_forward_direction_runs(tmp_path, tiny_overrides):
    metrics = run_experiment(compose_config(tiny_overrides + ["dataset.direction=forward", "K=1"]), tmp_path)
    assert metrics["direction"] == "forward"
    assert metrics["bayes_nll"] == pytest.approx(-1.6094, abs=1e-3)  # log(1/0.2)


def test_bishops_setup_runs_with_lbfgs(tmp_path, tiny_overrides):
    # 20 tanh units trained full batch by L-BFGS: the MDN and the MSE baseline both learn
    overrides = tiny_overrides + ["model=mlp", "trainer=lbfgs", "trainer.epochs=5", "trainer.batch_size=null"]
    cfg = compose_config(overrides)
    assert cfg.trainer.batch_size is None and cfg.model.backbone.hidden == [20]
    metrics = run_experiment(cfg, tmp_path)
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert len(rows) == 5
    assert metrics["val_nll"] < float(rows[0]["train_nll"])
    assert metrics["rmse_baseline"] < 0.3  # a constant predictor scores about 0.29


def test_a_finished_run_folder_is_never_overwritten(tmp_path, tiny_overrides):
    run_experiment(compose_config(tiny_overrides), tmp_path)
    before = (tmp_path / "metrics.json").read_text()
    with pytest.raises(RunFolderError):
        run_experiment(compose_config(tiny_overrides + ["seed=5"]), tmp_path)
    assert (tmp_path / "metrics.json").read_text() == before


@pytest.mark.quick
def test_cli_run_prints_its_folder_and_writes_the_run(tmp_path, tiny_overrides):
    run_dir = tmp_path / "cli_run"
    proc = run_cli(tiny_overrides + ["K=2", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr
    assert f"run folder: {run_dir}" in proc.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["K"] == 2
    assert (run_dir / ".hydra" / "config.yaml").exists()


def test_cli_default_run_folder_is_under_outputs_of_the_working_directory(tmp_path, tiny_overrides):
    proc = run_cli(tiny_overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = list((tmp_path / "outputs" / "runs" / "inverse_sine" / "K=3").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").exists()


def test_wheel_install_ships_the_configs_and_runs_from_any_folder(tmp_path, tiny_overrides):
    """`pip install .` (not editable) then `mdn-run` from an unrelated folder."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "mdn_experiments" / "conf" / "config.yaml").exists()
    assert (target / "mdn_experiments" / "conf" / "dataset" / "inverse_sine.yaml").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target)}
    proc = run_cli(["--cfg", "job"], cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "inverse_sine" in proc.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import mdn_experiments; print(mdn_experiments.__file__)"],
        cwd=elsewhere,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(target))  # the installed copy, not the source tree
    # the search's sweeper sits where Hydra's plugin scan finds it (an editable install registers it by hand)
    scan = subprocess.run(
        [
            sys.executable,
            "-c",
            "from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper; "
            "print([c.__module__ for c in Plugins.instance().discover(Sweeper)])",
        ],
        cwd=elsewhere,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert "hydra_plugins.mdn_experiments_search" in scan.stdout, scan.stderr
    proc = run_cli(tiny_overrides, cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    assert list((elsewhere / "outputs" / "runs").rglob("metrics.json"))


def test_load_run_refuses_a_missing_or_truncated_model_in_one_clear_error(tmp_path, tiny_overrides):
    with pytest.raises(RunFolderError, match="model.pt does not exist: .* holds no finished run"):
        load_run(tmp_path)
    run_experiment(compose_config(tiny_overrides + ["baseline=false"]), tmp_path / "run")
    model = tmp_path / "run" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(RunFolderError, match="cannot be loaded: truncated or not a model.pt"):
        load_run(tmp_path / "run")
    model.write_bytes(b"")
    with pytest.raises(RunFolderError, match="cannot be loaded"):
        load_run(tmp_path / "run")


def test_figures_can_be_left_out_without_changing_the_metrics(tmp_path, tiny_overrides):
    with_figures = run_experiment(compose_config(tiny_overrides), tmp_path / "a")
    without = run_experiment(compose_config(tiny_overrides + ["figures=false"]), tmp_path / "b")
    assert list((tmp_path / "b" / "figures").iterdir()) == []
    assert without_timings(with_figures) == without_timings(without)


HEAVY_MODULES = (
    "torch",
    "numpy",
    "matplotlib",
    "pandas",
    "pyarrow",
    "scipy",
    "sklearn",
    "mlflow",
    "optuna",
    "submitit",
    "joblib",
    "tensorboard",
    "onnx",
    "onnxruntime",
)
IMPORTED = """
import sys
from mdn_experiments import cli
sys.argv = ["mdn-run", *sys.argv[1:]]
try:
    cli.main()
except SystemExit as stop:
    assert stop.code in (0, None), stop.code
print("IMPORTED", " ".join(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_imports(args: list[str], cwd: Path) -> set[str]:
    """The heavy modules a fresh `mdn-run ARGS` process has imported when it ends."""
    code = IMPORTED.format(heavy=HEAVY_MODULES)
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("IMPORTED"))
    return set(line.split()[1:])


@pytest.mark.quick
def test_help_imports_no_heavy_module_and_a_run_only_what_it_uses(tmp_path, tiny_overrides):
    """Start-up: `mdn-run --help` imports neither torch nor numpy nor any plotting, data, tracking
    or launcher library; a toy run without figures imports torch (and numpy under it), no more."""
    assert heavy_imports(["--help"], tmp_path) == set()
    run = heavy_imports([*tiny_overrides, "figures=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert run == {"torch", "numpy"}


def test_the_import_check_sees_what_a_run_that_draws_imports(tmp_path, tiny_overrides):
    """The check above can fail: a run that draws its figures imports matplotlib."""
    assert "matplotlib" in heavy_imports([*tiny_overrides, f"hydra.run.dir={tmp_path / 'drawn'}"], tmp_path)
