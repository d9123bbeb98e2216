"""Every file a tool touches is data and stays where it belongs (issue 25): the progress files of
suites and reproductions, links and special files planted in shared folders, sizes, launcher
settings, tracking stores, mdn-predict's answers, units at any scale, and the one-line errors at
the edges. Each test names what it holds; a planted link always points at a `victim` file outside
the folder, which must never change, and a gadget would create a `marker`, which must never exist."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import TINY, compose_config, one_error, run_cli, snapshot
from mdn_experiments.config.ranges import JOBS_PER_CORE
from mdn_experiments.config.safety import quote
from mdn_experiments.errors import MESSAGE_CHARS
from mdn_experiments.run.artifacts import load_run
from mdn_experiments.tools import launch

RUN = [*TINY, "figures=false", "trainer.checkpoint_seconds=0"]
TABLE = ["trainer.epochs=3", "trainer.progress=false", "trainer.threads=1", "figures=false", "K=2"]


def tool(module: str, *args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return launch.run(module, [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


def error_line(proc, prefix: str) -> str:
    """The one error line of a refusal (exit 2), no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory) -> Path:
    """A run killed in its MDN phase: state.pt and .hydra/, no metrics.json."""
    run_dir = tmp_path_factory.mktemp("unfinished") / "run"
    proc = run_cli([*RUN, f"hydra.run.dir={run_dir}"], env={"MDN_FAULT": "KILL@mdn:2:1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return run_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A finished two-job sweep."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "sweep"
    assert run_cli(["-m", "K=1,2", *RUN, f"hydra.sweep.dir={sweep_dir}"]).returncode == 0
    return sweep_dir


def unfinished_sweep(sweep: Path, tmp_path: Path) -> Path:
    """A copy of the sweep with one job's results gone: mdn-resume replays its multirun.yaml."""
    copy = shutil.copytree(sweep, tmp_path / "sweep")
    (job,) = [p for p in copy.iterdir() if p.name.startswith("K=2")]
    (job / "metrics.json").unlink()
    return copy


def tamper_overrides(path: Path, *, hydra: list[str] = (), task: list[str] = ()) -> None:
    record = yaml.safe_load(path.read_text())
    record["hydra"]["overrides"]["hydra"] += list(hydra)
    record["hydra"]["overrides"]["task"] += list(task)
    path.write_text(yaml.safe_dump(record))


class TestSuiteFiles:
    """1. Progress files (uci.json, reproduce.json, sweep_done.json, multirun.yaml's launcher part)
    replay only what the replay rules allow."""

    @pytest.mark.parametrize(
        "args, key",
        [
            (["hydra.searchpath=[file://MARK]"], "hydra.searchpath"),
            (["+hydra.job.env_set.LD_PRELOAD=MARK"], "hydra.job.env_set.LD_PRELOAD"),
            (["hydra.job_logging.handlers.file.filename=MARK"], "hydra.job_logging.handlers.file.filename"),
            (["+hydra.launcher.setup=['touch MARK']"], "hydra.launcher.setup"),
            (["+hydra.launcher.submitit_folder=MARK"], "hydra.launcher.submitit_folder"),
            (["+hydra.callbacks.x={_target_:pathlib.Path.touch,self:MARK}"], "hydra.callbacks.x._target_"),
        ],
    )
    def test_a_tampered_uci_json_replays_nothing_the_rules_refuse(self, tmp_path, uci_root, args, key):
        marker = tmp_path / "ran"
        root = tmp_path / "uci" / "2026-01-01_00-00-00"
        root.mkdir(parents=True)
        record = {"quick": True, "datasets": "yacht", "args": [a.replace("MARK", str(marker)) for a in args]}
        (root / "uci.json").write_text(json.dumps({**record, "finished": False, "steps": {}}))
        before = snapshot(root)
        proc = tool("mdn_experiments.tools.uci", "--resume", root, "--root", uci_root, "--quick", "--datasets", "yacht")
        line = error_line(proc, "[uci] error:")
        assert "uci.json" in line and key in line and "is not allowed" in line
        assert not marker.exists() and snapshot(root) == before

    def test_a_new_suite_takes_only_arguments_it_can_replay(self, tmp_path, uci_root):
        out = tmp_path / "uci"
        proc = tool(
            "mdn_experiments.tools.uci",
            "--out",
            out,
            "--root",
            uci_root,
            "--datasets",
            "yacht",
            "hydra.mode=RUN",
            "+hydra.launcher.temp_folder=/tmp",
        )
        assert "hydra.launcher.temp_folder" in error_line(proc, "[uci] error:")
        assert not out.exists()

    @pytest.mark.parametrize(
        "record, needle",
        [
            ({"quick": "yes", "finished": False, "steps": {}}, "quick holds 'yes'"),
            ({"finished": False, "steps": {}, "cwd": "/"}, "unknown key 'cwd'"),
            ({"finished": False, "steps": {"robot arm": {"seconds": -1, "done": True}}}, "step 'robot arm'"),
            ({"finished": False, "steps": {"x": {"seconds": 1, "done": "no"}}}, "step 'x'"),
        ],
    )
    def test_a_tampered_reproduce_json_is_one_line(self, tmp_path, record, needle):
        root = tmp_path / "reproduce" / "2026-01-01_00-00-00"
        root.mkdir(parents=True)
        (root / "reproduce.json").write_text(json.dumps(record))
        line = error_line(tool("mdn_experiments.tools.resume", root), "[reproduce] error:")
        assert "reproduce.json" in line and needle in line and "not a record of make reproduce" in line

    @pytest.mark.parametrize(
        "override, key",
        [
            ("+hydra.launcher.submitit_folder=MARK", "hydra.launcher.submitit_folder"),
            ("+hydra.launcher.temp_folder=MARK", "hydra.launcher.temp_folder"),
            ("hydra/launcher=submitit_local", "hydra/launcher"),
            ("hydra.sweep.subdir=../MARK", "hydra.sweep.subdir"),
        ],
    )
    def test_a_sweeps_recorded_launcher_and_folders_replay_within_the_rules(self, sweep, tmp_path, override, key):
        marker = tmp_path / "ran"
        copy = unfinished_sweep(sweep, tmp_path)
        tamper_overrides(copy / "multirun.yaml", hydra=[override.replace("MARK", str(marker))])
        proc = tool("mdn_experiments.tools.resume", copy)
        prefix = "mdn-run: error:" if key == "hydra.sweep.subdir" else "mdn-resume: error:"
        assert key in error_line(proc, prefix)
        assert not marker.exists() and not (tmp_path / "ran").exists()

    def test_a_recorded_number_of_parallel_jobs_is_bounded(self, sweep, tmp_path):
        copy = unfinished_sweep(sweep, tmp_path)
        # one more than the bound: enough to be refused now, few enough that code without the bound
        # starts a handful of workers instead of a fork bomb
        too_many = JOBS_PER_CORE * (os.cpu_count() or 1) + 1
        tamper_overrides(copy / "multirun.yaml", hydra=["hydra/launcher=joblib", f"hydra.launcher.n_jobs={too_many}"])
        line = error_line(tool("mdn_experiments.tools.resume", copy), "mdn-run: error:")
        assert f"hydra.launcher.n_jobs={too_many} is not allowed: hydra.launcher.n_jobs must be -1" in line

    def test_sweep_done_json_cannot_point_outside_the_sweep(self, sweep, tmp_path):
        """A job folder named `../elsewhere` that holds a metrics.json does not finish the sweep."""
        from mdn_experiments.run.layout import sweep_finished

        copy = shutil.copytree(sweep, tmp_path / "sweep")
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "metrics.json").write_text("{}")
        (copy / "sweep_done.json").write_text(json.dumps({"jobs": 1, "job_folders": ["../elsewhere"]}))
        assert not sweep_finished(copy)
        (copy / "sweep_done.json").write_text(json.dumps({"jobs": "2"}))
        assert not sweep_finished(copy)  # a count that is not a number: unfinished, not a crash


class TestLinksAndSpecialFiles:
    """3. No write follows a link or lands on a special file: a folder holding either is refused in
    one line and nothing is written."""

    @pytest.mark.parametrize("name", [".lock", "history.csv", "model.pt", "state.pt.tmp", ".metrics.json.tmp"])
    def test_mdn_resume_refuses_a_run_folder_with_a_planted_link(self, unfinished, tmp_path, name):
        run_dir = shutil.copytree(unfinished, tmp_path / "run")
        precious = victim(tmp_path)
        (run_dir / name).unlink(missing_ok=True)
        (run_dir / name).symlink_to(precious)
        before = snapshot(run_dir)
        line = error_line(tool("mdn_experiments.tools.resume", run_dir), "mdn-resume: error:")
        assert f"{name} is a symbolic link" in line and "nothing was written" in line
        assert precious.read_text() == "precious\n" and snapshot(run_dir) == before

    def test_mdn_run_refuses_a_planted_link_before_hydra_writes(self, tmp_path):
        run_dir = tmp_path / "run"
        (run_dir / ".hydra").mkdir(parents=True)
        precious = victim(tmp_path)
        (run_dir / ".hydra" / "config.yaml").symlink_to(precious)  # Hydra would write its config through it
        line = one_error(run_cli([*RUN, f"hydra.run.dir={run_dir}"]))
        assert "config.yaml is a symbolic link" in line and precious.read_text() == "precious\n"

    @pytest.mark.parametrize("name", ["summary.md", "summary.csv", "k_sweep.png"])
    def test_mdn_report_refuses_a_sweep_with_a_planted_link(self, sweep, tmp_path, name):
        copy = shutil.copytree(sweep, tmp_path / "sweep")
        precious = victim(tmp_path)
        (copy / name).unlink()
        (copy / name).symlink_to(precious)
        proc = tool("mdn_experiments.tools.report", copy)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert f"{name} is a symbolic link" in one_error(proc, "mdn-report")
        assert precious.read_text() == "precious\n"

    def test_a_reproduction_with_a_planted_link_is_not_resumed(self, tmp_path):
        root = tmp_path / "reproduce" / "2026-01-01_00-00-00"
        root.mkdir(parents=True)
        (root / "reproduce.json").write_text(json.dumps({"quick": True, "finished": False, "steps": {}}))
        precious = victim(tmp_path)
        (root / "REPORT.md").symlink_to(precious)
        line = error_line(tool("mdn_experiments.tools.resume", root), "[reproduce] error:")
        assert "REPORT.md is a symbolic link" in line and precious.read_text() == "precious\n"

    def test_a_fifo_in_a_run_folder_does_not_hang_a_tool(self, unfinished, tmp_path):
        run_dir = shutil.copytree(unfinished, tmp_path / "run")
        (run_dir / "state.pt").unlink()
        os.mkfifo(run_dir / "state.pt")
        assert "state.pt is a FIFO" in error_line(
            tool("mdn_experiments.tools.resume", run_dir, timeout=120), "mdn-resume"
        )


class TestSizes:
    """4. Every read is bounded: model.pt that is /dev/zero or 5 GiB, a config nested or aliased,
    a table whose header promises more memory than there is."""

    def test_model_pt_linked_to_dev_zero_or_too_large_is_one_line(self, tiny_run, tmp_path):
        run_dir = shutil.copytree(tiny_run, tmp_path / "run")
        (run_dir / "model.pt").unlink()
        (run_dir / "model.pt").symlink_to("/dev/zero")
        line = error_line(tool("mdn_experiments.tools.predict", run_dir, "--x", "0.5", timeout=120), "mdn-predict")
        assert "model.pt is a symbolic link" in line
        (run_dir / "model.pt").unlink()
        with (run_dir / "model.pt").open("wb") as fh:
            fh.truncate(5 * 1024**3)  # sparse: reading it whole would cost 5 GiB
        line = error_line(tool("mdn_experiments.tools.predict", run_dir, "--x", "0.5", timeout=120), "mdn-predict")
        assert "is 5 GiB, more than the 4 GiB such a file may hold" in line

    def test_a_saved_config_nested_deep_is_refused_before_any_walk(self, tiny_run, tmp_path):
        run_dir = shutil.copytree(tiny_run, tmp_path / "run")
        checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
        node: list = [1]
        for _ in range(200):
            node = [node, node]  # shared: 2**200 paths
        checkpoint["config"]["model"]["backbone"]["hidden"] = node
        torch.save(checkpoint, run_dir / "model.pt")
        with pytest.raises(Exception, match="nested deeper than 32 levels|more than 200000 values"):
            load_run(run_dir)

    def test_an_aliased_config_yaml_is_a_damaged_row(self, sweep, tmp_path):
        copy = shutil.copytree(sweep, tmp_path / "sweep")
        job = next(p for p in copy.iterdir() if p.name.startswith("K=1"))
        laughs = "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
            f"l{i + 1}: &l{i + 1} [*{'a' if i == 0 else f'l{i}'}, *{'a' if i == 0 else f'l{i}'}]\n" for i in range(40)
        )
        (job / ".hydra" / "config.yaml").write_text(laughs)
        proc = tool("mdn_experiments.tools.report", copy, timeout=120)
        assert proc.returncode == 0 and "1 damaged" in proc.stdout, proc.stderr
        assert "YAML alias" in (copy / "summary.md").read_text()

    @pytest.mark.parametrize("kind", ["npy", "npz"])
    def test_a_table_whose_header_promises_too_much_memory_is_refused_before_it_is_read(self, tmp_path, kind):
        path = tmp_path / f"huge.{kind}"
        header = {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)}  # 24 TB, body missing
        if kind == "npy":
            with path.open("wb") as fh:
                np.lib.format.write_array_header_1_0(fh, header)
        else:
            import zipfile

            with zipfile.ZipFile(path, "w") as archive, archive.open("table.npy", "w") as fh:
                np.lib.format.write_array_header_1_0(fh, header)
        run_dir = tmp_path / "run"
        line = one_error(
            run_cli(["dataset=table", f"dataset.path={path}", "dataset.target=0", f"hydra.run.dir={run_dir}"])
        )
        assert f"reading {path} needs about" in line and "use a smaller file" in line
        assert not run_dir.exists()


class TestTracking:
    """6. A resumed run logs to the store chosen now: a store recorded in the folder (tracking.json,
    or its recorded overrides) is used only when it lies inside the folder, and one line says so."""

    def test_a_recorded_remote_store_receives_nothing(self, tmp_path):
        pytest.importorskip("mlflow")
        run_dir = tmp_path / "run"
        first = f"sqlite:///{tmp_path / 'first.db'}"
        proc = run_cli(
            [*RUN, "logger=mlflow", f"tracking.mlflow_uri={first}", f"hydra.run.dir={run_dir}"],
            env={"MDN_FAULT": "KILL@mdn:2:1"},
        )
        assert proc.returncode == -signal.SIGKILL and (run_dir / "tracking.json").exists(), proc.stderr
        recorded = json.loads((run_dir / "tracking.json").read_text())
        recorded["mlflow_uri"] = "http://127.0.0.1:9"  # nobody listens: any attempt to log there fails
        (run_dir / "tracking.json").write_text(json.dumps(recorded))
        chosen = f"sqlite:///{tmp_path / 'chosen.db'}"
        proc = tool("mdn_experiments.tools.resume", run_dir, "--mlflow-uri", chosen)
        assert proc.returncode == 0, proc.stderr
        output = proc.stdout + proc.stderr
        assert f"the run recorded the MLflow store {first}" in output  # the replayed override: not used
        assert "tracking.json records the MLflow store http://127.0.0.1:9" in output and chosen in output
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=chosen)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert [r.info.status for r in runs] == ["FINISHED"] and "test_nll" in runs[0].data.metrics
        assert json.loads((run_dir / "tracking.json").read_text())["mlflow_uri"] == chosen


@pytest.fixture(scope="module")
def id_table(tmp_path_factory) -> Path:
    """A table with identifiers a spreadsheet would run (=, +, -, @) and a target named '=y'."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("ids") / "ids.csv"
    ids = ['=HYPERLINK("http://x")', "+cmd", "-2", "@SUM(A1)", "plain", "-1+1|calc"]
    rows = ["id,a,b,=y"]
    for i in range(150):
        a, b = rng.normal(size=2)
        rows.append(f"{ids[i % len(ids)]},{a:.6f},{b:.6f},{a * b + 0.1 * rng.normal():.6f}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def id_run(tmp_path_factory, id_table) -> Path:
    run_dir = tmp_path_factory.mktemp("id_run") / "run"
    proc = run_cli(
        [
            "dataset=table",
            f"dataset.path={id_table}",
            "dataset.target=3",
            "dataset.features=[a,b]",
            *TABLE,
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    return run_dir


class TestPredictOut:
    """7. mdn-predict --out never destroys results, and writes cells a spreadsheet shows as text."""

    def test_inside_a_run_folder_the_file_itself_and_an_existing_file_are_refused(self, id_run, id_table, tmp_path):
        before = snapshot(id_run)
        for out, needle in [
            (id_run / "metrics.csv", "a folder of mdn-experiments"),
            (id_run / "figures" / "answer.csv", "a folder of mdn-experiments"),
            (id_table, "is the --file being read"),
        ]:
            proc = tool("mdn_experiments.tools.predict", id_run, "--file", id_table, "--out", out, "--force")
            assert needle in error_line(proc, "mdn-predict: error:")
        assert snapshot(id_run) == before
        out = tmp_path / "answer.csv"
        out.write_text("keep me\n")
        assert "exists: give --force" in error_line(
            tool("mdn_experiments.tools.predict", id_run, "--file", id_table, "--out", out), "mdn-predict: error:"
        )
        assert out.read_text() == "keep me\n"
        assert (
            tool("mdn_experiments.tools.predict", id_run, "--file", id_table, "--out", out, "--force").returncode == 0
        )
        assert out.read_text() != "keep me\n"

    def test_an_input_column_the_answer_would_overwrite_is_refused(self, id_run, id_table, tmp_path):
        clash = tmp_path / "clash.csv"
        clash.write_text(id_table.read_text().replace("id,a,b,=y", "=y_mean,a,b,=y", 1))
        proc = tool("mdn_experiments.tools.predict", id_run, "--file", clash, "--out", tmp_path / "a.csv")
        assert "'=y_mean'" in error_line(proc, "mdn-predict: error:") and not (tmp_path / "a.csv").exists()

    def test_formula_cells_are_written_as_text(self, id_run, id_table, tmp_path):
        out = tmp_path / "answer.csv"
        assert tool("mdn_experiments.tools.predict", id_run, "--file", id_table, "--out", out).returncode == 0
        rows = list(csv.reader(out.open()))
        header, ids = rows[0], [row[0] for row in rows[1:7]]
        assert header[:3] == ["id", "'=y", "'=y_mean"] and all(h.startswith("'=y") for h in header[1:])
        assert ids == ['\'=HYPERLINK("http://x")', "'+cmd", "-2", "'@SUM(A1)", "plain", "'-1+1|calc"]

    def test_x_answers_without_reading_the_training_table(self, id_run, id_table, tmp_path):
        """16. The training file replaced by a FIFO (reading it would hang) or gone: --x costs nothing."""
        run_dir = shutil.copytree(id_run, tmp_path / "run")
        moved = tmp_path / "moved.csv"
        shutil.copy(id_table, moved)
        checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
        fifo = tmp_path / "training.fifo.csv"
        os.mkfifo(fifo)
        checkpoint["config"]["dataset"]["path"] = str(fifo)
        torch.save(checkpoint, run_dir / "model.pt")
        proc = tool("mdn_experiments.tools.predict", run_dir, "--x", "0.1,0.2", timeout=60)
        assert proc.returncode == 0 and "components:" in proc.stdout, proc.stderr
        assert "cannot be read" not in proc.stderr


class TestUnits:
    """8. The same table scaled by s reports log-likelihoods that differ by exactly -log s, at any
    scale float32 holds; beyond, one line."""

    SCALES = (2.0**-30, 1e-9, 1e9, 1e20)

    def table(self, folder: Path, scale: float) -> Path:
        rng = np.random.default_rng(0)
        a, b = rng.uniform(-1, 1, 300), rng.normal(size=300)
        y = rng.choice([-1.0, 1.0], 300) * np.sqrt(np.abs(a)) + 0.05 * rng.normal(size=300)
        path = folder / f"scale_{scale:g}.csv"
        path.write_text(
            "a,b,y\n" + "".join(f"{float(a[i])!r},{float(b[i])!r},{float(y[i] * scale)!r}\n" for i in range(300))
        )
        return path

    def metrics(self, path: Path, run_dir: Path) -> dict:
        from mdn_experiments.run.runner import run_experiment

        cfg = compose_config(["dataset=table", f"dataset.path={quote(str(path))}", "dataset.target=y", *TABLE])
        return run_experiment(cfg, run_dir)

    def test_log_likelihoods_move_by_the_log_of_the_scale(self, tmp_path):
        base = self.metrics(self.table(tmp_path, 1.0), tmp_path / "base")
        for scale in self.SCALES:
            m = self.metrics(self.table(tmp_path, scale), tmp_path / f"run_{scale:g}")
            assert m["status"] == "ok", (scale, m["status_reason"])
            shift = math.log(scale)
            for key in ("test_ll", "test_ll_gaussian"):
                assert m[key] == pytest.approx(base[key] - shift, abs=1e-4), (scale, key)
            for key in ("test_nll", "unconditional_nll", "val_nll", "train_nll"):
                assert m[key] == pytest.approx(base[key] + shift, abs=1e-4), (scale, key)
            for key in ("rmse_mixture_mean", "rmse_top_pi", "rmse_baseline", "crps"):
                assert m[key] == pytest.approx(base[key] * scale, rel=1e-3), (scale, key)

    @pytest.mark.parametrize("scale, needle", [(1e-35, "holds only values below 1e-30"), (1e39, "beyond float32")])
    def test_beyond_float32_is_one_line_about_the_file_and_no_folder(self, tmp_path, scale, needle):
        path = self.table(tmp_path, scale)
        run_dir = tmp_path / "run"
        line = one_error(
            run_cli(["dataset=table", f"dataset.path={path}", "dataset.target=y", f"hydra.run.dir={run_dir}"])
        )
        assert needle in line and "rescale the column in the file" in line and not run_dir.exists()

    def test_a_target_float32_cannot_resolve_is_refused(self, tmp_path):
        path = tmp_path / "offset.csv"
        rng = np.random.default_rng(1)
        path.write_text("a,y\n" + "".join(f"{rng.normal()!r},{1e6 + 1e-3 * rng.normal()!r}\n" for _ in range(100)))
        line = one_error(
            run_cli(["dataset=table", f"dataset.path={path}", "dataset.target=y", f"hydra.run.dir={tmp_path / 'r'}"])
        )
        assert "float32 cannot hold those differences; subtract a constant" in line


class TestTablesAtTheEdges:
    """10-15. Tables: duplicates, spikes, huge names and advice that fits where it is given."""

    def test_duplicate_rows_are_counted_and_said(self, tmp_path):
        rng = np.random.default_rng(2)
        a = rng.normal(size=60)
        rows = [f"{float(a[i])!r},{float(2 * a[i] + 0.1 * rng.normal())!r}" for i in range(60)]
        path = tmp_path / "dups.csv"
        path.write_text("a,y\n" + "\n".join(rows * 2) + "\n")  # every row twice
        run_dir = tmp_path / "run"
        proc = run_cli(
            ["dataset=table", f"dataset.path={path}", "dataset.target=y", *TABLE, f"hydra.run.dir={run_dir}"]
        )
        assert proc.returncode == 0, proc.stderr
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["duplicate_rows"] > 0
        assert (
            f"{metrics['duplicate_rows']} of the 12 test rows of {path} are exact copies" in proc.stdout + proc.stderr
        )

    def test_a_spike_in_the_target_is_a_warning_line(self, tmp_path):
        rng = np.random.default_rng(3)
        path = tmp_path / "spike.csv"
        path.write_text(
            "a,y\n" + "".join(f"{rng.normal()!r},{3.0 if i % 20 else rng.normal()!r}\n" for i in range(200))
        )
        proc = run_cli(
            ["dataset=table", f"dataset.path={path}", "dataset.target=y", *TABLE, f"hydra.run.dir={tmp_path / 'r'}"]
        )
        assert proc.returncode in (0, 1), proc.stderr
        assert "target column 'y'" in proc.stdout + proc.stderr and "looks discrete" in proc.stdout + proc.stderr

    def test_a_20_mb_column_name_makes_a_short_line(self, tmp_path):
        path = tmp_path / "long.csv"
        name = "n" * 20_000_000
        path.write_text(f"{name},y\n" + "".join(f"x{i},{i}\n" for i in range(30)))
        proc = run_cli(["dataset=table", f"dataset.path={path}", "dataset.target=y", f"hydra.run.dir={tmp_path / 'r'}"])
        line = one_error(proc)
        assert "is not numeric" in line and len(line) <= MESSAGE_CHARS + 20 and len(proc.stderr) < 4 * MESSAGE_CHARS

    def test_advice_fits_where_it_is_given(self, id_run, tmp_path, uci_root):
        odd = tmp_path / "new.xyz"
        odd.write_text("a,b\n1,2\n")
        line = error_line(tool("mdn_experiments.tools.predict", id_run, "--file", odd), "mdn-predict: error:")
        assert "unknown format" in line and "dataset.format" not in line
        empty = tmp_path / "empty.csv"
        empty.write_text("a,b,y\n" + "".join(f"{i},,{i}\n" for i in range(20)))
        line = one_error(
            run_cli(["dataset=table", f"dataset.path={empty}", "dataset.target=y", f"hydra.run.dir={tmp_path / 'r'}"])
        )
        assert "column 'b'" in line and "holds no value at all" in line and "missing=drop" not in line
        line = one_error(
            run_cli(
                [
                    "dataset=uci",
                    f"dataset.root={uci_root}",
                    "dataset.name=naval-propulsion-plant",
                    "dataset.constant=error",
                    f"hydra.run.dir={tmp_path / 'u'}",
                ]
            )
        )
        assert "is constant on the training rows" in line and "dataset.features" not in line
