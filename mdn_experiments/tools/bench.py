"""`make bench`: how fast, measured; never asserted by tests. Writes outputs/bench/bench.json,
outputs/bench/scaling.png and prints the tables the docs' performance page is generated from (make docs-reports).

Every figure is a median over repeated runs with its min and max; every comparison is a ratio of
two things timed side by side, interleaved, in the same process. The machine, the thread count
and the versions are recorded.

0. startup: fresh processes' wall time: `mdn-run --help`, importing the command line, torch and
   torch._dynamo (which torch.optim's first step imports).
1. loss_step: the MDN loss, forward + backward from the same raw network outputs, against
   torch.distributions.MixtureSameFamily and against the probability-space formulation
   (softmax weights, product of densities, log of the sum); and a case where the latter
   underflows to inf.
2. runner_overhead: fit() against a minimal hand-written loop doing the same optimizer steps.
3. time_to_quality: whole `mdn-run` wall time until a quality target, and where a run's time goes.
4. cost_curves: seconds per epoch against n_train, K and D (diag and full), with fitted exponents.
5. mnist_throughput: training and inference images per second of the default CNN-MDN.
6. table_scaling: the default `mdn-run dataset=table` command on tables of 10^4 ... 10^6 rows x 20
   columns that the bench writes itself (CSV and Parquet): wall time and peak memory (the run's
   own maximum resident set) against rows, with fitted exponents and the memory's bytes per row
   beside the data's float32 bytes per row.

7. cuda (skipped without a CUDA device): MNIST's training step on the device in float32 and
   with trainer.precision=bf16, the loss step at large N and K, and the million-row table command
   with trainer.device=cuda.
8. reports: the wall time and the steps of the newest finished `make reproduce` and `make uci`
   (not quick), read from their progress records: the two long commands are not timed again here.

`--only SECTION[,SECTION]` runs some sections (the others keep their previous entry in
bench.json); `--quick` shrinks every section to seconds (a smoke test of this script).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from mdn_experiments import files, mdn
from mdn_experiments.models import MLP, build_network
from mdn_experiments.tools import launch
from mdn_experiments.train.trainer import fit

SECTIONS = (
    "startup",
    "loss_step",
    "runner_overhead",
    "time_to_quality",
    "cost_curves",
    "mnist_throughput",
    "table_scaling",
    "cuda",
    "reports",
)
OUT = Path("outputs/bench")


# --- timing --------------------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def side_by_side(
    fns: dict[str, Callable[[], Any]], repeats: int, inner: int = 1, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Seconds per call of each fn, timed interleaved (a, b, c, a, b, c, ...) so that drifts of the
    machine hit all of them alike; each sample averages `inner` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: summary(values) for name, values in samples.items()}


def ratio(a: dict[str, float], b: dict[str, float]) -> float:
    return a["median"] / b["median"]


# --- 1. loss step --------------------------------------------------------------------------------


def prob_space_nll(mixture: mdn.Mixture, y: torch.Tensor) -> torch.Tensor:
    """What several popular MDN implementations compute: softmax weights times the product of the
    per-dimension Gaussian densities (or the full-covariance density), summed, then the log."""
    pi = torch.softmax(mixture.log_pi, -1)
    diff = y.unsqueeze(-2) - mixture.mu  # (N, K, D)
    D = y.shape[-1]
    if isinstance(mixture, mdn.FullMixture):
        L = mixture.scale_tril
        z = torch.linalg.solve_triangular(L, diff.unsqueeze(-1), upper=False).squeeze(-1)
        det = torch.diagonal(L, dim1=-2, dim2=-1).prod(-1)
        density = torch.exp(-0.5 * z.square().sum(-1)) / ((2 * math.pi) ** (D / 2) * det)
    else:
        sigma = mixture.sigma if mixture.sigma.shape[-1] == D else mixture.sigma.expand_as(diff)
        density = (torch.exp(-0.5 * (diff / sigma).square()) / (math.sqrt(2 * math.pi) * sigma)).prod(-1)
    return -torch.log((pi * density).sum(-1)).mean()


def loss_inputs(n: int, K: int, D: int, covariance: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, mdn.MIXTURES[covariance].n_raw(K, D), generator=g).requires_grad_(True)
    return raw, torch.randn(n, D, generator=g)


def loss_step(quick: bool) -> dict[str, Any]:
    repeats = 5 if quick else 30
    rows = []
    cases = [
        (n, K, D, cov)
        for cov in ("diag", "full")
        for D in (1, 2)
        for K in (3, 10)
        for n in (1000, 4096)
        if not (cov == "full" and D == 1)
    ]  # a 1-D full covariance is the diagonal one
    for n, K, D, covariance in cases[:2] if quick else cases:
        raw, y = loss_inputs(n, K, D, covariance)

        def step(loss_of):
            def run():
                raw.grad = None
                loss_of(mdn.mixture_from_raw(raw, K, D, covariance), y).backward()

            return run

        times = side_by_side(
            {
                "ours": step(mdn.nll),
                "mixture_same_family": step(lambda m, t: -m.to_distribution().log_prob(t).mean()),
                "prob_space": step(prob_space_nll),
            },
            repeats,
            inner=5,
        )
        rows.append(
            {
                "n": n,
                "K": K,
                "D": D,
                "covariance": covariance,
                **{f"{k}_seconds": v for k, v in times.items()},
                "ours_over_msf": ratio(times["ours"], times["mixture_same_family"]),
                "ours_over_prob_space": ratio(times["ours"], times["prob_space"]),
            }
        )
        print(
            f"  loss step N={n:5d} K={K:2d} D={D} {covariance:4s}: ours {times['ours']['median'] * 1e3:7.3f} ms, "
            f"MixtureSameFamily {times['mixture_same_family']['median'] * 1e3:7.3f} ms "
            f"(ours/MSF {rows[-1]['ours_over_msf']:.2f}), prob-space {times['prob_space']['median'] * 1e3:7.3f} ms",
            flush=True,
        )
    return {"rows": rows, "underflow": underflow_case()}


def underflow_case() -> dict[str, Any]:
    """Targets a few hundred σ from every component mean (σ at its floor): every density underflows
    to 0 in float32, the probability-space loss becomes inf and its gradient NaN; the log-space
    loss stays finite."""
    K, D, n = 3, 2, 256
    raw, _ = loss_inputs(n, K, D, "diag")
    with torch.no_grad():
        raw[:, K * (1 + D) :] = -30.0  # softplus(-30) ~ 1e-13: every sigma sits at its floor, 1e-3
        raw[:, K : K * (1 + D)] = 0.0  # every mean at 0
    y = torch.full((n, D), 0.5)  # 500 sigma away
    out = {}
    for name, loss_of in (("ours", mdn.nll), ("prob_space", prob_space_nll)):
        raw.grad = None
        loss = loss_of(mdn.mixture_from_raw(raw, K, D, "diag"), y)
        loss.backward()
        out[name] = {"loss": float(loss.detach()), "gradient_finite": bool(torch.isfinite(raw.grad).all())}
    out["setup"] = "K=3, D=2, every sigma at the floor 1e-3, targets 500 sigma from every mean, float32"
    print(
        f"  underflow: ours loss {out['ours']['loss']:.4g} (finite gradient: {out['ours']['gradient_finite']}), "
        f"prob-space loss {out['prob_space']['loss']} (finite gradient: {out['prob_space']['gradient_finite']})"
    )
    return out


# --- 2. runner overhead --------------------------------------------------------------------------


def toy_problem(
    n: int, D: int = 1, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(2 * n, D, generator=g)
    x = t[:, :1] + 0.3 * torch.sin(2 * math.pi * t[:, :1]) + 0.2 * (torch.rand(2 * n, 1, generator=g) - 0.5)
    return (x[:n], t[:n]), (x[n:], t[n:])


def toy_network(K: int = 3, D: int = 1, covariance: str = "diag", seed: int = 0):
    torch.manual_seed(seed)
    return build_network(MLP([1], [64, 64]), [1], D, "mdn", n_components=K, covariance=covariance)


def minimal_loop(network, train, epochs: int, batch_size: int, lr: float, grad_clip: float, seed: int) -> None:
    """The loop a researcher writes by hand: Adam, shuffled minibatches, clipping, cosine decay."""
    x, y = train
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    steps = epochs * math.ceil(x.shape[0] / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.01)
    g = torch.Generator().manual_seed(seed)
    network.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for start in range(0, x.shape[0], batch_size):
            index = order[start : start + batch_size]
            loss, _ = network.loss(x[index], y[index])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()


def runner_overhead(quick: bool) -> dict[str, Any]:
    """fit() (validation and component health every epoch, best weights, the non-finite guard,
    history) against minimal_loop, same model, data, batches per epoch, optimizer and schedule."""
    epochs, repeats = (3, 3) if quick else (20, 9)
    rows = []
    for n_train, batch_size in ((1000, 128), (10000, 128)):
        train, val = toy_problem(n_train)
        start = toy_network()
        kwargs = dict(lr=3e-3, batch_size=batch_size, grad_clip=5.0)

        def with_fit():
            fit(copy.deepcopy(start), train, val, epochs=epochs, lr_schedule="cosine", lr_min_factor=0.01, **kwargs)

        def by_hand():
            minimal_loop(copy.deepcopy(start), train, epochs, seed=0, **kwargs)

        times = side_by_side({"fit": with_fit, "minimal_loop": by_hand}, repeats, warmup=1)
        rows.append(
            {
                "n_train": n_train,
                "n_val": n_train,
                "batch_size": batch_size,
                "epochs": epochs,
                **{f"{k}_seconds": v for k, v in times.items()},
                "fit_over_minimal": ratio(times["fit"], times["minimal_loop"]),
            }
        )
        print(
            f"  runner n_train={n_train}: fit {times['fit']['median']:.3f} s, minimal loop "
            f"{times['minimal_loop']['median']:.3f} s, ratio {rows[-1]['fit_over_minimal']:.3f}",
            flush=True,
        )
    return {"rows": rows, "threads": torch.get_num_threads()}


# --- start-up ------------------------------------------------------------------------------------

STARTUP_COMMANDS = {
    "python": ["-c", "pass"],
    "mdn_run_help": ["-m", "mdn_experiments.cli", "--help"],
    "import_cli": ["-c", "import mdn_experiments.cli"],
    "import_torch": ["-c", "import torch"],
    # torch.optim's first step imports torch._dynamo (Optimizer.step's grad-mode wrapper), in
    # every process that trains: a cost of torch's own, not of this project's
    "import_torch_dynamo": ["-c", "import torch, torch._dynamo"],
    # the same, settled as mdn-run settles a job's process (memory.settle): its teardown at exit
    # no longer goes through every object (the difference to the line above)
    "import_torch_dynamo_settled": [
        "-c",
        "import torch, torch._dynamo; from mdn_experiments import memory; memory.settle('imports')",
    ],
}


def startup(quick: bool) -> dict[str, Any]:
    """Wall seconds of fresh processes, median over repeats: `mdn-run --help`, the command line's
    own import, and what any training process pays for torch (its import, and torch._dynamo's,
    which torch.optim's first step imports)."""
    repeats = 2 if quick else 7
    out: dict[str, Any] = {}
    for name, args in STARTUP_COMMANDS.items():
        walls = []
        for _ in range(repeats + 1):  # the first warms the file cache
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
        out[name] = summary(walls[1:])
        print(f"  {name}: {out[name]['median']:.2f} s", flush=True)
    return out


# --- 3. time to quality --------------------------------------------------------------------------


# Starts a command and writes its peak resident KiB (wait4's ru_maxrss) to argv[1]. Linux carries
# a process's high-water mark across exec: a run started by the bench itself would report the
# bench's own peak where that is higher (after it wrote a million-row table, 594 MiB for a run
# that peaked at 549). Started from this small interpreter, a run's peak is its own.
PEAK_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def call_with_peak(command: list[str], peak_file: Path, **popen: Any) -> tuple[int, int]:
    """subprocess.call of command through PEAK_LAUNCHER: its exit code and its own peak resident
    bytes (written to peak_file on the way)."""
    returncode = subprocess.call([sys.executable, "-c", PEAK_LAUNCHER, str(peak_file), *command], **popen)
    return returncode, int(peak_file.read_text()) * 1024


def mdn_run(args: list[str], cwd: Path) -> tuple[float, dict[str, Any], Path, int]:
    """One whole mdn-run in a child process: its wall seconds, metrics, run folder and peak
    resident bytes (its own: see PEAK_LAUNCHER). Its stderr goes to a file beside the run, never
    to a pipe nobody reads while it runs."""
    run_dir = cwd / f"run{len(list(cwd.glob('run*')))}"
    log, peak = cwd / f"stderr-{run_dir.name}.txt", cwd / f"peak-{run_dir.name}.txt"
    run = launch.command("mdn_experiments.cli", [*args, f"hydra.run.dir={run_dir}", "trainer.progress=false"])
    start = time.perf_counter()
    with log.open("w") as err:
        returncode, peak_bytes = call_with_peak(
            run, peak, cwd=cwd, env=launch.environment(), stdout=subprocess.DEVNULL, stderr=err
        )
    wall = time.perf_counter() - start
    if returncode != 0:
        raise RuntimeError(f"mdn-run {' '.join(args)} failed: {log.read_text().strip().splitlines()[-1:]}")
    return wall, json.loads((run_dir / "metrics.json").read_text()), run_dir, peak_bytes


def breakdown(wall: float, metrics: dict[str, Any]) -> dict[str, float]:
    """Where a whole mdn-run's wall time went (seconds)."""
    parts = {key: metrics.get(f"{key}_seconds", 0.0) for key in ("data", "metrics", "figures")}
    parts["mdn_training"] = metrics["train_seconds"]
    parts["baseline_training"] = metrics.get("train_seconds_baseline", 0.0)
    inside = metrics["wall_seconds"] + parts["data"]
    parts["other_in_run"] = max(0.0, metrics["wall_seconds"] - sum(v for k, v in parts.items() if k != "data"))
    parts["imports_and_startup"] = max(0.0, wall - inside)
    return {"whole_run": wall, **parts}


def first_epoch_reaching(run_dir: Path, column: str, target: float) -> tuple[int, float] | None:
    import csv

    with (run_dir / "history.csv").open() as fh:
        for row in csv.DictReader(fh):
            if float(row[column]) <= target:
                return int(row["epoch"]), float(row["seconds"])
    return None


def time_to_quality(quick: bool) -> dict[str, Any]:
    """Per experiment: the whole mdn-run wall time until the target is reached. The toy's target is
    read off the default run's per-epoch validation NLL (start-up + training seconds at the first
    epoch reaching it); the arm's and MNIST's targets are test metrics, so the shortest budget of a
    ladder of epochs that reaches them is timed as a whole run (baseline and figures off)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        quick_args = ["dataset.n_train=300", "dataset.n_val=200", "dataset.n_test=300"] if quick else []
        # the default toy run, whole, with its breakdown
        wall, metrics, run_dir, _ = mdn_run(["dataset=inverse_sine", "K=3", *quick_args], cwd)
        reached = first_epoch_reaching(run_dir, "val_nll", -1.10)
        startup = wall - metrics["wall_seconds"] - metrics.get("data_seconds", 0.0)
        out["inverse_sine"] = {
            "target": "validation NLL <= -1.10 (K=3)",
            "epoch": reached[0] if reached else None,
            "seconds_to_target": startup + metrics.get("data_seconds", 0.0) + reached[1] if reached else None,
            "default_run": breakdown(wall, metrics),
            "test_nll": metrics["test_nll"],
        }
        print(f"  toy: {out['inverse_sine']}", flush=True)
        ladders = {
            "robot_arm": (["dataset=robot_arm", "K=3"], "positioning_rmse_top_pi", 0.0053, [25, 50, 100, 200, 300]),
            "mnist": (["dataset=mnist"], "accuracy_top_pi", -0.990, [1, 2, 3, 4, 6]),
        }
        for name, (args, key, target, epochs_ladder) in ladders.items():
            if name == "mnist" and not os.environ.get("MDN_MNIST_ROOT") and not Path("data/mnist").is_dir():
                out[name] = {"skipped": "no MNIST files (MDN_MNIST_ROOT)"}
                continue
            tried = []
            for epochs in epochs_ladder[:1] if quick else epochs_ladder:
                extra = ["dataset.n_train=1000", "dataset.n_val=500", "dataset.n_test=500"] if quick else []
                wall, metrics, run_dir, _ = mdn_run(
                    [*args, f"trainer.epochs={epochs}", "baseline=false", "figures=false", *extra], cwd
                )
                value = metrics[key]
                tried.append({"epochs": epochs, "wall": wall, key: value, "breakdown": breakdown(wall, metrics)})
                print(f"  {name}: {epochs} epochs -> {key} {value:.5g} in {wall:.1f} s", flush=True)
                if (value <= target) if target > 0 else (value >= -target):
                    break
            hit = tried[-1] if ((tried[-1][key] <= target) if target > 0 else (tried[-1][key] >= -target)) else None
            out[name] = {
                "target": f"{key} {'<=' if target > 0 else '>='} {abs(target)}",
                "ladder": tried,
                "seconds_to_target": hit["wall"] if hit else None,
                "epochs": hit["epochs"] if hit else None,
            }
    return out


# --- 4. cost curves ------------------------------------------------------------------------------


def seconds_per_epoch(n_train: int, K: int, D: int, covariance: str, epochs: int, batch_size: int = 128) -> float:
    train, val = toy_problem(n_train, D)
    val = (val[0][:1000], val[1][:1000])  # validation cost fixed: the curve is about training
    network = toy_network(K, D, covariance)
    result = fit(network, train, val, epochs=epochs, batch_size=batch_size, grad_clip=5.0)
    seconds = [row["seconds"] for row in result.history]
    per_epoch = [b - a for a, b in zip([0.0] + seconds[:-1], seconds)]
    return statistics.median(per_epoch[1:] if len(per_epoch) > 1 else per_epoch)


def exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x: cost ~ x^slope."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def cost_curves(quick: bool) -> dict[str, Any]:
    epochs = 2 if quick else 12  # the median of 11 epochs (the first is left out: warm-up)
    curves: dict[str, Any] = {}
    axes = {
        "n_train": [(n, 3, 1, "diag") for n in ([1000, 3000] if quick else [1000, 3000, 10000, 30000, 100000])],
        "K": [(3000, K, 1, "diag") for K in ([1, 3] if quick else [1, 3, 10, 30])],
        "D_diag": [(3000, 3, D, "diag") for D in ([1, 2] if quick else [1, 2, 5])],
        "D_full": [(3000, 3, D, "full") for D in ([1, 2] if quick else [1, 2, 5])],
    }
    for axis, cases in axes.items():
        points = []
        for n, K, D, covariance in cases:
            s = seconds_per_epoch(n, K, D, covariance, epochs if n < 30000 else 4)
            x = {"n_train": n, "K": K}.get(axis, D)
            points.append({"x": x, "seconds_per_epoch": s, "n_train": n, "K": K, "D": D, "covariance": covariance})
            print(f"  cost {axis}: x={x}: {s * 1e3:.1f} ms per epoch", flush=True)
        curves[axis] = {
            "points": points,
            "exponent": exponent([p["x"] for p in points], [p["seconds_per_epoch"] for p in points]),
        }
    return curves


def scaling_figure(curves: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [
        ("n_train", ["n_train"], "training points (K=3, D=1)"),
        ("K", ["K"], "components K (n=3000, D=1)"),
        ("D", ["D_diag", "D_full"], "target dimension D (n=3000, K=3)"),
    ]
    for ax, (title, keys, xlabel) in zip(axes, panels):
        for key in keys:
            pts = curves[key]["points"]
            label = {"D_diag": "diag", "D_full": "full"}.get(key, "diag")
            ax.loglog(
                [p["x"] for p in pts],
                [p["seconds_per_epoch"] for p in pts],
                "o-",
                label=f"{label}: slope {curves[key]['exponent']:.2f}",
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds per epoch (batch 128)")
        ax.set_title(f"cost against {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"MDN training cost, 64x64 tanh MLP, Adam, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- 5. MNIST throughput -------------------------------------------------------------------------


def mnist_training_step(device: torch.device | None = None, bf16: bool = False, sync: Callable[[], Any] = lambda: None):
    """The default CNN-MDN on `device`, standardised on a random batch of MNIST's size, and one
    Adam step on that batch (then `sync`): (step, network, batch size, dataset, the generator,
    which goes on where the batch ended)."""
    from mdn_experiments.config.compose import compose
    from mdn_experiments.run.build import build, make_dataset

    device = device or torch.device("cpu")
    cfg = compose(["dataset=mnist"])
    dataset = make_dataset(cfg)
    torch.manual_seed(0)
    network = build(cfg, dataset, "mdn").to(device)
    batch = int(cfg.trainer.batch_size)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *dataset.input_shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch, 1), generator=g).float().to(device)
    network.fit_standardization(x, y, per_feature=dataset.per_feature_standardization)
    network.backbone_dtype = torch.bfloat16 if bf16 else None
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def train_step():
        network.train()
        loss, _ = network.loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync()

    return train_step, network, batch, dataset, g


def mnist_throughput(quick: bool) -> dict[str, Any]:
    train_step, network, batch, dataset, g = mnist_training_step()
    x_inf = torch.rand(1000, *dataset.input_shape, generator=g)

    @torch.no_grad()
    def infer():
        network.eval()
        network(x_inf)

    repeats = 3 if quick else 15
    times = side_by_side({"train_step": train_step, "inference_1000": infer}, repeats, inner=3 if quick else 10)
    out = {
        "batch_size": batch,
        "train_images_per_second": batch / times["train_step"]["median"],
        "train_images_per_second_range": [batch / times["train_step"]["max"], batch / times["train_step"]["min"]],
        "inference_images_per_second": 1000 / times["inference_1000"]["median"],
        "inference_images_per_second_range": [
            1000 / times["inference_1000"]["max"],
            1000 / times["inference_1000"]["min"],
        ],
        "n_params": sum(p.numel() for p in network.parameters()),
    }
    print(
        f"  MNIST: training {out['train_images_per_second']:.0f} images/s (batch {batch}), inference "
        f"{out['inference_images_per_second']:.0f} images/s (batch 1000)",
        flush=True,
    )
    return out


# --- 7. the GPU path ------------------------------------------------------------------------------


def cuda(quick: bool) -> dict[str, Any]:
    """MNIST's CNN-MDN training step on the device (float32 and bf16, images/s and the epoch it
    implies), the loss step (forward + backward) at large N and K, and the default table command
    on 10^6 rows with trainer.device=cuda. Every timed call ends with a device synchronisation."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    return device_section(quick, torch.device("cuda"))


def device_section(quick: bool, device: torch.device) -> dict[str, Any]:
    """cuda()'s measurements on `device` (the tests run them on the CPU: the same code path)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    repeats = 3 if quick else 15
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out: dict[str, Any] = {"device": name, "mnist": {}, "loss_step": []}
    for precision in ("float32", "bf16"):
        train_step, _, batch, _, _ = mnist_training_step(device, bf16=precision == "bf16", sync=sync)
        step = side_by_side({"step": train_step}, repeats, inner=10)["step"]
        out["mnist"][precision] = {
            "images_per_second": batch / step["median"],
            "epoch_seconds": MNIST_TRAIN_IMAGES / (batch / step["median"]),
        }
        print(f"  CUDA MNIST {precision}: {batch / step['median']:.0f} images/s", flush=True)
    cases = [(65536, 10, 1, "diag"), (65536, 10, 2, "full")] + ([] if quick else [(1_000_000, 10, 1, "diag")])
    for n, K, D, covariance in cases:
        raw, target = loss_inputs(n, K, D, covariance)
        raw, target = raw.detach().to(device).requires_grad_(True), target.to(device)

        def loss_step_on_device():
            raw.grad = None
            mdn.nll(mdn.mixture_from_raw(raw, K, D, covariance), target).backward()
            sync()

        t = side_by_side({"ours": loss_step_on_device}, repeats, inner=5)["ours"]
        out["loss_step"].append({"n": n, "K": K, "D": D, "covariance": covariance, "seconds": t})
        print(f"  CUDA loss step N={n} K={K} D={D} {covariance}: {t['median'] * 1e3:.3f} ms", flush=True)
    rows = 2000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bench_table(rows, Path(tmp))["parquet"]
        args = ["dataset=table", f"dataset.path={path}", "dataset.target=y", f"trainer.device={device.type}"]
        wall, metrics, _, peak = mdn_run(args + (["trainer.steps=50"] if quick else []), Path(tmp))
    out["table"] = {"rows": rows, "seconds": wall, "train_seconds": metrics["train_seconds"], "peak_bytes": peak}
    print(f"  {device.type} table {rows} rows: {wall:.1f} s", flush=True)
    return out


MNIST_TRAIN_IMAGES = 55_000  # the training part of the default MNIST run


# --- the report ----------------------------------------------------------------------------------


# --- 6. tables of any size ---------------------------------------------------------------------

TABLE_COLUMNS = 20  # 19 features and the target


def write_bench_table(n_rows: int, folder: Path, seed: int = 0) -> dict[str, Path]:
    """A table of n_rows x TABLE_COLUMNS, as CSV and as Parquet: 19 standard-normal features and a
    target of two branches (the sign of a hidden coin) with a spread that grows with |x2|."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, TABLE_COLUMNS - 1)).astype(np.float32)
    branch = np.where(rng.random(n_rows) < 0.5, -1.0, 1.0)
    y = branch * (1.0 + np.sin(x[:, 0])) + 0.5 * x[:, 1] + (0.1 + 0.2 * np.abs(x[:, 2])) * rng.standard_normal(n_rows)
    table = pa.table({**{f"x{j}": x[:, j] for j in range(x.shape[1])}, "y": y.astype(np.float32)})
    paths = {"csv": folder / f"rows{n_rows}.csv", "parquet": folder / f"rows{n_rows}.parquet"}
    pacsv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"])
    return paths


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of y against x."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
    return slope, my - slope * mx


LARGE_TABLE_ROWS = 100_000  # from here on a run's fixed part is whole (evaluation chunks at their size)
TABLE_REPEATS = 2  # runs per point from LARGE_TABLE_ROWS on: one run's peak moves by about +-10 MiB


def table_scaling(quick: bool) -> dict[str, Any]:
    """The default table command against rows: seconds and peak memory, per file format."""
    sizes = [2000, 6000] if quick else [10_000, 30_000, 100_000, 300_000, 1_000_000]
    out: dict[str, Any] = {"columns": TABLE_COLUMNS, "float32_bytes_per_row": 4 * TABLE_COLUMNS, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for n in sizes:
            for fmt, path in write_bench_table(n, cwd).items():
                args = ["dataset=table", f"dataset.path={path}", "dataset.target=y"]
                if quick:
                    args.append("trainer.steps=50")
                runs = [mdn_run(args, cwd) for _ in range(1 if quick or n < LARGE_TABLE_ROWS else TABLE_REPEATS)]
                path.unlink()
                walls, peaks, metrics = [r[0] for r in runs], [r[3] for r in runs], runs[0][1]
                wall, peak = statistics.median(walls), statistics.median(peaks)
                point = {
                    "rows": n,
                    "seconds": wall,
                    "peak_bytes": peak,
                    "runs": len(runs),
                    "seconds_range": [min(walls), max(walls)],
                    "peak_bytes_range": [min(peaks), max(peaks)],
                    "data_seconds": metrics.get("data_seconds", math.nan),
                    "epochs": metrics.get("epochs_run", metrics.get("epochs", math.nan)),
                    "test_ll": metrics.get("test_ll", math.nan),
                }
                out["formats"].setdefault(fmt, {"points": []})["points"].append(point)
                print(
                    f"  table {fmt} rows={n}: {wall:.1f} s, peak {peak / 2**20:.0f} MiB, "
                    f"reading {point['data_seconds']:.2f} s",
                    flush=True,
                )
    return out


def table_fits(curve: dict[str, Any]) -> dict[str, float]:
    """A table curve's fitted exponents: time ~ rows^a over every point; peak memory as a fixed part
    plus bytes per row, over every point and over the points of LARGE_TABLE_ROWS rows or more
    (below them the evaluation's chunks, and so the fixed part, are still growing with the test set)."""
    points = curve["points"]
    rows = [p["rows"] for p in points]
    fits = {"time_exponent": exponent(rows, [p["seconds"] for p in points])}
    slope, intercept = linear_fit(rows, [p["peak_bytes"] for p in points])
    fits["memory_bytes_per_row"], fits["memory_fixed_bytes"] = slope, intercept
    large = [p for p in points if p["rows"] >= LARGE_TABLE_ROWS]
    if len(large) >= 2:
        slope, intercept = linear_fit([p["rows"] for p in large], [p["peak_bytes"] for p in large])
        fits["memory_bytes_per_row_large"], fits["memory_fixed_bytes_large"] = slope, intercept
        fits["time_exponent_large"] = exponent([p["rows"] for p in large], [p["seconds"] for p in large])
    return fits


def memory_bound(curve: dict[str, Any], row_bytes: int) -> dict[str, float] | None:
    """The memory bound of a table curve checked at its largest point: peak <= fixed + data, the
    fixed part being the peak at LARGE_TABLE_ROWS rows less that table's data (its float32 bytes)."""
    points = {p["rows"]: p["peak_bytes"] for p in curve["points"]}
    largest = max(points)
    if LARGE_TABLE_ROWS not in points or largest <= LARGE_TABLE_ROWS:
        return None
    fixed = points[LARGE_TABLE_ROWS] - LARGE_TABLE_ROWS * row_bytes
    data = largest * row_bytes
    return {"rows": largest, "fixed": fixed, "data": data, "bound": fixed + data, "peak": points[largest]}


REPORT_FOLDERS = {"reproduce": (Path("outputs/reproduce"), "reproduce.json"), "uci": (Path("outputs/uci"), "uci.json")}


def reports(quick: bool) -> dict[str, Any]:
    """The newest finished, full (not quick) `make reproduce` and `make uci` under outputs/: their
    folder, wall time and step seconds, read as data through the records' own checks (a damaged
    record is passed over)."""
    from mdn_experiments.errors import UserError
    from mdn_experiments.tools.reproduce import read_progress

    out: dict[str, Any] = {}
    for command, (folder, record) in REPORT_FOLDERS.items():
        found = []
        for path in folder.glob(f"*/{record}"):
            try:
                progress = read_progress(path.parent, record)
            except UserError:
                continue
            if progress.get("finished") and not progress.get("quick"):
                found.append((path.parent.name, progress))
        if not found:
            out[command] = None
            continue
        name, progress = max(found, key=lambda item: item[0])  # folders are named by their start time
        steps = {step: entry["seconds"] for step, entry in progress["steps"].items()}
        out[command] = {
            "folder": str(folder / name),
            "wall_seconds": progress.get("wall_seconds", sum(steps.values())),
            "steps": steps,
        }
        print(f"  {command}: {out[command]['wall_seconds'] / 60:.1f} min ({folder / name})", flush=True)
    return out


def machine() -> dict[str, Any]:
    import numpy

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        model = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        info["cpu_model"] = model[0] if model else None
    except OSError:
        info["cpu_model"] = None
    return info


def fmt_range(entry: dict[str, float], scale: float = 1e3, digits: int = 3) -> str:
    return f"{entry['median'] * scale:.{digits}f} [{entry['min'] * scale:.{digits}f}–{entry['max'] * scale:.{digits}f}]"


def markdown(bench: dict[str, Any]) -> str:
    """bench.md: the tables the docs' performance page is generated from."""
    m = bench["machine"]
    lines = [
        f"Machine: {m.get('cpu_model') or m['processor']}, {m['cpu_count']} cores, {m['torch_threads']} torch "
        f"threads, torch {m['torch']}, Python {m['python']}{', ' + m['cuda'] if m.get('cuda') else ''}; "
        f"{bench['date']}.",
        "",
    ]
    s = bench["sections"]
    if s.get("reports") is not None:
        words = {"reproduce": "`make reproduce`", "uci": "`make uci`"}
        parts = []
        for command, entry in s["reports"].items():
            if entry is None:
                parts.append(f"{words[command]}: no finished full run under outputs/")
                continue
            steps = entry["steps"]
            if command == "uci":  # a dozen sweeps, side by side: their count, not their list
                from mdn_experiments.tools.uci import SIDE_BY_SIDE

                detail = f"{len(steps)} sweeps, {SIDE_BY_SIDE} at a time"
            else:
                detail = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in steps.items())
            parts.append(f"{words[command]} {entry['wall_seconds'] / 60:.1f} min ({detail}; `{entry['folder']}`)")
        lines += [
            "**The long commands** (wall time read from their newest finished full run, not timed again "
            "by the bench): " + "; ".join(parts) + ".",
            "",
        ]
    if "startup" in s:
        t = s["startup"]
        named = {
            "python": "Python itself",
            "mdn_run_help": "`mdn-run --help`",
            "import_cli": "importing the command line",
            "import_torch": "`import torch`",
            "import_torch_dynamo": "`import torch, torch._dynamo`",
            "import_torch_dynamo_settled": "the same, settled as a run's process is (`memory.settle`)",
        }
        lines += [
            "**Start-up** (fresh processes, seconds, median [min–max]): "
            + "; ".join(f"{named[k]} {fmt_range(v, 1, 2)}" for k, v in t.items() if k in named)
            + ". Every training process imports torch, and torch.optim's first step imports "
            "torch._dynamo: those two are torch's own floor under a run's start-up. Each process "
            "is timed from its start to its exit: settled, its teardown at exit is shorter.",
            "",
        ]
    if "loss_step" in s:
        lines += [
            "**Loss step** (forward + backward from the same raw outputs; ms, median [min–max]):",
            "",
            "| N | K | D | Σ | ours | MixtureSameFamily | prob-space | ours / MSF | ours / prob-space |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in s["loss_step"]["rows"]:
            lines.append(
                f"| {r['n']} | {r['K']} | {r['D']} | {r['covariance']} | {fmt_range(r['ours_seconds'])} | "
                f"{fmt_range(r['mixture_same_family_seconds'])} | {fmt_range(r['prob_space_seconds'])} | "
                f"{r['ours_over_msf']:.2f} | {r['ours_over_prob_space']:.2f} |"
            )
        u = s["loss_step"]["underflow"]
        lines += [
            "",
            f"Underflow ({u['setup']}): ours {u['ours']['loss']:.4g} (gradient finite: "
            f"{u['ours']['gradient_finite']}), probability space {u['prob_space']['loss']} (gradient finite: "
            f"{u['prob_space']['gradient_finite']}).",
            "",
        ]
    if "runner_overhead" in s:
        lines += [
            "**Runner overhead** (`fit()` against a hand-written loop, same steps; seconds, median [min–max]):",
            "",
            "| n_train | epochs | fit | minimal loop | fit / loop |",
            "|---|---|---|---|---|",
        ]
        for r in s["runner_overhead"]["rows"]:
            lines.append(
                f"| {r['n_train']} | {r['epochs']} | {fmt_range(r['fit_seconds'], 1)} | "
                f"{fmt_range(r['minimal_loop_seconds'], 1)} | {r['fit_over_minimal']:.3f} |"
            )
        lines.append("")
    if "time_to_quality" in s:
        t = s["time_to_quality"]
        lines += [
            "**Time to quality** (whole `mdn-run` wall time, seconds):",
            "",
            "| experiment | target | reached | seconds |",
            "|---|---|---|---|",
        ]
        toy = t["inverse_sine"]
        lines.append(
            f"| inverse sine K=3 | {toy['target']} | epoch {toy['epoch']} | {toy['seconds_to_target']:.1f} |"
            if toy["seconds_to_target"]
            else f"| inverse sine K=3 | {toy['target']} | not reached | — |"
        )
        for name in ("robot_arm", "mnist"):
            e = t.get(name, {})
            if "skipped" in e or not e:
                continue
            lines.append(
                f"| {name} | {e['target']} | {e['epochs']} epochs | {e['seconds_to_target']:.1f} |"
                if e["seconds_to_target"]
                else f"| {name} | {e['target']} | not reached | — |"
            )
        b = toy["default_run"]
        lines += [
            "",
            "Where a default toy run's time goes (seconds): "
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in b.items())
            + ".",
            "",
        ]
    if "cost_curves" in s:
        c = s["cost_curves"]
        lines += [
            "**Cost curves** (seconds per epoch, batch 128, 64×64 MLP; fitted exponent of cost ~ xᵃ):",
            "",
            "| axis | points (x: ms per epoch) | exponent |",
            "|---|---|---|",
        ]
        for axis, curve in c.items():
            pts = ", ".join(f"{p['x']}: {p['seconds_per_epoch'] * 1e3:.0f}" for p in curve["points"])
            lines.append(f"| {axis} | {pts} | {curve['exponent']:.2f} |")
        lines.append("")
    if "mnist_throughput" in s and "train_images_per_second" in s["mnist_throughput"]:
        t = s["mnist_throughput"]
        lines += [
            f"**MNIST throughput** (default CNN-MDN, {t['n_params']} weights): training "
            f"{t['train_images_per_second']:.0f} images/s (batch {t['batch_size']}; range "
            f"{t['train_images_per_second_range'][0]:.0f}–{t['train_images_per_second_range'][1]:.0f}), "
            f"inference {t['inference_images_per_second']:.0f} images/s (batch 1000; range "
            f"{t['inference_images_per_second_range'][0]:.0f}–{t['inference_images_per_second_range'][1]:.0f}).",
            "",
        ]
    if "cuda" in s:
        t = s["cuda"]
        if "skipped" in t:
            lines += [f"**CUDA**: not measured ({t['skipped']}).", ""]
        else:
            mnist = t["mnist"]
            lines += [
                f"**CUDA** ({t['device']}): MNIST's CNN-MDN trains "
                + ", ".join(
                    f"{v['images_per_second']:.0f} images/s in {k} ({v['epoch_seconds']:.1f} s an epoch)"
                    for k, v in mnist.items()
                )
                + "; the loss step (forward + backward) takes "
                + ", ".join(
                    f"{r['seconds']['median'] * 1e3:.2f} ms at N={r['n']:,}, K={r['K']}, D={r['D']} {r['covariance']}"
                    for r in t["loss_step"]
                )
                + f"; the default table command on {t['table']['rows']:,} rows took {t['table']['seconds']:.1f} s "
                f"({t['table']['train_seconds']:.1f} s training).",
                "",
            ]
    if "table_scaling" in s:
        t = s["table_scaling"]
        row_bytes = t["float32_bytes_per_row"]
        lines += [
            f"**Tables of any size** (the default `mdn-run dataset=table` command, {t['columns']} columns: seconds "
            "of the whole command, peak resident memory of the run, seconds reading the file; the median of "
            "the runs, their range in parentheses):",
            "",
            "| format | rows | runs | seconds | reading s | peak MiB | test LL |",
            "|---|---|---|---|---|---|---|",
        ]
        for fmt, curve in t["formats"].items():
            for p in curve["points"]:
                runs = p.get("runs", 1)
                spread = lambda key, scale, digits: (
                    f" ({p[key][0] / scale:.{digits}f}–{p[key][1] / scale:.{digits}f})" if runs > 1 else ""
                )
                lines.append(
                    f"| {fmt} | {p['rows']:,} | {runs} | {p['seconds']:.1f}{spread('seconds_range', 1, 1)} | "
                    f"{p['data_seconds']:.2f} | {p['peak_bytes'] / 2**20:.0f}{spread('peak_bytes_range', 2**20, 0)} | "
                    f"{p['test_ll']:.3f} |"
                )
        lines.append("")
        for fmt, curve in t["formats"].items():
            f = table_fits(curve)
            line = (
                f"- {fmt}: time ~ rows^{f['time_exponent']:.2f} over every point; peak memory "
                f"{f['memory_fixed_bytes'] / 2**20:.0f} MiB + {f['memory_bytes_per_row']:.0f} bytes per row"
            )
            if "memory_bytes_per_row_large" in f:
                line += (
                    f"; from {LARGE_TABLE_ROWS:,} rows on (the run's fixed part whole): time ~ "
                    f"rows^{f['time_exponent_large']:.2f}, memory {f['memory_fixed_bytes_large'] / 2**20:.0f} MiB + "
                    f"{f['memory_bytes_per_row_large']:.0f} bytes per row "
                    f"({f['memory_bytes_per_row_large'] / row_bytes:.2f} x the data's {row_bytes} float32 bytes)"
                )
            bound = memory_bound(curve, row_bytes)
            if bound:
                line += (
                    f". The bound at {bound['rows']:,} rows: the fixed part (the {LARGE_TABLE_ROWS:,}-row peak less "
                    f"its data, {bound['fixed'] / 2**20:.0f} MiB) plus the data ({bound['data'] / 2**20:.0f} MiB) is "
                    f"{bound['bound'] / 2**20:.1f} MiB; measured {bound['peak'] / 2**20:.1f} MiB "
                    f"({(bound['peak'] - bound['bound']) / 2**20:+.2f} MiB)"
                )
            lines.append(line + ".")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mdn-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks this script in seconds")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        print(
            f"mdn-bench: error: --only {','.join(unknown)}: no such section; choose from {', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    keep = not args.quick and not previous.get("quick", True)
    bench = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "quick": args.quick,
        "sections": previous.get("sections", {}) if keep else {},
        "section_seconds": previous.get("section_seconds", {}) if keep else {},
    }
    print(
        f"[bench] {bench['machine'].get('cpu_model')}, {bench['machine']['torch_threads']} torch threads, "
        f"torch {torch.__version__}",
        flush=True,
    )
    for name in chosen:
        print(f"[bench] {name}", flush=True)
        start = time.perf_counter()
        bench["sections"][name] = globals()[name](args.quick)
        bench.setdefault("section_seconds", {})[name] = time.perf_counter() - start
        files.write_text(path, json.dumps(bench, indent=2) + "\n")  # a section at a time: nothing lost
    if "cost_curves" in bench["sections"]:
        scaling_figure(bench["sections"]["cost_curves"], args.out / "scaling.png")
    files.write_text(args.out / "bench.md", markdown(bench) + "\n")
    print("\n" + markdown(bench))
    print(
        f"[bench] {path}, {args.out / 'bench.md'}"
        + (f", {args.out / 'scaling.png'}" if "cost_curves" in bench["sections"] else "")
    )


if __name__ == "__main__":
    main()
