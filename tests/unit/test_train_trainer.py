"""The training loop: clipping, best-weight selection, the non-finite guard, early stopping."""

import functools

import pytest
import torch

from mdn_experiments.models import MLP, build_network
from mdn_experiments.train.trainer import evaluate_loss, fit


def toy_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g)
    return x, torch.sin(6 * x) + 0.1 * torch.randn(n, 1, generator=g)


def make_net(head="mdn", seed=0):
    torch.manual_seed(seed)
    return build_network(MLP([1], [16]), [1], 1, head, n_components=2)


def lbfgs_factory():
    return functools.partial(torch.optim.LBFGS, max_iter=5, history_size=20, line_search_fn="strong_wolfe")


def gradient_norm_and_weights(net, x, y) -> tuple[float, torch.Tensor]:
    """The unclipped full-batch gradient norm, computed independently of the trainer, and a copy
    of the weights (flattened) before any step."""
    loss, _ = net.loss(x, y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    norm = torch.sqrt(sum(g.square().sum() for g in grads)).item()
    return norm, torch.cat([p.detach().flatten() for p in net.parameters()]).clone()


def test_clipping_bounds_the_update_and_logs_the_norm_before_clipping():
    x, y = toy_data()
    net = make_net()
    true_norm, before = gradient_norm_and_weights(net, x, y)

    clip = true_norm / 10  # force clipping
    result = fit(
        net, (x, y), (x, y), optimizer_factory=torch.optim.SGD, lr=1.0, epochs=1, batch_size=None, grad_clip=clip
    )
    # one full-batch SGD step with lr=1 moves the parameters by exactly the clipped gradient
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert result.history[0]["grad_norm"] == pytest.approx(true_norm, rel=1e-5)
    assert (after - before).norm().item() == pytest.approx(clip, rel=1e-4)


def test_no_clipping_when_grad_clip_is_none():
    x, y = toy_data()
    net = make_net()
    true_norm, before = gradient_norm_and_weights(net, x, y)
    fit(net, (x, y), (x, y), optimizer_factory=torch.optim.SGD, lr=1e-3, epochs=1, grad_clip=None)
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3 * true_norm, rel=1e-4)


def test_fit_keeps_the_best_validation_weights():
    x, y = toy_data(seed=0)
    xv, yv = toy_data(seed=1)
    net = make_net()
    result = fit(net, (x, y), (xv, yv), optimizer_factory=torch.optim.Adam, lr=3e-2, epochs=40, batch_size=64)
    val_losses = [row["val_nll"] for row in result.history]
    assert result.best_val_loss == min(val_losses)
    assert result.best_epoch == val_losses.index(min(val_losses)) + 1
    # the network now holds exactly those weights
    assert evaluate_loss(net, xv, yv)[0] == pytest.approx(result.best_val_loss, abs=1e-6)
    assert result.history[-1]["val_nll"] >= result.best_val_loss


def test_history_rows_hold_the_documented_columns():
    x, y = toy_data()
    result = fit(
        make_net(),
        (x, y),
        (x, y),
        optimizer_factory=torch.optim.Adam,
        lr=1e-2,
        epochs=3,
        batch_size=100,
        lr_schedule="cosine",
        lr_min_factor=0.1,
    )
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert set(result.history[0]) == {
        "epoch",
        "train_nll",
        "val_nll",
        "grad_norm",
        "grad_norm_max",
        "sigma_floor_share",
        "lr",
        "rollbacks",
        "seconds",
        "effective_components",
        "dead_components",
        "responsibility_entropy",
    }
    assert 0 < result.history[0]["seconds"] < result.history[2]["seconds"]
    assert result.steps == 3 * 3  # ceil(256 / 100) minibatches per epoch
    # the cosine schedule decays the learning rate towards lr * lr_min_factor
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] > lrs[1] > lrs[2] >= 1e-2 * 0.1 - 1e-12


def test_sigma_floor_share_sees_sigmas_at_the_floor():
    x, y = toy_data()
    net = make_net()
    with torch.no_grad():  # push every raw sigma far negative: all sigmas sit at the floor
        K, D = 2, 1
        sigma_slots = slice(K * (1 + D), None)  # raw layout: K logits, K*D means, K*D sigmas
        net.head.linear.bias[sigma_slots] = -1e3
        net.head.linear.weight[sigma_slots] = 0
    assert evaluate_loss(net, x, y)[1]["sigma_floor_share"] == 1.0


def test_a_non_finite_loss_in_every_step_stops_after_the_allowed_rollbacks():
    x, y = toy_data()
    x[5] = float("nan")  # every full pass sees it: no learning rate can help
    net = make_net()
    before = [p.detach().clone() for p in net.parameters()]
    result = fit(
        net,
        (x, y),
        toy_data(seed=1),
        optimizer_factory=torch.optim.Adam,
        lr=1e-2,
        epochs=2,
        max_consecutive_rollbacks=3,
    )
    assert len(result.rollbacks) == 3 and result.history == []
    assert result.diverged.startswith("non-finite loss=nan") and "after 3 rollbacks in a row" in result.diverged
    assert [r["lr"] for r in result.rollbacks] == pytest.approx([1e-2, 5e-3, 2.5e-3])  # halved each time
    # no epoch ever completed: the network keeps its initial weights, never a NaN one
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))


def test_patience_stops_early():
    x, y = toy_data()
    # lr = 0: nothing improves after the first epoch
    result = fit(make_net(), (x, y), (x, y), optimizer_factory=torch.optim.SGD, lr=0.0, epochs=50, patience=3)
    assert len(result.history) == 4


def test_other_optimizers_come_in_through_the_factory():
    x, y = toy_data()
    factory = functools.partial(torch.optim.RMSprop, alpha=0.9)
    result = fit(make_net("mse"), (x, y), (x, y), optimizer_factory=factory, lr=1e-2, epochs=20)
    assert result.history[-1]["train_mse"] < result.history[0]["train_mse"]  # the MSE network's loss


def test_same_seed_same_training():
    x, y = toy_data()
    runs = [
        fit(
            make_net(),
            (x, y),
            (x, y),
            optimizer_factory=torch.optim.Adam,
            lr=1e-2,
            epochs=5,
            batch_size=32,
            seed=7,
            input_noise=0.1,
        ).history
        for _ in range(2)
    ]
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in run] for run in runs]
    assert untimed[0] == untimed[1]


def test_lbfgs_runs_through_the_closure_and_logs_the_loss_at_the_start_of_each_step():
    x, y = toy_data()
    net = make_net()
    start_loss = net.loss(x, y)[0].item()
    result = fit(net, (x, y), (x, y), optimizer_factory=lbfgs_factory(), lr=1.0, epochs=8, batch_size=None)
    rows = result.history
    assert result.steps == 8
    assert rows[0]["train_nll"] == pytest.approx(start_loss, rel=1e-6)
    # full batch, validation on the training data: each step starts where the previous one ended,
    # so the loss logged at step e+1 is the validation loss measured after step e
    for before, after in zip(rows, rows[1:]):
        assert after["train_nll"] == pytest.approx(before["val_nll"], rel=1e-5, abs=1e-6)
    # 8 steps of at most 5 quasi-Newton iterations each: the NLL falls well below the start
    assert result.best_val_loss < start_loss - 0.5


def test_lbfgs_stops_on_a_non_finite_loss_before_changing_the_weights():
    x, y = toy_data()
    x[3] = float("nan")
    net = make_net()
    before = [p.detach().clone() for p in net.parameters()]
    result = fit(
        net, (x, y), toy_data(seed=1), optimizer_factory=lbfgs_factory(), lr=1.0, epochs=3, on_nonfinite="stop"
    )
    assert result.diverged.startswith("non-finite loss=nan, gradient norm=nan at epoch 1 step 1")
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))


def test_target_noise_jitters_the_targets_reproducibly():
    """target_noise adds N(0, (s * y_std)^2) to each minibatch's targets: with lr = 0 the weights do
    not move, so the mean training NLL differs from the noise-free one only through the noise, and
    the same seed gives the same noise."""
    x, y = toy_data()

    def run(noise: float, seed: int = 7) -> list[float]:
        torch.manual_seed(0)
        net = make_net()
        net.fit_standardization(x, y)
        history = fit(
            net, (x, y), (x, y), optimizer_factory=torch.optim.SGD, lr=0.0, epochs=3, seed=seed, target_noise=noise
        ).history
        return [row["train_nll"] for row in history]

    clean, noisy = run(0.0), run(1.0)
    assert noisy == run(1.0) and noisy != run(1.0, seed=8)
    assert all(n > c for n, c in zip(noisy, clean))  # targets one std away from where they were: less likely
    validation = [row["val_nll"] for row in fit(make_net(), (x, y), (x, y), lr=0.0, epochs=1, target_noise=1.0).history]
    assert validation[0] == pytest.approx(make_net().loss(x, y)[0].item(), rel=1e-5)  # validation is never jittered


def test_a_column_major_table_trains_exactly_as_a_row_major_one():
    """A table's parts are column-major views (datasets/table.py): the same numbers, the same
    weights and losses, bit for bit, in minibatches and full batch."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 4, generator=g)
    y = x[:, :1].sin() + 0.1 * torch.randn(300, 1, generator=g)
    x_columns = x.t().contiguous().t()  # the same values, strides (1, 300)
    assert x_columns.stride() == (1, 300) and torch.equal(x_columns, x)
    for batch_size in (32, None):
        nets = []
        for inputs in (x, x_columns):
            torch.manual_seed(0)
            net = build_network(MLP([4], [16]), [4], 1, "mdn", n_components=2)
            history = fit(net, (inputs, y), (inputs[:50], y[:50]), lr=1e-2, epochs=3, batch_size=batch_size).history
            nets.append((net, [{k: v for k, v in row.items() if k != "seconds"} for row in history]))
        assert nets[0][1] == nets[1][1]
        for a, b in zip(nets[0][0].parameters(), nets[1][0].parameters()):
            assert torch.equal(a, b)


def test_the_progress_bar_counts_rows_with_their_rate_and_the_time_left(capsys):
    x, y = toy_data()
    fit(make_net(), (x, y), (x, y), lr=1e-2, epochs=2, batch_size=64, progress=True, desc="MDN")
    err = capsys.readouterr().err
    assert "rows/s" in err and "MDN" in err and "<" in err  # tqdm: elapsed<remaining, rows per second
    assert "/512" in err  # two epochs of 256 training rows


def test_an_epochs_order_is_int32_and_draws_what_an_int64_order_draws():
    """4 B a training row instead of 8, and the same shuffles (so the same training) as before."""
    from mdn_experiments.train.trainer import _batch_order

    order = _batch_order(70_000, 128, torch.Generator().manual_seed(5))
    assert order.dtype == torch.int32
    assert torch.equal(order.long(), torch.randperm(70_000, generator=torch.Generator().manual_seed(5)))
    assert _batch_order(100, 128, torch.Generator()) is None  # one batch: no order at all


def stop_mid_epoch_and_resume(make_trainer, tmp_path, batch):
    """A trainer run to the end, one stopped after `batch` steps of its second epoch (its state
    taken there), that state, and a fresh trainer loaded from it once written and read back (not run)."""
    from mdn_experiments.train.state import read_state, write_state

    left_alone = make_trainer()
    left_alone.run()
    stopped, seen = make_trainer(), {}

    def stop(_, event):
        if event == "step" and stopped.progress.epoch == 1 and stopped.progress.batch == batch:
            seen["state"] = stopped.state_dict()
            raise KeyboardInterrupt

    stopped.on_event = stop
    with pytest.raises(KeyboardInterrupt):
        stopped.run()
    write_state(tmp_path, seen["state"])
    resumed = make_trainer()
    resumed.load_state_dict(read_state(tmp_path))
    return left_alone, stopped, seen["state"], resumed


def test_a_mid_epoch_state_holds_the_epochs_order_itself_and_resumes_the_same_epoch(tmp_path):
    """state_dict does not copy the order (a large table's save would double it); written and read
    back, the state continues the epoch with the same batches as the loop left alone."""
    from mdn_experiments.train.trainer import Trainer, TrainSettings

    x, y = toy_data()

    def trainer():
        return Trainer(make_net(), (x, y), (x, y), TrainSettings(lr=1e-2, epochs=2, batch_size=32), seed=3)

    left_alone, stopped, state, resumed = stop_mid_epoch_and_resume(trainer, tmp_path, batch=3)
    assert state["progress"]["order"] is stopped.progress.order
    assert torch.equal(resumed.progress.order, stopped.progress.order)
    resumed.run()
    for a, b in zip(resumed.network.parameters(), left_alone.network.parameters()):
        assert torch.equal(a, b)


def test_ema_validates_and_keeps_the_moving_average_of_the_live_weights():
    """trainer.ema: after each step the averaged weights move towards the live ones by
    1 - min(d, (1 + t) / (10 + t)); recomputed here in float64 from the live weights after each
    step, the kept (one-epoch, best) weights are that average, not the live ones."""
    from mdn_experiments.train.trainer import Trainer, TrainSettings

    x, y = toy_data()
    decay = 0.9
    net = make_net()
    expected = {name: value.double().clone() for name, value in net.state_dict().items()}
    live_after_step = []

    def record(trainer, event):
        if event == "step":
            live_after_step.append({k: v.double().clone() for k, v in trainer.network.state_dict().items()})

    settings = TrainSettings(lr=1e-2, epochs=1, batch_size=16, ema=decay)
    trainer = Trainer(net, (x, y), (x, y), settings, seed=1, on_event=record)
    result = trainer.run()
    assert len(live_after_step) == 16 and result.best_epoch == 1
    for t, live in enumerate(live_after_step):
        d = min(decay, (1 + t) / (10 + t))
        expected = {k: d * expected[k] + (1 - d) * live[k] for k in expected}
    kept = net.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(kept[name].double(), value, rtol=1e-5, atol=1e-6)
    # not the live weights of the last step: the average lags behind them
    assert not torch.allclose(kept["head.linear.weight"].double(), live_after_step[-1]["head.linear.weight"])
    # the validation loss in the history is the kept (averaged) weights' loss
    assert result.history[0]["val_nll"] == pytest.approx(evaluate_loss(net, x, y)[0], rel=1e-6)


def test_ema_resumes_bit_for_bit_from_a_mid_epoch_state(tmp_path):
    """The averaged weights are part of the training state: a run stopped mid-epoch, written and
    read back, ends with the weights of the run left alone (and a rollback snapshot holds them too)."""
    from mdn_experiments.train.trainer import Trainer, TrainSettings

    x, y = toy_data()

    def trainer():
        settings = TrainSettings(lr=1e-2, epochs=3, batch_size=32, ema=0.95)
        return Trainer(make_net(), (x, y), (x, y), settings, seed=3)

    left_alone, stopped, state, resumed = stop_mid_epoch_and_resume(trainer, tmp_path, batch=5)
    assert "averaged" in state and "averaged" in stopped._snapshot()
    resumed.run()
    for a, b in zip(resumed.network.state_dict().values(), left_alone.network.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(resumed.averaged.state_dict().values(), left_alone.averaged.state_dict().values()):
        assert torch.equal(a, b)


def test_random_shift_moves_each_image_by_its_own_offset_and_fills_the_border_with_zeros():
    """shift_images against a slice-by-slice construction from the same draws; over many images
    every offset in -2..2 x -2..2 turns up; a table's inputs are refused with one clear error."""
    from mdn_experiments.errors import UserError
    from mdn_experiments.train.trainer import Trainer, TrainSettings, shift_images

    x = torch.rand(400, 2, 7, 6) + 1  # no zero pixel: a zero in the output is the filled border
    out = shift_images(x, 2, torch.Generator().manual_seed(4))
    dy, dx = torch.randint(-2, 3, (2, 400, 1), generator=torch.Generator().manual_seed(4))
    seen = set()
    for i in range(400):
        a, b = int(dy[i]), int(dx[i])
        seen.add((a, b))
        expected = torch.zeros(2, 7, 6)
        expected[:, max(0, a) : 7 + min(0, a), max(0, b) : 6 + min(0, b)] = x[
            i, :, max(0, -a) : 7 - max(0, a), max(0, -b) : 6 - max(0, b)
        ]
        assert torch.equal(out[i], expected)
    assert len(seen) == 25 and out.is_contiguous()
    assert torch.equal(shift_images(x, 0, torch.Generator()), x)
    tx, ty = toy_data()
    with pytest.raises(UserError, match="random_shift=1 moves images"):
        Trainer(make_net(), (tx, ty), (tx, ty), TrainSettings(epochs=1, random_shift=1))


def test_clip_gradients_is_clip_grad_norm_bit_for_bit():
    """The trainer's clipping against torch.nn.utils.clip_grad_norm_: the same norm and the same
    scaled gradients, bit for bit, whether it clips or not (an infinite bound: only the norm)."""
    from torch import nn

    from mdn_experiments.train.trainer import clip_gradients

    x, y = toy_data()
    for max_norm in (0.01, 1.0, 1e6, float("inf")):
        ours, theirs = make_net(seed=2), make_net(seed=2)
        for net in (ours, theirs):
            loss, _ = net.loss(x, y)
            loss.backward()
        ours.head.linear.bias.grad = None  # a parameter without a gradient is left out, as torch does
        theirs.head.linear.bias.grad = None
        norm = clip_gradients(list(ours.parameters()), max_norm)
        reference = nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
        assert torch.equal(norm, reference)
        for a, b in zip(ours.parameters(), theirs.parameters()):
            assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)
    assert clip_gradients([torch.zeros(2, requires_grad=True)], 1.0).item() == 0.0  # no gradient at all


def test_a_runs_adam_is_fused_on_the_cpu_unless_the_config_chooses():
    """build.optimizer_factory: Adam gets fused=True on a CPU or CUDA device; not where the config
    sets fused or foreach, not for an optimizer without a fused kernel (L-BFGS), not on another
    device. A fused Adam's training matches the per-tensor loop's to float rounding."""
    from helpers import compose_config
    from mdn_experiments.run.build import optimizer_factory

    def fused(overrides, device="cpu"):
        factory = optimizer_factory(compose_config(["dataset=inverse_sine", *overrides]), torch.device(device))
        return factory([torch.zeros(1, requires_grad=True)], lr=0.1).defaults.get("fused")

    assert fused([]) is True
    assert fused([], "cuda") is True
    assert not fused([], "meta")
    assert not fused(["+trainer.optimizer.foreach=false"])
    assert not fused(["+trainer.optimizer.fused=false"])
    assert fused(["trainer.optimizer._target_=torch.optim.AdamW"]) is True
    assert fused(["trainer=lbfgs"]) is None  # L-BFGS has no such argument
    x, y = toy_data()
    results = []
    for factory in (torch.optim.Adam, functools.partial(torch.optim.Adam, fused=True)):
        net = make_net()
        fit(net, (x, y), (x, y), optimizer_factory=factory, lr=1e-2, epochs=3, batch_size=32, grad_clip=5.0)
        results.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert not torch.equal(*results)  # a different kernel...
    torch.testing.assert_close(*results, rtol=1e-4, atol=1e-5)  # ...the same algorithm
