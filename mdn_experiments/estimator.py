"""`MDNRegressor`: a mixture density network as a scikit-learn estimator.

    from mdn_experiments import MDNRegressor
    model = MDNRegressor(K=3, random_state=0).fit(X, y)      # numpy arrays or pandas frames
    model.predict(X)                                          # the predictive mean (or the top mode)
    dist = model.predict_dist(X)                              # the mixtures, in y's units
    dist.log_prob(y), dist.sample(100, seed=0), dist.modes(), dist.marginal(0).quantiles([0.05, 0.95])
    model.score(X, y)                                         # the mean log-likelihood (higher is better)
    model.to_onnx("model.onnx")                               # for mdn-predict model.onnx, without torch

It trains through the code `mdn-run dataset=table` uses: the same composed configuration (the
table defaults the UCI suite proved: an ensemble of 3 MLP[50] MDNs of K=3, Adam at 0.02 with a
cosine decay, a budget of 2000 steps, the kept weights those of the best validation NLL), the same
network builder, standardisation and trainer. Needs scikit-learn (`pip install
'mdn-experiments[sklearn]'`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from mdn_experiments.errors import UserError

MIN_SAMPLES = 3  # two to train, one to validate
PREDICTIONS = ("mean", "mode")


class MDNRegressor(RegressorMixin, BaseEstimator):
    """A mixture density network p(y | x) = sum_k pi_k(x) N(y; mu_k(x), Sigma_k(x)).

    Parameters (the defaults are `dataset=table`'s):
        K: components per ensemble member.
        covariance: "diag", "isotropic" or "full" (the components' covariance, for y of D > 1).
        hidden: the MLP's hidden layer widths.
        activation: the MLP's nonlinearity (relu, tanh, ...).
        members: an ensemble of this many MDNs, merged into one mixture of members * K components.
        lr, steps, max_epochs, patience: Adam's step size; the budget of optimiser steps (the
            minibatch follows from the training rows); at most this many epochs; stop after this
            many epochs without a better validation NLL.
        sigma_min: the floor of every standard deviation, in standardised target units.
        validation_fraction: the rows held out (drawn with random_state) to choose the kept weights.
        prediction: what predict() returns, "mean" or "mode" (the highest mode).
        random_state: an int (the same fit for the same data) or None (a fresh seed).

    Attributes after fit: network_ (the torch network), history_ (per-epoch losses), best_val_nll_,
    n_iter_ (epochs), n_features_in_, feature_names_in_ (frames with column names), n_outputs_.
    """

    def __init__(
        self,
        K: int = 3,
        covariance: str = "diag",
        hidden: tuple[int, ...] = (50,),
        activation: str = "relu",
        members: int = 3,
        lr: float = 0.02,
        steps: int = 2000,
        max_epochs: int = 300,
        patience: int = 40,
        sigma_min: float = 1e-3,
        validation_fraction: float = 0.1,
        prediction: str = "mean",
        random_state: int | None = 0,
    ) -> None:
        self.K = K
        self.covariance = covariance
        self.hidden = hidden
        self.activation = activation
        self.members = members
        self.lr = lr
        self.steps = steps
        self.max_epochs = max_epochs
        self.patience = patience
        self.sigma_min = sigma_min
        self.validation_fraction = validation_fraction
        self.prediction = prediction
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y may be (n, D): one D-dimensional mixture
        tags.target_tags.single_output = True
        tags.regressor_tags.poor_score = True  # score() is the mean log-likelihood, not R^2
        return tags

    # --- fitting ---------------------------------------------------------------------------------

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.default_rng().integers(2**31 - 1))
        if isinstance(self.random_state, (bool, np.bool_)) or not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state={self.random_state!r}: an integer or None")
        return int(self.random_state)

    def _config(self, seed: int):
        """The configuration `mdn-run dataset=table` composes, with this estimator's parameters."""
        from mdn_experiments.config.compose import compose, composition_error
        from mdn_experiments.config.ranges import validate

        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction={self.prediction!r}: one of {', '.join(PREDICTIONS)}")
        if not (isinstance(self.validation_fraction, (int, float)) and 0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction={self.validation_fraction!r}: a number between 0 and 1")
        hidden = [self.hidden] if isinstance(self.hidden, (int, np.integer)) else list(self.hidden)
        overrides = [
            "dataset=table",
            f"K={self.K}",
            f"seed={seed}",
            f"model.covariance={self.covariance}",
            f"model.members={self.members}",
            f"model.backbone.hidden=[{','.join(str(h) for h in hidden)}]",
            f"model.backbone.activation={self.activation}",
            f"model.sigma_min={self.sigma_min!r}",
            f"trainer.lr={self.lr!r}",
            f"trainer.steps={self.steps}",
            f"trainer.epochs={self.max_epochs}",
            f"trainer.patience={self.patience}",
            "trainer.device=cpu",
            "trainer.progress=false",
        ]
        try:
            cfg = compose(overrides)
            validate(cfg)
        except UserError as err:
            raise ValueError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - Hydra's refusal of a value of the wrong type or choice
            text = f"{err}\n{err.__cause__ or ''}"
            raise ValueError(f"MDNRegressor: {composition_error(text, 'mdn-run')}") from None
        return cfg

    def fit(self, X, y) -> MDNRegressor:
        """Train on X (n, F) and y (n,) or (n, D); returns self."""
        from mdn_experiments.config import RunSettings
        from mdn_experiments.datasets.arrays import ArrayDataset
        from mdn_experiments.run.build import RunObjects, build, optimizer_factory
        from mdn_experiments.run.runner import make_trainer

        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y2 = y.reshape(len(y), -1)
        limit = float(np.finfo(np.float32).max)
        if np.abs(X).max(initial=0) > limit or np.abs(y2).max(initial=0) > limit:
            raise ValueError("X and y must lie within the float32 range (about 3.4e38)")
        if X.shape[0] < MIN_SAMPLES:
            raise ValueError(
                f"MDNRegressor needs at least {MIN_SAMPLES} samples (2 to train, 1 to validate), "
                f"got n_samples = {X.shape[0]}"
            )
        seed = self._seed()
        cfg = self._config(seed)
        dataset = ArrayDataset(X, y2, self.validation_fraction)
        try:
            objects = RunObjects(
                RunSettings.from_config(cfg, n_train=dataset.n_train),
                dataset,
                torch.device("cpu"),
                optimizer_factory(cfg),
                lambda head, K=None, members=None: build(cfg, dataset, head, K, members),
            )
        except UserError as err:
            raise ValueError(str(err)) from None
        with torch.random.fork_rng(devices=[]):  # the caller's torch RNG is left as it was
            torch.manual_seed(seed)
            splits = dataset.load(seed)
            network = objects.prepared("mdn", splits)
            result = make_trainer(objects, network, splits, progress=False, desc="MDNRegressor").run()
        if result.diverged:
            raise RuntimeError(f"MDNRegressor: training diverged ({result.diverged})")
        self.network_ = network.eval()
        self.history_ = result.history
        self.best_val_nll_ = float(result.best_val_loss)
        self.n_iter_ = len(result.history)
        self.n_outputs_ = y2.shape[1]
        self._y_is_1d = y.ndim == 1
        self._covariance_kind = cfg.model.covariance
        return self

    # --- asking ----------------------------------------------------------------------------------

    def predict_dist(self, X):
        """The predicted mixtures (a batch of n), in y's units: `mdn_experiments.serve.Mixture`, with
        log_prob(y), mean(), covariance(), modes(), sample(n, seed), marginal(d).quantiles(levels)."""
        from mdn_experiments.models import predict
        from mdn_experiments.tools.predict import served

        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        with torch.no_grad():
            return served(predict(self.network_, torch.from_numpy(np.array(X, dtype=np.float32, order="C"))))

    def predict(self, X) -> np.ndarray:
        """The predictive mean (prediction="mean") or the highest mode ("mode"): (n,) for a 1-D y,
        else (n, D)."""
        dist = self.predict_dist(X)
        point = dist.mean() if self.prediction == "mean" else dist.modes().location[:, 0, :]
        return point[:, 0] if self._y_is_1d else point

    def score(self, X, y, sample_weight=None) -> float:
        """The mean log-likelihood of y under the predicted mixtures (nats per sample; higher is
        better): the proper score the network was trained on. Not R^2."""
        dist = self.predict_dist(X)
        y = np.asarray(y, dtype=np.float64).reshape(dist.n, -1)
        log_p = dist.log_prob(y)
        return float(np.average(log_p, weights=sample_weight))

    def to_onnx(self, path: str | Path, force: bool = False) -> Path:
        """The fitted MDN as an ONNX file and its sidecar (what `mdn-export` writes for a run):
        `mdn-predict PATH --x ...` or `serve.load_exported(PATH)` ask it without torch."""
        from mdn_experiments.tools import export

        check_is_fitted(self, "network_")
        target = Path(path)
        export.check_target(target, force)
        names = [str(n) for n in getattr(self, "feature_names_in_", [])]
        onnx_path, _ = export.write_export(
            self.network_,
            target,
            input_shape=(self.n_features_in_,),
            covariance=self._covariance_kind,
            K=int(self.K),
            members=int(self.members),
            dataset="MDNRegressor",
            features=names,
            targets=[],
            facts={
                "estimator": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()},
                "best_val_nll": self.best_val_nll_ if math.isfinite(self.best_val_nll_) else None,
            },
        )
        return onnx_path
