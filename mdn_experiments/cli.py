"""`mdn-run`: the thin Hydra entry point.

Composition errors (a wrong type, an unknown option or key) are raised by Hydra before our code
runs and printed by Hydra over several lines; we hold stderr back until the first job starts and
turn such a message into one line. Our own UserErrors (out-of-range values, divergence) are
printed as one line too. Exit status 2 for all of them.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig

import mdn_experiments.config  # noqa: F401  (registers the schemas in the ConfigStore)
from mdn_experiments.errors import UserError

log = logging.getLogger("mdn_experiments")
PROG = "mdn-run"
HEADLINE_METRICS = ("test_nll", "nll_gap", "baseline_test_rmse", "positioning_rmse", "baseline_positioning_rmse")


def config_dir() -> str:
    """The config tree: inside the installed package, or conf/ beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no config.yaml under {here / 'conf'} or {here.parent / 'conf'}")


class _StderrGate(io.TextIOBase):
    """Buffers stderr while closed, passes it through once opened."""

    def __init__(self, target) -> None:
        self.target, self.closed_buffer, self.is_open = target, io.StringIO(), False

    def open(self) -> None:
        if not self.is_open:
            self.is_open = True
            self.target.write(self.closed_buffer.getvalue())

    def write(self, text: str) -> int:
        return (self.target if self.is_open else self.closed_buffer).write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self):  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


_gate: _StderrGate | None = None


def one_line(message: str) -> str:
    """Condense a Hydra/OmegaConf composition error into one line naming the key."""
    text = message.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "")
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.search(r"Available options in '[^']+':\s*\n((?:\s+\S+\n?)+)", text)
        choices = ", ".join(options.group(1).split()) if options else "see mdn-run --help"
        return f"{group}={option}: no such option; {group} must be one of: {choices}"
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' (?:is not in struct|not in)", text
    )
    if unknown:
        return (f"{unknown.group(1)}: unknown config key (misspelled?); see the valid keys with "
                f"'{PROG} --cfg job', or add a new key with +{unknown.group(1)}=...")
    converted = re.search(r"Value '([^']*)' of type '\w+' could not be converted to (\w+)", text)
    if converted:
        key = re.search(r"full_key: (\S+)", text)
        name = key.group(1) if key else "value"
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(
            converted.group(2), converted.group(2))
        return f"{name}={converted.group(1)!r} is not allowed: {name} must be {kind}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[:3]) if lines else "configuration error"


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _run(cfg: DictConfig) -> float | None:
    if _gate is not None:
        _gate.open()
    from mdn_experiments.experiment import run_experiment  # torch & co. only once a job runs

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    progress = cfg.trainer.progress if cfg.trainer.progress is not None else sys.stderr.isatty()
    try:
        metrics = run_experiment(cfg, run_dir, progress=progress)
    except (UserError, InstantiationException) as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # the sweep marks this job failed and goes on
        message = " ".join(str(err).split())  # Hydra's instantiate errors span several lines
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)
    summary = ", ".join(
        f"{key}={metrics[key]:.4g}" for key in HEADLINE_METRICS if key in metrics
    )
    print(f"[{PROG}] done: {summary}; metrics, figures and model in {run_dir}", flush=True)
    return metrics["test_nll"]


def main() -> None:
    """Console entry point."""
    global _gate
    real_stderr = sys.stderr
    _gate = _StderrGate(real_stderr)
    sys.stderr = _gate
    try:
        _run()
    except SystemExit as exit_:
        if exit_.code not in (0, None) and not _gate.is_open:
            message = one_line(_gate.closed_buffer.getvalue())
            _gate.closed_buffer = io.StringIO()  # replaced by the one-line version
            print(f"{PROG}: error: {message}", file=real_stderr)
            sys.exit(2)
        raise
    finally:
        sys.stderr = real_stderr
        _gate.open()  # anything still buffered (warnings) is shown, never swallowed


if __name__ == "__main__":
    main()
