"""The Python API as a user meets it: `import mdn_experiments` alone loads no torch (the example of
the docs is run by test_docs.py)."""

import subprocess
import sys


def test_importing_the_package_alone_does_not_load_torch():
    code = "import sys, mdn_experiments; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
