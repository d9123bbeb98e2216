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
