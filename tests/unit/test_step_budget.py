"""trainer.steps: a budget in optimizer steps turned into a minibatch and epochs from the training
part's size alone (make uci's protocol, and dataset=table's default), and the foil sentence."""

from __future__ import annotations

import math

import pytest

from helpers import compose_config
from mdn_experiments.config.settings import RunSettings, step_budget
from mdn_experiments.evaluation.contract import foil_sentence
from mdn_experiments.tools.uci import budget


class TestStepBudget:
    @pytest.mark.parametrize("n_train", [10, 249, 834, 10_000, 1_000_000])
    def test_about_twenty_minibatches_per_epoch_within_the_budget(self, n_train):
        batch, epochs = step_budget(n_train, 2000, 300)
        assert 32 <= batch <= 1024 and batch & (batch - 1) == 0  # a power of two
        per_epoch = math.ceil(n_train / batch)
        assert epochs == min(300, max(20, round(2000 / per_epoch)))

    def test_a_million_rows_train_twenty_epochs_not_hundreds(self):
        assert step_budget(1_000_000, 2000, 300) == (1024, 20)

    def test_make_uci_uses_the_same_budget(self):
        for rows in (308, 1030, 11934, 45730):
            assert budget(rows) == step_budget(round(0.72 * rows), 2000, 300)

    def test_tables_default_to_the_budget_and_an_explicit_minibatch_wins(self):
        cfg = compose_config(["dataset=table", "dataset.path=x.csv", "dataset.target=y"])
        assert cfg.model.members == 3 and cfg.trainer.lr == 0.02 and cfg.trainer.steps == 2000
        settings = RunSettings.from_config(cfg, n_train=834)
        assert (settings.mdn_train.batch_size, settings.mdn_train.epochs) == step_budget(834, 2000, 300)
        cfg.trainer.batch_size = 64
        assert RunSettings.from_config(cfg, n_train=834).mdn_train.batch_size == 64


def test_the_foil_sentence_says_which_won_with_both_numbers():
    assert foil_sentence(-2.85, -3.1).startswith("the mixture beat its K=1 foil on this table: test log-likelihood")
    lost = foil_sentence(-0.75, -0.72)
    assert "did not beat" in lost and "-0.75 against -0.72" in lost and "(-0.03 nats per sample)" in lost
