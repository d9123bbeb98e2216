"""mdn-export's ONNX file against the torch network it came from (onnxruntime, not torch, runs the
file): the weights and means within 1e-5 relative, the log-density of targets within 1e-4
absolute, for diagonal, isotropic and full covariance, D = 1 and D > 1, an ensemble, and a CNN;
any batch size; and the command's refusals, each one line."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from mdn_experiments import mdn
from mdn_experiments.models import MLP, build_network
from mdn_experiments.tools import export

ort = pytest.importorskip("onnxruntime")


def standardised(network, input_shape, dim, seed):
    """Give the network non-trivial input and target standardisation (the file must carry both)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        network.x_mean.copy_(torch.randn(network.x_mean.shape, generator=g) * 3)
        network.x_std.copy_(torch.rand(network.x_std.shape, generator=g) * 5 + 0.1)
        network.y_mean.copy_(torch.randn(dim, generator=g) * 100)
        network.y_std.copy_(torch.rand(dim, generator=g) * 50 + 0.5)
    return network.eval()


def answers(path, x):
    session = ort.InferenceSession(str(path))
    return session.run(None, {"x": x.numpy()})


def mixture_from_outputs(covariance, outputs):
    log_pi, mu, scale = (torch.from_numpy(o) for o in outputs)
    if covariance == "full":
        return mdn.FullMixture(log_pi, mu, scale)
    return mdn.DiagonalMixture(log_pi, mu, scale)


CASES = [  # covariance, D, members, input shape
    ("diag", 1, 1, (3,)),
    ("diag", 3, 3, (4,)),
    ("isotropic", 2, 1, (5,)),
    ("full", 2, 1, (3,)),
    ("full", 3, 2, (2,)),
]


@pytest.mark.parametrize("covariance, dim, members, input_shape", CASES)
def test_the_onnx_file_answers_as_the_network_does(tmp_path, covariance, dim, members, input_shape):
    torch.manual_seed(0)
    backbone = MLP(list(input_shape), [16, 16], members=members) if members > 1 else MLP(list(input_shape), [16, 16])
    network = build_network(backbone, list(input_shape), dim, "mdn", n_components=3, covariance=covariance)
    standardised(network, input_shape, dim, seed=1)
    path = tmp_path / "m.onnx"
    path.write_bytes(export.onnx_bytes(network, input_shape, covariance))
    for n in (1, 7, 500):  # the batch axis is dynamic
        x = torch.randn(n, *input_shape) * 4
        with torch.no_grad():
            want = network(x)
        got = answers(path, x)
        assert got[0].shape == (n, 3 * members) and got[1].shape == (n, 3 * members, dim)
        np.testing.assert_allclose(np.exp(got[0]), want.pi.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got[1], want.mu.numpy(), rtol=1e-5, atol=1e-5 * float(network.y_std.max()))
        y = want.sample(1, generator=torch.Generator().manual_seed(n))[0]
        np.testing.assert_allclose(
            mixture_from_outputs(covariance, got).log_prob(y).numpy(), want.log_prob(y).numpy(), atol=1e-4
        )


@pytest.mark.parametrize("norm_after_pool", [False, True])
def test_a_cnn_exports_with_its_image_input(tmp_path, norm_after_pool):
    from mdn_experiments.models import CNN

    torch.manual_seed(0)
    backbone = CNN((1, 28, 28), norm_after_pool=norm_after_pool)
    network = build_network(backbone, [1, 28, 28], 1, "mdn", n_components=4)
    network.eval()
    path = tmp_path / "cnn.onnx"
    path.write_bytes(export.onnx_bytes(network, (1, 28, 28), "diag"))
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        want = network(x)
    got = answers(path, x)
    np.testing.assert_allclose(np.exp(got[0]), want.pi.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got[1], want.mu.numpy(), rtol=1e-5, atol=1e-5)
    y = torch.rand(5, 1) * 9
    log_density = mixture_from_outputs("diag", got).log_prob(y).numpy()
    np.testing.assert_allclose(log_density, want.log_prob(y).numpy(), atol=1e-4)


def test_mdn_export_writes_the_file_and_a_sidecar_that_names_it(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    onnx_path, sidecar_path = export.export_run(run)
    assert onnx_path == run / "export" / "model.onnx" and sidecar_path == run / "export" / "model.json"
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert sidecar["opset"] == export.OPSET and sidecar["outputs"] == ["log_weights", "means", "scales"]
    assert sidecar["input"]["shape"] == ["N", 1] and sidecar["covariance"] == "diag"
    assert sidecar["metrics"]["status"] == "ok" and "test_nll" in sidecar["metrics"]
    with pytest.raises(export.ExportError, match="exists: choose another --out, or --force"):
        export.export_run(run)
    export.export_run(run, force=True)


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda run: (run / "metrics.json").unlink(), "holds no finished run"),
        (lambda run: (run / "model.pt").write_bytes(b"not a model"), "model.pt"),
    ],
)
def test_an_unfinished_or_damaged_run_is_one_line(tiny_run, tmp_path, change, needle, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    change(run)
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(run)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not (run / "export" / "model.onnx").exists()


def test_a_degenerate_run_is_refused(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(status="degenerate", status_reason="every component collapsed")
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(export.ExportError, match="status 'degenerate'"):
        export.export_run(run)


def test_the_output_is_never_written_through_a_link(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    victim = tmp_path / "victim.onnx"
    victim.write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m.onnx").symlink_to(victim)
    with pytest.raises(Exception):
        export.export_run(run, tmp_path / "out" / "m.onnx", force=True)
    assert victim.read_text() == "keep me"


def test_a_table_run_exports_its_columns_and_answers_in_the_target_units(table_csv, tmp_path):
    """A two-target table with full covariance and an ensemble, trained a few steps: the sidecar
    names the columns; on the run's own test inputs the file answers as the trained networks do."""
    from helpers import train_two_target_ensemble
    from mdn_experiments.datasets.table import TableDataset
    from mdn_experiments.run.artifacts import load_trained

    run = train_two_target_ensemble(table_csv, tmp_path / "run")
    onnx_path, sidecar_path = export.export_run(run)
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["features"] == ["a", "b"] and sidecar["targets"] == ["y1", "y2"]
    assert sidecar["covariance"] == "full" and sidecar["outputs"][-1] == "cholesky" and sidecar["components"] == 6
    network = load_trained(run)[0].eval()
    x, y = TableDataset(path=str(table_csv), target=["y1", "y2"], features=["a", "b"]).load(0).test
    with torch.no_grad():
        want = network(x)
    got = answers(onnx_path, x)
    np.testing.assert_allclose(np.exp(got[0]), want.pi.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got[1], want.mu.numpy(), rtol=1e-5, atol=1e-6)
    log_density = mixture_from_outputs("full", got).log_prob(y).numpy()
    np.testing.assert_allclose(log_density, want.log_prob(y).numpy(), atol=1e-4)


def test_a_folder_that_is_not_there_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == f"mdn-export: error: {tmp_path / 'nowhere'}: no such run folder\n"
