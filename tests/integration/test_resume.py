"""Kill and resume: a run, a sweep and a reproduction stopped at a chosen point (SIGKILL, SIGTERM,
SIGINT) and continued with mdn-resume end with the same metrics, bit for bit (timings aside), as
the same work left alone. Damaged state files are detected and the previous state is used."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import TINY, run_cli, without_timings
from mdn_experiments.tools import launch
from mdn_experiments.train.state import read_state

# four epochs of 4 minibatches; the state is written after every optimizer step
# (figures are drawn after the metrics and do not enter them: left out to save time)
RUN = [*TINY, "trainer.epochs=4", "trainer.checkpoint_seconds=0", "figures=false"]


def strip(metrics: dict) -> dict:
    return without_timings(metrics)


def metrics_of(run_dir) -> dict:
    return strip(json.loads((run_dir / "metrics.json").read_text()))


def resume(path, env=None) -> subprocess.CompletedProcess:
    return launch.run(
        "mdn_experiments.tools.resume",
        [str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def killed_run(args, run_dir, fault, expected_code):
    proc = run_cli([*args, f"hydra.run.dir={run_dir}"], env={"MDN_FAULT": fault})
    assert proc.returncode == expected_code, proc.stderr
    assert not (run_dir / "metrics.json").exists()
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run left alone."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = run_cli([*RUN, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr
    return metrics_of(run_dir)


REQUEUE_SCRIPT = """
import pathlib, signal, sys
run_dir = pathlib.Path(sys.argv[1])
def requeue(signum, frame):  # stands in for submitit's handler: checkpoint, requeue, exit
    (run_dir.parent / "requeued").write_text(str((run_dir / "state.pt").exists()))
    sys.exit(3)
signal.signal(signal.SIGUSR2, requeue)
from mdn_experiments.cli import main
sys.argv = ["mdn-run", *sys.argv[2:], f"hydra.run.dir={run_dir}"]
main()
"""


@pytest.mark.parametrize(
    "fault, interval",
    [
        ("KILL@mdn:2:3", "0"),  # in the MDN phase, one step after the last state
        pytest.param("KILL@mdn:3:2", "3600", marks=pytest.mark.slow),  # no state yet: starts again from the beginning
        ("KILL@between:0:0", "3600"),  # after the MDN phase, before the baseline
        ("KILL@baseline:3:1", "0"),  # in the baseline phase
        pytest.param("KILL@baseline:2:4", "3600", marks=pytest.mark.slow),  # from the state at the MDN phase's end
    ],
)
def test_a_killed_run_resumes_to_the_metrics_of_the_run_left_alone(fault, interval, reference, tmp_path):
    run_dir = tmp_path / "run"
    killed_run([*RUN, f"trainer.checkpoint_seconds={interval}"], run_dir, fault, -signal.SIGKILL)
    proc = resume(run_dir)
    assert proc.returncode == 0, proc.stderr
    assert "resuming the run" in proc.stdout
    assert metrics_of(run_dir) == reference
    assert not (run_dir / "state.pt").exists()  # a finished run keeps model.pt and metrics.json only


@pytest.mark.parametrize("signame, code", [("TERM", 143), pytest.param("INT", 130, marks=pytest.mark.slow)])
def test_sigterm_and_sigint_save_the_state_and_name_the_resume_command(signame, code, reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = killed_run([*RUN, "trainer.checkpoint_seconds=3600"], run_dir, f"{signame}@mdn:3:2", code)
    assert f"stopped by SIG{signame}; the training state is saved. Resume with: mdn-resume {run_dir}" in proc.stderr
    assert "Traceback" not in proc.stderr
    state = read_state(run_dir)
    assert state["phase"] == "mdn" and state["mdn"]["progress"]["epoch"] == 2  # two epochs done...
    assert state["mdn"]["progress"]["batch"] == 2  # ...and the step the signal came after
    assert resume(run_dir).returncode == 0
    assert metrics_of(run_dir) == reference


@pytest.mark.slow
def test_a_sigterm_sent_from_outside_mid_training(tmp_path):
    """A real signal at a moment the test does not choose exactly: the result still matches."""
    args = [*TINY, "trainer.epochs=150", "trainer.checkpoint_seconds=0", "figures=false"]
    alone = tmp_path / "alone"
    assert run_cli([*args, f"hydra.run.dir={alone}"]).returncode == 0
    run_dir = tmp_path / "run"
    child = launch.start(
        "mdn_experiments.cli",
        [*args, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "state.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    assert resume(run_dir).returncode == 0
    assert metrics_of(run_dir) == metrics_of(alone)


class TestDamagedState:
    def test_a_run_with_a_truncated_state_resumes_from_the_previous_one(self, reference, tmp_path):
        run_dir = tmp_path / "run"
        killed_run(RUN, run_dir, "KILL@mdn:3:3", -signal.SIGKILL)
        state = run_dir / "state.pt"
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
        proc = resume(run_dir)
        assert proc.returncode == 0, proc.stderr
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "truncated or corrupted" in line]
        assert len(lines) == 1 and "trying the previous state" in lines[0]
        assert metrics_of(run_dir) == reference

    def test_a_run_whose_every_state_is_damaged_is_refused_in_one_line(self, tmp_path):
        run_dir = tmp_path / "run"
        killed_run(RUN, run_dir, "KILL@mdn:3:3", -signal.SIGKILL)
        for name in ("state.pt", "state.prev.pt"):
            (run_dir / name).write_bytes(b"garbage")
        proc = resume(run_dir)
        assert proc.returncode == 2
        error = [line for line in proc.stderr.splitlines() if line.startswith("mdn-run: error:")]
        assert len(error) == 1 and "no intact training state" in error[0]
        assert "Traceback" not in proc.stderr


def test_mnist_with_batch_norm_and_dropout_resumes_bit_for_bit(mnist_root, tmp_path):  # noqa: F811
    args = [
        "dataset=mnist",
        f"dataset.root={mnist_root}",
        "dataset.n_train=256",
        "dataset.n_val=128",
        "dataset.n_test=128",
        "trainer.epochs=2",
        "trainer.batch_size=64",
        "trainer.threads=1",
        "trainer.progress=false",
        "trainer.checkpoint_seconds=0",
        "figures=false",
    ]
    alone = tmp_path / "alone"
    assert run_cli([*args, f"hydra.run.dir={alone}"]).returncode == 0
    for fault in ("KILL@mdn:2:2", "KILL@baseline:1:3"):
        run_dir = tmp_path / fault.replace("@", "_").replace(":", "_")
        killed_run(args, run_dir, fault, -signal.SIGKILL)
        assert resume(run_dir).returncode == 0
        assert metrics_of(run_dir) == metrics_of(alone), fault


@pytest.mark.slow  # 30 s; a sweep job killed and resumed is also covered by test_reproduce (make test-all runs this)
def test_a_sweep_killed_part_way_resumes_to_the_summary_of_the_sweep_left_alone(tmp_path):
    args = ["-m", "K=1,2,3", *RUN]
    alone, stopped = tmp_path / "alone", tmp_path / "stopped"
    assert run_cli([*args, f"hydra.sweep.dir={alone}"]).returncode == 0
    # job K=2 is killed in its MDN phase: K=1 finished, K=3 never started
    proc = run_cli([*args, f"hydra.sweep.dir={stopped}"], env={"MDN_FAULT": "KILL@mdn:2:1", "MDN_FAULT_RUN": "/K=2"})
    assert proc.returncode == -signal.SIGKILL
    jobs = sorted(p.name for p in stopped.iterdir() if p.is_dir())
    assert len(jobs) == 2 and not (stopped / "summary.csv").exists()
    finished_first = (stopped / jobs[0] / "metrics.json").stat().st_mtime_ns
    proc = resume(stopped)
    assert proc.returncode == 0, proc.stderr
    assert "1 of the 2 job folders found had finished" in proc.stdout
    assert (stopped / jobs[0] / "metrics.json").stat().st_mtime_ns == finished_first  # skipped, not rerun
    assert (stopped / "summary.csv").read_text() == (alone / "summary.csv").read_text()
    # now there is nothing left to do
    again = resume(stopped)
    assert again.returncode == 2 and "finished sweep" in again.stderr


@pytest.mark.slow  # 40 s
@pytest.mark.parametrize("signame, code", [("INT", 130), ("TERM", 143)])
def test_a_parallel_sweep_stopped_saves_every_running_job_and_resumes_to_the_sweep_left_alone(signame, code, tmp_path):
    """Ctrl-C (SIGINT to every process of the command, as a terminal sends it) or SIGTERM to
    mdn-run alone, while two jobs train in the parallel launcher's workers: mdn-run waits for the
    workers to save their training states before it stops them, says so in one line and exits
    130 / 143, with no warning of leaked semaphores; mdn-resume then ends with the summary of the
    same sweep left alone."""
    args = ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY]
    args += ["trainer.epochs=2000", "trainer.patience=null", "trainer.checkpoint_seconds=1000", "figures=false"]
    alone, stopped = tmp_path / "alone", tmp_path / "stopped"
    assert run_cli([*args, f"hydra.sweep.dir={alone}"]).returncode == 0
    child = launch.start(
        "mdn_experiments.cli",
        [*args, f"hydra.sweep.dir={stopped}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives a command
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not the ignored one of a background job
    )
    deadline, logs = time.monotonic() + 120, []
    while time.monotonic() < deadline:  # until both jobs have their data and have begun to train
        logs = [log for log in stopped.glob("*/cli.log") if "run folder" in log.read_text()]
        if len(logs) == 2:
            break
        time.sleep(0.05)
    time.sleep(1.0)  # both jobs are training (their checkpoints are 1000 s apart: no state.pt yet)
    assert len(logs) == 2 and not any((log.parent / "state.pt").exists() for log in logs)
    if signame == "INT":
        os.killpg(child.pid, signal.SIGINT)
    else:
        child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == code, stderr[-2000:]
    assert f"mdn-run: stopped by SIG{signame}" in stderr and "leaked semaphore" not in stderr
    assert "Traceback" not in stderr
    assert all((log.parent / "state.pt").exists() for log in logs)  # saved at the signal
    assert not any((log.parent / "metrics.json").exists() for log in logs)
    proc = resume(stopped)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (stopped / "summary.csv").read_text() == (alone / "summary.csv").read_text()


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "nope", "is not a folder"),
        (lambda d: d, "holds nothing to resume"),
    ],
)
def test_mdn_resume_refuses_what_holds_nothing_to_resume(make, expected, tmp_path):
    proc = resume(make(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and expected in proc.stderr


@pytest.mark.quick
def test_mdn_resume_refuses_a_finished_run(reference, tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*RUN, f"hydra.run.dir={run_dir}"]).returncode == 0
    proc = resume(run_dir)
    assert proc.returncode == 2 and "holds a finished run" in proc.stderr


def test_a_folder_with_another_runs_state_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    killed_run(RUN, run_dir, "KILL@mdn:2:1", -signal.SIGKILL)
    proc = run_cli([*RUN, "K=5", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 2
    assert "holds an unfinished run with another config (K: 3 -> 5)" in proc.stderr


def test_sigusr2_saves_the_state_before_handing_the_signal_to_submitit(reference, tmp_path):
    """Under submitit, SIGUSR2 (SLURM's time-limit/preemption signal) belongs to submitit's requeue
    handler; mdn-run saves the training state first, then hands the signal on."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", REQUEUE_SCRIPT, str(run_dir), *RUN, "trainer.checkpoint_seconds=3600"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MDN_FAULT": "USR2@mdn:2:1"},
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert (tmp_path / "requeued").read_text() == "True"  # the state was on disk when submitit took over
    assert not (run_dir / "metrics.json").exists()
    assert resume(run_dir).returncode == 0
    assert metrics_of(run_dir) == reference
