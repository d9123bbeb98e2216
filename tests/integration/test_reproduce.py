"""`make reproduce` end to end with tiny budgets: every step runs and REPORT.md holds what it claims."""

import json
import os
import re
import subprocess
import sys

from helpers import find_mnist_root, run_cli, without_timings
from mdn_experiments.tools import launch
from mdn_experiments.tools.reproduce import QUICK, newest_unfinished


def test_reproduce_quick_is_killed_resumed_and_writes_a_report_with_numbers_and_figures(tmp_path):
    env = dict(os.environ)
    mnist_root = find_mnist_root()
    if mnist_root is not None:
        env["MDN_MNIST_ROOT"] = str(mnist_root)
    else:
        env["MDN_MNIST_ROOT"] = str(tmp_path / "no-mnist")  # the report must say how to add it
        env["no_proxy"] = "*"
    out = tmp_path / "reproduce"
    command = launch.command("mdn_experiments.tools.reproduce", ["--quick", "--out", str(out)])
    # the robot arm's seed-1 job is killed (SIGKILL) in its MDN phase: the reproduction stops there
    killed = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**env, "MDN_FAULT": "KILL@mdn:2:1", "MDN_FAULT_RUN": "robot_arm/seed=1"},
    )
    # (under the parallel launcher the worker dies, not mdn-run: the reproduction sees the job unfinished)
    assert killed.returncode == 1, killed.stderr[-2000:]  # mdn-run's one line: a worker of the sweep died
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    assert "resume with `make reproduce`" in killed.stdout and not (run / "REPORT.md").exists()
    assert "seed=1" in killed.stdout.split("[reproduce] stopped")[1].splitlines()[0]
    assert not (run / "robot_arm" / "seed=1" / "metrics.json").exists()
    toy_done = (run / "toy_k_sweep" / "K=3,seed=0" / "metrics.json").stat().st_mtime_ns
    # the next call finds the unfinished reproduction and finishes it
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resuming the unfinished reproduction in {run}" in proc.stdout
    assert "inverse sine, K = 1..5 x 3 seeds: finished earlier, kept" in proc.stdout
    assert (run / "toy_k_sweep" / "K=3,seed=0" / "metrics.json").stat().st_mtime_ns == toy_done  # not rerun
    assert [p for p in out.iterdir() if p.is_dir()] == [run]
    # the resumed job equals the same run left alone
    alone = tmp_path / "alone"
    assert run_cli(["dataset=robot_arm", "K=3", "seed=1", *QUICK, f"hydra.run.dir={alone}"]).returncode == 0
    strip = without_timings
    assert strip(json.loads((run / "robot_arm" / "seed=1" / "metrics.json").read_text())) == strip(
        json.loads((alone / "metrics.json").read_text())
    )

    report = (run / "REPORT.md").read_text()
    latest = (out / "REPORT.md").read_text()
    assert "| robot arm, MSE network, RMS positioning error |" in report and "0.0578" in report and "0.0053" in report
    assert "−1.28" in report and "Machine:" in report and "torch" in report and "Wall time:" in report
    assert "K chosen by validation NLL" in report
    assert "Job status: toy_k_sweep 15/15 ok, toy_bishop 3/3 ok" in report
    # the bands of references.yaml, each judged
    assert report.count(": **held**") + report.count(": **missed**") == (5 if mnist_root is not None else 3)
    assert "| robot arm, MDN K=3 (most probable component), RMS positioning error |" in report
    bishop_row = next(line for line in report.splitlines() if line.startswith("| inverse sine, K=3, Bishop's"))
    assert "(n=3)" in bishop_row  # the three L-BFGS runs finished and were read back
    # every embedded figure exists, from both places the report is written to
    for text, base in ((report, run), (latest, out)):
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
        assert len(links) >= 8
        assert all((base / link).exists() for link in links), links
    if mnist_root is not None:
        assert "MNIST, MDN top-1 accuracy | not run" not in report
    else:
        assert "make reproduce MNIST_ROOT=FOLDER" in report
    assert json.loads((run / "reproduce.json").read_text())["finished"] is True
    assert newest_unfinished(out) is None  # the next `make reproduce` starts a new one


STEPS_IN_ONE_PROCESS = r"""
import json, os, signal, sys, threading
from pathlib import Path
from mdn_experiments.tools import launch, reproduce

out = Path(sys.argv[1])
tiny = ["dataset.n_train=200", "dataset.n_val=100", "dataset.n_test=300", "trainer.epochs=2", "figures=false",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]

codes = [reproduce.mdn_run(["experiment=inverse_sine", "sweep=seeds", *tiny, f"hydra.sweep.dir={out / 'toy'}"])[1]]
after_first = sorted(launch.children())  # as Linux lists them
codes.append(reproduce.mdn_run(["experiment=robot_arm", "sweep=seeds", *tiny, f"hydra.sweep.dir={out / 'arm'}"])[1])
after_second = sorted(launch.children())
codes.append(reproduce.mdn_run(["-m", "experiment=robot_arm", "seed=0,x", *tiny, f"hydra.sweep.dir={out / 'bad'}"])[1])
# SIGTERM while a long step runs: the step stops with mdn-run's status for it
threading.Timer(4, os.kill, (os.getpid(), signal.SIGTERM)).start()
long = [a for a in tiny if not a.startswith("trainer.epochs")]
codes.append(reproduce.mdn_run(["experiment=inverse_sine", "sweep=seeds", *long, "trainer.epochs=1000000",
                                "trainer.patience=null", f"hydra.sweep.dir={out / 'long'}"])[1])
print(json.dumps({"codes": codes, "after_first": after_first, "after_second": after_second,
                  "argv": sys.argv[1:], "resume": os.environ.get("MDN_RESUME"),
                  "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}))
"""


def test_the_steps_run_in_one_process_whose_workers_serve_every_step(tmp_path):
    """make reproduce runs its steps' mdn-run in its own process: the parallel launcher's workers
    started for the first step run the next step's jobs (none started anew), a refused step and a
    SIGTERM give mdn-run's exit statuses (2, 143), and nothing of a step is left behind (argv,
    MDN_RESUME, the SIGTERM handler, a semaphore of a stopped worker)."""
    proc = subprocess.run(
        [sys.executable, "-c", STEPS_IN_ONE_PROCESS, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "MDN_RESUME"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 2, 143], proc.stderr[-3000:]
    assert len(result["after_first"]) >= 2  # the two workers (and loky's resource tracker) live on
    assert result["after_second"] == result["after_first"]  # the same processes ran the second step
    assert result["argv"] == [str(tmp_path)] and result["resume"] is None and result["sigterm_default"]
    for step in ("toy", "arm"):
        assert len(list((tmp_path / step).glob("seed=*/metrics.json"))) == 3
    assert "seed='x' is not allowed" in proc.stderr and not (tmp_path / "bad" / "seed=0").exists()
    assert "mdn-run: stopped by SIGTERM" in proc.stderr
    # the stopped workers held no named semaphore (tqdm's lock is a thread lock in a job's process)
    assert "leaked semaphore" not in proc.stderr
    assert not (tmp_path / "long" / "seed=0" / "metrics.json").exists()
