"""dataset=table and dataset=uci end to end: a two-target table trains through mdn-run into a run
folder whose numbers are in the table's units; mdn-predict on a CSV (columns in another order,
identifiers kept) equals the in-process prediction; a bad table is one line and no run folder;
the UCI loader reproduces the standard index files; `make uci` runs and reports."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch

from helpers import one_error, run_cli, snapshot
from mdn_experiments.evaluation import contract as C
from mdn_experiments.tools import launch

TABLE_TINY = ["trainer.epochs=15", "trainer.progress=false", "trainer.threads=1", "K=2"]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory, table_csv):
    """A two-target run on the session's small table (features a, b; targets y1, y2)."""
    cwd = tmp_path_factory.mktemp("table_run")
    proc = run_cli(
        ["dataset=table", f"dataset.path={table_csv}", "dataset.target=[y1,y2]", "dataset.features=[a,b]", *TABLE_TINY],
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (cwd / "outputs" / "runs" / "table" / "K=2").iterdir()
    return run_dir


@pytest.mark.quick
def test_a_two_target_table_trains_end_to_end(table_run):
    metrics = json.loads((table_run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["targets"] == "y1, y2" and metrics["n_features"] == 2
    assert metrics[C.TEST_LL] == pytest.approx(-metrics[C.TEST_NLL])
    for column in ("y1", "y2"):
        for name in (C.TEST_LL, C.RMSE_MIXTURE_MEAN, C.RMSE_TOP_MODE, C.CRPS, C.COVERAGE_90, C.RMSE_BASELINE):
            assert isinstance(metrics[C.column_key(name, column)], float), (name, column)
    # the K=1 MDN was trained beside the MDN (tables' default), and every key is in the contract
    assert isinstance(metrics[C.key(C.TEST_LL, C.GAUSSIAN)], float) and (table_run / "gaussian_history.csv").is_file()
    assert {C.base_key(k) for k in metrics} <= set(C.METRICS), {C.base_key(k) for k in metrics} - set(C.METRICS)
    for figure in ("predicted.png", "calibration.png", "health.png", "loss.png"):
        assert (table_run / "figures" / figure).stat().st_size > 10_000, figure
    checkpoint = torch.load(table_run / "model.pt", weights_only=True)
    assert checkpoint["columns"] == {"features": ["a", "b"], "targets": ["y1", "y2"]}


def test_predict_on_a_csv_equals_the_in_process_prediction_and_keeps_identifiers(table_run, tmp_path, table_csv):
    from mdn_experiments.run.artifacts import load_run

    rows = list(csv.DictReader(table_csv.open()))[:7]
    new = tmp_path / "new.csv"
    with new.open("w", newline="") as f:  # the features in another order, an identifier, no targets
        writer = csv.writer(f)
        writer.writerow(["b", "sample", "a"])
        for row in rows:
            writer.writerow([row["b"], row["id"], row["a"]])
    out = tmp_path / "answer.csv"
    proc = launch.run(
        "mdn_experiments.tools.predict",
        [str(table_run), "--file", str(new), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    answer = list(csv.DictReader(out.open()))
    assert [r["sample"] for r in answer] == [r["id"] for r in rows]
    network, _, _ = load_run(table_run)
    x = torch.tensor([[float(r["a"]), float(r["b"])] for r in rows])
    with torch.no_grad():
        mixture = network(x)
    mean = mixture.mean().numpy()
    np.testing.assert_allclose([[float(r["y1_mean"]), float(r["y2_mean"])] for r in answer], mean, rtol=1e-5)
    for r in answer:  # the quantiles are ordered
        q = [float(r[f"y1_q{p}"]) for p in ("05", "25", "50", "75", "95")]
        assert q == sorted(q)
    # a file without one of the features: one line naming it
    (tmp_path / "lacking.csv").write_text("b,sample\n1.0,x\n")
    proc = launch.run(
        "mdn_experiments.tools.predict",
        [str(table_run), "--file", str(tmp_path / "lacking.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "lacks the feature column(s) 'a'" in one_error(proc, "mdn-predict")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["dataset.target=price"], "dataset.target='price': no such column"),
        (["dataset.target=y1", "dataset.features=[a,y1]"], "both a target and a feature"),
        (["dataset.target=y1"], "column 'id' of .* is not numeric \\(row 0: 's0'\\): leave it out"),
        (["dataset.target=y1", "dataset.features=[a,b]", "dataset.test_fraction=1.5"], "dataset.test_fraction"),
    ],
)
def test_a_bad_table_is_one_line_and_writes_no_run_folder(tmp_path, table_csv, overrides, expected):
    proc = run_cli(["dataset=table", f"dataset.path={table_csv}", *overrides, *TABLE_TINY], cwd=tmp_path)
    assert proc.returncode == 2
    assert re.search(expected, one_error(proc)), proc.stderr
    assert not (tmp_path / "outputs" / "runs").exists()


def test_the_uci_loader_reproduces_the_standard_index_files(uci_root):
    from mdn_experiments.datasets.uci import Uci

    for name, split in (("concrete", 3), ("naval-propulsion-plant", 0)):
        data = Uci(name=name, root=str(uci_root), split=split)
        train_file = np.loadtxt(uci_root / name / f"index_train_{split}.txt", dtype=int)
        test_file = np.loadtxt(uci_root / name / f"index_test_{split}.txt", dtype=int)
        for seed in (0, 1):
            train, val, test = data.split_positions(seed)
            np.testing.assert_array_equal(data.data.rows[test], test_file)  # exactly, in order
            assert sorted(data.data.rows[np.concatenate([train, val])]) == sorted(train_file)
            assert len(val) == round(0.2 * len(train_file))
        raw = np.loadtxt(uci_root / name / "data.txt")
        features = np.loadtxt(uci_root / name / "index_features.txt", dtype=int)
        kept = [f for f in features if np.ptp(raw[train_file][:, f]) > 0]  # naval: 2 constant columns left out
        splits = data.load(0)
        np.testing.assert_allclose(splits.test[0].numpy(), raw[test_file][:, kept].astype(np.float32))
    assert Uci(name="naval-propulsion-plant", root=str(uci_root), split=0).describe()["dropped_features"] == "8, 11"


def test_the_uci_loader_refuses_an_unknown_name_a_bad_split_and_a_changed_file(uci_root, tmp_path):
    from mdn_experiments.datasets.uci import UCI_NAMES, Uci
    from mdn_experiments.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="one of the UCI suite's data sets: " + ", ".join(UCI_NAMES)):
        Uci(name="boston", root=str(uci_root))
    with pytest.raises(ConfigError, match=r"dataset.split=20 .* an integer in \[0, 19\]"):
        Uci(name="yacht", root=str(uci_root), split=20)
    with pytest.raises(ConfigError, match=r"an integer in \[0, 4\] \(protein-tertiary-structure has 5 splits\)"):
        Uci(name="protein-tertiary-structure", root=str(uci_root), split=5)
    copy = tmp_path / "uci"
    shutil.copytree(uci_root / "yacht", copy / "yacht")
    (copy / "yacht" / "data.txt").chmod(0o644)
    text = (copy / "yacht" / "data.txt").read_text()
    (copy / "yacht" / "data.txt").write_text(text.replace("0.11", "0.12", 1))
    with pytest.raises(DataError, match="does not match its published SHA-256"):
        Uci(name="yacht", root=str(copy))
    with pytest.raises(DataError, match="concrete/data.txt is missing: point dataset.root"):
        Uci(name="concrete", root=str(copy))


def test_make_uci_quick_runs_the_suite_and_reports_beside_mc_dropout(uci_root, tmp_path):
    args = ["--quick", "--root", str(uci_root), "--out", str(tmp_path / "uci"), "--datasets", "yacht,bostonHousing"]
    tiny = ["trainer.epochs=3", "trainer.progress=false"]
    proc = launch.run("mdn_experiments.tools.uci", [*args, *tiny], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (root,) = [p for p in (tmp_path / "uci").iterdir() if p.is_dir()]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "bostonHousing",
        "bostonHousing-dequantized",
        "yacht",
    ]
    for sweep in ("yacht", "bostonHousing-dequantized"):
        jobs = sorted(root.glob(f"{sweep}/*/metrics.json"))
        assert len(jobs) == 3
        metrics = json.loads(jobs[0].read_text())
        assert metrics["epochs_run"] == 3  # the extra argument won over the suite's budget
        assert metrics["dequantized"] is (sweep.endswith("dequantized"))
    report = (tmp_path / "uci" / "REPORT.md").read_text()
    assert "| yacht | continuous |" in report and "| bostonHousing | dequantised |" in report
    assert "not counted" in report  # Boston as is: flagged (16 of its prices at the cap of 50)
    assert "bostonHousing: 16 of" in report and "rows at 50" in report
    mc = np.loadtxt(uci_root / "yacht" / "reference" / "mc_dropout_test_ll.txt")[:3]
    assert f"{mc.mean():.2f} ± {mc.std(ddof=1) / np.sqrt(3):.2f}" in report.split("| yacht |")[1].split("\n")[0]
    # a stopped suite is resumed by the next `make uci`: only the unfinished job runs again
    (gone,) = [p for p in sorted(root.glob("yacht/*/metrics.json")) if "dataset.split=1" in str(p)]
    kept = sorted(root.glob("yacht/*dataset.split=0*/metrics.json"))[0]
    kept_bytes = kept.read_bytes()
    gone.unlink()
    record = json.loads((root / "uci.json").read_text())
    record["finished"], record["steps"]["yacht"]["done"] = False, False
    (root / "uci.json").write_text(json.dumps(record))
    proc = launch.run("mdn_experiments.tools.uci", [*args, *tiny], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and "resuming the unfinished suite" in proc.stdout, proc.stderr[-2000:]
    assert gone.is_file() and kept.read_bytes() == kept_bytes
    assert "[uci] yacht: mdn-run" in proc.stdout
    assert "[uci] bostonHousing:" not in proc.stdout  # its sweeps were finished: not run again
    # a refused `make uci` (an unknown data set) makes no folder and changes nothing
    before = snapshot(root)
    proc = launch.run(
        "mdn_experiments.tools.uci", [*args, "--datasets", "nope", *tiny], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "one of the UCI suite's data sets" in proc.stderr
    assert snapshot(root) == before and len([p for p in (tmp_path / "uci").iterdir() if p.is_dir()]) == 1


def test_uci_preset_composes_with_the_suite_settings():
    from helpers import compose_config

    cfg = compose_config(["experiment=uci"])
    assert cfg.dataset._target_ == "mdn_experiments.datasets.uci.Uci" and cfg.figures is False
    assert cfg.K == 3 and list(cfg.model.backbone.hidden) == [50]


def test_a_shared_table_run_answers_without_its_training_file(tmp_path, table_csv):
    """The run folder alone (its training CSV moved away) still answers mdn-predict --file, from
    the columns model.pt names; --index, which needs the rows, says so in one line."""
    data = tmp_path / "data.csv"
    shutil.copy(table_csv, data)
    proc = run_cli(
        ["dataset=table", f"dataset.path={data}", "dataset.target=y1", "dataset.features=[a,b]", *TABLE_TINY],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs" / "table" / "K=2").iterdir()
    new = tmp_path / "new.csv"
    new.write_text("a,b,name\n0.5,0.1,first\n-0.5,1.0,second\n")
    before = snapshot(run_dir)
    data.rename(tmp_path / "elsewhere.csv")
    out = tmp_path / "answer.csv"
    args = [str(run_dir), "--file", str(new), "--out", str(out)]
    proc = launch.run("mdn_experiments.tools.predict", args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [row["name"] for row in csv.DictReader(out.open())] == ["first", "second"]
    proc = launch.run("mdn_experiments.tools.predict", [str(run_dir), "--index", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "is not there: its rows cannot be loaded" in one_error(proc, "mdn-predict")
    assert snapshot(run_dir) == before  # asking changed nothing in the folder
