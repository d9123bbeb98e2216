"""The torch-free path: serve.mixture (numpy) pinned to mdn.py's torch maths, and mdn-predict on an
exported file, with torch not importable, giving the run folder's answers."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mdn_experiments import mdn
from mdn_experiments.evaluation.calibration import quantiles
from mdn_experiments.serve import mixture as S
from mdn_experiments.tools.predict import served

KINDS = {"diag": mdn.DiagonalMixture, "isotropic": mdn.IsotropicMixture, "full": mdn.FullMixture}


def random_mixture(kind: str, n: int, K: int, D: int, seed: int) -> mdn.Mixture:
    g = torch.Generator().manual_seed(seed)
    cls = KINDS[kind]
    return cls.from_raw(torch.randn(n, cls.n_raw(K, D), generator=g, dtype=torch.float64) * 2, K, D)


def test_erfc_against_the_standard_library():
    x = np.concatenate([np.linspace(-40, 40, 80_001), [-1e300, -3.0, -2.0, 0.0, 2.0, 3.0, 1e300]])
    want = np.array([math.erfc(v) for v in x])
    got = S.erfc(x)
    tiny = want < 1e-300  # beyond the double range both are 0
    assert np.all(got[tiny] <= 1e-300)
    assert np.max(np.abs(got[~tiny] - want[~tiny]) / want[~tiny]) < 1e-12


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("D", [1, 2, 3])
def test_the_numpy_mixture_is_mdn_py_s(kind, D):
    torch_mix = random_mixture(kind, 40, 4, D, seed=D)
    mix = served(torch_mix)
    y = torch.randn(40, D, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 2
    np.testing.assert_allclose(mix.log_prob(y.numpy()), torch_mix.log_prob(y).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mix.mean(), torch_mix.mean().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mix.covariance(), torch_mix.covariance().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mix.component_std(), torch_mix.component_std().numpy(), rtol=1e-12)
    for tp, ts in ((0.5, 1.0), (2.0, 0.3)):
        tempered, want = mix.tempered(tp, ts), torch_mix.tempered(tp, ts)
        np.testing.assert_allclose(tempered.log_prob(y.numpy()), want.log_prob(y).numpy(), rtol=1e-12, atol=1e-12)
    modes, want = mix.modes(), torch_mix.modes()
    np.testing.assert_array_equal(modes.valid, want.valid.numpy())
    np.testing.assert_allclose(modes.mass, want.mass.numpy(), atol=1e-12)
    valid = modes.valid
    np.testing.assert_allclose(modes.log_density[valid], want.log_density.numpy()[valid], atol=1e-9)
    np.testing.assert_allclose(modes.location[valid], want.location.numpy()[valid], rtol=1e-6, atol=1e-6)
    for d in range(D):  # each target's marginal, and its quantiles
        marginal = mix.marginal(d)
        np.testing.assert_allclose(
            marginal.quantiles([0.05, 0.5, 0.95]),
            quantiles(torch_mix.marginal(d), [0.05, 0.5, 0.95]).numpy(),
            rtol=1e-9,
            atol=1e-9,
        )


def test_cdf_and_hdr_levels_are_the_evaluation_s():
    """PIT values equal evaluation.calibration.pit; HDR levels (other draws) agree within Monte Carlo
    error, and a target drawn from its own mixture gets uniform levels."""
    from mdn_experiments.evaluation import calibration

    torch_mix = random_mixture("diag", 600, 3, 1, seed=2)
    mix = served(torch_mix)
    y = torch_mix.sample(1, generator=torch.Generator().manual_seed(1))[0]
    np.testing.assert_allclose(mix.cdf(y.numpy()), calibration.pit(torch_mix, y).numpy(), atol=1e-12)
    ours, theirs = mix.hdr_levels(y.numpy(), 2000), calibration.hdr_levels(torch_mix, y, 2000).numpy()
    assert np.abs(ours - theirs).max() < 6 * 0.5 / math.sqrt(2000)
    for level in (0.25, 0.5, 0.9):  # targets from the mixture itself: coverage = level
        assert abs((ours <= level).mean() - level) < 4 * math.sqrt(level * (1 - level) / 600)
    two = served(random_mixture("full", 30, 2, 2, seed=3))
    assert two.hdr_levels(two.sample(1, seed=4)[0], 500).shape == (30,)


def test_modes_in_chunks_are_the_modes_at_once(monkeypatch):
    mix = served(random_mixture("full", 50, 3, 2, seed=4))
    whole = mix.modes()
    monkeypatch.setattr(S, "MODES_CHUNK", 7)
    parts = mix.modes()
    for name in ("location", "log_density", "mass", "valid"):
        np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_samples_follow_the_mixture(kind):
    """Draws of a mixture: their component shares are its weights, their mean and covariance its own
    (a 2-D mixture's), within Monte Carlo error; one seed, one set of draws."""
    mix = served(random_mixture(kind, 3, 3, 2, seed=11))
    draws = mix.sample(40_000, seed=5)
    assert draws.shape == (40_000, 3, 2)
    np.testing.assert_array_equal(draws, mix.sample(40_000, seed=5))
    for i in range(3):
        cov = mix.covariance()[i]
        se = np.sqrt(np.diag(cov) / 40_000)
        assert np.all(np.abs(draws[:, i].mean(0) - mix.mean()[i]) < 5 * se)
        np.testing.assert_allclose(np.cov(draws[:, i].T), cov, rtol=0.05, atol=0.05 * np.abs(cov).max())
    sharp = mix.sample(2000, seed=1, temperature_pi=1e-3, temperature_sigma=1e-6)  # the top component's mean
    top = mix.means[np.arange(3), mix.log_weights.argmax(-1)]
    np.testing.assert_allclose(sharp, np.broadcast_to(top, sharp.shape), atol=1e-4)


# --- mdn-predict on an exported file, torch hidden -------------------------------------------------

ort = pytest.importorskip("onnxruntime")


def predict_without_torch(args: list[str], cwd: Path, hidden=("torch",)) -> subprocess.CompletedProcess:
    """mdn-predict in a process where `import torch` (and the other `hidden` modules) raise ImportError."""
    hide = "".join(f"sys.modules[{name!r}] = None; " for name in hidden)
    code = f"import sys; {hide}from mdn_experiments.tools.predict import main; main(sys.argv[1:])"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def close(got, want, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=rtol, atol=atol)


def same_answers(got: dict, want: dict) -> None:
    """Two --out JSON answers: every component, mode and sample within the tolerances of issue 27."""
    assert len(got["predictions"]) == len(want["predictions"])
    for g, w in zip(got["predictions"], want["predictions"]):
        assert g["x"] == w["x"]
        close([c["pi"] for c in g["components"]], [c["pi"] for c in w["components"]], atol=1e-7)
        close([c["mu"] for c in g["components"]], [c["mu"] for c in w["components"]])
        close([c["sigma"] for c in g["components"]], [c["sigma"] for c in w["components"]])
        assert len(g["modes"]) == len(w["modes"])
        close([m["location"] for m in g["modes"]], [m["location"] for m in w["modes"]], atol=1e-4)
        close([m["mass"] for m in g["modes"]], [m["mass"] for m in w["modes"]], atol=1e-6)
        close([m["log_density"] for m in g["modes"]], [m["log_density"] for m in w["modes"]], atol=1e-4)
        close(g["samples"], w["samples"], atol=1e-4)


def test_mdn_predict_on_the_export_without_torch_answers_as_the_run(tiny_run, tmp_path):
    from mdn_experiments.tools import export, predict

    run = shutil.copytree(tiny_run, tmp_path / "run")
    onnx_path, _ = export.export_run(run, tmp_path / "model.onnx")
    args = ["--x", "0.1", "--x", "0.45", "--x", "0.9", "--samples", "7", "--seed", "3"]
    predict.main([str(run), *args, "--out", str(tmp_path / "run.json")])
    done = predict_without_torch([str(onnx_path), *args, "--out", str(tmp_path / "onnx.json")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "input 0: x = 0.1" in done.stdout and "modes (mass >=" in done.stdout
    got, want = (json.loads((tmp_path / name).read_text()) for name in ("onnx.json", "run.json"))
    same_answers(got, want)
    assert got["model"] == str(onnx_path) and want["run"] == str(run)
    assert got["covariance"] == want["covariance"] == "diag" and got["K"] == want["K"]


def test_a_table_export_answers_a_file_by_column_names_without_torch(table_csv, tmp_path):
    """A two-target full-covariance ensemble on a table: --file by column names (read without
    pyarrow too), the CSV answer (mean, sd, mode and quantiles per target) as the run folder's."""
    from helpers import train_two_target_ensemble
    from mdn_experiments.tools import export, predict

    run = train_two_target_ensemble(table_csv, tmp_path / "run")
    onnx_path, _ = export.export_run(run, tmp_path / "table.onnx")
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("id,b,a\nfirst,0.5,1.0\nsecond,-1.0,2.5\nthird,0.0,0.0\n")
    predict.main([str(run), "--file", str(new_rows), "--out", str(tmp_path / "run.csv")])
    done = predict_without_torch(  # numpy and onnxruntime alone: neither torch nor pyarrow
        [str(onnx_path), "--file", str(new_rows), "--out", str(tmp_path / "onnx.csv")], tmp_path, ("torch", "pyarrow")
    )
    assert done.returncode == 0, done.stderr
    import csv

    got, want = (list(csv.DictReader((tmp_path / n).open())) for n in ("onnx.csv", "run.csv"))
    assert [r["id"] for r in got] == ["first", "second", "third"] and list(got[0]) == list(want[0])
    for g, w in zip(got, want):
        for column in list(g)[1:]:
            close(float(g[column]), float(w[column]), rtol=1e-4, atol=1e-4)


def test_a_changed_or_lonely_export_is_refused_in_one_line(tiny_run, tmp_path):
    from mdn_experiments.tools import export

    run = shutil.copytree(tiny_run, tmp_path / "run")
    onnx_path, sidecar_path = export.export_run(run, tmp_path / "model.onnx")
    data = bytearray(onnx_path.read_bytes())
    data[-1] ^= 1
    onnx_path.write_bytes(bytes(data))
    done = predict_without_torch([str(onnx_path), "--x", "0.5"], tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "does not match the SHA-256" in done.stderr
    sidecar_path.unlink()
    done = predict_without_torch([str(onnx_path), "--x", "0.5"], tmp_path)
    assert done.returncode == 2 and "has no sidecar model.json" in done.stderr
    export.export_run(run, tmp_path / "model.onnx", force=True)
    done = predict_without_torch([str(onnx_path), "--index", "0"], tmp_path)
    assert done.returncode == 2 and "--index asks about the run's test set" in done.stderr
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["input"]["shape"] = ["N", "__import__('os')"]
    sidecar_path.write_text(json.dumps(sidecar))
    done = predict_without_torch([str(onnx_path), "--x", "0.5"], tmp_path)
    assert done.returncode == 2 and "input.shape is not" in done.stderr and "Traceback" not in done.stderr
