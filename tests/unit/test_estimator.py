"""MDNRegressor: scikit-learn's own estimator checks, Pipeline, cross_val_score and GridSearchCV, the
defaults of `dataset=table`, pandas frames, a 2-D target, and its ONNX export answering as it does."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from mdn_experiments import MDNRegressor  # noqa: E402

SMALL = dict(K=2, members=1, hidden=(8,), steps=60, max_epochs=20, patience=5)  # seconds, not minutes


def two_branches(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The inverse sine: x = t + 0.3 sin(2 pi t) + noise; t given x has up to three branches."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1, n)
    x = t + 0.3 * np.sin(2 * np.pi * t) + rng.uniform(-0.1, 0.1, n)
    return x[:, None], t


def test_scikit_learn_s_estimator_checks_pass():
    check_estimator(MDNRegressor(**SMALL))


def test_the_defaults_are_those_of_dataset_table():
    from mdn_experiments.config.compose import compose

    table = compose(["dataset=table"])
    ours = MDNRegressor()._config(seed=0)
    for key in (
        "K",
        "model.members",
        "model.backbone.hidden",
        "model.backbone.activation",
        "model.sigma_min",
        "trainer.lr",
        "trainer.steps",
        "trainer.epochs",
        "trainer.patience",
        "trainer.lr_schedule",
    ):
        node_t, node_o = table, ours
        for part in key.split("."):
            node_t, node_o = node_t[part], node_o[part]
        assert node_o == node_t, key


def test_it_fits_the_branches_and_scores_by_log_likelihood():
    x, t = two_branches(600)
    model = MDNRegressor(K=3, members=1, hidden=(20,), steps=400, random_state=0).fit(x, t)
    one = MDNRegressor(K=1, members=1, hidden=(20,), steps=400, random_state=0).fit(x, t)
    x_new, t_new = two_branches(400, seed=1)
    assert model.score(x_new, t_new) > one.score(x_new, t_new) + 0.2  # the mixture beats one Gaussian
    dist = model.predict_dist(np.array([[0.5]]))
    modes = dist.modes()
    assert modes.valid[0].sum() >= 2  # x = 0.5 has several inverses
    np.testing.assert_allclose(model.predict(np.array([[0.5]])), dist.mean()[:, 0])
    q = dist.marginal(0).quantiles([0.05, 0.5, 0.95])
    assert q.shape == (1, 3) and q[0, 0] < q[0, 1] < q[0, 2]
    assert dist.sample(50, seed=0).shape == (50, 1, 1)
    top = model.set_params(prediction="mode").predict(np.array([[0.5]]))  # no refit: only predict changes
    np.testing.assert_allclose(top, modes.location[:, 0, 0])


def test_pipeline_cross_val_score_and_grid_search():
    x, t = two_branches(240)
    pipe = make_pipeline(StandardScaler(), MDNRegressor(**SMALL))
    pipe.fit(x, t)
    assert pipe.predict(x[:5]).shape == (5,)
    scores = cross_val_score(make_pipeline(StandardScaler(), MDNRegressor(**SMALL)), x, t, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    search = GridSearchCV(MDNRegressor(**SMALL), {"K": [1, 3]}, cv=2).fit(x, t)
    assert search.best_params_["K"] in (1, 3) and np.isfinite(search.best_score_)
    assert set(search.cv_results_["param_K"]) == {1, 3}


def test_frames_keep_their_names_and_a_2d_target_gives_a_2d_mixture(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = np.stack([frame.a + 0.1 * rng.normal(size=200), frame.b * frame.a], axis=1)
    model = MDNRegressor(**{**SMALL, "covariance": "full"}).fit(frame, y)
    assert list(model.feature_names_in_) == ["a", "b"] and model.n_outputs_ == 2
    assert model.predict(frame.iloc[:4]).shape == (4, 2)
    assert model.predict_dist(frame.iloc[:4]).covariance().shape == (4, 2, 2)
    with pytest.raises(ValueError, match="n_samples = 1"):
        MDNRegressor(**SMALL).fit(frame.iloc[:1], y[:1])
    with pytest.raises(ValueError, match="K=0 is not allowed"):
        MDNRegressor(**{**SMALL, "K": 0}).fit(frame, y)
    with pytest.raises(ValueError, match="model.covariance='fulll' is not allowed: .* one of diag, isotropic, full"):
        MDNRegressor(**{**SMALL, "covariance": "fulll"}).fit(frame, y)


def test_to_onnx_answers_as_the_estimator():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import tempfile
    from pathlib import Path

    from mdn_experiments.serve import load_exported

    x, t = two_branches(300)
    model = MDNRegressor(**{**SMALL, "members": 2}).fit(x, t)
    with tempfile.TemporaryDirectory() as tmp:
        path = model.to_onnx(Path(tmp) / "est.onnx")
        exported = load_exported(path)
        assert exported.sidecar["components"] == 4 and exported.sidecar["dataset"] == "MDNRegressor"
        got, want = exported.predict(x.astype(np.float32)), model.predict_dist(x)
    np.testing.assert_allclose(np.exp(got.log_weights), want.pi, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.means, want.means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.log_prob(t[:, None]), want.log_prob(t[:, None]), atol=1e-4)
