"""A refusal changes nothing, and every tool survives a damaged or unusual folder: refusals on
finished folders leave every byte as it was (checked file by file), mdn-report checks before it
writes and writes only its own files, swept values cannot leave the sweep folder, damaged files
are reported in one line (or marked, in a summary), and folders with commas, quotes or non-ASCII
names resume."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import TINY, one_error, run_cli, snapshot
from mdn_experiments.config.safety import quote
from mdn_experiments.run import layout
from mdn_experiments.tools import launch, report
from mdn_experiments.train.state import STATE_FILE

RUN = [*TINY, "figures=false", "trainer.checkpoint_seconds=0"]


def tool(module: str, *args, **kwargs):
    return launch.run(module, [str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert run_cli([*RUN, f"hydra.run.dir={run_dir}"]).returncode == 0
    return run_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("sweep") / "sweep"
    proc = run_cli(["-m", "K=1,2", "seed=0,1", *RUN, f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


@contextlib.contextmanager
def small_file_system(folder: Path, size: str = "8m"):
    """A tmpfs of `size` mounted at folder for the block (root, as on the development and CI
    machines: a real full disk, not a simulated one)."""
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if proc.returncode != 0:
        message = f"a tmpfs cannot be mounted here ({proc.stderr.decode().strip()}): run the tests as root"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, headroom: int) -> Path:
    """A file that leaves about `headroom` bytes free on folder's file system."""
    stats = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - headroom))
    return filler


def killed(run_dir: Path, *extra: str) -> Path:
    proc = run_cli([*RUN, *extra, f"hydra.run.dir={quote(str(run_dir))}"], env={"MDN_FAULT": "KILL@mdn:2:1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return run_dir


class TestARefusalChangesNothing:
    @pytest.mark.parametrize("extra", [[], ["K=5"], ["-m", "K=1,2"]])
    def test_a_finished_folder_is_refused_before_hydra_writes(self, finished, tmp_path, extra):
        run_dir = shutil.copytree(finished, tmp_path / "run")
        before = snapshot(run_dir)
        key = "hydra.sweep.dir" if "-m" in extra else "hydra.run.dir"
        proc = run_cli([*extra, *RUN, f"{key}={run_dir}"])
        assert proc.returncode == 2
        assert "finished run" in one_error(proc) or "is a run folder" in one_error(proc)
        assert snapshot(run_dir) == before  # .hydra/*.yaml included: the old result keeps its settings

    def test_an_unfinished_run_of_another_config_is_refused_before_hydra_writes(self, tmp_path):
        run_dir = killed(tmp_path / "run")
        before = snapshot(run_dir)
        proc = run_cli([*RUN, "K=5", f"hydra.run.dir={run_dir}"])
        assert proc.returncode == 2 and "another config (K: 3 -> 5)" in one_error(proc)
        assert snapshot(run_dir) == before

    def test_a_finished_sweep_is_refused_and_untouched(self, sweep, tmp_path):
        sweep_dir = shutil.copytree(sweep, tmp_path / "sweep")
        before = snapshot(sweep_dir)
        for args in (["-m", "K=1,2", "seed=0,1"], ["-m", "K=3"]):  # a new sweep never mixes with an old one
            proc = run_cli([*args, *RUN, f"hydra.sweep.dir={sweep_dir}"])
            assert proc.returncode == 2 and "already holds a sweep" in one_error(proc)
        assert snapshot(sweep_dir) == before

    def test_a_folder_holding_other_files_is_not_written_into(self, tmp_path):
        folder = tmp_path / "mine"
        folder.mkdir()
        (folder / "history.csv").write_text("my own data\n")
        for key in ("hydra.run.dir", "hydra.sweep.dir"):
            proc = run_cli([*(["-m"] if "sweep" in key else []), *RUN, f"{key}={folder}"])
            assert proc.returncode == 2 and "holds other files" in one_error(proc)
        assert snapshot(folder) == {"history.csv": b"my own data\n"}

    @pytest.mark.quick
    def test_a_bad_value_leaves_no_run_folder_behind(self, tmp_path):
        proc = run_cli([*RUN, "trainer.lr=-1", f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2 and not (tmp_path / "run").exists()


class TestMdnReport:
    def test_it_checks_first_and_keeps_a_users_own_files(self, sweep, tmp_path):
        empty = tmp_path / "notes"
        empty.mkdir()
        (empty / "summary.md").write_text("my notes\n")
        proc = tool("mdn_experiments.tools.report", empty)
        assert proc.returncode == 2 and "holds no job folders" in one_error(proc, "mdn-report")
        assert snapshot(empty) == {"summary.md": b"my notes\n"}
        sweep_dir = shutil.copytree(sweep, tmp_path / "sweep")
        (sweep_dir / "summary.md").write_text("my own summary\n")
        before = snapshot(sweep_dir)
        proc = tool("mdn_experiments.tools.report", sweep_dir)
        assert proc.returncode == 1 and "was not written by a sweep summary" in one_error(proc, "mdn-report")
        assert "# Sweep summary" in proc.stdout  # what it could do: the summary, on the screen
        assert snapshot(sweep_dir) == before

    def test_damaged_jobs_are_marked_and_the_rest_summarised(self, sweep, tmp_path):
        sweep_dir = shutil.copytree(sweep, tmp_path / "sweep")
        jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
        metrics = jobs[0] / "metrics.json"
        metrics.write_text(metrics.read_text()[:40])  # truncated
        (jobs[1] / ".hydra" / "config.yaml").write_text("K: [unclosed\n")  # corrupt YAML
        (jobs[2] / "metrics.json").unlink()
        (jobs[2] / "error.txt").write_text("")  # empty error.txt
        proc = tool("mdn_experiments.tools.report", sweep_dir)
        assert proc.returncode == 0, proc.stderr
        assert "2 damaged" in proc.stdout
        rows = {row["job"]: row for row in report.collect(sweep_dir)}
        assert (
            rows[jobs[0].name]["status"] == "damaged" and "metrics.json cannot be read" in rows[jobs[0].name]["reason"]
        )
        assert (
            rows[jobs[1].name]["status"] == "damaged" and "config.yaml cannot be read" in rows[jobs[1].name]["reason"]
        )
        assert rows[jobs[2].name]["status"] == "failed" and "empty" in rows[jobs[2].name]["reason"]
        assert rows[jobs[3].name]["status"] == "ok"
        summary = (sweep_dir / "summary.md").read_text()
        assert "1 ok" in summary and "2 damaged" in summary and "1 failed" in summary

    def test_a_read_only_sweep_gets_its_summary_on_the_screen(self, sweep, tmp_path, monkeypatch, capsys):
        sweep_dir = shutil.copytree(sweep, tmp_path / "sweep")
        before = snapshot(sweep_dir)

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(sweep_dir / ".lock"))

        monkeypatch.setattr(
            report.locking.files, "open_lock_file", read_only
        )  # as a read-only mount answers (we are root)
        with pytest.raises(SystemExit) as caught:
            report.main([str(sweep_dir)])
        assert caught.value.code == 1
        out, err = capsys.readouterr()
        assert "# Sweep summary" in out and "4 jobs: 4 ok" in out
        assert err.count("mdn-report: error:") == 1 and "Read-only file system" in err
        assert snapshot(sweep_dir) == before


class TestSweepFolders:
    def test_swept_values_cannot_leave_the_sweep_folder(self, tmp_path):
        sweep_dir = tmp_path / "sweep"
        proc = run_cli(["-m", "tracking.experiment=../../x,../../x/..,..", *RUN, f"hydra.sweep.dir={sweep_dir}"])
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
        jobs = [p for p in sweep_dir.iterdir() if p.is_dir()]
        assert len(jobs) == 3 and all((job / "metrics.json").exists() for job in jobs)
        assert all("/" not in job.name for job in jobs)

    def test_a_deleted_job_folder_makes_the_sweep_unfinished_and_is_rerun(self, sweep, tmp_path):
        sweep_dir = shutil.copytree(sweep, tmp_path / "sweep")
        assert layout.sweep_finished(sweep_dir)
        lost = next(p for p in sweep_dir.iterdir() if p.name.startswith("K=2,") and ",seed=1," in p.name)
        shutil.rmtree(lost)
        assert not layout.sweep_finished(sweep_dir)
        proc = tool("mdn_experiments.tools.resume", sweep_dir)
        assert proc.returncode == 0, proc.stderr
        assert (lost / "metrics.json").exists() and layout.sweep_finished(sweep_dir)

    @pytest.mark.parametrize("name", ["K=3,seed=0", "ré sumé 'quoted'", "a=b,c=[d] {e}"])
    def test_unusual_folder_names_resume(self, tmp_path, name):
        run_dir = killed(tmp_path / name)
        proc = tool("mdn_experiments.tools.resume", run_dir)
        assert proc.returncode == 0, proc.stderr
        assert (run_dir / "metrics.json").exists()

    def test_a_sweep_jobs_own_folder_resumes(self, tmp_path):
        sweep_dir = tmp_path / "sweep"
        proc = run_cli(
            ["-m", "K=2,3", *RUN, f"hydra.sweep.dir={sweep_dir}"],
            env={"MDN_FAULT": "KILL@mdn:2:1", "MDN_FAULT_RUN": "K=3"},
        )
        assert proc.returncode == -signal.SIGKILL  # the basic launcher runs the job in mdn-run itself
        job = next(p for p in sweep_dir.iterdir() if p.name.startswith("K=3"))
        proc = tool("mdn_experiments.tools.resume", job)
        assert proc.returncode == 0, proc.stderr
        assert json.loads((job / "metrics.json").read_text())["K"] == 3


class TestDamagedFiles:
    """One line each, a non-zero exit, and nothing else lost."""

    @pytest.mark.parametrize(
        "damage, needle",
        [
            ("empty", "is empty or not a mapping"),
            ("corrupt", "cannot be read"),
            ("no overrides", "holds no hydra.overrides"),
        ],
    )
    def test_damaged_hydra_files(self, tmp_path, damage, needle):
        run_dir = killed(tmp_path / "run")
        path = run_dir / ".hydra" / "hydra.yaml"
        path.write_text({"empty": "", "corrupt": "hydra: [\n", "no overrides": "hydra: {}\n"}[damage])
        proc = tool("mdn_experiments.tools.resume", run_dir)
        assert proc.returncode == 2 and needle in one_error(proc, "mdn-resume")
        assert (run_dir / STATE_FILE).exists()

    def test_a_state_file_that_is_a_folder(self, tmp_path):
        run_dir = killed(tmp_path / "run")
        (run_dir / STATE_FILE).unlink()
        (run_dir / "state.prev.pt").unlink(missing_ok=True)
        (run_dir / STATE_FILE).mkdir()
        proc = tool("mdn_experiments.tools.resume", run_dir)
        assert proc.returncode == 2 and "state.pt is a folder: only regular files are read" in one_error(proc)

    def test_a_corrupt_reproduce_json(self, tmp_path):
        root = tmp_path / "reproduce" / "2026-01-01_10-00-00"
        root.mkdir(parents=True)
        (root / "reproduce.json").write_text('{"steps": ')
        proc = tool("mdn_experiments.tools.resume", root)
        assert proc.returncode == 2
        assert [line for line in proc.stderr.splitlines() if "error:" in line] == [
            f"[reproduce] error: {root / 'reproduce.json'} cannot be read (Expecting value: line 1 column 11 (char 10))"
        ]

    def test_a_full_disk_while_saving_the_state(self, tmp_path):
        """The run folder on a small file system (tmpfs) filled up to 32 KiB: the log lines still
        fit, a new training state (about 100 KiB) does not, and every write of it fails with ENOSPC."""
        with small_file_system(tmp_path / "disk") as disk:
            run_dir = shutil.copytree(killed(tmp_path / "run"), disk / "run")
            saved = (run_dir / STATE_FILE).read_bytes()
            filler = fill(disk, headroom=32 * 1024)
            proc = tool("mdn_experiments.tools.resume", run_dir)
            assert proc.returncode == 1
            error = one_error(proc)
            assert "No space left on device" in error and "mdn-resume" in error
            assert (run_dir / STATE_FILE).read_bytes() == saved  # the last complete state is kept
            assert not list(run_dir.glob(".*.tmp"))  # the unfinished new state is gone
            filler.unlink()
            assert tool("mdn_experiments.tools.resume", run_dir).returncode == 0  # room again: it goes on

    def test_a_killed_joblib_worker_is_one_line(self, tmp_path):
        sweep_dir = tmp_path / "sweep"
        proc = run_cli(
            ["-m", "K=1,2", *RUN, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}"],
            env={"MDN_FAULT": "KILL@mdn:2:1", "MDN_FAULT_RUN": "K=2"},
        )
        assert proc.returncode == 1
        assert "a worker process of the sweep died" in one_error(proc) and "mdn-resume" in one_error(proc)

    @pytest.mark.parametrize(
        "override, needle",
        [
            ("seed=4294967296", "seed must be an integer from 0 to 4294967295"),
            ("K=100000000000000000000", "K must be an integer from 1 to 1000000"),
            ("+trainer.optimizer.betas=[2.0,0.9]", "arguments Adam accepts (Invalid beta parameter at index 0: 2.0)"),
            ("+trainer.optimizer.weight_decay=heavy", "arguments Adam accepts"),
            ("tracking.experiment=" + "x" * 501, "a name of 1 to 500 characters"),
        ],
    )
    def test_user_mistakes_are_one_line(self, tmp_path, override, needle):
        proc = run_cli([*RUN, override, f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2 and needle in one_error(proc)
        assert not (tmp_path / "run").exists()

    def test_a_gmm_start_needs_a_training_point_per_component(self, tmp_path):
        proc = run_cli([*RUN, "model.init=gmm", "K=300", "dataset.n_train=200", f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2 and "K=300 is not allowed: K must be at most dataset.n_train=200" in one_error(proc)

    def test_old_multirun_yaml_of_another_shape(self, sweep, tmp_path):
        sweep_dir = shutil.copytree(sweep, tmp_path / "sweep")
        (sweep_dir / "sweep_done.json").unlink()
        (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": "none"}}))
        proc = tool("mdn_experiments.tools.resume", sweep_dir)
        assert proc.returncode == 2 and "holds no hydra.overrides" in one_error(proc, "mdn-resume")
