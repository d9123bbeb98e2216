"""Multirun sweeps through the basic, joblib and submitit launchers; summaries; mdn-report; BIC."""

import os

import pytest
from hydra import compose, initialize_config_dir

from mdn_experiments.cli import config_dir
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


def test_the_k_grid_preset_is_a_multirun_over_k_and_seeds():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["sweep=k_grid"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params == {"K": "1,2,3,4,5", "seed": "0,1,2"}


def test_parallel_jobs_share_the_cores():
    from omegaconf import OmegaConf

    from mdn_experiments.cli import threads_per_job

    cores = os.cpu_count()
    assert threads_per_job(OmegaConf.create({"launcher": {"n_jobs": 2}})) == max(1, cores // 2)
    assert threads_per_job(OmegaConf.create({"launcher": {"n_jobs": -1}})) == 1
    assert threads_per_job(OmegaConf.create({"launcher": {"cpus_per_task": 3}})) == 3
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": "basic"}})) is None
