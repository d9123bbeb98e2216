"""`make reproduce` end to end with tiny budgets: every step runs and REPORT.md holds what it claims."""

import os
import re
import subprocess
import sys

from mdn_experiments.reproduce import new_run_folder
from test_mnist import find_mnist_root


def test_reproduce_quick_writes_a_report_with_numbers_and_figures(tmp_path):
    env = dict(os.environ)
    mnist_root = find_mnist_root()
    if mnist_root is not None:
        env["MDN_MNIST_ROOT"] = str(mnist_root)
    else:
        env["MDN_MNIST_ROOT"] = str(tmp_path / "no-mnist")  # the report must say how to add it
        env["no_proxy"] = "*"
    out = tmp_path / "reproduce"
    proc = subprocess.run([sys.executable, "-m", "mdn_experiments.reproduce", "--quick", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    report = (run / "REPORT.md").read_text()
    latest = (out / "REPORT.md").read_text()
    assert "| robot arm, MSE network, RMS positioning error |" in report and "0.0578" in report and "0.0053" in report
    assert "−1.28" in report and "Machine:" in report and "torch" in report and "Wall time:" in report
    assert "K chosen by validation NLL" in report
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


def test_each_reproduction_gets_a_new_folder_even_within_one_second(tmp_path):
    folders = [new_run_folder(tmp_path) for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() for f in folders)
