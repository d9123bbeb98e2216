"""Honest numbers and bounded resources: a run whose metrics are not finite is not ok and its
metrics.json stays standard JSON; mdn-predict never drops a row and refuses what it cannot honour;
memory that cannot fit is refused before any work, with the estimate (mdn_experiments.run.resources);
an unreachable MLflow server fails within seconds, with a message that blames the right thing."""

from __future__ import annotations

import pytest

from mdn_experiments.run import resources


class TestMemoryBounds:
    def test_the_estimate_grows_as_the_modes_do(self):
        """The modes solve a (K, K, D, D) system per input: four times the memory for twice K."""
        small = resources.evaluation_bytes(1000, 50, 2)["the modes of the test mixtures"]
        large = resources.evaluation_bytes(1000, 100, 2)["the modes of the test mixtures"]
        assert large == 4 * small
        assert small >= 1000 * 50 * 50 * 2 * 2 * 8  # at least the float64 system itself

    def test_the_default_runs_fit_here(self):
        estimate = resources.run_estimate(
            n_data=12000,
            input_size=1,
            out_dim=1,
            K=3,
            n_eval=10000,
            parameters=5000,
            activations_per_input=200,
            batch=128,
        )
        assert estimate.peak < resources.available_memory()

    def test_an_estimate_refusal_names_its_largest_part(self):
        estimate = resources.Estimate({"small": 1, "the big part": 10 * resources.GIB})
        with pytest.raises(
            resources.ResourceError,
            match=r"needs about 10 GiB of memory \(the big part: 10 GiB\), "
            r"but 1 GiB are available: less",
        ):
            estimate.check(resources.GIB, "this", "less")
