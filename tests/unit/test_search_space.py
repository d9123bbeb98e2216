"""The search's pieces without a run: Hydra's sweep syntax read into Optuna distributions, the
sweeper's bounds, and a trial's metrics renamed after the validation part."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mdn_experiments.errors import ConfigError, UserError
from mdn_experiments.run.evaluate import validation_only
from mdn_experiments.search.space import parse_space
from mdn_experiments.search.sweeper import SearchSweeper


class TestSpace:
    """Each Hydra sweep form becomes the Optuna distribution of the same values."""

    def test_choices_are_override_texts_lists_included(self):
        (dim,) = parse_space({"model.backbone.hidden": "choice([50],[100,100])"}, "p")
        assert dim.distribution() == CategoricalDistribution(["[50]", "[100,100]"])
        assert dim.override("[100,100]") == "model.backbone.hidden=[100,100]"

    def test_a_log_interval_is_a_log_float(self):
        (dim,) = parse_space({"trainer.lr": "tag(log, interval(1e-3, 1e-1))"}, "p")
        assert dim.distribution() == FloatDistribution(1e-3, 1e-1, log=True)
        assert dim.override(0.01) == "trainer.lr=0.01"

    def test_an_int_interval_and_a_range(self):
        members, k = parse_space({"model.members": "int(interval(1, 5))", "K": "range(1,4)"}, "p")
        assert members.distribution() == IntDistribution(1, 5)
        assert k.distribution() == CategoricalDistribution(["1", "2", "3"])

    def test_a_plain_value_is_one_choice(self):
        (dim,) = parse_space({"K": 3}, "p")
        assert dim.choices == ("3",)

    @pytest.mark.parametrize(
        "key, text, words",
        [
            ("hydra.job_logging", "choice(a,b)", "not of Hydra or the search"),
            ("search.role", "choice(trial,final)", "not of Hydra or the search"),
            ("seed", "choice(0,1)", "not of Hydra or the search"),
            ("trainer.lr", "interval(0.1, 0.01)", "LOW < HIGH"),
            ("trainer.lr", "tag(log, interval(0, 1))", "LOW > 0"),
        ],
    )
    def test_what_cannot_be_searched_is_one_line(self, key, text, words):
        with pytest.raises(ConfigError, match=words) as info:
            parse_space({key: text}, "hydra.sweeper.params")
        assert "\n" not in str(info.value) and str(info.value).startswith(f"hydra.sweeper.params.{key}=")

    def test_unreadable_sweep_text_is_one_line(self):
        with pytest.raises(UserError, match=r"params.K=choice\(1, cannot be read as a sweep") as info:
            parse_space({"K": "choice(1,"}, "hydra.sweeper.params")
        assert "\n" not in str(info.value)


class TestSweeperBounds:
    @pytest.mark.parametrize(
        "kwargs, key",
        [
            ({"n_trials": 0}, "n_trials"),
            ({"n_trials": 10**6}, "n_trials"),
            ({"batch_size": 0}, "batch_size"),
            ({"seed": -1}, "seed"),
            ({"n_trials": True}, "n_trials"),
        ],
    )
    def test_numbers_out_of_range_are_refused(self, kwargs, key):
        with pytest.raises(ConfigError, match=f"hydra.sweeper.{key}="):
            SearchSweeper(**kwargs)


class TestValidationOnly:
    def test_test_keys_are_renamed_and_none_remains(self):
        metrics = {
            "test_nll": 1.0,
            "val_nll": 1.0,
            "test_ll": -1.0,
            "rmse_top_pi": 0.5,
            "main_metric": "test_ll",
            "contest": 3,
            "test_nll_gaussian": 2.0,
        }
        out = validation_only(metrics)
        assert out == {
            "val_nll": 1.0,
            "val_ll": -1.0,
            "rmse_top_pi": 0.5,
            "main_metric": "val_ll",
            "contest": 3,
            "val_nll_gaussian": 2.0,
            "scored_on": "validation",
        }
