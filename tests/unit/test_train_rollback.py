"""The non-finite guard (rollback or stop), the run status (ok, diverged, degenerate) and the
unconditional baseline NLL that `degenerate` is judged against."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from mdn_experiments.config import TrainSettings
from mdn_experiments.evaluation.scores import unconditional_nll
from mdn_experiments.models import MLP, build_network
from mdn_experiments.train.trainer import Trainer, evaluate_loss, fit


def toy_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g)
    return x, torch.sin(6 * x) + 0.1 * torch.randn(n, 1, generator=g)


def make_net(seed=0):
    torch.manual_seed(seed)
    return build_network(MLP([1], [16]), [1], 1, "mdn", n_components=2)


def poison_call(net, call_number):
    """Make the network's loss NaN on exactly one call (a transient fault, e.g. a bad batch)."""
    calls = {"n": 0}
    original = net.loss

    def loss(x, y):
        calls["n"] += 1
        value, out = original(x, y)
        return (value * float("nan"), out) if calls["n"] == call_number else (value, out)

    net.loss = loss


class TestRollback:
    def test_an_injected_nan_is_rolled_back_and_training_recovers(self):
        x, y = toy_data()
        net = make_net()
        poison_call(net, 10)  # 4 minibatches + 1 validation pass per epoch: epoch 2, its 4th step... see below
        result = fit(
            net, (x, y), toy_data(seed=1), optimizer_factory=torch.optim.Adam, lr=1e-2, epochs=6, batch_size=64
        )
        # calls 1-4: epoch 1's steps, 5: its validation; 6-9: epoch 2's steps; 10: validation of epoch 2
        assert result.rollbacks == [
            {"epoch": 2, "step": 4, "reason": "validation loss=nan", "lr": pytest.approx(result.rollbacks[0]["lr"])}
        ]
        assert result.diverged == ""
        assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5, 6]  # the epoch was redone
        assert [row["rollbacks"] for row in result.history] == [0, 1, 0, 0, 0, 0]
        # the learning rate was halved from the rollback on (same cosine-free constant schedule)
        assert result.history[0]["lr"] == pytest.approx(1e-2) and result.history[1]["lr"] == pytest.approx(5e-3)
        assert all(math.isfinite(row["val_nll"]) for row in result.history)
        assert result.best_val_loss < result.history[0]["val_nll"]

    def test_a_nan_step_is_not_applied(self):
        x, y = toy_data()
        net = make_net()
        poison_call(net, 1)  # the very first step
        trainer = Trainer(
            net, (x, y), (x, y), TrainSettings(lr=1e-2, epochs=1, batch_size=None), optimizer_factory=torch.optim.SGD
        )
        start = [p.detach().clone() for p in net.parameters()]
        result = trainer.run()
        assert result.rollbacks[0]["step"] == 1 and result.rollbacks[0]["reason"].startswith("loss=nan")
        # the retried step (half the learning rate) is the only update: SGD moved by lr/2 * gradient
        fresh = make_net()
        loss, _ = fresh.loss(x, y)
        grads = torch.autograd.grad(loss, list(fresh.parameters()))
        for p, p0, g in zip(net.parameters(), start, grads):
            assert torch.allclose(p.detach(), p0 - 5e-3 * g, atol=1e-6)

    def test_a_learning_rate_that_blows_up_is_lowered_until_training_is_finite(self):
        x, y = toy_data()
        result = fit(
            make_net(),
            (x, y),
            (x, y),
            optimizer_factory=torch.optim.SGD,
            lr=100.0,
            epochs=30,
            batch_size=64,
            rollback_lr_factor=0.01,
            max_consecutive_rollbacks=10,
        )
        assert len(result.rollbacks) >= 1 and result.diverged == ""
        assert all("validation loss=inf" in r["reason"] or "loss=" in r["reason"] for r in result.rollbacks)
        assert result.history[-1]["lr"] <= 100.0 * 0.01 ** len(result.rollbacks) * (1 + 1e-9)
        assert all(math.isfinite(row["val_nll"]) for row in result.history)

    def test_stop_ends_at_the_first_failure_and_keeps_the_best_weights(self):
        x, y = toy_data()
        xv, yv = toy_data(seed=1)
        net = make_net()
        poison_call(net, 16)  # epoch 4's first step (5 calls an epoch: 4 steps + validation)
        result = fit(
            net,
            (x, y),
            (xv, yv),
            optimizer_factory=torch.optim.Adam,
            lr=1e-2,
            epochs=10,
            batch_size=64,
            on_nonfinite="stop",
        )
        assert result.rollbacks == [] and len(result.history) == 3
        assert result.diverged.startswith("non-finite loss=nan") and "epoch 4 step 1" in result.diverged
        assert evaluate_loss(net, xv, yv)[0] == pytest.approx(result.best_val_loss, abs=1e-6)


def test_unconditional_nll_is_the_test_nll_of_a_gaussian_fitted_to_the_training_targets():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(500, 2, generator=g) @ torch.tensor([[1.0, 0.3], [0.0, 0.5]]) + 2.0
    test = torch.randn(300, 2, generator=g)
    mean, cov = train.double().mean(0).numpy(), np.cov(train.double().numpy().T, bias=True)  # ML estimate
    expected = -stats.multivariate_normal(mean, cov).logpdf(test.double().numpy()).mean()
    assert unconditional_nll(train, test) == pytest.approx(expected, rel=1e-9)
    one_d = unconditional_nll(train[:, :1], test[:, :1])
    assert one_d == pytest.approx(-stats.norm(mean[0], math.sqrt(cov[0, 0])).logpdf(test[:, 0].numpy()).mean())
