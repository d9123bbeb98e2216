"""The metrics contract (evaluation/contract.py): every key a run writes is named there, with what
it means; keys follow quantity-then-rule; older keys read back under today's names; the status
rule; the point-prediction rules are the mixture's own."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mdn_experiments import mdn
from mdn_experiments.evaluation import contract as C


def test_every_key_of_a_run_is_in_the_contract(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert set(metrics) - set(C.METRICS) == set()
    assert metrics["main_metric"] in C.METRICS


def test_quality_keys_name_the_quantity_then_the_rule():
    rules = set(C.RULES)
    for name in C.METRICS:
        if any(rule in name for rule in rules):  # a key that names a rule names it last
            assert any(name.endswith(f"_{rule}") for rule in rules), name
    assert C.key("positioning_rmse", C.TOP_PI) == "positioning_rmse_top_pi"


def test_older_keys_are_read_back_under_todays_names():
    old = {
        "positioning_rmse": 0.001,
        "baseline_positioning_rmse": 0.06,
        "accuracy_top1": 0.99,
        "main_metric": "accuracy_top1",
        "test_nll": -1.0,
    }
    new = C.upgrade(old)
    assert new == {
        "positioning_rmse_top_pi": 0.001,
        "positioning_rmse_baseline": 0.06,
        "accuracy_top_pi": 0.99,
        "main_metric": "accuracy_top_pi",
        "test_nll": -1.0,
    }
    assert C.upgrade(new) == new  # today's files pass unchanged
    assert set(C.RENAMED.values()) <= set(C.METRICS)


@pytest.mark.parametrize(
    "metrics, diverged, status",
    [
        ({"test_nll": -1.0, "unconditional_nll": 0.2}, [], "ok"),
        ({"test_nll": 0.5, "unconditional_nll": 0.2}, [], "degenerate"),
        ({"test_nll": math.nan, "unconditional_nll": 0.2}, [], "degenerate"),
        ({"test_nll": -1.0, "unconditional_nll": 0.2, "bayes_nll": math.inf}, [], "nonfinite"),
        ({"test_nll": 0.5, "unconditional_nll": 0.2}, ["MDN: loss=nan"], "diverged"),
    ],
)
def test_the_status_rule(metrics, diverged, status):
    found, reason = C.run_status(metrics, diverged)
    assert found == status and (reason == "") == (status == "ok")
    assert found in C.RUN_STATUSES


def test_timing_keys_are_recognised():
    assert C.is_timing("train_seconds") and C.is_timing("train_seconds_baseline") and C.is_timing("images_per_second")
    assert not C.is_timing("checkpoint") and not C.is_timing("test_nll")


def test_the_point_rules_are_the_mixtures_own():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(6, mdn.DiagonalMixture.n_raw(3, 2), generator=g, dtype=torch.float64)
    mixture = mdn.DiagonalMixture.from_raw(raw, 3, 2)
    torch.testing.assert_close(C.point(mixture, C.TOP_PI), mixture.most_probable_mean())
    torch.testing.assert_close(C.point(mixture, C.MIXTURE_MEAN), mixture.mean())
    torch.testing.assert_close(C.point(mixture, C.TOP_MODE), mixture.modes().location[:, 0])
    # peak density: the largest pi_k / sqrt(det Sigma_k), i.e. pi_k / prod_d sigma_kd for a diagonal mixture
    score = mixture.pi / mixture.component_std().prod(-1)
    torch.testing.assert_close(C.point(mixture, C.PEAK_DENSITY), mixture.mu[torch.arange(6), score.argmax(-1)])
    with pytest.raises(ValueError, match="no point-prediction rule"):
        C.point(mixture, "median")


def test_the_report_the_summary_and_the_references_name_only_contract_keys():
    """REPORT.md's template, references.yaml and the sweep summary read their names from the contract."""
    import re
    from pathlib import Path

    import yaml

    from mdn_experiments.tools import report, reproduce

    tools = Path(reproduce.__file__).parent
    references = yaml.safe_load((tools / reproduce.REFERENCES_FILE).read_text())["rows"]
    assert {row["metric"] for row in references} <= set(C.METRICS)
    template = (tools / reproduce.TEMPLATE_FILE).read_text()
    named = set(re.findall(r"""s\(\s*(?:"[^"]+"|sweep),\s*"([a-z0-9_]+)\"""", template))
    named |= set(re.findall(r"""has\(\s*sweep,\s*"([a-z0-9_]+)\"""", template))
    assert len(named) >= 12 and named <= set(C.METRICS), named - set(C.METRICS)
    summary_metrics = set(report.SUMMARY_COLUMNS) - {"job", "main_metric", "main_value", "bic", "reason"}
    assert summary_metrics <= set(C.METRICS)


def test_the_top_mode_of_a_large_test_set_is_found_a_chunk_at_a_time_bit_for_bit(monkeypatch):
    import torch

    from mdn_experiments import mdn

    torch.manual_seed(0)
    mixture = mdn.mixture_from_raw(torch.randn(3000, mdn.DiagonalMixture.n_raw(5, 2)), 5, 2)
    monkeypatch.setattr(C, "POINT_CHUNK", 10**9)
    whole = C.point(mixture, C.TOP_MODE)
    monkeypatch.setattr(C, "POINT_CHUNK", 700)
    assert torch.equal(C.point(mixture, C.TOP_MODE), whole) and whole.shape == (3000, 2)
