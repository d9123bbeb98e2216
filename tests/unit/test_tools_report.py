"""Multirun sweeps through the basic, joblib and submitit launchers; summaries; mdn-report; BIC."""

import os

import pytest

from mdn_experiments.tools.report import bic, chosen_k


def test_bic_on_a_hand_computed_case():
    # 2 * 100 * 0.5 + 10 * ln(100)
    assert bic(0.5, 100, 10) == pytest.approx(100 + 10 * 4.605170185988092)
    assert bic(-1.0, 1000, 0) == -2000


def test_k_is_chosen_by_validation_nll_and_by_bic():
    entries = [
        {"K": 1, "val_nll": 0.5, "bic": 900.0},
        {"K": 2, "val_nll": 0.2, "bic": 950.0},
        {"K": 3, "val_nll": 0.3, "bic": 990.0},
    ]
    assert chosen_k(entries) == {"by_val_nll": 2, "by_bic": 1}


def test_parallel_jobs_share_the_cores():
    from omegaconf import OmegaConf

    from mdn_experiments.cli import threads_per_job

    cores = os.cpu_count()
    assert threads_per_job(OmegaConf.create({"launcher": {"n_jobs": 2}})) == max(1, cores // 2)
    assert threads_per_job(OmegaConf.create({"launcher": {"n_jobs": -1}})) == 1
    assert threads_per_job(OmegaConf.create({"launcher": {"cpus_per_task": 3}})) == 3
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": "basic"}})) is None


def test_odd_values_in_a_jobs_files_are_damaged_rows_never_a_crash(tmp_path):
    """Lists, mappings, booleans and mixed types where config.yaml or metrics.json hold a name or a
    number: the job is a `damaged` row and the summary is written for the others."""
    import json

    import yaml

    from mdn_experiments.tools.report import collect, write_summary

    good = {"test_nll": 0.1, "val_nll": 0.2, "train_nll": 0.3, "n_params": 10, "n_train": 100, "status": "ok"}
    jobs = {
        "ok1": ({"K": 1, "seed": 0, "dataset": {"name": "toy"}}, good),
        "ok2": ({"K": 2, "seed": 0, "dataset": {"name": "toy"}}, good),
        "list_k": ({"K": [1, 2], "seed": 0, "dataset": {"name": "toy"}}, good),
        "str_k": ({"K": "3", "seed": 0, "dataset": {"name": "toy"}}, good),
        "dict_name": ({"K": 1, "seed": 0, "dataset": {"name": {"a": 1}}}, good),
        "list_status": ({"K": 1, "seed": 0, "dataset": {"name": "toy"}}, {**good, "status": ["ok"]}),
        "list_main": ({"K": 1, "seed": 0, "dataset": {"name": "toy"}}, {**good, "main_metric": ["test_nll"]}),
        "odd_status": ({"K": 1, "seed": 0, "dataset": {"name": "toy"}}, {**good, "status": "failed"}),
    }
    for name, (config, metrics) in jobs.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    rows = {row["job"]: row for row in collect(tmp_path)}
    assert {job for job, row in rows.items() if row["status"] == "damaged"} == set(jobs) - {"ok1", "ok2"}
    assert "K holds [1, 2], not a int" in rows["list_k"]["reason"]
    result = write_summary(tmp_path)
    assert [e["K"] for e in result["table"]["toy"]] == [1, 2]
    assert "6 damaged" in (tmp_path / "summary.md").read_text()


def test_a_validation_only_job_is_an_ok_row_without_a_test_nll(tmp_path):
    """A search trial's metrics.json (search.role=trial: scored on the validation part, no
    test_nll) is summarised as an ok row with its validation numbers, even in a sweep started by
    hand; a job that should have a test_nll and has none is still damaged."""
    import json
    import math

    import yaml

    from mdn_experiments.tools.report import collect, write_summary

    trial = {
        "val_nll": 0.2,
        "train_nll": 0.3,
        "n_params": 10,
        "n_train": 100,
        "status": "ok",
        "scored_on": "validation",
    }
    for name, metrics in (("trial", trial), ("no_test", {k: v for k, v in trial.items() if k != "scored_on"})):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"K": 2, "seed": 0}))
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    rows = {row["job"]: row for row in collect(tmp_path)}
    assert rows["trial"]["status"] == "ok" and rows["trial"]["val_nll"] == 0.2
    assert math.isnan(rows["trial"]["test_nll"])
    assert rows["no_test"]["status"] == "damaged" and "no number for test_nll" in rows["no_test"]["reason"]
    (tmp_path / "no_test").rename(tmp_path.parent / "set_aside")
    write_summary(tmp_path)
    assert "| 2 | 1 | 0 | — (validation only) | 0.2000 ± " in (tmp_path / "summary.md").read_text()
