"""Against a real SLURM (a throwaway one-node cluster): `make test-cluster` brings it up with
tests/integration/cluster/slurm-up.sh, exports SLURM_CONF, runs these and tears it down.

They fail (never skip) when SLURM_CONF is not set: run them through `make test-cluster`."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import REPO, TINY, run_cli, without_timings
from mdn_experiments.tools import launch

pytestmark = pytest.mark.cluster
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.mem_gb=1",
]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not os.environ.get("SLURM_CONF"):
        pytest.fail("SLURM_CONF is not set: run the cluster tests with `make test-cluster`")
    state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    assert state.stdout.strip().startswith("idle"), state.stdout + state.stderr


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def untimed(path: Path) -> dict:
    return without_timings(json.loads(path.read_text()))


def test_a_two_job_sweep_writes_both_jobs_and_the_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(["-m", "K=1,2", *TINY, *SLURM, "figures=false", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = job_dirs(sweep_dir)
    assert [j.name[:3] for j in jobs] == ["K=1", "K=2"]
    assert all(json.loads((j / "metrics.json").read_text())["status"] == "ok" for j in jobs)
    summary = (sweep_dir / "summary.csv").read_text()
    assert summary.count(",ok,") == 2 and (sweep_dir / "sweep_done.json").exists()
    assert (sweep_dir / ".submitit").is_dir()  # it really went through submitit and sbatch


def test_a_preempted_job_is_requeued_and_resumes_to_the_same_metrics(tmp_path):
    args = [
        "K=3",
        "dataset.n_val=200",
        "dataset.n_test=500",
        "trainer.epochs=400",
        "trainer.patience=null",
        "trainer.checkpoint_seconds=1",
        "trainer.progress=false",
        "figures=false",
        "baseline=false",
    ]
    sweep_dir = tmp_path / "sweep"
    sweep = launch.start(
        "mdn_experiments.cli",
        ["-m", *args, *SLURM, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not list(sweep_dir.glob("*/state.pt")):  # training has started and saved once
        assert time.time() < deadline and sweep.poll() is None, "the job never saved a training state"
        time.sleep(0.2)
    job_id = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()[0]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # what SLURM sends before a time limit
    deadline = time.time() + 60
    while (
        "BeginTime"
        not in subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%r"], capture_output=True, text=True).stdout
    ):
        assert time.time() < deadline, "the job was not requeued"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)  # no waiting
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output[-2000:]
    (job,) = job_dirs(sweep_dir)
    log = (job / "cli.log").read_text()
    assert "resuming from the training state" in log and "resuming at epoch" in log
    # the same job left alone, on one thread as under cpus_per_task=1
    alone = tmp_path / "alone"
    proc = run_cli([*args, "trainer.threads=1", f"hydra.run.dir={alone}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert untimed(job / "metrics.json") == untimed(alone / "metrics.json")


def test_a_failing_job_is_marked_failed_and_the_others_are_kept(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(["-m", "K=2,0", *TINY, *SLURM, "figures=false", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 1
    (good,) = [p for p in job_dirs(sweep_dir) if p.name.startswith("K=2")]
    (bad,) = [p for p in job_dirs(sweep_dir) if p.name.startswith("K=0")]
    assert json.loads((good / "metrics.json").read_text())["status"] == "ok"
    assert "K must be an integer from 1 to" in (bad / "error.txt").read_text()
    rows = (sweep_dir / "summary.csv").read_text()
    assert ",failed," in rows and ",ok," in rows


def test_the_uci_suite_runs_its_jobs_on_slurm(tmp_path, uci_root):
    """`make uci ARGS="hydra/launcher=slurm ..."`: the suite's jobs go through submitit and sbatch."""
    args = ["--quick", "--root", str(uci_root), "--out", str(tmp_path / "uci"), "--datasets", "yacht"]
    proc = launch.run(
        "mdn_experiments.tools.uci",
        [*args, "trainer.epochs=2", "trainer.progress=false", *SLURM],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (root,) = [p for p in (tmp_path / "uci").iterdir() if p.is_dir()]
    assert (root / "yacht" / ".submitit").is_dir()
    assert len(list((root / "yacht").glob("*/metrics.json"))) == 3
    assert "| yacht | continuous |" in (root / "REPORT.md").read_text()


def test_a_search_runs_its_trials_as_slurm_jobs_and_its_final_run_too(tmp_path):
    """hparams_search on SLURM: two trials asked together go out as one submitit batch; the study
    stays in the sweep folder (search.journal), told by the process that launched them."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hparams_search=table", *TINY, *SLURM, "hydra.sweeper.n_trials=2", "hydra.sweeper.batch_size=2"]
    proc = run_cli([*args, f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = [json.loads((sweep_dir / f"trial={n}" / "metrics.json").read_text()) for n in (0, 1)]
    assert all(t["scored_on"] == "validation" and "test_nll" not in t for t in trials)
    final = json.loads((sweep_dir / "final" / "metrics.json").read_text())
    assert final["status"] == "ok" and final["search"] == str(sweep_dir)
    assert (sweep_dir / "search.journal").is_file() and (sweep_dir / ".submitit").is_dir()
