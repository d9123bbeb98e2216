"""Honest numbers and bounded resources: a run whose metrics are not finite is not ok and its
metrics.json stays standard JSON; mdn-predict never drops a row and refuses what it cannot honour;
memory that cannot fit is refused before any work, with the estimate (mdn_experiments.run.resources);
an unreachable MLflow server fails within seconds, with a message that blames the right thing."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY, run_cli
from mdn_experiments.tools import launch
from mdn_experiments.run import resources
from mdn_experiments.run.artifacts import finite_metrics
from test_locking import one_error

RUN = [*TINY, "figures=false"]


def strict_json(path: Path) -> dict:
    """json.loads that refuses Infinity and NaN, as every other JSON reader does."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


class TestHonestNumbers:
    def test_a_run_with_non_finite_metrics_is_not_ok_and_its_json_is_standard(self, tmp_path):
        run_dir = tmp_path / "run"
        proc = run_cli([*RUN, "dataset.noise=1e-6", f"hydra.run.dir={run_dir}"])
        assert proc.returncode == 1  # all files written; the status says what they are worth
        assert "this run is nonfinite" in proc.stderr
        metrics = strict_json(run_dir / "metrics.json")
        assert metrics["status"] == "nonfinite"
        assert metrics["bayes_nll"] is None and metrics["nll_gap"] is None
        assert "bayes_nll=inf" in metrics["non_finite"] and "bayes_nll=inf" in metrics["status_reason"]
        assert math.isfinite(metrics["test_nll"])  # the model itself is fine: only what it is judged by is not

    def test_finite_metrics_maps_each_non_finite_value_to_null_and_says_which(self):
        out = finite_metrics({"a": 1.0, "b": math.inf, "c": -math.inf, "d": math.nan, "e": "text", "f": 3})
        assert out == {"a": 1.0, "b": None, "c": None, "d": None, "e": "text", "f": 3,
                       "non_finite": "b=inf; c=-inf; d=nan"}
        json.dumps(out, allow_nan=False)

    def test_a_summary_leaves_a_nonfinite_job_out_of_the_means(self, tmp_path):
        sweep = tmp_path / "sweep"
        proc = run_cli(["-m", "dataset.noise=0.1,1e-6", *RUN, f"hydra.sweep.dir={sweep}"])
        assert proc.returncode == 1 and "1 sweep job(s) failed or are not ok" in proc.stderr
        summary = (sweep / "summary.md").read_text()
        assert "1 ok" in summary and "1 nonfinite" in summary
        assert "| 3 | 1 | 1 |" in summary  # K=3: one seed ok, one not ok, never averaged in


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert run_cli([*RUN, f"hydra.run.dir={run_dir}"]).returncode == 0
    return run_dir


def predict(*args, **kwargs):
    return launch.run("mdn_experiments.tools.predict", [str(a) for a in args], capture_output=True, text=True,
                      timeout=600, **kwargs)


class TestPredictInputs:
    def test_a_typo_in_the_first_row_is_an_error_not_a_header(self, trained, tmp_path):
        path = tmp_path / "in.csv"
        path.write_text("0.5x\n0.6\n0.7\n")
        proc = predict(trained, "--file", path)
        assert proc.returncode == 2
        assert "line 1, column 1: '0.5x' is not a number" in one_error(proc, "mdn-predict")

    def test_a_header_is_said_and_every_row_kept(self, trained, tmp_path):
        path = tmp_path / "in.csv"
        path.write_text("x\n0.5\n0.6\n0.7\n")
        proc = predict(trained, "--file", path, "--out", tmp_path / "out.json")
        assert proc.returncode == 0, proc.stderr
        assert "first line read as a header (x); 3 data rows" in proc.stderr
        assert len(json.loads((tmp_path / "out.json").read_text())["predictions"]) == 3

    def test_a_bad_row_further_down_is_named(self, trained, tmp_path):
        path = tmp_path / "in.csv"
        path.write_text("x\n0.5\nabc\n")
        assert "line 3, column 1: 'abc' is not a number" in one_error(predict(trained, "--file", path), "mdn-predict")

    @pytest.mark.parametrize("array, needle", [
        (np.array([0.5 + 1j, 0.6]), "complex numbers"),
        (np.array(["0.5", "0.6"]), "array of <U3 values; inputs must be numbers"),
    ])
    def test_complex_and_string_arrays_are_refused(self, trained, tmp_path, array, needle):
        path = tmp_path / "in.npy"
        np.save(path, array)
        proc = predict(trained, "--file", path)
        assert proc.returncode == 2 and needle in one_error(proc, "mdn-predict")

    @pytest.mark.parametrize("args, needle", [
        (["--x", "1+2j"], "not a number or comma-separated real numbers"),
        (["--x", "0.5", "--samples", "3", "--temperature-pi", "inf"], "--temperature-pi inf: must be a finite number > 0"),
        (["--x", "0.5", "--samples", "3", "--temperature-sigma=-inf"], "--temperature-sigma -inf"),
        (["--x", "0.5", "--samples", "1000000000000"], "needs about"),
    ])
    def test_unhonourable_requests_are_refused(self, trained, args, needle):
        proc = predict(trained, *args)
        assert proc.returncode == 2 and needle in one_error(proc, "mdn-predict")

    def test_a_closed_pipe_ends_quietly(self, trained, tmp_path):
        path = tmp_path / "in.csv"
        path.write_text("\n".join(str(v) for v in np.linspace(0, 1, 3000)) + "\n")
        pipeline = subprocess.run(f"{' '.join(launch.command('mdn_experiments.tools.predict', [str(trained), '--file', str(path)]))}"
                                  " | head -1; echo \"status ${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                                  capture_output=True, text=True, timeout=600)
        assert pipeline.stdout.splitlines() == ["input 0: x = 0", "status 141"]
        assert "Traceback" not in pipeline.stderr and "Error" not in pipeline.stderr


class TestMemoryBounds:
    @pytest.mark.parametrize("override", ["K=100000", "dataset.n_train=10000000000", "model.backbone.hidden=[1000000000]"])
    def test_a_run_that_cannot_fit_is_refused_before_any_work(self, tmp_path, override):
        proc = run_cli([*RUN, override, f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2
        error = one_error(proc)
        assert "needs about" in error and "GiB of memory" in error and "are available" in error
        assert not (tmp_path / "run").exists()

    def test_the_estimate_grows_as_the_modes_do(self):
        """The modes solve a (K, K, D, D) system per input: four times the memory for twice K."""
        small = resources.evaluation_bytes(1000, 50, 2)["the modes of the test mixtures"]
        large = resources.evaluation_bytes(1000, 100, 2)["the modes of the test mixtures"]
        assert large == 4 * small
        assert small >= 1000 * 50 * 50 * 2 * 2 * 8  # at least the float64 system itself

    def test_the_default_runs_fit_here(self):
        estimate = resources.run_estimate(n_data=12000, input_size=1, out_dim=1, K=3, n_eval=10000,
                                          parameters=5000, activations_per_input=200, batch=128)
        assert estimate.peak < resources.available_memory()

    def test_an_estimate_refusal_names_its_largest_part(self):
        estimate = resources.Estimate({"small": 1, "the big part": 10 * resources.GIB})
        with pytest.raises(resources.ResourceError, match=r"needs about 10 GiB of memory \(the big part: 10 GiB\), "
                                                          r"but 1 GiB are available: less"):
            estimate.check(resources.GIB, "this", "less")


class SilentServer:
    """A TCP server that accepts connections and never answers: what a hung MLflow server looks like."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def __exit__(self, *exc):
        self.sock.close()


class TestTracking:
    def test_an_unreachable_mlflow_server_is_one_line(self, tmp_path):
        with SilentServer() as server:
            uri = f"http://127.0.0.1:{server.port}"
            proc = run_cli([*RUN, "logger=mlflow", f"tracking.mlflow_uri={uri}", f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2
        error = one_error(proc)
        assert f"tracking.mlflow_uri='{uri}': no MLflow server answers there within 5 s" in error
        assert "file:" not in error

    def test_a_long_experiment_name_is_blamed_on_the_name(self, tmp_path):
        proc = run_cli([*RUN, "logger=mlflow", "tracking.experiment=" + "e" * 600, f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2
        error = one_error(proc)
        assert "tracking.experiment=" in error and "a name of 1 to 500 characters" in error
        assert "mlflow_uri" not in error

    def test_a_bad_uri_is_not_advised_a_file_uri(self, tmp_path):
        proc = run_cli([*RUN, "logger=mlflow", "tracking.mlflow_uri=nosuchscheme://x", f"hydra.run.dir={tmp_path / 'run'}"],
                       cwd=tmp_path)
        error = one_error(proc)
        assert proc.returncode == 2 and "cannot be used by MLflow" in error and "file:" not in error
