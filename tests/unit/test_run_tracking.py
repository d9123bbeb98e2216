"""Experiment tracking (logger=tensorboard|mlflow): what was logged is read back with the tools'
own readers (TensorBoard's event accumulator, MLflow's client on the SQLite store) and compared
with the run folder's history.csv, metrics.json and files."""

import math

import pytest

from helpers import compose_config
from mdn_experiments.config import logger_names
from mdn_experiments.errors import ConfigError, UserError
from mdn_experiments.run import tracking
from mdn_experiments.run.tracking import Tracker, Trackers


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) or (math.isnan(a) and math.isnan(b))


class _Broken(Tracker):
    def __init__(self):
        self.closed = None

    def final(self, metrics, run_dir):
        raise OSError("disk full")

    def close(self, status):
        self.closed = status


def test_logger_accepts_a_name_or_a_list_and_always_keeps_csv():
    assert logger_names("csv") == ["csv"]
    assert logger_names("mlflow") == ["csv", "mlflow"]
    assert logger_names(["mlflow", "tensorboard"]) == ["csv", "tensorboard", "mlflow"]
    assert compose_config(["logger=[tensorboard,mlflow]"]).logger == ["tensorboard", "mlflow"]
    for bad in ("wandb", [], ["csv", "neptune"], 3):
        with pytest.raises(ConfigError, match="logger"):
            logger_names(bad)


def test_a_tracker_that_fails_at_the_end_costs_a_warning_not_the_run(tmp_path, caplog):
    broken = _Broken()
    trackers = Trackers([broken])
    trackers.final({"test_nll": 1.0}, tmp_path)
    trackers.close("finished")
    assert broken.closed == "finished"
    assert "could not log the final results (OSError: disk full)" in caplog.text


def test_require_is_quiet_for_csv_and_names_the_extra():
    tracking.require("csv")
    with pytest.raises(UserError, match=r"logger=nope"):
        tracking.PACKAGES["nope"] = "no_such_package_for_the_test"
        try:
            tracking.require("nope")
        finally:
            del tracking.PACKAGES["nope"]


def test_a_store_is_the_same_only_when_it_is_the_same_place(tmp_path):
    """A store recorded in a run folder is used on resume only when it is the store chosen now, or a
    local store inside the folder."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert tracking.same_store(f"sqlite:///{run_dir}/mlflow.db", run_dir)
    assert tracking.same_store(f"file://{run_dir}/mlruns", run_dir)
    assert not tracking.same_store(f"sqlite:///{tmp_path}/mlflow.db", run_dir)
    assert not tracking.same_store(f"sqlite:///{run_dir}/../mlflow.db", run_dir)
    assert not tracking.same_store("http://127.0.0.1:5000", run_dir)
    assert tracking.same_store("http://host:5000/", "http://host:5000")
    assert tracking.same_store(f"sqlite:///{tmp_path}/a/../m.db", f"sqlite:///{tmp_path}/m.db")
    assert not tracking.same_store("http://host:5000", "http://other:5000")
