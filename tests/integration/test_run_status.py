"""The non-finite guard (rollback or stop), the run status (ok, diverged, degenerate) and the
unconditional baseline NLL that `degenerate` is judged against."""

import csv
import json

from helpers import TINY, run_cli

# plain full-batch SGD with a step of 1000 and no clipping: the loss overflows in epoch 4 (seed 0)
BLOWS_UP = [
    *TINY,
    "trainer.optimizer._target_=torch.optim.SGD",
    "trainer.lr=1000",
    "trainer.grad_clip=null",
    "trainer.batch_size=null",
    "trainer.lr_schedule=constant",
    "trainer.epochs=5",
]


class TestRunStatus:
    def test_a_diverged_run_writes_every_file_warns_and_exits_non_zero(self, tmp_path):
        run_dir = tmp_path / "run"
        proc = run_cli([*BLOWS_UP, "trainer.on_nonfinite=stop", f"hydra.run.dir={run_dir}"])
        assert proc.returncode == 1, proc.stderr
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "diverged"
        assert "non-finite" in metrics["status_reason"] and "best weights" in metrics["status_reason"]
        warning = [line for line in proc.stderr.splitlines() if "warning" in line]
        assert len(warning) == 1 and "diverged" in warning[0]
        assert "Traceback" not in proc.stderr
        for name in ("model.pt", "history.csv", "figures/loss.png", "figures/contour.png"):
            assert (run_dir / name).exists(), name

    def test_rollbacks_are_recorded_in_history_and_metrics(self, tmp_path):
        run_dir = tmp_path / "run"
        # minibatches of 64 with a step of 700: one epoch overflows, and is redone at a tenth of it
        proc = run_cli(
            [
                *BLOWS_UP,
                "trainer.lr=700",
                "trainer.batch_size=64",
                "trainer.epochs=8",
                "trainer.rollback_lr_factor=0.1",
                "figures=false",
                f"hydra.run.dir={run_dir}",
            ]
        )
        metrics = json.loads((run_dir / "metrics.json").read_text())
        rows = list(csv.DictReader((run_dir / "history.csv").open()))
        assert metrics["rollbacks"] >= 1, proc.stderr
        assert metrics["rollbacks"] == sum(int(row["rollbacks"]) for row in rows)
        assert metrics["rollback_at"].count("epoch ") == metrics["rollbacks"]
        assert metrics["epochs_run"] == 8 and "rollbacks_baseline" in metrics
        assert metrics["status"] != "diverged"  # recovered (ok or degenerate: with such a step it learns little)

    def test_a_run_no_better_than_the_unconditional_gaussian_is_degenerate(self, tmp_path):
        run_dir = tmp_path / "run"
        proc = run_cli([*TINY, "trainer.lr=1e4", "trainer.grad_clip=null", "figures=false", f"hydra.run.dir={run_dir}"])
        assert proc.returncode == 1
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "degenerate"
        assert not metrics["test_nll"] < metrics["unconditional_nll"]
        assert "no better than" in proc.stderr and "Traceback" not in proc.stderr

    def test_a_healthy_run_is_ok_and_beats_the_unconditional_gaussian(self, tmp_path):
        run_dir = tmp_path / "run"
        proc = run_cli([*TINY, "trainer.epochs=20", "figures=false", f"hydra.run.dir={run_dir}"])
        assert proc.returncode == 0, proc.stderr
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["status_reason"] == ""
        assert metrics["test_nll"] < metrics["unconditional_nll"]
        assert metrics["rollbacks"] == 0 and metrics["rollback_at"] == ""


def test_a_sweep_never_averages_a_broken_job_in(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            *TINY,
            "trainer.epochs=20",
            "trainer.lr=3e-3,1e4",
            "trainer.grad_clip=null",
            "figures=false",
            f"hydra.sweep.dir={sweep_dir}",
        ]
    )
    assert proc.returncode == 1 and "1 sweep job(s) failed or are not ok" in proc.stderr
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    status = {row["job"]: row["status"] for row in rows}
    assert sorted(status.values()) == ["degenerate", "ok"]
    (good,) = [row for row in rows if row["status"] == "ok"]
    summary = (sweep_dir / "summary.md").read_text()
    assert "1 ok, 0 diverged, 1 degenerate" in summary
    # the K=3 line averages the ok job alone, and counts the other beside it
    assert f"| 3 | 1 | 1 | {float(good['test_nll']):.4f} ± 0.0000 |" in summary
