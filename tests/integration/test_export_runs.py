"""mdn-export on a real run of every dataset kind (the toy, the arm, a one-target table, UCI, MNIST's
CNN): onnxruntime on the run's own test inputs answers as the trained networks do (weights and
means within 1e-5 relative, the test targets' log-density within 1e-4), and `mdn-predict` asks the
file as it asks the run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import TINY, compose_config
from mdn_experiments.run.artifacts import load_trained
from mdn_experiments.run.runner import run_experiment
from mdn_experiments.serve import load_exported
from mdn_experiments.tools import export, predict

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

QUICK = ["trainer.progress=false", "figures=false", "baseline=false"]


def check_parity(run, tmp_path, covariance: str = "diag") -> None:
    onnx_path, sidecar_path = export.export_run(run, tmp_path / "model.onnx")
    network, _, dataset, checkpoint = load_trained(run, need_data=True)
    x, y = dataset.load(checkpoint["config"]["seed"]).test
    x, y = x[:300], y[:300]
    with torch.no_grad():
        want = network.eval()(x)
    got = load_exported(onnx_path).predict(x.numpy())
    np.testing.assert_allclose(np.exp(got.log_weights), want.pi.numpy(), rtol=1e-5, atol=1e-7)
    scale = float(y.abs().max()) + 1.0
    np.testing.assert_allclose(got.means, want.mu.numpy(), rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(got.log_prob(y.double().numpy()), want.log_prob(y).numpy(), atol=1e-4)
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["dataset"] == dataset.name and sidecar["covariance"] == covariance


def test_the_toy_and_the_arm_export(tmp_path):
    for name, extra in (("inverse_sine", []), ("robot_arm", ["model.covariance=full", "K=3"])):
        run = tmp_path / name
        run_experiment(compose_config([f"dataset={name}", *TINY, *QUICK, *extra]), run)
        check_parity(run, tmp_path / f"{name}-out", "full" if extra else "diag")


def test_a_one_target_table_exports_and_mdn_predict_asks_it_as_the_run(tmp_path, table_csv):
    run = tmp_path / "table"
    cfg = [
        "dataset=table",
        f"dataset.path={table_csv}",
        "dataset.target=y1",
        "dataset.features=[a,b]",
        "trainer.steps=40",
    ]
    cfg += QUICK
    run_experiment(compose_config(cfg), run)
    check_parity(run, tmp_path)
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,id\n0.5,1.0,p\n-1.0,0.3,q\n")
    predict.main([str(run), "--file", str(rows), "--out", str(tmp_path / "run.csv")])
    predict.main([str(tmp_path / "model.onnx"), "--file", str(rows), "--out", str(tmp_path / "onnx.csv")])
    import csv

    got, want = (list(csv.DictReader((tmp_path / n).open())) for n in ("onnx.csv", "run.csv"))
    assert [r["id"] for r in got] == ["p", "q"]
    for g, w in zip(got, want):
        for column in [c for c in g if c.startswith("y1_")]:
            np.testing.assert_allclose(float(g[column]), float(w[column]), rtol=1e-4, atol=1e-4)


def test_a_uci_run_exports(tmp_path, uci_root):
    run = tmp_path / "uci"
    cfg = ["experiment=uci", f"dataset.root={uci_root}", "dataset.name=concrete", "trainer.steps=40", *QUICK]
    run_experiment(compose_config(cfg), run)
    check_parity(run, tmp_path)


def test_an_mnist_run_exports_its_cnn(tmp_path, mnist_root):
    run = tmp_path / "mnist"
    cfg = [
        "dataset=mnist",
        f"dataset.root={mnist_root}",
        "dataset.n_train=500",
        "dataset.n_val=200",
        "dataset.n_test=300",
        "trainer.epochs=1",
        *QUICK,
    ]
    run_experiment(compose_config(cfg), run)
    check_parity(run, tmp_path)
