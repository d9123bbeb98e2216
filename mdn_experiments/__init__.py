"""Mixture density network experiments (Bishop 1994) from the command line.

The MDN maths is in `mdn_experiments.mdn` (torch only, copyable); `mdn-run` is the CLI.
"""

__version__ = "0.1.0"
