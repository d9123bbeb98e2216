"""make bench's `reports` section: the newest finished full make reproduce and make uci, read as
data from their progress records (a quick run, an unfinished one and a damaged record are passed over)."""

import json

from mdn_experiments.tools import bench


def record(folder, name, **progress):
    folder.mkdir(parents=True)
    (folder / name).write_text(json.dumps(progress))


def test_reports_takes_the_newest_finished_full_run_of_each_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    steps = {"toy": {"seconds": 50.0, "done": True}, "MNIST": {"seconds": 140.0, "done": True}}
    reproduce = tmp_path / "outputs" / "reproduce"
    record(reproduce / "2026-01-01_10-00-00", "reproduce.json", quick=False, finished=True, steps=steps)
    newer = {"toy": {"seconds": 40.0, "done": True}, "MNIST": {"seconds": 130.0, "done": True}}
    record(reproduce / "2026-01-02_10-00-00", "reproduce.json", quick=False, finished=True, steps=newer)
    record(reproduce / "2026-01-03_10-00-00", "reproduce.json", quick=True, finished=True, steps=steps)
    record(reproduce / "2026-01-04_10-00-00", "reproduce.json", quick=False, finished=False, steps=steps)
    record(reproduce / "2026-01-05_10-00-00", "reproduce.json", quick=False, finished=True, steps="import os")
    out = bench.reports(quick=False)
    assert out["reproduce"]["folder"].endswith("2026-01-02_10-00-00")
    assert out["reproduce"]["wall_seconds"] == 170.0 and out["reproduce"]["steps"] == {"toy": 40.0, "MNIST": 130.0}
    assert out["uci"] is None  # no make uci under outputs/
    uci_steps = {f"set{i}": {"seconds": 60.0, "done": True} for i in range(12)}
    record(
        tmp_path / "outputs" / "uci" / "2026-01-02_11-00-00",
        "uci.json",
        finished=True,
        steps=uci_steps,
        wall_seconds=546.0,
    )
    out = bench.reports(quick=False)
    assert out["uci"]["wall_seconds"] == 546.0  # the suite's own wall time, not the sum of its side-by-side steps
    text = bench.markdown({"machine": bench.machine(), "date": "today", "sections": {"reports": out}})
    assert "`make reproduce` 2.8 min (toy 40 s, MNIST 130 s;" in text
    assert "`make uci` 9.1 min (12 sweeps, 2 at a time;" in text
