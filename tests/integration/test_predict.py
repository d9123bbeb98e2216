"""mdn-predict on a trained run: the answer equals the network's own mixture, whatever way the
inputs come in; bad input is one line and a non-zero exit."""

import csv
import json
import subprocess

import numpy as np
import pytest
import torch

from helpers import REPO, TINY, compose_config
from mdn_experiments.run.artifacts import load_run
from mdn_experiments.run.runner import run_experiment
from mdn_experiments.tools import launch


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("toy")
    run_experiment(compose_config(TINY + ["K=3", "figures=false"]), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def arm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("arm")
    run_experiment(
        compose_config(TINY + ["dataset=robot_arm", "K=2", "model.covariance=full", "figures=false", "baseline=false"]),
        run_dir,
    )
    return run_dir


def predict_cli(*args) -> subprocess.CompletedProcess:
    return launch.run(
        "mdn_experiments.tools.predict",
        [*map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.quick
def test_the_answer_is_the_networks_mixture_with_its_modes_and_samples(toy_run, tmp_path):
    out = tmp_path / "answer.json"
    proc = predict_cli(toy_run, "--x", "0.45", "--x", "0.1", "--samples", "7", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "input 0: x = 0.45" in proc.stdout and "modes (mass >= 0.05" in proc.stdout
    answer = json.loads(out.read_text())
    assert answer["K"] == 3 and answer["covariance"] == "diag" and answer["dataset"] == "inverse_sine"
    net, _, _ = load_run(toy_run)
    with torch.no_grad():
        mixture = net(torch.tensor([[0.45], [0.1]]))
    modes = mixture.modes()
    for i, record in enumerate(answer["predictions"]):
        np.testing.assert_allclose([c["pi"] for c in record["components"]], mixture.pi[i].numpy(), rtol=1e-6)
        np.testing.assert_allclose([c["mu"][0] for c in record["components"]], mixture.mu[i, :, 0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(
            [c["sigma"][0] for c in record["components"]], mixture.sigma[i, :, 0].numpy(), rtol=1e-6
        )
        valid = modes.valid[i]
        np.testing.assert_allclose(
            [m["location"][0] for m in record["modes"]], modes.location[i, valid, 0].numpy(), rtol=1e-6
        )
        assert sum(m["mass"] for m in record["modes"]) == pytest.approx(1.0, abs=1e-5)
        assert len(record["samples"]) == 7 and len(record["samples"][0]) == 1


def test_csv_npy_and_command_line_inputs_give_the_same_answer(toy_run, tmp_path):
    (tmp_path / "in.csv").write_text("x\n0.3\n0.7\n")  # a header line is skipped
    np.save(tmp_path / "in.npy", np.array([0.3, 0.7], dtype=np.float32))
    answers = []
    for source in (["--x", "0.3", "--x", "0.7"], ["--file", tmp_path / "in.csv"], ["--file", tmp_path / "in.npy"]):
        out = tmp_path / "a.json"
        assert predict_cli(toy_run, *source, "--out", out, "--force").returncode == 0  # the same file each time
        answers.append([r["components"] for r in json.loads(out.read_text())["predictions"]])
    assert answers[0] == answers[1] == answers[2]


def test_csv_output_has_one_row_per_component_mode_and_sample(toy_run, tmp_path):
    out = tmp_path / "a.csv"
    proc = predict_cli(toy_run, "--x", "0.5", "--samples", "4", "--temperature-pi", "0.5", "--out", out)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("component") == 3 and kinds.count("sample") == 4 and 1 <= kinds.count("mode") <= 3
    assert sum(float(r["weight"]) for r in rows if r["kind"] == "component") == pytest.approx(1.0, abs=1e-5)


def test_two_dimensional_inputs_and_test_set_indices(arm_run, tmp_path):
    out = tmp_path / "a.json"
    proc = predict_cli(arm_run, "--x", "0.5,0.6", "--out", out)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())["predictions"][0]
    assert json.loads(out.read_text())["covariance"] == "full"
    assert len(record["components"]) == 2 and len(record["components"][0]["covariance"]) == 2
    proc = predict_cli(arm_run, "--index", "0", "--index", "5")
    assert proc.returncode == 0, proc.stderr
    assert "test example #5 (target [" in proc.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--x", "0.5,0.6"], "has 2 value(s); this model takes 1"),
        (["--x", "abc"], "is not a number"),
        ([], "give the inputs in one way"),
        (["--x", "0.5", "--index", "1"], "give the inputs in one way"),
        (["--index", "10000"], "the test set has 500 examples"),
        (["--x", "0.5", "--out", "a.txt"], "allowed formats are .json and .csv"),
        (["--x", "nan"], "finite"),
        (["--x", "0.5", "--temperature-pi", "0"], "must be a finite number > 0"),
        (["--file", "missing.npy"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(toy_run, args, needle):
    proc = predict_cli(toy_run, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdn-predict: error: ") and needle in lines[0], proc.stderr


def test_a_folder_without_a_model_and_a_file_of_the_wrong_shape(toy_run, tmp_path):
    proc = predict_cli(tmp_path, "--x", "0.5")
    assert proc.returncode == 2 and "model.pt does not exist" in proc.stderr and "Traceback" not in proc.stderr
    np.save(tmp_path / "wide.npy", np.zeros((3, 2), dtype=np.float32))
    proc = predict_cli(toy_run, "--file", tmp_path / "wide.npy")
    assert proc.returncode == 2 and "shape (3, 2)" in proc.stderr
