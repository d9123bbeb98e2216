"""`make reproduce`: every experiment of the paper, then REPORT.md beside the reference numbers.

Each reproduction lives in its own folder outputs/reproduce/<date>_<time>/ (earlier ones are
kept) holding the sweeps, reproduce.json (its steps and their state) and REPORT.md;
outputs/reproduce/REPORT.md is a copy of the newest report. A reproduction that was stopped is
resumed by the next `make reproduce` (or `mdn-resume FOLDER`): finished steps are kept, the
interrupted sweep continues where it stopped. `--fresh` (make reproduce FRESH=1) starts anew.
Exits non-zero, after writing the report, when any job failed or is not ok.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import sys
import time
from pathlib import Path

from mdn_experiments.tools import launch

from mdn_experiments.run import locking
from mdn_experiments.datasets.idx import DataError, ensure_mnist_files
from mdn_experiments.errors import RunFolderError, UserError
from mdn_experiments.run.layout import REPRODUCE_FILE, read_json, sweep_finished
from mdn_experiments.tools.report import collect, write_atomic, write_summary
from mdn_experiments.config.safety import quote

REFERENCES_FILE = "references.yaml"  # the reference values and bands, beside this module
SWEEPS = ("toy_k_sweep", "toy_bishop", "robot_arm", "mnist")  # its sweep folders, in the order they run

# shrink every run to seconds (for tests of this pipeline, not for results)
QUICK = ["dataset.n_train=200", "dataset.n_val=100", "dataset.n_test=300", "trainer.epochs=3"]
QUICK_MNIST = ["dataset.n_train=300", "dataset.n_val=200", "dataset.n_test=300", "trainer.epochs=1"]


def mdn_run(args: list[str]) -> tuple[float, int]:
    """Run `mdn-run ARGS` with its output on the console; return its wall time and exit status.

    A SIGTERM or SIGINT to this process is passed on to mdn-run, which saves its training state
    and stops; this process then waits for it instead of killing it.
    """
    print(f"\n[reproduce] mdn-run {' '.join(args)}", flush=True)
    start = time.perf_counter()
    child = launch.start("mdn_experiments.cli", args, resume=True)

    def forward(signum, frame):
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return time.perf_counter() - start, code


def interrupted_jobs(sweep_dir: Path) -> list[str]:
    """Jobs of a sweep that started but neither finished (metrics.json) nor failed (error.txt)."""
    return sorted(p.parent.parent.name for p in sweep_dir.glob("*/.hydra/config.yaml")
                  if not (p.parent.parent / "metrics.json").exists() and not (p.parent.parent / "error.txt").exists())


def load_jobs(sweep_dir: Path) -> dict[str, dict]:
    """metrics.json of every finished job, by job folder name (a damaged one is left out here and
    listed as damaged by the job status lines)."""
    jobs = {}
    for path in sorted(sweep_dir.glob("*/metrics.json")):
        try:
            jobs[path.parent.name] = read_json(path)
        except RunFolderError:
            continue
    return jobs


def stats(jobs: dict[str, dict], key: str, **match) -> tuple[float, float, int, int]:
    """Mean, std and count of `key` over the matching jobs whose status is ok, and how many
    matching jobs are not ok (left out of the mean)."""
    matching = [m for m in jobs.values() if key in m and all(m.get(k) == v for k, v in match.items())]
    values = [m[key] for m in matching if m.get("status", "ok") == "ok" and isinstance(m[key], (int, float))]
    n_bad = len(matching) - len(values)
    if not values:
        return math.nan, math.nan, 0, n_bad
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std, len(values), n_bad


def n_weights(jobs: dict[str, dict], **match) -> str:
    """The MDN's parameter count in these jobs (the same for every seed), or '?' when none ran."""
    mean, _, n, _ = stats(jobs, "n_params", **match)
    return f"{mean:.0f}" if n else "?"


def fmt(summary: tuple[float, float, int, int], digits: int = 4, percent: bool = False) -> str:
    mean, std, n, n_bad = summary
    bad = f"; {n_bad} not ok, left out" if n_bad else ""
    if n == 0:
        return f"no ok run (n=0{bad})" if n_bad else "not run"
    scale, unit = (100, " %") if percent else (1, "")
    return f"{mean * scale:.{digits}g} ± {std * scale:.2g}{unit} (n={n}{bad})"


def versions() -> str:
    import hydra
    import matplotlib
    import numpy
    import torch

    return (f"Python {platform.python_version()}, torch {torch.__version__}, hydra-core {hydra.__version__}, "
            f"numpy {numpy.__version__}, matplotlib {matplotlib.__version__}")


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.platform()}, {os.cpu_count()} CPU cores, {device}"


def references() -> list[dict]:
    """The rows of references.yaml (the reference values and bands the report uses)."""
    import yaml

    return yaml.safe_load((Path(__file__).with_name(REFERENCES_FILE)).read_text())["rows"]


def band_check(row: dict, mean: float) -> str:
    """'held', 'missed' or '' (no band) for a row's mean."""
    if "band" not in row:
        return ""
    if math.isnan(mean):
        return "not run"
    low, high = row["band"]
    scale, unit = (100, " %") if row.get("percent") else (1, "")
    text = " – ".join("…" if v is None else f"{v * scale:g}{unit}" for v in (low, high))
    held = (low is None or mean >= low) and (high is None or mean <= high)
    return f"{text}: **{'held' if held else 'missed'}**"


def reference_row(row: dict, jobs_by_sweep: dict[str, dict[str, dict]]) -> str:
    summary = stats(jobs_by_sweep.get(row["sweep"], {}), row["metric"], **(row.get("match") or {}))
    return (f"| {row['what']} | {fmt(summary, percent=bool(row.get('percent')))} | {row['reference']} | "
            f"{band_check(row, summary[0])} |")


def build_report(root: Path, timings: dict[str, float], mnist_note: str | None, prefix: str = "") -> str:
    """REPORT.md's text; figure links are prefixed with `prefix` (the run folder, seen from the file)."""
    jobs_by_sweep = {name: load_jobs(root / name) for name in SWEEPS}
    toy, bishop, arm, mnist = (jobs_by_sweep[name] for name in SWEEPS)
    toy_summary = None
    if toy:
        with locking.FolderLock(root / "toy_k_sweep", "sweep summary"):
            toy_summary = write_summary(root / "toy_k_sweep")
    fig = lambda rel: f"{prefix}{rel}"  # noqa: E731
    lines = [
        "# mdn-experiments: reproduction report",
        "",
        f"Made by `make reproduce` on {dt.datetime.now():%Y-%m-%d %H:%M}. Machine: {machine()}.",
        f"Software: {versions()}.",
        "Wall time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
        + f"; total {sum(timings.values()) / 60:.1f} min.",
        "",
        "Every number is the mean ± standard deviation over the seeds whose run is ok (n); a run that "
        "diverged, is degenerate (no better than one Gaussian fitted to the targets) or failed is left "
        "out and counted beside the number.",
        "",
        *job_status_lines(root),
        "## Our numbers beside the references",
        "",
        f"Reference values and bands from `mdn_experiments/tools/{REFERENCES_FILE}`; a band is held when the "
        "mean over the seeds lies inside it.",
        "",
        "| quantity | ours | reference | band |",
        "|---|---|---|---|",
        *[reference_row(row, jobs_by_sweep) for row in references()],
        "",
    ]
    if mnist_note:
        lines += [f"MNIST was not run: {mnist_note}", ""]
    lines += [
        "## The paper's claims, each with the number that answers it",
        "",
        "**An MSE network predicts the average of the branches.** On the toy problem the MSE network's "
        f"curve lies {fmt(stats(toy, 'baseline_vs_ideal_mean_rmse', K=3), 2)} (RMS) from the true "
        f"conditional mean E[t|x], while the test targets spread {fmt(stats(toy, 'ideal_mean_rmse', K=3), 2)} "
        f"(RMS) around it. On the arm it misses the target by {fmt(stats(arm, 'baseline_positioning_rmse'), 3)} "
        f"against {fmt(stats(arm, 'positioning_rmse'), 2)} for the MDN, which keeps both elbow branches "
        f"(branch coverage {fmt(stats(arm, 'branch_coverage'), 3)}: the share of doubled points where both "
        "analytic solutions lie within 0.05 rad of a mode holding ≥ 5 % of the probability).",
        "",
        "**The number of useful components follows the number of modes.** With K=5 the MDN keeps "
        f"{fmt(stats(toy, 'active_components_one_branch', K=5), 3)} components with π ≥ 0.05 where "
        "the whole noise window around x lies on one branch of the inverse, and "
        f"{fmt(stats(toy, 'active_components_three_branches', K=5), 3)} where f(t) = x has three "
        "solutions (K=3: "
        f"{fmt(stats(toy, 'active_components_one_branch', K=3), 3)} and "
        f"{fmt(stats(toy, 'active_components_three_branches', K=3), 3)}). Counted as modes holding ≥ 5 % of "
        "the probability against the number of separate intervals of the true p(t|x), the K=3 MDN gets the "
        f"number right for {fmt(stats(toy, 'branch_count_accuracy', K=3), 2)} of the test inputs (the true "
        "density is flat on each interval, and a wide interval is usually drawn with two bumps).",
    ]
    if toy_summary and toy_summary["table"]:
        entries = toy_summary["table"]["inverse_sine"]
        lines += ["Validation NLL against K: " + ", ".join(
            f"K={e['K']}: {e['val_nll']:.3f}" for e in entries) + ". "
            f"K chosen by validation NLL: {toy_summary['chosen_k']['inverse_sine']['by_val_nll']}; "
            f"by BIC: {toy_summary['chosen_k']['inverse_sine']['by_bic']} (BIC counts every network weight, "
            "so its penalty dwarfs the likelihood differences and it always picks the smallest K)."]
    lines += ["", "**An ambiguous digit gets several candidate values.** " + (
        f"On MNIST the mean number of components with π ≥ 0.05 is "
        f"{fmt(stats(mnist, 'mean_active_components'), 3)}; some component rounds to the label for "
        f"{fmt(stats(mnist, 'accuracy_any'), 4, True)} of the test digits against "
        f"{fmt(stats(mnist, 'accuracy_top1'), 4, True)} for the most probable one alone."
        if mnist else "Not answered: MNIST was not run (see above)."), "",
        "## Calibration",
        "",
        "Coverage: the share of test targets inside the predicted mixture's 50 % and 90 % highest-density "
        "regions (calibrated: 0.5 and 0.9; estimated per input from 1000 draws of the mixture). CRPS "
        "(1-D targets, closed form, lower is better) beside the MSE network's (its absolute error), and "
        "the Kolmogorov–Smirnov distance of the PIT values from uniform (0 when calibrated).",
        "",
    ]
    for name, jobs, match in (("inverse sine, K=3", toy, {"K": 3}), ("robot arm, K=3", arm, {}),
                              ("MNIST, K=10", mnist, {})):
        if not jobs:
            continue
        line = (f"- **{name}**: coverage_50 {fmt(stats(jobs, 'coverage_50', **match), 3)}, "
                f"coverage_90 {fmt(stats(jobs, 'coverage_90', **match), 3)}")
        if stats(jobs, "crps", **match)[2]:
            line += (f"; CRPS {fmt(stats(jobs, 'crps', **match), 3)} against {fmt(stats(jobs, 'baseline_crps', **match), 3)} "
                     f"for the MSE network; PIT KS distance {fmt(stats(jobs, 'pit_ks', **match), 2)}")
        lines.append(line + ".")
    lines += [
        "",
        "## Figures (seed 0)",
        "",
    ]
    figures = [
        ("toy_k_sweep/K=3,seed=0/figures/comparison.png", "Figure 2a: the MSE network (red) runs between the "
         "branches, near the true E[t|x] (dotted); the mean of the most probable MDN component stays on a branch, "
         "and the MDN's modes (rings, area ∝ mass) mark every branch."),
        ("toy_k_sweep/K=3,seed=0/figures/contour.png", "Figure 2b: p(t|x) of the K=3 MDN; three ridges in the "
         "middle, where the inverse has three values."),
        ("toy_k_sweep/K=3,seed=0/figures/pi.png", "Figure 3 (K=3): one component dominates at each end; "
         "the components share the middle."),
        ("toy_k_sweep/K=5,seed=0/figures/pi.png", "Figure 3 (K=5): the extra components stay small or "
         "split a branch."),
        ("toy_bishop/seed=0/figures/contour.png", "p(t|x) from Bishop's own setup (20 tanh units, "
         f"L-BFGS): the same three-valued middle, from {n_weights(bishop)} weights instead of "
         f"{n_weights(toy, K=3)}."),
        ("toy_k_sweep/k_sweep.png", "NLL, NLL gap and BIC against K (mean ± std over seeds)."),
        ("robot_arm/seed=0/figures/workspace.png", "Figure 4a: end-effector samples by elbow branch, and the "
         "doubled region where both arm configurations reach."),
        ("robot_arm/seed=0/figures/top_pi.png", "Figure 4b: the largest mixing coefficient; about 0.5 "
         "where the MDN splits its mass between the two branches."),
        ("robot_arm/seed=0/figures/positioning_errors.png", "Figure 5: lines from desired to reached "
         "positions; the MSE network misses in the doubled region, the MDN's lines are too short to see."),
        ("mnist/seed=0/figures/samples.png", "Figure 7: test digits beside their mixtures over 0–9; the "
         "ambiguous ones carry several candidates."),
        ("mnist/seed=0/figures/confusions.png", "Where top-1 goes wrong, MDN beside the rounded MSE network."),
        ("toy_k_sweep/K=3,seed=0/figures/calibration.png", "Calibration of the toy K=3 MDN: coverage of its "
         "highest-density regions against their level, and the PIT histogram."),
        ("robot_arm/seed=0/figures/calibration.png", "Calibration of the arm MDN (2-D targets: coverage only)."),
    ]
    for rel, sentence in figures:
        if (root / rel).exists():
            lines += [f"![{rel}]({fig(rel)})", "", sentence, ""]
    return "\n".join(lines) + "\n"


def job_rows(root: Path) -> dict[str, list[dict]]:
    """The summary rows (job, status, reason, ...) of every sweep this reproduction holds."""
    return {sweep: collect(root / sweep) for sweep in SWEEPS if (root / sweep).is_dir()}


def job_status_lines(root: Path) -> list[str]:
    """One line with every sweep's job counts by status, then one line per job that is not ok."""
    counts, bad = [], []
    for sweep, rows in job_rows(root).items():
        ok = sum(row["status"] == "ok" for row in rows)
        counts.append(f"{sweep} {ok}/{len(rows)} ok")
        bad += [f"- `{sweep}/{row['job']}`: **{row['status']}**: {row['reason']}" for row in rows
                if row["status"] != "ok"]
    return ["Job status: " + ", ".join(counts) + "." if counts else "Job status: no jobs ran.", "", *bad,
            *([""] if bad else [])]


def new_run_folder(out: Path) -> Path:
    """A fresh out/<date>_<time>[_N] folder: earlier reproductions are never overwritten."""
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1000):
        root = out / (stamp if n == 0 else f"{stamp}_{n}")
        try:
            root.mkdir(parents=True, exist_ok=False)
            return root
        except FileExistsError:
            continue
    raise RuntimeError(f"no free folder name under {out}")


def read_progress(root: Path) -> dict:
    """reproduce.json of a reproduction folder, checked; RunFolderError in one line when damaged."""
    progress = read_json(root / REPRODUCE_FILE)
    if not isinstance(progress.get("steps"), dict) or not all(
            isinstance(step, dict) and isinstance(step.get("seconds"), (int, float)) for step in progress["steps"].values()):
        raise RunFolderError(f"{root / REPRODUCE_FILE} is not a record of make reproduce (no steps)")
    return progress


def newest_unfinished(out: Path) -> Path | None:
    """The newest reproduction folder under out whose report was never written. A damaged
    reproduce.json is skipped, with a line saying so: it never blocks a new reproduction."""
    candidates = []
    for path in out.glob(f"*/{REPRODUCE_FILE}"):
        try:
            finished = read_progress(path.parent).get("finished")
        except RunFolderError as err:
            print(f"[reproduce] skipped: {err}", file=sys.stderr, flush=True)
            continue
        if not finished:
            candidates.append(path.parent)
    return max(candidates, key=lambda p: p.name) if candidates else None


def parallel_launcher(n_jobs: int) -> list[str]:
    """Hydra's joblib launcher, n_jobs at a time, when installed. Each job gets cores // n_jobs torch
    threads (at least one). Measured on 2 cores: the toy sweep took 112-115 s so against 122 s one
    job at a time on two threads, the arm 30-31 s against 33 s, MNIST 182 s against 187 s (a
    training-step benchmark showed 3 one-thread processes doing 9 011 images/s in all against 6 066
    for one two-thread process; the whole runs gain less). Runs on this machine vary by up to 25 %."""
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
        return []
    return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]


def steps(root: Path, quick: bool) -> list[tuple[str, Path, list[str]]]:
    """The reproduction's steps: (name, sweep folder, mdn-run arguments), each an experiment preset
    (conf/experiment/) swept into its own folder. The 15-job toy sweep runs 2 jobs at a time, the
    3-seed steps all 3 at once."""
    q = QUICK if quick else []
    plan = [("inverse sine, K = 1..5 x 3 seeds", "toy_k_sweep", parallel_launcher(2), q),
            ("inverse sine, Bishop's setup x 3 seeds", "toy_bishop", parallel_launcher(3), q),
            ("robot arm, K=3 x 3 seeds", "robot_arm", parallel_launcher(3), q),
            ("MNIST x 3 seeds", "mnist", parallel_launcher(3), QUICK_MNIST if quick else [])]
    return [(name, root / folder, [f"experiment={folder}", *launcher, *budget, f"hydra.sweep.dir={quote(str(root / folder))}"])
            for name, folder, launcher, budget in plan]


def mnist_missing() -> str | None:
    """Why MNIST cannot run (its files are not found and cannot be fetched), or None."""
    try:  # find (or download) the files once, before launching three jobs that need them
        from mdn_experiments.config.compose import compose

        mnist_root = compose(["dataset=mnist"]).dataset.root
        ensure_mnist_files(Path(mnist_root))
    except DataError as err:
        return f"{err}. Add it with `make reproduce MNIST_ROOT=FOLDER` (a folder holding the four .gz files)."
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mdn-reproduce", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/reproduce"))
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline in seconds")
    parser.add_argument("--fresh", action="store_true", help="start a new reproduction even if one is unfinished")
    parser.add_argument("--resume", type=Path, metavar="FOLDER", help="continue this reproduction folder")
    args = parser.parse_args(argv)

    try:
        root, progress = open_reproduction(args)
    except UserError as err:
        print(f"[reproduce] error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    try:
        run_steps(root, progress)
    finally:
        locking.release(root)


def open_reproduction(args: argparse.Namespace) -> tuple[Path, dict]:
    """The reproduction folder to write into, its lock taken, and its progress record."""
    root = args.resume or (None if args.fresh else newest_unfinished(args.out))
    if root is not None:
        try:
            locking.acquire(root, "reproduction")
        except locking.FolderBusy as err:
            raise UserError(f"{err} (a reproduction is running there; `make reproduce FRESH=1` starts another "
                            "one beside it)") from None
        progress = read_progress(root)
        print(f"[reproduce] resuming the unfinished reproduction in {root} (finished steps are kept; "
              f"`make reproduce FRESH=1` starts a new one)", flush=True)
    else:
        root = new_run_folder(args.out)
        locking.acquire(root, "reproduction")
        progress = {"quick": args.quick, "finished": False, "steps": {}}
        print(f"[reproduce] writing into {root}", flush=True)
    return root, progress


def run_steps(root: Path, progress: dict) -> None:
    """Every step not finished yet, then the report (see main)."""
    out = root.parent
    save = lambda: write_atomic(root / REPRODUCE_FILE, json.dumps(progress, indent=2) + "\n")  # noqa: E731
    save()

    mnist_note = mnist_missing()
    if mnist_note:
        print(f"[reproduce] {mnist_note}", flush=True)
    for name, sweep_dir, mdn_args in steps(root, bool(progress.get("quick"))):
        if name.startswith("MNIST") and mnist_note:
            continue
        step = progress["steps"].setdefault(name, {"seconds": 0.0, "done": False})
        if step.get("done") and sweep_finished(sweep_dir, failed_ok=True):
            print(f"[reproduce] {name}: finished earlier, kept", flush=True)
            continue
        if step.get("done"):
            print(f"[reproduce] {name}: a job folder of this finished step is gone; the step runs again for it",
                  flush=True)
        seconds, code = mdn_run(mdn_args)
        step["seconds"] += seconds
        interrupted = interrupted_jobs(sweep_dir)
        if code < 0 or code >= 128 or (code != 0 and interrupted) or code == 2:
            # stopped or killed by a signal (mdn-run itself, or a job's worker process under the
            # parallel launcher; the training states are saved; so is ours), or refused (2)
            save()
            what = "refused" if code == 2 else f"stopped ({len(interrupted)} job(s) interrupted: {', '.join(interrupted[:4])})"
            print(f"[reproduce] {what}; resume with `make reproduce` or `mdn-resume {root}`", flush=True)
            sys.exit(code if code > 0 else 128 - code)
        step["done"] = True
        save()

    timings = {name: step["seconds"] for name, step in progress["steps"].items()}
    write_atomic(root / "REPORT.md", build_report(root, timings, mnist_note))
    latest = out / "REPORT.md"
    write_atomic(latest, f"<!-- the newest report; its run folder is {root.name}/ -->\n"
                 + build_report(root, timings, mnist_note, prefix=f"{root.name}/"))
    progress["finished"] = True
    save()
    bad = [f"{sweep}/{row['job']} ({row['status']})" for sweep, rows in job_rows(root).items() for row in rows
           if row["status"] != "ok"]
    print(f"\n[reproduce] done in {sum(timings.values()) / 60:.1f} min: {root / 'REPORT.md'} "
          f"(copy: {latest})", flush=True)
    if bad:
        print(f"[reproduce] error: {len(bad)} job(s) failed or are not ok: {', '.join(bad)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
