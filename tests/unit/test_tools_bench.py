"""make bench's script on tiny sizes (it is timed by hand, never by tests), the experiment presets
and the reference file the report reads."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import compose_config
from mdn_experiments import mdn
from mdn_experiments.config.compose import compose, config_dir
from mdn_experiments.tools import bench
from mdn_experiments.tools.reproduce import SWEEPS, band_check, references


def test_the_probability_space_loss_underflows_where_ours_does_not():
    case = bench.underflow_case()
    assert math.isinf(case["prob_space"]["loss"]) and not case["prob_space"]["gradient_finite"]
    assert math.isfinite(case["ours"]["loss"]) and case["ours"]["gradient_finite"]
    # both formulas agree where nothing underflows, for every kind (the benchmark compares like with like)
    for covariance in ("diag", "isotropic", "full"):
        raw, y = bench.loss_inputs(256, 3, 2, covariance)
        mixture = mdn.mixture_from_raw(raw.detach().double(), 3, 2, covariance)
        assert float(bench.prob_space_nll(mixture, y.double())) == pytest.approx(
            float(mdn.nll(mixture, y.double())), rel=1e-9
        )


def test_the_minimal_loop_makes_the_same_number_of_steps_as_fit():
    train, val = bench.toy_problem(300)
    net = bench.toy_network()
    steps = []
    original = net.loss

    def counting(x, y):
        steps.append(x.shape[0])
        return original(x, y)

    net.loss = counting
    bench.minimal_loop(net, train, epochs=2, batch_size=128, lr=1e-3, grad_clip=5.0, seed=0)
    assert steps == [128, 128, 44] * 2


@pytest.mark.parametrize(
    "preset, dataset, K",
    [
        ("inverse_sine", "inverse_sine", 3),
        ("toy_bishop", "inverse_sine", 3),
        ("robot_arm", "robot_arm", 3),
        ("mnist", "mnist", 10),
    ],
)
def test_each_experiment_preset_holds_one_run_of_its_dataset(preset, dataset, K):
    """A preset is one tuned run (no sweep in it); the seeds and grids come from the sweep options."""
    cfg = compose_config([f"experiment={preset}"])
    assert cfg.dataset.name == dataset and cfg.K == K
    preset_file = (Path(config_dir()) / "experiment" / f"{preset}.yaml").read_text()
    assert "hydra" not in preset_file and "seed" not in preset_file.split("defaults")[1]
    plain = compose_config([f"dataset={dataset}"])
    assert cfg.trainer.epochs == (100 if preset == "toy_bishop" else plain.trainer.epochs)


@pytest.mark.parametrize(
    "sweep, params, subdir",
    [
        ("seeds", {"seed": "0,1,2"}, "seed=${seed}"),
        ("k_grid", {"K": "1,2,3,4,5", "seed": "0,1,2"}, "K=${K},seed=${seed}"),
    ],
)
def test_the_sweep_options_hold_the_grids(sweep, params, subdir):
    cfg = compose([f"sweep={sweep}"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == params
    assert OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"] == subdir


def test_references_name_known_sweeps_and_well_formed_bands():
    rows = references()
    assert {row["sweep"] for row in rows} <= set(SWEEPS)
    banded = [row for row in rows if "band" in row]
    assert len(banded) == 5
    for row in banded:
        low, high = row["band"]
        assert low is None or high is None or low < high
    arm = next(row for row in banded if row["metric"] == "positioning_rmse_top_pi")
    assert band_check(arm, 0.0008).endswith("**held**") and band_check(arm, 0.002).endswith("**missed**")
    top1 = next(row for row in banded if row["metric"] == "accuracy_top_pi")
    assert band_check(top1, 0.991).endswith("**held**") and band_check(top1, 0.989).endswith("**missed**")
    assert band_check(top1, float("nan")) == "not run"


def test_the_bench_table_is_what_it_says_and_its_fits_recover_a_line(tmp_path):
    from mdn_experiments.datasets.reading import read_table
    from mdn_experiments.tools.bench import TABLE_COLUMNS, memory_bound, table_fits, write_bench_table

    paths = write_bench_table(500, tmp_path)
    tables = [read_table(paths[kind]) for kind in ("csv", "parquet")]
    for table in tables:
        assert table.n_rows == 500 and len(table.names) == TABLE_COLUMNS and table.names[-1] == "y"
    csv, parquet = (table.group("all").astype(np.float32) for table in tables)  # float32 values, as written
    np.testing.assert_array_equal(csv, parquet)  # one table, two formats
    points = [
        {"rows": n, "seconds": 2.0 * n**1.05, "peak_bytes": 300 * 2**20 + 90 * n}
        for n in (10_000, 30_000, 100_000, 300_000, 1_000_000)
    ]
    fits = table_fits({"points": points})
    assert fits["time_exponent"] == pytest.approx(1.05) and fits["time_exponent_large"] == pytest.approx(1.05)
    assert fits["memory_bytes_per_row"] == pytest.approx(90) and fits["memory_bytes_per_row_large"] == pytest.approx(90)
    assert fits["memory_fixed_bytes"] == pytest.approx(300 * 2**20)
    # the bound at 10^6 rows: fixed (the 10^5-row peak less its 80-byte rows) + data; 90 > 80 bytes a row
    bound = memory_bound({"points": points}, 80)
    assert bound["fixed"] == 300 * 2**20 + 10 * 100_000 and bound["data"] == 80 * 1_000_000
    assert bound["peak"] - bound["bound"] == 10 * (1_000_000 - 100_000)
    assert memory_bound({"points": points[:2]}, 80) is None  # no point of 10^5 rows: no fixed part


def test_a_childs_peak_is_its_own_not_its_parents(tmp_path):
    """Linux carries a process's high-water mark across exec: wait4 on a child started by a process
    that once held 400 MB says 400 MB for a child that held 10. Through PEAK_LAUNCHER the peak is
    the child's own, and its exit code comes back."""
    import subprocess
    import sys

    from mdn_experiments.tools.bench import call_with_peak

    held = bytearray(400 * 2**20)  # touched: this process's high-water mark is now above 400 MB
    del held
    direct = subprocess.Popen([sys.executable, "-c", "pass"])
    inherited = os.wait4(direct.pid, 0)[2].ru_maxrss * 1024
    assert inherited > 400 * 2**20  # what the bench measured before
    code, peak = call_with_peak([sys.executable, "-c", "b = bytearray(64 * 2**20)"], tmp_path / "peak")
    assert code == 0 and 64 * 2**20 < peak < 200 * 2**20
    code, _ = call_with_peak([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "peak")
    assert code == 3
