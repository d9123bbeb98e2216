"""trainer.precision=bf16: the backbone runs in bfloat16, everything from the head on in float32
(the mixture, the NLL's log-sum-exp, a Cholesky factor), and training still learns."""

from __future__ import annotations

import pytest
import torch

from helpers import compose_config
from mdn_experiments.models import MLP, build_network
from mdn_experiments.run.build import build_run
from mdn_experiments.train.trainer import fit


def backbone_dtypes(net) -> list[torch.dtype]:
    """The dtypes the backbone's linear layers computed in, on the next forward pass."""
    seen: list[torch.dtype] = []
    for layer in net.backbone.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_bf16_runs_the_backbone_in_bfloat16_and_the_mixture_in_float32(covariance):
    torch.manual_seed(0)
    net = build_network(MLP([2], [32, 32]), [2], 2, "mdn", n_components=3, covariance=covariance)
    x, y = torch.randn(64, 2), torch.randn(64, 2)
    reference, _ = net.loss(x, y)
    net.backbone_dtype = torch.bfloat16
    seen = backbone_dtypes(net)
    loss, mixture = net.loss(x, y)
    assert seen and set(seen) == {torch.bfloat16}  # every linear layer of the backbone
    assert loss.dtype == torch.float32 and mixture.log_pi.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in (mixture.mu, mixture.component_covariance()))
    assert loss.item() != reference.item()  # bfloat16 arithmetic did happen...
    assert loss.item() == pytest.approx(reference.item(), rel=0.02)  # ...and it is the same loss
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())


def test_a_bf16_network_learns_as_the_float32_one_does():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(600, 1, generator=g)
    y = x + 0.3 * torch.sin(2 * torch.pi * x) + 0.05 * torch.randn(600, 1, generator=g)  # Bishop's forward map
    train, val = (x[:400], y[:400]), (x[400:], y[400:])
    results = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(1)
        net = build_network(MLP([1], [32]), [1], 1, "mdn", n_components=2)
        net.fit_standardization(*train)
        net.backbone_dtype = dtype
        results[dtype] = fit(net, train, val, epochs=60, lr=1e-2, batch_size=100).best_val_loss
    start = build_network(MLP([1], [32]), [1], 1, "mdn", n_components=2)
    start.fit_standardization(*train)
    with torch.no_grad():
        untrained = float(start.loss(*val)[0])
    assert results[torch.bfloat16] < untrained - 1.0  # it learned
    assert results[torch.bfloat16] == pytest.approx(results[None], abs=0.1)  # as float32 did


def test_trainer_precision_reaches_every_network_of_a_run():
    objects = build_run(compose_config(["dataset=inverse_sine", "trainer.precision=bf16"]))
    assert objects.settings.precision == "bf16"
    from mdn_experiments.datasets.base import Splits

    splits = objects.dataset.load(0)
    assert isinstance(splits, Splits)
    for head in ("mdn", "mse"):
        assert objects.prepared(head, splits).backbone_dtype == torch.bfloat16
    default = build_run(compose_config(["dataset=inverse_sine"]))
    assert default.prepared("mdn", default.dataset.load(0)).backbone_dtype is None
