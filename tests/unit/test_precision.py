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


def test_auto_precision_takes_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    """trainer.precision=auto: bf16 on a CPU with AVX512-BF16 or AMX and on a CUDA GPU that
    supports it; float32 where the checks say no, are missing or fail. float32 and bf16 ask nothing."""
    from mdn_experiments.run import build

    cpu, cuda = torch.device("cpu"), torch.device("cuda")

    def fail():
        raise RuntimeError("no cpuinfo")

    for answers, expected in (
        ({"_is_avx512_bf16_supported": lambda: True, "_is_amx_tile_supported": lambda: False}, torch.bfloat16),
        ({"_is_avx512_bf16_supported": lambda: False, "_is_amx_tile_supported": lambda: True}, torch.bfloat16),
        ({"_is_avx512_bf16_supported": lambda: False, "_is_amx_tile_supported": lambda: False}, None),
        ({"_is_avx512_bf16_supported": fail, "_is_amx_tile_supported": lambda: False}, None),
    ):
        for name, answer in answers.items():
            monkeypatch.setattr(torch.cpu, name, answer, raising=False)
        assert build.backbone_dtype("auto", cpu) is expected
        assert build.backbone_dtype("float32", cpu) is None
        assert build.backbone_dtype("bf16", cpu) is torch.bfloat16
    for name in build.CPU_BF16_CHECKS:  # a torch without the private checks
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert build.backbone_dtype("auto", cpu) is None
    for supported, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert build.backbone_dtype("auto", cuda) is expected


def test_a_runs_metrics_say_which_precision_it_ran_in(tmp_path):
    """metrics.json's `precision` is the arithmetic the run used: auto, resolved on this machine."""
    import json

    from helpers import run_cli
    from mdn_experiments.run.build import native_bf16

    args = ["dataset.n_train=64", "dataset.n_val=32", "dataset.n_test=32", "trainer.epochs=1", "figures=false"]
    done = run_cli([*args, "baseline=false", "trainer.precision=auto", f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 0, done.stderr
    expected = "bf16" if native_bf16(torch.device("cpu")) else "float32"
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == expected
