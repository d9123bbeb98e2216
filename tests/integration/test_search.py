"""`mdn-run -m hparams_search=table ...`: a validation-only search end to end.

What must hold: no trial writes a test score; best.yaml names the trial with the lowest validation
NLL and its line reproduces that trial; the final run holds the search's only test numbers and
says which search it came from; a search stopped mid-trial resumes without running a finished
trial again; the summary ranks the trials.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import REPO, run_cli
from mdn_experiments.tools import launch

TRIALS = 4
SMALL = ["trainer.epochs=4", "trainer.batch_size=64", "trainer.progress=false", "trainer.threads=1"]
TEST_WORD = re.compile(r"(?<![a-z])test(?![a-z])")


def heteroscedastic_table(folder: Path) -> Path:
    """300 rows: y = x0 + |x1| * noise (a unimodal, heteroscedastic target)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = x[:, 0] + 0.3 * np.abs(x[:, 1]) * rng.normal(size=300)
    path = folder / "table.csv"
    np.savetxt(path, np.c_[x, y], delimiter=",", header="a,b,c,y", comments="")
    return path


def search_command(table: Path, sweep: Path, trials: int = TRIALS) -> list[str]:
    return [
        "-m",
        "hparams_search=table",
        "dataset=table",
        f"dataset.path={table}",
        "dataset.target=y",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweep.dir={sweep}",
        *SMALL,
    ]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def trial_metrics(sweep: Path) -> dict[int, dict]:
    return {
        int(folder.name.split("=")[1]): json.loads((folder / "metrics.json").read_text())
        for folder in sweep.glob("trial=*")
        if (folder / "metrics.json").exists()
    }


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    table = heteroscedastic_table(folder)
    proc = run_cli(search_command(table, folder / "sweep"), cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "sweep", table, proc


@pytest.mark.quick
def test_no_trial_writes_a_test_score(search):
    sweep, _, _ = search
    trials = trial_metrics(sweep)
    assert sorted(trials) == list(range(TRIALS))
    for number, metrics in trials.items():
        assert metrics["scored_on"] == "validation"
        assert [key for key in metrics if TEST_WORD.search(key)] == [], number
        assert metrics["main_metric"].startswith("val_") and metrics["main_metric"] in metrics  # test_ll -> val_ll
        assert isinstance(metrics["val_nll"], float)
        saved = (sweep / f"trial={number}" / "model.pt").exists()
        assert saved  # a trial is a run folder like any other (mdn-predict can ask it)
    assert not any((sweep / f"trial={n}" / "baseline_history.csv").exists() for n in trials)  # no foils in trials


@pytest.mark.quick
def test_best_yaml_names_the_lowest_validation_nll(search):
    sweep, _, proc = search
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    trials = trial_metrics(sweep)
    lowest = min(trials, key=lambda n: (trials[n]["val_nll"], n))
    assert best["trial"] == lowest and best["val_nll"] == trials[lowest]["val_nll"]
    assert best["command"].startswith("mdn-run dataset=table ") and "hparams_search" not in best["command"]
    assert best["command"] in proc.stdout  # printed when the search ends


@pytest.mark.quick
def test_the_final_run_holds_the_only_test_numbers_and_names_its_search(search):
    sweep, _, _ = search
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    final = json.loads((sweep / "final" / "metrics.json").read_text())
    assert final["status"] == "ok" and isinstance(final["test_nll"], float)
    assert final["search"] == str(sweep) and final["search_trial"] == best["trial"]
    # the same settings, the same seed: the final run's MDN is the best trial's, bit for bit
    assert final["val_nll"] == best["val_nll"]
    assert "test_ll_gaussian" in final and "rmse_baseline" in final  # the foils are back for the test
    done = json.loads((sweep / "sweep_done.json").read_text())
    assert done["job_folders"] == [f"trial={n}" for n in range(TRIALS)] + ["final"]


@pytest.mark.quick
def test_best_yaml_reproduces_the_best_trial(search, tmp_path):
    sweep, _, _ = search
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    trial = trial_metrics(sweep)[best["trial"]]
    final = json.loads((sweep / "final" / "metrics.json").read_text())
    proc = run_cli([*best["overrides"], f"hydra.run.dir={tmp_path / 'again'}"], cwd=sweep.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["val_nll"] == trial["val_nll"] and again["test_nll"] == final["test_nll"]


@pytest.mark.quick
def test_the_summary_ranks_the_trials_and_draws_the_search(search):
    sweep, _, _ = search
    rows = list(csv.DictReader((sweep / "trials.csv").open()))
    assert [int(r["rank"]) for r in rows] == list(range(1, TRIALS + 1))
    values = [float(r["val_nll"]) for r in rows]
    assert values == sorted(values)
    assert {"K", "trainer.lr", "model.members", "seconds"} <= set(rows[0])
    text = (sweep / "summary.md").read_text()
    assert text.startswith("# Search summary") and f"Chosen: trial {rows[0]['trial']}" in text
    assert (sweep / "search.png").stat().st_size > 10_000


@pytest.mark.quick
def test_mdn_report_rebuilds_a_search_summary(search):
    sweep, _, _ = search
    before = (sweep / "summary.md").read_text()
    (sweep / "summary.md").unlink()
    proc = launch.run("mdn_experiments.tools.report", [str(sweep)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (sweep / "summary.md").read_text() == before


@pytest.mark.quick
def test_a_search_stopped_in_its_third_trial_resumes_without_repeating_the_first_two(tmp_path):
    table = heteroscedastic_table(tmp_path)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "MDN_FAULT": "KILL@mdn:1:1", "MDN_FAULT_RUN": "trial=2"}
    stopped = run_cli(search_command(table, sweep), cwd=tmp_path, env=env)
    assert stopped.returncode != 0  # killed in trial 2's first step
    first = trial_metrics(sweep)
    assert sorted(first) == [0, 1]
    sums = {n: md5(sweep / f"trial={n}" / "metrics.json") for n in first}
    resumed = launch.run(
        "mdn_experiments.tools.resume", [str(sweep)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trial 2 was running when the search stopped; it continues" in resumed.stderr + resumed.stdout
    trials = trial_metrics(sweep)
    assert sorted(trials) == list(range(TRIALS))  # four trials in all, not six
    assert {n: md5(sweep / f"trial={n}" / "metrics.json") for n in first} == sums  # never run again
    launched = re.findall(r"#\d+ : .*search\.role=trial", resumed.stdout + resumed.stderr)
    assert len(launched) == TRIALS - 2
    assert (sweep / "final" / "metrics.json").exists()


@pytest.mark.quick
def test_a_mistake_every_trial_would_meet_stops_the_search_after_the_first_batch(tmp_path):
    proc = run_cli(search_command(tmp_path / "missing.csv", tmp_path / "sweep"), cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("mdn-run: error: every trial of the first batch failed before training ended (trial=0: ")
    assert "missing.csv" in line
    assert sorted(p.name for p in (tmp_path / "sweep").glob("trial=*")) == ["trial=0"]  # not four failed trials


@pytest.mark.quick
def test_a_trial_count_out_of_range_is_one_line_and_nothing_written(tmp_path):
    table = heteroscedastic_table(tmp_path)
    proc = run_cli([*search_command(table, tmp_path / "sweep", trials=0)], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mdn-run: error: hydra.sweeper.n_trials=0 is not allowed: hydra.sweeper.n_trials must be an integer "
        "from 1 to 10000"
    ]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.quick
def test_the_search_presets_compose(tmp_path):
    """hparams_search=uci brings experiment=uci with it; both name the search's sweeper."""
    proc = run_cli(["hparams_search=uci", "--cfg", "hydra", "-p", "hydra.sweeper"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "SearchSweeper" in proc.stdout and "K: choice(1,2,3,5)" in proc.stdout
    proc = run_cli(["hparams_search=uci", "--cfg", "job", "-p", "dataset._target_"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "mdn_experiments.datasets.uci.Uci"


@pytest.mark.slow
def test_trials_run_side_by_side_under_joblib(tmp_path):
    """hydra/launcher=joblib with n_jobs=2: the trials are asked two at a time and launched together."""
    table = heteroscedastic_table(tmp_path)
    sweep = tmp_path / "sweep"
    args = [*search_command(table, sweep), "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    batches = re.findall(r"Joblib\.Parallel\(n_jobs=2.*?(?=Joblib\.Parallel|\Z)", proc.stdout + proc.stderr, re.S)
    assert [len(re.findall(r"\t#\d+ : ", batch)) for batch in batches] == [2] * (TRIALS // 2) + [1]  # + the final
    assert sorted(trial_metrics(sweep)) == list(range(TRIALS))
    assert json.loads((sweep / "final" / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.quick
def test_mdn_run_refuses_m_with_cfg_in_one_line():
    proc = run_cli(["-m", "--cfg", "job"])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("mdn-run: error: Only one of --run, --multirun, --cfg")
