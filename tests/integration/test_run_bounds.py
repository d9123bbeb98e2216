"""Honest numbers and bounded resources: a run whose metrics are not finite is not ok and its
metrics.json stays standard JSON; mdn-predict never drops a row and refuses what it cannot honour;
memory that cannot fit is refused before any work, with the estimate (mdn_experiments.run.resources);
an unreachable MLflow server fails within seconds, with a message that blames the right thing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers import TINY, one_error, run_cli

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

    def test_a_summary_leaves_a_nonfinite_job_out_of_the_means(self, tmp_path):
        sweep = tmp_path / "sweep"
        proc = run_cli(["-m", "dataset.noise=0.1,1e-6", *RUN, f"hydra.sweep.dir={sweep}"])
        assert proc.returncode == 1 and "1 sweep job(s) failed or are not ok" in proc.stderr
        summary = (sweep / "summary.md").read_text()
        assert "1 ok" in summary and "1 nonfinite" in summary
        assert "| 3 | 1 | 1 |" in summary  # K=3: one seed ok, one not ok, never averaged in


class TestMemoryBounds:
    @pytest.mark.parametrize(
        "override", ["K=100000", "dataset.n_train=10000000000", "model.backbone.hidden=[1000000000]"]
    )
    def test_a_run_that_cannot_fit_is_refused_before_any_work(self, tmp_path, override):
        proc = run_cli([*RUN, override, f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2
        error = one_error(proc)
        assert "needs about" in error and "GiB of memory" in error and "are available" in error
        assert not (tmp_path / "run").exists()
