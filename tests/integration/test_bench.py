"""make bench's script on tiny sizes (it is timed by hand, never by tests), the experiment presets
and the reference file the report reads."""

import json
import math

import pytest

from mdn_experiments.tools import launch


def quick_bench(sections: str, out) -> dict:
    """make bench's script with --quick on some sections into `out`: its bench.json."""
    proc = launch.run(
        "mdn_experiments.tools.bench",
        ["--quick", "--only", sections, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "bench.json").read_text())


@pytest.mark.slow  # 30 s: a smoke test of the timing script (make test-all)
def test_bench_quick_writes_json_markdown_and_the_scaling_figure(tmp_path):
    data = quick_bench("loss_step,runner_overhead,cost_curves", tmp_path)
    assert set(data["sections"]) == {"loss_step", "runner_overhead", "cost_curves"}
    assert data["machine"]["torch"] and data["machine"]["torch_threads"] >= 1
    for row in data["sections"]["loss_step"]["rows"]:
        for name in ("ours", "mixture_same_family", "prob_space"):
            t = row[f"{name}_seconds"]
            assert 0 < t["min"] <= t["median"] <= t["max"]
        assert row["ours_over_msf"] == pytest.approx(
            row["ours_seconds"]["median"] / row["mixture_same_family_seconds"]["median"]
        )
    for curve in data["sections"]["cost_curves"].values():
        assert len(curve["points"]) >= 2 and math.isfinite(curve["exponent"])
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    assert "**Loss step**" in (tmp_path / "bench.md").read_text()


def test_bench_refuses_an_unknown_section_in_one_line(tmp_path):
    proc = launch.run(
        "mdn_experiments.tools.bench",
        ["--only", "warp", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no such section" in proc.stderr


@pytest.mark.slow  # 30 s: the table section's own runs, tiny
def test_bench_table_section_runs_the_default_command_and_reports_memory(tmp_path):
    section = quick_bench("table_scaling", tmp_path)["sections"]["table_scaling"]
    assert set(section["formats"]) == {"csv", "parquet"}
    for curve in section["formats"].values():
        for point in curve["points"]:
            assert point["seconds"] > 0 and point["peak_bytes"] > 50 * 2**20 and math.isfinite(point["test_ll"])
    assert "**Tables of any size**" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow  # 40 s: the GPU section's code, run on the CPU
def test_the_cuda_section_measures_on_a_device_and_says_when_there_is_none(tmp_path):
    import torch

    from mdn_experiments.tools import bench

    out = bench.device_section(True, torch.device("cpu"))  # what `make bench` runs on a GPU, here on the CPU
    assert set(out["mnist"]) == {"float32", "bf16"}
    for entry in out["mnist"].values():
        assert entry["images_per_second"] > 0
        assert entry["epoch_seconds"] == pytest.approx(bench.MNIST_TRAIN_IMAGES / entry["images_per_second"])
    assert [row["n"] for row in out["loss_step"]] == [65536, 65536]
    assert out["table"]["rows"] == 2000 and out["table"]["train_seconds"] > 0
    text = bench.markdown({"machine": bench.machine(), "date": "today", "sections": {"cuda": out}})
    assert "**CUDA** (cpu)" in text and "bf16" in text
    if not torch.cuda.is_available():
        assert bench.cuda(True) == {"skipped": "no CUDA device"}
