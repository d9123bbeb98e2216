"""Multirun sweeps through the basic, joblib and submitit launchers; summaries; mdn-report; BIC."""

import csv
import json
import shutil

import pytest

from helpers import TINY, run_cli
from mdn_experiments.tools import launch
from mdn_experiments.tools.report import bic, write_summary


def read_summary(sweep_dir):
    with (sweep_dir / "summary.csv").open() as fh:
        return {row["job"]: row for row in csv.DictReader(fh)}


def job_dirs(sweep_dir):
    return sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def check_sweep(sweep_dir, expected_ok: dict[str, int]):
    """Every finished job's row matches its metrics.json; the markdown is there, and the figure
    against K when the finished jobs have two K or more."""
    rows = read_summary(sweep_dir)
    assert {name: int(row["K"]) for name, row in rows.items() if row["status"] == "ok"} == expected_ok
    for name in expected_ok:
        metrics = json.loads((sweep_dir / name / "metrics.json").read_text())
        assert float(rows[name]["test_nll"]) == pytest.approx(metrics["test_nll"])
        assert float(rows[name]["val_nll"]) == pytest.approx(metrics["val_nll"])
        assert float(rows[name]["main_value"]) == pytest.approx(metrics[metrics["main_metric"]])
        assert float(rows[name]["effective_components"]) == pytest.approx(metrics["effective_components"])
        assert float(rows[name]["bic"]) == pytest.approx(
            bic(metrics["train_nll"], metrics["n_train"], metrics["n_params"])
        )
    if len(set(expected_ok.values())) > 1:  # a figure against K
        assert (sweep_dir / "k_sweep.png").read_bytes()[:4] == b"\x89PNG"
    else:  # one K: nothing to draw against it
        assert not (sweep_dir / "k_sweep.png").exists()
    assert "K chosen by validation NLL" in (sweep_dir / "summary.md").read_text()
    assert "| effective components |" in (sweep_dir / "summary.md").read_text()
    return rows


@pytest.mark.quick
def test_a_two_job_sweep_through_the_basic_launcher(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(["-m", "K=1,2", *TINY, f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr
    names = [p.name for p in job_dirs(sweep_dir)]
    assert len(names) == 2 and all(name.startswith(("K=1,", "K=2,")) for name in names)
    rows = check_sweep(sweep_dir, {name: int(name[2]) for name in names})
    # the chosen K in the markdown is the one with the lowest validation NLL
    best = min(rows.values(), key=lambda row: float(row["val_nll"]))
    assert f"K chosen by validation NLL: **{best['K']}**" in (sweep_dir / "summary.md").read_text()
    assert "summary.md" in proc.stdout


def test_a_two_job_sweep_through_joblib_with_one_failing_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "K=2,0", *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}"]
    )
    assert proc.returncode == 1  # a failed job makes the sweep fail...
    assert "1 sweep job(s) failed or are not ok" in proc.stderr
    (good,) = [p for p in job_dirs(sweep_dir) if p.name.startswith("K=2")]
    (bad,) = [p for p in job_dirs(sweep_dir) if p.name.startswith("K=0")]
    rows = check_sweep(sweep_dir, {good.name: 2})  # ...but the other job's results are kept
    assert rows[bad.name]["status"] == "failed"
    assert "K must be an integer from 1 to" in rows[bad.name]["reason"]
    assert "K must be an integer from 1 to" in (bad / "error.txt").read_text()


def test_a_two_job_sweep_through_submitit_local(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(["-m", "K=1,2", *TINY, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr
    names = [p.name for p in job_dirs(sweep_dir)]
    check_sweep(sweep_dir, {name: int(name[2]) for name in names})


def test_mdn_report_rebuilds_the_summary_of_an_interrupted_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    assert run_cli(["-m", "K=1,2", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep_dir}"]).returncode == 0
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 4
    shutil.rmtree(jobs[0])  # a job that never started
    (jobs[1] / "metrics.json").unlink()  # a job killed mid-run
    for name in ("summary.csv", "summary.md", "k_sweep.png"):
        (sweep_dir / name).unlink()
    proc = launch.run("mdn_experiments.tools.report", [str(sweep_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = read_summary(sweep_dir)
    assert len(rows) == 3
    assert rows[jobs[1].name]["status"] == "incomplete"
    check_sweep(sweep_dir, {p.name: int(p.name[2]) for p in jobs[2:]})
    # mean and std over the seeds that finished are what the markdown shows
    summary = write_summary(sweep_dir)
    for entry in summary["table"]["inverse_sine"]:
        values = [float(r["test_nll"]) for r in rows.values() if r["status"] == "ok" and int(r["K"]) == entry["K"]]
        assert entry["test_nll"] == pytest.approx(sum(values) / len(values))
        assert entry["n_seeds"] == len(values)


def test_mdn_report_refuses_a_folder_without_jobs(tmp_path):
    proc = launch.run("mdn_experiments.tools.report", [str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "holds no job folders" in proc.stderr
    proc = launch.run("mdn_experiments.tools.report", [str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr
