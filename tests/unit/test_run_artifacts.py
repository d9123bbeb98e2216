"""Honest numbers and bounded resources: a run whose metrics are not finite is not ok and its
metrics.json stays standard JSON; mdn-predict never drops a row and refuses what it cannot honour;
memory that cannot fit is refused before any work, with the estimate (mdn_experiments.run.resources);
an unreachable MLflow server fails within seconds, with a message that blames the right thing."""

from __future__ import annotations

import json
import math

from mdn_experiments.run.artifacts import finite_metrics


class TestHonestNumbers:
    def test_finite_metrics_maps_each_non_finite_value_to_null_and_says_which(self):
        out = finite_metrics({"a": 1.0, "b": math.inf, "c": -math.inf, "d": math.nan, "e": "text", "f": 3})
        assert out == {
            "a": 1.0,
            "b": None,
            "c": None,
            "d": None,
            "e": "text",
            "f": 3,
            "non_finite": "b=inf; c=-inf; d=nan",
        }
        json.dumps(out, allow_nan=False)
