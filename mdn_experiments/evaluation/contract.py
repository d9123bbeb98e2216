"""The metrics contract: one place for the names every file and report shares.

- thresholds, one constant per concept;
- the point-prediction rules: how a mixture (or the MSE network) is read as one answer;
- the metric keys of metrics.json, named quantity then rule (`positioning_rmse_top_pi`: the
  positioning RMSE of the rule "mean of the top-pi component"), each with what it means;
- the run statuses.

metrics.json, history.csv, the sweep summary, REPORT.md, references.yaml and the docs' metrics page
read their names from here. Torch-free: the rules' implementations import torch only when called.
"""

from __future__ import annotations

import math
from typing import Any

# --- thresholds: one constant per concept ---------------------------------------------------------
ACTIVE_PI = 0.05  # a component with pi >= this at an input is active there
MIN_MODE_MASS = 0.05  # a mode holding less probability is not counted as a branch or a candidate answer
DEAD_PI = 0.01  # a component whose pi stays below this on every input is dead
BRANCH_RADIUS = 0.05  # rad: an analytic arm solution within this of a mode counts as found

# --- point-prediction rules -----------------------------------------------------------------------
TOP_PI = "top_pi"  # the mean of the component with the largest pi
TOP_MODE = "top_mode"  # the highest mode of the mixture's density
MIXTURE_MEAN = "mixture_mean"  # the mixture's mean, sum_k pi_k mu_k (what an MSE network estimates)
PEAK_DENSITY = "peak_density"  # the mean of the component with the largest pi_k / sqrt(det Sigma_k)
BEST_OF_MODES = "best_of_modes"  # the mode (holding >= MIN_MODE_MASS) closest to the truth: an oracle
ANY_ACTIVE = "any_active"  # right when any active component is (an oracle over candidates)
BASELINE = "baseline"  # the MSE network's prediction
GAUSSIAN = "gaussian"  # the K=1 MDN: one Gaussian with an input-dependent mean and scale
IDEAL_MEAN = "ideal_mean"  # the true conditional mean E[y|x] (where it is known)

RULES = {
    TOP_PI: "the mean of the component with the largest mixing coefficient pi_k (Bishop's rule)",
    TOP_MODE: "the highest mode of p(y|x), found by mean-shift from every component mean",
    MIXTURE_MEAN: "the mixture's mean sum_k pi_k mu_k: what a network trained by MSE estimates",
    PEAK_DENSITY: "the mean of the component with the largest peak density pi_k / sqrt(det Sigma_k)",
    BEST_OF_MODES: "the mode holding >= MIN_MODE_MASS of the probability that is closest to the truth (an oracle)",
    ANY_ACTIVE: "right when some component with pi_k >= ACTIVE_PI is right (an oracle over the candidates)",
    BASELINE: "the MSE network with the same backbone (the paper's foil)",
    GAUSSIAN: "the K=1 MDN with the same backbone (the heteroscedastic Gaussian network: one Gaussian per input)",
    IDEAL_MEAN: "the true conditional mean E[y|x] (the inverse-sine problem, where it is known exactly)",
}


def key(quantity: str, rule: str | None = None) -> str:
    """A metric key: quantity, then the rule that made the prediction (`rmse`, `baseline` -> `rmse_baseline`)."""
    return f"{quantity}_{rule}" if rule else quantity


def column_key(name: str, column: str) -> str:
    """A metric of one target column of a table with several (`test_ll[theta1]`): the metric of
    that column's marginal mixture."""
    return f"{name}[{column}]"


def base_key(name: str) -> str:
    """The METRICS key a metrics.json key stands for (`test_ll[theta1]` -> `test_ll`)."""
    return name.split("[", 1)[0] if name.endswith("]") else name


POINT_CHUNK = 8192  # inputs whose modes are sought at once by point()


def torch_cat(parts):
    import torch  # this module is torch-free until a mixture is read

    return torch.cat(parts)


def point(mixture, rule: str):
    """The mixture read as one answer per input, by `rule` (TOP_PI, TOP_MODE, MIXTURE_MEAN or
    PEAK_DENSITY): (N, D)."""
    if rule == TOP_PI:
        return mixture.most_probable_mean()
    if rule == MIXTURE_MEAN:
        return mixture.mean()
    if rule == TOP_MODE:  # the highest mode of a chunk of inputs at a time: the other slots are not kept
        n = mixture.batch_shape[0] if len(mixture.batch_shape) == 1 else None
        if n is None or n <= POINT_CHUNK:
            return mixture.modes().location[..., 0, :]
        return torch_cat([mixture[i : i + POINT_CHUNK].modes().location[:, 0, :] for i in range(0, n, POINT_CHUNK)])
    if rule == PEAK_DENSITY:
        import torch

        score = mixture.log_pi - 0.5 * torch.linalg.slogdet(mixture.component_covariance()).logabsdet
        k = score.argmax(-1)
        return mixture.mu[torch.arange(k.shape[0]), k]
    raise ValueError(
        f"no point-prediction rule {rule!r}; rules: {', '.join((TOP_PI, TOP_MODE, MIXTURE_MEAN, PEAK_DENSITY))}"
    )


# --- metric keys ----------------------------------------------------------------------------------
# every run
TEST_NLL, VAL_NLL, TRAIN_NLL = "test_nll", "val_nll", "train_nll"
TEST_LL = "test_ll"
LL_GAIN = "ll_gain_over_gaussian"  # test_ll - test_ll_gaussian
FOIL_SENTENCE = "foil_sentence"  # - test_nll: the tabular benchmarks' sign (higher is better)
UNCONDITIONAL_NLL = "unconditional_nll"
RMSE_BASELINE = key("rmse", BASELINE)
CRPS, CRPS_BASELINE = "crps", key("crps", BASELINE)
COVERAGE_50, COVERAGE_90, PIT_KS = "coverage_50", "coverage_90", "pit_ks"
MEAN_ACTIVE_COMPONENTS = "mean_active_components"
# inverse sine
BAYES_NLL, NLL_GAP = "bayes_nll", "nll_gap"
RMSE_TOP_PI, RMSE_MIXTURE_MEAN, RMSE_IDEAL_MEAN = (
    key("rmse", TOP_PI),
    key("rmse", MIXTURE_MEAN),
    key("rmse", IDEAL_MEAN),
)
RMSE_TOP_MODE = key("rmse", TOP_MODE)
RMSE_TO_IDEAL_MEAN_BASELINE = key("rmse_to_ideal_mean", BASELINE)
BRANCH_COUNT_ACCURACY = "branch_count_accuracy"
# robot arm
POSITIONING_RMSE = "positioning_rmse"
POSITIONING_RMSE_TOP_PI = key(POSITIONING_RMSE, TOP_PI)
POSITIONING_RMSE_BASELINE = key(POSITIONING_RMSE, BASELINE)
BRANCH_COVERAGE = "branch_coverage"
# MNIST
ACCURACY_TOP_PI, ACCURACY_ANY_ACTIVE, ACCURACY_BASELINE = (
    key("accuracy", TOP_PI),
    key("accuracy", ANY_ACTIVE),
    key("accuracy", BASELINE),
)

METRICS: dict[str, str] = {  # every number and text metrics.json holds, with what it means
    "dataset": "the dataset's name",
    "main_metric": "the key the sweep summary reports for this task",
    "K": "the number of mixture components",
    "seed": "the seed of the data, the initialisation and the minibatch order",
    "status": "ok, diverged, degenerate or nonfinite (see STATUSES)",
    "status_reason": "why the status is not ok (empty when it is)",
    TEST_NLL: "negative log-likelihood of the test targets, nats per sample",
    UNCONDITIONAL_NLL: "test NLL of one Gaussian fitted to the training targets, ignoring x",
    VAL_NLL: "validation NLL of the weights kept (the best epoch)",
    TRAIN_NLL: "NLL on the first 10 000 training points",
    "best_epoch": "the epoch whose weights were kept",
    "epochs_run": "epochs the MDN trained",
    "rollbacks": "steps or epochs the non-finite guard rolled back (MDN)",
    "rollback_at": "where those rollbacks were: epoch, step, what was not finite",
    "effective_components": "exp of the entropy of the average pi on the validation set",
    "dead_components": f"components with pi < {DEAD_PI} on every validation input",
    "responsibility_entropy": "mean entropy of p(k | x, y) on the validation set, nats",
    "sigma_floor_share": "share of the validation scales sitting at the floor sigma_min",
    "revivals": "dead components re-seeded (trainer.revive_dead)",
    "revived_at": "which component, at which epoch",
    "n_train": "training points",
    "n_params": "the MDN's weights",
    "precision": "the backbone's arithmetic, trainer.precision as run: float32 or bf16",
    "train_seconds": "the MDN's training time",
    "samples_per_second": "the MDN's training throughput (vector inputs)",
    "images_per_second": "the MDN's training throughput (images)",
    RMSE_BASELINE: "test RMSE of the MSE network",
    key("n_params", BASELINE): "the MSE network's weights",
    key("train_seconds", BASELINE): "the MSE network's training time",
    key("rollbacks", BASELINE): "rollbacks of the MSE network's training",
    key("rollback_at", BASELINE): "where those rollbacks were",
    COVERAGE_50: "share of test targets inside the 50 % highest-density region",
    COVERAGE_90: "share of test targets inside the 90 % highest-density region",
    CRPS: "continuous ranked probability score of the test mixtures (1-D targets), lower is better",
    CRPS_BASELINE: "the MSE network's CRPS (its absolute error)",
    PIT_KS: "Kolmogorov-Smirnov distance of the PIT values from uniform (1-D targets)",
    MEAN_ACTIVE_COMPONENTS: f"mean number of components with pi >= {ACTIVE_PI}",
    "direction": "inverse sine: inverse (t from x) or forward (x from t)",
    BAYES_NLL: "inverse sine: NLL of the true conditional density on the test points",
    NLL_GAP: "inverse sine: test_nll - bayes_nll",
    RMSE_IDEAL_MEAN: "inverse sine: RMSE of the true E[t|x] against the test targets",
    RMSE_TOP_PI: "inverse sine, tables: test RMSE of the top-pi rule",
    RMSE_MIXTURE_MEAN: "inverse sine, tables: test RMSE of the mixture's mean (the predictive mean)",
    RMSE_TO_IDEAL_MEAN_BASELINE: "inverse sine: RMS distance of the MSE network from the true E[t|x]",
    BRANCH_COUNT_ACCURACY: f"inverse sine: share of inputs whose modes (mass >= {MIN_MODE_MASS}) match the "
    "true branches",
    "active_components_one_branch": "inverse sine: active components where the inverse has one branch",
    "active_components_three_branches": "inverse sine: active components where it has three",
    POSITIONING_RMSE_TOP_PI: "robot arm: RMS distance from the desired position to where the top-pi angles reach",
    key("positioning_mean_error", TOP_PI): "robot arm: the mean of those distances",
    key("positioning_max_error", TOP_PI): "robot arm: the largest of them",
    key(POSITIONING_RMSE, TOP_MODE): "robot arm: positioning RMSE of the highest mode",
    key(POSITIONING_RMSE, BEST_OF_MODES): "robot arm: positioning RMSE of the best mode (an oracle)",
    key(POSITIONING_RMSE, PEAK_DENSITY): "robot arm: positioning RMSE of the peak-density rule (Bishop's alpha/sigma)",
    key(POSITIONING_RMSE, MIXTURE_MEAN): "robot arm: positioning RMSE of the mixture's mean",
    POSITIONING_RMSE_BASELINE: "robot arm: positioning RMSE of the MSE network",
    key("positioning_mean_error", BASELINE): "robot arm: the MSE network's mean positioning error",
    BRANCH_COVERAGE: f"robot arm: share of doubled points with both solutions within {BRANCH_RADIUS} rad of a mode",
    "doubled_share": "robot arm: share of test points with two solutions in the angle box",
    "mean_modes": f"robot arm: mean number of modes holding >= {MIN_MODE_MASS}",
    ACCURACY_TOP_PI: "MNIST: share of test digits whose top-pi mean rounds to the label",
    key("accuracy", TOP_MODE): "MNIST: the same for the highest mode",
    ACCURACY_ANY_ACTIVE: "MNIST: share of test digits with some active component rounding to the label",
    key("accuracy", MIXTURE_MEAN): "MNIST: the same for the mixture's mean",
    ACCURACY_BASELINE: "MNIST: the rounded MSE network",
    TEST_LL: "tables: test log-likelihood per example in the target's original units (- test_nll)",
    RMSE_TOP_MODE: "tables: test RMSE of the highest mode of the mixture",
    "nll_units": "tables: the units of test_nll and test_ll, and the treatment of the target",
    "targets": "tables: the target column(s)",
    "n_features": "tables: the feature columns used",
    "dropped_rows": "tables: rows dropped for missing or non-finite values (dataset.missing=drop)",
    "dropped_features": "tables: feature columns left out for being constant on the training rows",
    "duplicate_rows": "tables: test rows that are exact copies (features and target) of a row of the training part "
    "(training and validation): their scores are not out-of-sample",
    "discrete_target": "tables: why the target is flagged as discrete (few distinct values, or many rows at one "
    "value); empty when it is not",
    "target_resolution": "tables: the recording resolution of the target (the smallest gap between its distinct "
    "training values, or dataset.resolution)",
    "dequantized": "tables: whether uniform noise of one resolution was added to every target (dataset.dequantize)",
    key(TEST_NLL, GAUSSIAN): "test NLL of the K=1 MDN (trained beside the MDN; tables by default)",
    key(TEST_LL, GAUSSIAN): "test log-likelihood of the K=1 MDN, original units",
    key(VAL_NLL, GAUSSIAN): "validation NLL of the K=1 MDN's kept weights",
    key("rmse", GAUSSIAN): "test RMSE of the K=1 MDN's mean",
    key(CRPS, GAUSSIAN): "test CRPS of the K=1 MDN (1-D targets)",
    key(COVERAGE_90, GAUSSIAN): "share of test targets inside the K=1 MDN's 90 % region",
    key("n_params", GAUSSIAN): "the K=1 MDN's weights",
    key("train_seconds", GAUSSIAN): "the K=1 MDN's training time",
    key("rollbacks", GAUSSIAN): "rollbacks of the K=1 MDN's training",
    key("rollback_at", GAUSSIAN): "where those rollbacks were",
    LL_GAIN: "tables: test log-likelihood of the MDN minus that of its K=1 foil, nats per sample (> 0: the "
    "mixture was worth it)",
    FOIL_SENTENCE: "tables: one sentence saying whether the mixture beat its K=1 foil, with the numbers",
    "metrics_seconds": "time spent on the metrics",
    "figures_seconds": "time spent on the figures",
    "wall_seconds": "time from the data to metrics.json",
    "data_seconds": "time to make or read the data",
    "non_finite": "the metrics that were not finite numbers (null in metrics.json), and their values",
}


def foil_sentence(test_ll: float, foil_ll: float) -> str:
    """Whether the mixture beat its K=1 foil, in one sentence with both test log-likelihoods."""
    gain = test_ll - foil_ll
    numbers = f"test log-likelihood {test_ll:.4g} against {foil_ll:.4g} ({gain:+.3g} nats per sample)"
    if gain > 0:
        return f"the mixture beat its K=1 foil on this table: {numbers}"
    return f"the mixture did not beat its K=1 foil on this table: {numbers}; one Gaussian per input is enough here"


def is_timing(name: str) -> bool:
    """A key that measures time (seconds spent, throughput): it differs between two runs of the same
    config, and is left out when results are compared."""
    words = name.split("_")
    return "seconds" in words or name.endswith("_per_second")


# keys of metrics.json before this naming scheme -> now (read back from older run folders)
RENAMED = {
    "baseline_test_rmse": RMSE_BASELINE,
    "baseline_crps": CRPS_BASELINE,
    "baseline_n_params": key("n_params", BASELINE),
    "baseline_train_seconds": key("train_seconds", BASELINE),
    "baseline_rollbacks": key("rollbacks", BASELINE),
    "baseline_rollback_at": key("rollback_at", BASELINE),
    "most_probable_rmse": RMSE_TOP_PI,
    "mixture_mean_rmse": RMSE_MIXTURE_MEAN,
    "ideal_mean_rmse": RMSE_IDEAL_MEAN,
    "baseline_vs_ideal_mean_rmse": RMSE_TO_IDEAL_MEAN_BASELINE,
    "positioning_rmse": POSITIONING_RMSE_TOP_PI,
    "positioning_mean_error": key("positioning_mean_error", TOP_PI),
    "positioning_max_error": key("positioning_max_error", TOP_PI),
    "positioning_rmse_alpha_over_sigma": key(POSITIONING_RMSE, PEAK_DENSITY),
    "baseline_positioning_rmse": POSITIONING_RMSE_BASELINE,
    "baseline_positioning_mean_error": key("positioning_mean_error", BASELINE),
    "accuracy_top1": ACCURACY_TOP_PI,
    "accuracy_any": ACCURACY_ANY_ACTIVE,
    "baseline_accuracy": ACCURACY_BASELINE,
}


def upgrade(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json of an older run with today's keys (and main_metric), so that every reader sees
    one naming scheme; today's files pass unchanged."""
    out = {RENAMED.get(name, name): value for name, value in metrics.items()}
    if isinstance(out.get("main_metric"), str) and out["main_metric"] in RENAMED:
        out["main_metric"] = RENAMED[out["main_metric"]]
    return out


# --- run statuses -----------------------------------------------------------------------------
# ok, diverged, degenerate, nonfinite come from a run's metrics.json; failed (error.txt: an
# exception), incomplete (neither: interrupted, still running or killed) and damaged (a file of the
# job cannot be read) from its folder. Only `ok` jobs enter means.
RUN_STATUSES = ("ok", "diverged", "degenerate", "nonfinite")
STATUSES = (*RUN_STATUSES, "failed", "incomplete", "damaged")


def non_finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics whose value is a float that is not finite (nan, inf, -inf)."""
    return {name: value for name, value in metrics.items() if isinstance(value, float) and not math.isfinite(value)}


def run_status(metrics: dict[str, Any], diverged: list[str], unusable: bool = False) -> tuple[str, str]:
    """(status, reason) of a trained run, first match wins:

    diverged    the non-finite guard stopped a training phase (`diverged`: which, and why)
    nonfinite   the MDN's test predictions are not finite (`unusable`)
    degenerate  the test NLL is no better than one Gaussian fitted to the training targets
    nonfinite   some metric is not a finite number
    ok          none of these
    """
    if diverged:
        return "diverged", (
            "training stopped by the non-finite guard ("
            + "; ".join(diverged)
            + "); the best weights before it were evaluated"
        )
    if unusable:
        return "nonfinite", (
            "the MDN's predictions on the test set are not finite (inf or nan parameters): the task "
            "metrics, calibration and figures were not computed"
        )
    test_nll, floor = metrics[TEST_NLL], metrics[UNCONDITIONAL_NLL]
    if not test_nll < floor:
        return "degenerate", (
            f"test NLL {test_nll:.4g} is no better than {floor:.4g}, the NLL of one Gaussian "
            "fitted to the training targets"
        )
    bad = non_finite(metrics)
    if bad:
        return "nonfinite", (
            "metrics that are not finite numbers (null in metrics.json): "
            + "; ".join(f"{name}={value}" for name, value in bad.items())
        )
    return "ok", ""
