"""The Python API: the README's example runs exactly as written, and the package exports what it says."""

import re
import subprocess
import sys
from helpers import REPO


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 20
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    masses = [int(m) for m in re.findall(r"mode at t = [-\d.]+ holding (\d+)% of the probability", proc.stdout)]
    assert 1 <= len(masses) <= 3 and abs(sum(masses) - 100) <= 2, proc.stdout
    nll = float(re.search(r"best validation NLL (-?[\d.]+)", proc.stdout).group(1))
    assert nll < -0.9  # the true conditional density scores about -1.28; one Gaussian about -0.6


def test_importing_the_package_alone_does_not_load_torch():
    code = "import sys, mdn_experiments; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
