"""`make reproduce` end to end with tiny budgets: every step runs and REPORT.md holds what it claims."""

import json

import pytest

from mdn_experiments.tools.reproduce import fmt, new_run_folder, newest_unfinished, stats


def test_a_report_leaves_out_jobs_that_are_not_ok_and_says_so():
    jobs = {
        "a": {"status": "ok", "test_nll": -1.0},
        "b": {"status": "ok", "test_nll": -1.2},
        "c": {"status": "diverged", "test_nll": 1e12},
        "d": {"test_nll": -1.1},
    }  # d: before statuses
    mean, std, n, n_bad = stats(jobs, "test_nll")
    assert (n, n_bad) == (3, 1) and mean == pytest.approx(-1.1)
    assert fmt((mean, std, n, n_bad)) == "-1.1 ± 0.1 (n=3; 1 not ok, left out)"
    assert fmt((float("nan"), float("nan"), 0, 2)) == "no ok run (n=0; 2 not ok, left out)"


def test_the_newest_unfinished_reproduction_is_found(tmp_path, capsys):
    for name, finished in (
        ("2026-01-01_10-00-00", False),
        ("2026-01-02_10-00-00", False),
        ("2026-01-03_10-00-00", True),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "reproduce.json").write_text(json.dumps({"finished": finished, "steps": {}}))
    # a damaged record is skipped with a line, never a traceback that blocks every later reproduction
    (tmp_path / "2026-01-04_10-00-00").mkdir()
    (tmp_path / "2026-01-04_10-00-00" / "reproduce.json").write_text('{"finished": fal')
    assert newest_unfinished(tmp_path) == tmp_path / "2026-01-02_10-00-00"
    assert "skipped:" in capsys.readouterr().err


def test_each_reproduction_gets_a_new_folder_even_within_one_second(tmp_path):
    folders = [new_run_folder(tmp_path) for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() for f in folders)
