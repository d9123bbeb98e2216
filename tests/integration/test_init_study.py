"""make init-study's script on a tiny grid: every combination runs and the table is written."""

import json
import math


def test_the_init_study_runs_every_combination_and_writes_its_table(tmp_path):
    from mdn_experiments.tools import init_study

    init_study.main(["--quick", "--seeds", "1", "--jobs", "1", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "init_study.json").read_text())
    assert len(rows) == len(init_study.CASES) * len(init_study.INITS) * 2
    assert {(r["init"], r["revive"]) for r in rows} == {(i, v) for i in init_study.INITS for v in (False, True)}
    assert all(math.isfinite(r["final"]) and 1 <= r["effective_components"] <= r["K"] for r in rows)
    table = (tmp_path / "init_study.md").read_text()
    assert table.count("| inverse_sine |") == 3 * 3 * 2 and table.count("| robot_arm |") == 3 * 2
