"""Experiment tracking (logger=tensorboard|mlflow): what was logged is read back with the tools'
own readers (TensorBoard's event accumulator, MLflow's client on the SQLite store) and compared
with the run folder's history.csv, metrics.json and files."""

import csv
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import TINY, run_cli
from mdn_experiments.run import tracking
from mdn_experiments.tools import launch

FAST = [*TINY, "trainer.epochs=4"]


def history(path: Path) -> list[dict[str, float]]:
    with path.open() as fh:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(fh)]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) or (math.isnan(a) and math.isnan(b))


def mlflow_client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'outputs' / 'mlflow.db'}")


def runs_of(client, experiment_name: str):
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, [e.name for e in client.search_experiments()]
    return client.search_runs([experiment.experiment_id])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("logger=wandb", "logger='wandb' is not allowed: logger must be one of csv, tensorboard, mlflow"),
        ("logger=[]", "logger=[] is not allowed"),
        ("tracking.mlflow_uri=nosuchscheme://x", "tracking.mlflow_uri='nosuchscheme://x' cannot be used by MLflow"),
    ],
)
def test_bad_tracking_settings_are_one_line_before_training(override, expected, tmp_path):
    proc = run_cli(
        [
            *FAST,
            "logger=mlflow" if "mlflow_uri" in override else "logger=csv",
            override,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mdn-run: error:")]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "history.csv").exists()  # refused before any training


@pytest.mark.parametrize("name", ["mlflow", "tensorboard"])
def test_a_missing_package_names_the_extra_to_install(name, tmp_path):
    # a package that cannot be imported, in front of the installed one
    blocker = tmp_path / "blocked" / name
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli([*FAST, f"logger={name}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"mdn-run: error: logger={name} needs the {name} package" in proc.stderr
    assert "pip install 'mdn-experiments[tracking]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_default_logger_imports_neither_tool(tmp_path):
    script = (
        "import sys, mdn_experiments.run.runner as e, mdn_experiments.run.tracking as t\n"
        "from helpers import compose_config\n"
        "from mdn_experiments.config import RunSettings\n"
        "s = RunSettings.from_config(compose_config(['dataset=inverse_sine']))\n"
        "t.open_trackers(s.tracking, __import__('pathlib').Path('.'), {}, 'inverse_sine')\n"
        "print(sorted(m for m in ('mlflow', 'tensorboard', 'torch.utils.tensorboard') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},  # tests/: helpers
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_tensorboard_holds_the_epochs_the_metrics_and_the_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    proc = run_cli([*FAST, "logger=tensorboard", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    rows = history(run_dir / "history.csv")
    for key in ("val_nll", "train_nll", "effective_components", "lr"):
        logged = events.Scalars(f"mdn/{key}")
        assert [e.step for e in logged] == [int(row["epoch"]) for row in rows]
        assert all(close(e.value, row[key]) for e, row in zip(logged, rows)), key
    baseline_rows = history(run_dir / "baseline_history.csv")
    assert [e.value for e in events.Scalars("baseline/val_mse")] == pytest.approx(
        [row["val_mse"] for row in baseline_rows], rel=1e-6
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_nll", "rmse_baseline", "crps", "K"):
        assert close(events.Scalars(f"metrics/{key}")[0].value, metrics[key]), key
    figures = sorted(p.stem for p in (run_dir / "figures").glob("*.png"))
    assert figures and sorted(events.Tags()["images"]) == [f"figures/{stem}" for stem in figures]
    image = events.Images("figures/loss")[0]
    assert image.width > 100 and image.height > 100
    # the HParams tab's summary: the config values of this run
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    session = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in content.values()]
    start = next(s.session_start_info for s in session if s.HasField("session_start_info"))
    assert start.hparams["K"].number_value == 3
    assert start.hparams["dataset.name"].string_value == "inverse_sine"


def test_an_mlflow_sweep_is_one_experiment_with_one_run_per_job(tmp_path):
    sweep_dir = tmp_path / "outputs" / "multirun" / "sweep"
    proc = run_cli(
        [
            "-m",
            "K=1,2",
            *FAST,
            "logger=mlflow",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    client = mlflow_client(tmp_path)
    runs = runs_of(client, f"sweep {sweep_dir}")
    assert sorted(r.data.params["K"] for r in runs) == ["1", "2"]
    assert sorted(r.info.run_name for r in runs) == sorted(
        p.parent.parent.name for p in sweep_dir.glob("*/.hydra/config.yaml")
    )
    for run in runs:
        job = sweep_dir / run.info.run_name
        assert run.info.status == "FINISHED"
        assert run.data.tags["run_dir"] == str(job.resolve())
        config = tracking.flatten(yaml.safe_load((job / ".hydra" / "config.yaml").read_text()))
        assert run.data.params == {
            key: json.dumps(value) if isinstance(value, list) else str(value) for key, value in config.items()
        }
        assert run.info.run_name.startswith(f"K={run.data.params['K']},") and run.data.params["logger"] == "mlflow"
        metrics = json.loads((job / "metrics.json").read_text())
        for key, value in tracking.numbers(metrics).items():
            assert close(run.data.metrics[key], value), key
        assert run.data.tags["status"] == metrics["status"] == "ok"
        rows = history(job / "history.csv")
        logged = client.get_metric_history(run.info.run_id, "mdn/val_nll")
        assert sorted((m.step, m.value) for m in logged) == [
            (int(r["epoch"]), pytest.approx(r["val_nll"], rel=1e-6)) for r in rows
        ]
        assert len(client.get_metric_history(run.info.run_id, "baseline/val_mse")) == len(
            history(job / "baseline_history.csv")
        )
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model.pt", "metrics.json", "history.csv", "figures"} <= artifacts
        figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert figures == {f"figures/{p.name}" for p in (job / "figures").glob("*.png")} and figures
        local = client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / run.info.run_name))
        assert md5(Path(local)) == md5(job / "model.pt")


def test_a_killed_and_resumed_run_continues_its_mlflow_run(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *FAST,
        "trainer.epochs=5",
        "trainer.checkpoint_seconds=0",
        "figures=false",
        "logger=mlflow",
        "tracking.experiment=resumed",
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli(args, cwd=tmp_path, env={"MDN_FAULT": "TERM@mdn:3:2"})
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    client = mlflow_client(tmp_path)
    (stopped,) = runs_of(client, "resumed")
    assert stopped.info.status == "KILLED"
    assert json.loads((run_dir / "tracking.json").read_text())["mlflow_run_id"] == stopped.info.run_id

    proc = launch.run(
        "mdn_experiments.tools.resume",
        [str(run_dir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = runs_of(client, "resumed")
    assert run.info.run_id == stopped.info.run_id and run.info.status == "FINISHED"
    rows = history(run_dir / "history.csv")
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "mdn/val_nll")}
    assert sorted(logged) == [1, 2, 3, 4, 5]  # the epochs before the stop and after the resume
    assert all(close(logged[int(r["epoch"])], r["val_nll"]) for r in rows)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert close(run.data.metrics["test_nll"], metrics["test_nll"])
