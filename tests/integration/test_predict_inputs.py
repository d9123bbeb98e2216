"""Honest numbers and bounded resources: a run whose metrics are not finite is not ok and its
metrics.json stays standard JSON; mdn-predict never drops a row and refuses what it cannot honour;
memory that cannot fit is refused before any work, with the estimate (mdn_experiments.run.resources);
an unreachable MLflow server fails within seconds, with a message that blames the right thing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY, one_error
from mdn_experiments.tools import launch

RUN = [*TINY, "figures=false"]


@pytest.fixture(scope="module")
def trained(tiny_run) -> Path:
    """The session's tiny finished run (only read here)."""
    return tiny_run


def predict(*args, **kwargs):
    return launch.run(
        "mdn_experiments.tools.predict", [str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs
    )


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

    @pytest.mark.parametrize(
        "array, needle",
        [
            (np.array([0.5 + 1j, 0.6]), "complex numbers"),
            (np.array(["0.5", "0.6"]), "array of <U3 values; inputs must be numbers"),
        ],
    )
    def test_complex_and_string_arrays_are_refused(self, trained, tmp_path, array, needle):
        path = tmp_path / "in.npy"
        np.save(path, array)
        proc = predict(trained, "--file", path)
        assert proc.returncode == 2 and needle in one_error(proc, "mdn-predict")

    @pytest.mark.parametrize(
        "args, needle",
        [
            (["--x", "1+2j"], "not a number or comma-separated real numbers"),
            (
                ["--x", "0.5", "--samples", "3", "--temperature-pi", "inf"],
                "--temperature-pi inf: must be a finite number > 0",
            ),
            (["--x", "0.5", "--samples", "3", "--temperature-sigma=-inf"], "--temperature-sigma -inf"),
            (["--x", "0.5", "--samples", "1000000000000"], "needs about"),
        ],
    )
    def test_unhonourable_requests_are_refused(self, trained, args, needle):
        proc = predict(trained, *args)
        assert proc.returncode == 2 and needle in one_error(proc, "mdn-predict")

    def test_a_closed_pipe_ends_quietly(self, trained, tmp_path):
        path = tmp_path / "in.csv"
        path.write_text("\n".join(str(v) for v in np.linspace(0, 1, 3000)) + "\n")
        pipeline = subprocess.run(
            f"{' '.join(launch.command('mdn_experiments.tools.predict', [str(trained), '--file', str(path)]))}"
            ' | head -1; echo "status ${PIPESTATUS[0]}"',
            shell=True,
            executable="/bin/bash",
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert pipeline.stdout.splitlines() == ["input 0: x = 0", "status 141"]
        assert "Traceback" not in pipeline.stderr and "Error" not in pipeline.stderr
