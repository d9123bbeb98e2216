"""One writer per folder (mdn_experiments.run.locking): real second processes against runs, sweeps and
reproductions that another process is writing; unique default folder names for runs and sweeps
started in the same second; a lock that dies with its holder, SIGKILL included."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from helpers import TINY, holding, one_error, run_cli, snapshot
from mdn_experiments.run import locking
from mdn_experiments.tools import launch

RUN = [*TINY, "figures=false"]


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    """`for s in 0 1; do mdn-run seed=$s & done` (and the same seed twice): no result is lost."""
    children = [
        launch.start(
            "mdn_experiments.cli",
            [*RUN, f"seed={seed}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1, 1)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=600)
        assert child.returncode == 0, stderr
    folders = sorted((tmp_path / "outputs" / "runs" / "inverse_sine" / "K=3").iterdir())
    assert len(folders) == 3
    assert [f.name.split("_")[2] for f in folders].count("seed=1") == 2  # the name says the seed
    seeds = sorted(json.loads((f / "metrics.json").read_text())["seed"] for f in folders)
    assert seeds == [0, 1, 1]


def test_two_sweeps_started_in_the_same_second_get_their_own_folders(tmp_path):
    children = [
        launch.start(
            "mdn_experiments.cli",
            ["-m", f"K={k}", *RUN],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=600)
        assert child.returncode == 0, stderr
    sweeps = sorted((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 2
    summaries = [(sweep / "summary.csv").read_text() for sweep in sweeps]
    assert all(summary.count("\n") == 2 for summary in summaries)  # one job each, never mixed


def test_a_running_run_refuses_a_resume_and_a_second_run_until_it_ends(tmp_path):
    run_dir = tmp_path / "run"
    child = launch.start(
        "mdn_experiments.cli",
        [*TINY, "trainer.epochs=100000", "trainer.checkpoint_seconds=0", f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "state.pt").exists():
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.1)
        before = snapshot(run_dir / ".hydra")
        resumed = launch.run(
            "mdn_experiments.tools.resume", [str(run_dir)], capture_output=True, text=True, timeout=300
        )
        assert resumed.returncode == 2
        assert f"pid {child.pid}" in one_error(resumed, "mdn-resume")
        second = run_cli([*TINY, "trainer.epochs=100000", f"hydra.run.dir={run_dir}"])
        assert second.returncode == 2
        assert f"being written by another process (pid {child.pid}" in one_error(second)
        assert snapshot(run_dir / ".hydra") == before  # the refusals wrote nothing
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert locking.holder(run_dir) is None  # SIGKILL: the kernel dropped the lock; a resume may go on


def test_a_sweep_folder_in_use_refuses_a_second_sweep_and_a_job_resume(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_cli(
        ["-m", "K=1,2", *RUN, f"hydra.sweep.dir={sweep}"], env={"MDN_FAULT": "KILL@mdn:1:1", "MDN_FAULT_RUN": "K=2"}
    )
    assert first.returncode == -signal.SIGKILL
    job = next(p for p in sweep.iterdir() if p.name.startswith("K=2"))
    child = holding(sweep)  # another process writes into the sweep (a second mdn-resume of it, say)
    try:
        before = snapshot(sweep)
        for proc, prog in (
            (
                launch.run("mdn_experiments.tools.resume", [str(sweep)], capture_output=True, text=True, timeout=300),
                "mdn-resume",
            ),
            (
                launch.run("mdn_experiments.tools.resume", [str(job)], capture_output=True, text=True, timeout=300),
                "mdn-resume",
            ),
            (run_cli(["-m", "K=1,2", *RUN, f"hydra.sweep.dir={sweep}"], env={launch.RESUME_ENV: "1"}), "mdn-run"),
        ):
            assert proc.returncode == 2
            assert f"pid {child.pid}" in one_error(proc, prog)
        assert snapshot(sweep) == before
    finally:
        child.kill()
        child.wait()
    resumed = launch.run("mdn_experiments.tools.resume", [str(sweep)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert (job / "metrics.json").exists()


def test_a_second_reproduction_does_not_join_the_running_one(tmp_path):
    root = tmp_path / "reproduce" / "2026-01-01_10-00-00"
    root.mkdir(parents=True)
    (root / "reproduce.json").write_text(json.dumps({"quick": True, "finished": False, "steps": {}}))
    child = holding(root)
    try:
        proc = launch.run(
            "mdn_experiments.tools.reproduce",
            ["--out", str(tmp_path / "reproduce"), "--quick"],
            capture_output=True,
            text=True,
            timeout=300,
            env={"MDN_MNIST_ROOT": str(tmp_path / "none")},
        )
        assert proc.returncode == 2
        error = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert len(error) == 1 and f"pid {child.pid}" in error[0] and "FRESH=1" in error[0], proc.stderr
        assert sorted(p.name for p in root.iterdir()) == [".lock", "reproduce.json"]  # nothing run, nothing written
    finally:
        child.kill()
        child.wait()


def test_mdn_report_on_a_sweep_in_use_prints_the_summary_and_writes_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    assert run_cli(["-m", "K=1", *RUN, f"hydra.sweep.dir={sweep}"]).returncode == 0
    child = holding(sweep)
    try:
        before = snapshot(sweep)
        proc = launch.run("mdn_experiments.tools.report", [str(sweep)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1
        assert "# Sweep summary" in proc.stdout and f"pid {child.pid}" in one_error(proc, "mdn-report")
        assert snapshot(sweep) == before
    finally:
        child.kill()
        child.wait()
