"""The CNN backbone: the max-pool taken before a ReLU gives the numbers of the textbook order
(convolution, batch norm, ReLU, pool) bit for bit, with the same parameter names, so that runs saved
before the change load and resume; `norm_after_pool` is a different network, built as documented."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import cli_in_process
from mdn_experiments.models import CNN


def textbook(cnn: CNN, channels, kernel_size: int = 5) -> nn.Sequential:
    """conv, batch norm, ReLU, then pool, block by block: the order before the pool moved, with
    `cnn`'s weights (a state_dict with the same names, which is itself what is checked)."""
    layers: list[nn.Module] = []
    in_channels = 1
    for out_channels in channels:
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        in_channels = out_channels
    layers += [nn.Flatten(), nn.Dropout(0.0), nn.Linear(in_channels * 4 * 4, 16), nn.ReLU()]
    net = nn.Sequential(*layers)
    net.load_state_dict(cnn.net.state_dict(), strict=True)  # the names of the saved runs
    return net


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pooling_before_the_relu_is_the_textbook_network_bit_for_bit(dtype):
    torch.manual_seed(0)
    cnn = CNN((1, 28, 28), channels=[4, 8], hidden=[16], channels_last=False).to(dtype)
    reference = textbook(cnn, [4, 8]).to(dtype)
    # integer-valued inputs put many exact ties (and exact zeros after the ReLU) into the pools
    x = torch.randint(-2, 3, (6, 1, 28, 28)).to(dtype)
    outs, grads = [], []
    for net in (cnn.net, reference):
        net.train()
        x_ = x.clone().requires_grad_()
        out = net(x_)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(dtype))
        outs.append(out.detach())
        grads.append([x_.grad] + [p.grad for p in net.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    # and the batch norm's running statistics, which a saved run keeps, moved alike
    for (name, a), (_, b) in zip(cnn.net.named_buffers(), reference.named_buffers()):
        assert torch.equal(a, b), name


def test_other_activations_keep_the_pool_last():
    """SiLU is not monotone: max-pool and SiLU do not commute, so the pool stays after it."""
    cnn = CNN((1, 28, 28), channels=[4], hidden=[8], activation="silu")
    kinds = [type(layer).__name__ for layer in cnn.net][:4]
    assert kinds == ["Conv2d", "BatchNorm2d", "SiLU", "MaxPool2d"]


def test_norm_after_pool_normalises_the_pooled_maps():
    cnn = CNN((1, 28, 28), channels=[4, 8], hidden=[8], norm_after_pool=True)
    kinds = [type(layer).__name__ for layer in cnn.net][:8]
    assert kinds == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"] * 2
    seen = {}
    hooks = [
        layer.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(i[0].shape)))
        for name, layer in cnn.net.named_children()
        if isinstance(layer, nn.BatchNorm2d)
    ]
    cnn(torch.zeros(2, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    assert list(seen.values()) == [(2, 4, 12, 12), (2, 8, 4, 4)]  # after each pool, not before
    assert cnn.out_features == 8


def test_norm_after_pool_must_be_a_boolean():
    from mdn_experiments.errors import ConfigError

    with pytest.raises(ConfigError, match="norm_after_pool"):
        CNN((1, 28, 28), channels=[4], norm_after_pool="yes")


def test_a_bad_norm_after_pool_on_the_command_line_is_one_line(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli_in_process(
        [
            "dataset=mnist",
            f"dataset.root={mnist_root}",
            "model.backbone.norm_after_pool=yes",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "mdn-run: error: model.backbone.norm_after_pool='yes' is not allowed: "
        "model.backbone.norm_after_pool must be true or false"
    ]
    assert not run_dir.exists()  # refused before a run folder
