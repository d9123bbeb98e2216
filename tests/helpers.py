"""Shared helpers: compose configs like the CLI does, and run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mdn_experiments.config.compose import compose
from mdn_experiments.datasets.idx import MNIST_FILES
from mdn_experiments.evaluation.contract import is_timing
from mdn_experiments.tools import launch

REPO = Path(__file__).resolve().parents[1]

# tiny budgets: every end-to-end test finishes in a few seconds
TINY = [
    "dataset.n_train=200",
    "dataset.n_val=100",
    "dataset.n_test=500",
    "trainer.epochs=3",
    "trainer.batch_size=64",
    "trainer.progress=false",
    "trainer.threads=1",
]


def without_timings(metrics: dict) -> dict:
    """metrics.json less its timings (every key ending in _seconds or _per_second): what two runs
    of the same config must agree on."""
    return {key: value for key, value in metrics.items() if not is_timing(key)}


def compose_config(overrides: list[str] | None = None):
    """The composed config for these overrides, exactly as `mdn-run` would see it."""
    return compose(overrides)


def train_two_target_ensemble(table_csv: Path, run_dir: Path) -> Path:
    """A two-target table (small_table: features a, b; targets y1, y2) with full covariance and an
    ensemble of two, trained a few steps into run_dir, figures off."""
    from mdn_experiments.run.runner import run_experiment

    overrides = ["dataset=table", f"dataset.path={table_csv}", "dataset.target=[y1,y2]", "dataset.features=[a,b]"]
    overrides += ["model.covariance=full", "model.members=2", "trainer.steps=20", "trainer.progress=false"]
    run_experiment(compose_config([*overrides, "figures=false"]), run_dir)
    return run_dir


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `mdn-run ARGS` in a fresh interpreter, as a user would (launch: the one helper that starts it)."""
    return launch.run(
        "mdn_experiments.cli", args, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=600
    )


def cli_in_process(args: list[str]) -> subprocess.CompletedProcess:
    """`mdn-run ARGS` in this process (no new interpreter, no torch import for a refused config):
    its exit status and what it printed. For the command-line checks that stop before any run."""
    import contextlib
    import io

    from mdn_experiments import cli

    out, err, argv, code = io.StringIO(), io.StringIO(), sys.argv, 0
    sys.argv = ["mdn-run", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["mdn-run", *args], code, out.getvalue(), err.getvalue())


HOLD = """
import sys, time
from mdn_experiments.run import locking
locking.acquire(sys.argv[1], "test")
print("held", flush=True)
time.sleep(600)
"""


def holding(folder: Path) -> subprocess.Popen:
    """Another process that holds folder's lock until it is killed."""
    folder.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes: what 'nothing changed' is checked against."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error(proc, prog: str = "mdn-run") -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def find_mnist_root() -> Path | None:
    for candidate in (os.environ.get("MDN_MNIST_ROOT"), REPO.parent / "shared" / "data" / "mnist" / "raw"):
        if candidate and all((Path(candidate) / name).exists() for name in MNIST_FILES):
            return Path(candidate)
    return None


def find_uci_root() -> Path | None:
    for candidate in (os.environ.get("MDN_UCI_ROOT"), REPO.parent / "shared" / "data" / "uci"):
        if candidate and (Path(candidate) / "concrete" / "data.txt").is_file():
            return Path(candidate)
    return None


def small_table(path: Path, n: int = 120, seed: int = 0) -> Path:
    """A small CSV (an identifier, two features, two targets: y1 = +-sqrt|a| has two branches)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-1, 1, n), rng.normal(size=n)
    y1 = rng.choice([-1.0, 1.0], n) * np.sqrt(np.abs(a)) + 0.05 * rng.normal(size=n)
    y2 = a * b + 0.1 * rng.normal(size=n)
    lines = ["id,a,b,y1,y2"] + [f"s{i},{a[i]:.17g},{b[i]:.17g},{y1[i]:.17g},{y2[i]:.17g}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def forced_dead_network(seed=0):
    """A K=3 MDN whose third component can never win: the case a revival must mend."""
    import torch

    from mdn_experiments.models import MLP, build_network

    torch.manual_seed(seed)
    net = build_network(MLP([1], hidden=[32]), [1], 1, "mdn", n_components=3)
    with torch.no_grad():  # component 3 can never win: logit weights 0, bias -30
        net.head.linear.weight[2] = 0.0
        net.head.linear.bias[2] = -30.0
    return net


def toy_data(n, seed):
    """The inverse-sine toy problem (noise half-width 0.1), (x, t) of n points."""
    import math

    import torch

    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 1, generator=g)
    return t + 0.3 * torch.sin(2 * math.pi * t) + 0.2 * (torch.rand(n, 1, generator=g) - 0.5), t
