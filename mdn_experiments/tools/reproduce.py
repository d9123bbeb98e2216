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
import sys
import time
from pathlib import Path

from mdn_experiments import files
from mdn_experiments.config.safety import quote
from mdn_experiments.datasets.idx import DataError, ensure_mnist_files
from mdn_experiments.errors import RunFolderError, UserError, clip, one_line
from mdn_experiments.evaluation import contract as C
from mdn_experiments.run import locking
from mdn_experiments.run.layout import REPRODUCE_FILE, read_json, sweep_finished
from mdn_experiments.tools import launch
from mdn_experiments.tools.report import collect, write_atomic, write_summary

REFERENCES_FILE = "references.yaml"  # the reference values and bands, beside this module
TEMPLATE_FILE = "report.md.j2"  # REPORT.md's words, with the numbers as placeholders
FIGURES_FILE = "report_figures.yaml"  # the figures REPORT.md shows, with their captions
SWEEPS = ("toy_k_sweep", "toy_bishop", "robot_arm", "mnist")  # its sweep folders, in the order they run

# shrink every run to seconds (for tests of this pipeline, not for results)
QUICK = ["dataset.n_train=200", "dataset.n_val=100", "dataset.n_test=300", "trainer.epochs=3"]
QUICK_MNIST = ["dataset.n_train=300", "dataset.n_val=200", "dataset.n_test=300", "trainer.epochs=1"]


def mdn_run(args: list[str]) -> tuple[float, int]:
    """Run `mdn-run ARGS` in this process (launch.run_here), its output on the console; return its
    wall time and its exit status (mdn-run's: 0, 1 for a failed job or a dead worker, 2 for a
    refusal, 128 + the signal when stopped).

    In this process, not a child of its own: each job still runs in a worker process of the
    parallel launcher, and joblib keeps those workers from one step to the next, so that torch &
    co. are imported by three workers for the whole reproduction instead of by eleven (and the
    steps' own commands are not started four times): about 3 s of CPU each, which on two busy
    cores is time the reproduction waits. SIGTERM stops the step as Ctrl-C does (mdn-run's message,
    then ours); the jobs are resumed from their saved training states.
    """
    print(f"\n[reproduce] mdn-run {' '.join(args)}", flush=True)
    start = time.perf_counter()
    code = launch.run_here("mdn_experiments.cli", args, resume=True)
    return time.perf_counter() - start, code


def interrupted_jobs(sweep_dir: Path) -> list[str]:
    """Jobs of a sweep that started but neither finished (metrics.json) nor failed (error.txt)."""
    return sorted(
        p.parent.parent.name
        for p in sweep_dir.glob("*/.hydra/config.yaml")
        if not (p.parent.parent / "metrics.json").exists() and not (p.parent.parent / "error.txt").exists()
    )


def load_jobs(sweep_dir: Path) -> dict[str, dict]:
    """metrics.json of every finished job, by job folder name (a damaged one is left out here and
    listed as damaged by the job status lines)."""
    jobs = {}
    for path in sorted(sweep_dir.glob("*/metrics.json")):
        try:
            jobs[path.parent.name] = C.upgrade(read_json(path))
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

    return (
        f"Python {platform.python_version()}, torch {torch.__version__}, hydra-core {hydra.__version__}, "
        f"numpy {numpy.__version__}, matplotlib {matplotlib.__version__}"
    )


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


def reference_row(row: dict, jobs_by_sweep: dict[str, dict[str, dict]]) -> dict[str, str]:
    summary = stats(jobs_by_sweep.get(row["sweep"], {}), row["metric"], **(row.get("match") or {}))
    return {
        "what": row["what"],
        "ours": fmt(summary, percent=bool(row.get("percent"))),
        "reference": row["reference"],
        "band": band_check(row, summary[0]),
    }


def build_report(root: Path, timings: dict[str, float], mnist_note: str | None, prefix: str = "") -> str:
    """REPORT.md's text, from the template report.md.j2; figure links are prefixed with `prefix`
    (the run folder, seen from the file)."""
    import jinja2
    import yaml

    jobs_by_sweep = {name: load_jobs(root / name) for name in SWEEPS}
    toy_summary = None
    if jobs_by_sweep["toy_k_sweep"]:
        with locking.FolderLock(root / "toy_k_sweep", "sweep summary"):
            toy_summary = write_summary(root / "toy_k_sweep")
    k_choice = None
    if toy_summary and toy_summary["table"]:
        entries, chosen = toy_summary["table"]["inverse_sine"], toy_summary["chosen_k"]["inverse_sine"]
        k_choice = {"val_nll": ", ".join(f"K={e['K']}: {e['val_nll']:.3f}" for e in entries), **chosen}
    counts, bad = [], []
    for sweep, rows in job_rows(root).items():
        counts.append(f"{sweep} {sum(row['status'] == 'ok' for row in rows)}/{len(rows)} ok")
        bad += [{"sweep": sweep, **row} for row in rows if row["status"] != "ok"]
    weights = {
        "bishop_weights": n_weights(jobs_by_sweep["toy_bishop"]),
        "toy_weights": n_weights(jobs_by_sweep["toy_k_sweep"], K=3),
    }
    figures = [
        {"path": f["path"], "caption": f["caption"].format(**weights)}
        for f in yaml.safe_load(Path(__file__).with_name(FIGURES_FILE).read_text())
        if (root / f["path"]).exists()
    ]

    def s(sweep: str, metric: str, digits: int = 4, percent: bool = False, **match) -> str:
        return fmt(stats(jobs_by_sweep[sweep], metric, **match), digits, percent)

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return environment.get_template(TEMPLATE_FILE).render(
        made=f"{dt.datetime.now():%Y-%m-%d %H:%M}",
        machine=machine(),
        software=versions(),
        timings=", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()),
        total_minutes=f"{sum(timings.values()) / 60:.1f}",
        job_counts=", ".join(counts) if counts else "no jobs ran",
        bad_jobs=bad,
        reference_rows=[reference_row(row, jobs_by_sweep) for row in references()],
        mnist_note=mnist_note,
        s=s,
        ran=lambda sweep: bool(jobs_by_sweep[sweep]),
        has=lambda sweep, metric, **match: stats(jobs_by_sweep[sweep], metric, **match)[2] > 0,
        k_choice=k_choice,
        figures=figures,
        prefix=prefix,
        active_pi=C.ACTIVE_PI,
        min_mode_percent=f"{C.MIN_MODE_MASS * 100:g}",
        branch_radius=C.BRANCH_RADIUS,
    )


def job_rows(root: Path) -> dict[str, list[dict]]:
    """The summary rows (job, status, reason, ...) of every sweep this reproduction holds."""
    return {sweep: collect(root / sweep) for sweep in SWEEPS if (root / sweep).is_dir()}


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


PROGRESS_TYPES = {  # what a progress record (reproduce.json, uci.json) may hold, and of which type
    "quick": bool,
    "finished": bool,
    "steps": dict,
    "wall_seconds": (int, float),
    "datasets": str,
    "args": list,
}
MAX_STEPS = 1000


def check_progress(progress: dict, path: Path) -> dict:
    """A progress record read back from a folder, as data: known keys of known types, steps as
    {name: {seconds, done}}, and mdn-run arguments (uci.json's `args`) that pass the same replay
    rules as a run folder's recorded overrides (safety.check_overrides, replay=True): a resumed
    suite replays only what a user could have typed and the rules allow. RunFolderError otherwise."""
    from mdn_experiments.config.safety import check_overrides

    def refuse(what: str) -> RunFolderError:
        return RunFolderError(f"{path}: {what}: not a record of make reproduce or make uci")

    for key, value in progress.items():
        if key not in PROGRESS_TYPES:
            raise refuse(f"unknown key {clip(key, 80)!r}")
        wanted = PROGRESS_TYPES[key]
        if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
            raise refuse(f"{key} holds {clip(repr(value), 80)}")
    steps = progress.get("steps")
    if not isinstance(steps, dict) or len(steps) > MAX_STEPS:
        raise refuse("no steps")
    for name, step in steps.items():
        if not (
            isinstance(step, dict)
            and set(step) <= {"seconds", "done"}
            and isinstance(step.get("seconds"), (int, float))
            and not isinstance(step.get("seconds"), bool)
            and math.isfinite(step["seconds"])
            and step["seconds"] >= 0
            and isinstance(step.get("done", False), bool)
        ):
            raise refuse(f"step {clip(name, 80)!r} holds {clip(repr(step), 80)}")
    if not math.isfinite(progress.get("wall_seconds", 0.0)):
        raise refuse("wall_seconds is not finite")
    if "args" in progress:
        check_overrides(progress["args"], str(path), replay=True)
    return progress


def read_progress(root: Path, name: str = REPRODUCE_FILE) -> dict:
    """reproduce.json (or `name`, e.g. uci.json) of a reproduction folder, checked as data
    (check_progress); RunFolderError (or UnsafeConfig) in one line when damaged or tampered with."""
    return check_progress(read_json(root / name), root / name)


def newest_unfinished(out: Path, name: str = REPRODUCE_FILE) -> Path | None:
    """The newest reproduction folder under out (holding `name`) whose report was never written. A
    damaged record is skipped, with a line saying so: it never blocks a new reproduction."""
    candidates = []
    for path in out.glob(f"*/{name}"):
        try:
            finished = read_progress(path.parent, name).get("finished")
        except UserError as err:
            print(f"[{Path(name).stem}] skipped: {one_line(err)}", file=sys.stderr, flush=True)
            continue
        if not finished:
            candidates.append(path.parent)
    return max(candidates, key=lambda p: p.name) if candidates else None


def parallel_launcher(n_jobs: int) -> list[str]:
    """Hydra's joblib launcher, n_jobs at a time, when installed. Each job gets cores // n_jobs torch
    threads (at least one): small networks keep one thread busier than two, so several one-thread
    jobs side by side get more done than one job on every core (docs/studies.md has the timings)."""
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
        return []
    return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]


def steps(root: Path, quick: bool) -> list[tuple[str, Path, list[str]]]:
    """The reproduction's steps: (name, sweep folder, mdn-run arguments), each an experiment preset
    (conf/experiment/: one tuned run) swept by a sweep option (conf/sweep/) into its own folder.
    The 15-job toy sweep runs 2 jobs at a time, the 3-seed steps all 3 at once."""
    q = QUICK if quick else []
    plan = [
        (
            "inverse sine, K = 1..5 x 3 seeds",
            "toy_k_sweep",
            # the grid from the largest K down: the longest jobs first, so that the sweep ends on a
            # short one and a core waits the least (same jobs and folders as sweep=k_grid's order)
            ["experiment=inverse_sine", "sweep=k_grid", "K=5,4,3,2,1"],
            parallel_launcher(2),
            q,
        ),
        (
            "inverse sine, Bishop's setup x 3 seeds",
            "toy_bishop",
            ["experiment=toy_bishop", "sweep=seeds"],
            parallel_launcher(3),
            q,
        ),
        ("robot arm, K=3 x 3 seeds", "robot_arm", ["experiment=robot_arm", "sweep=seeds"], parallel_launcher(3), q),
        (
            "MNIST x 3 seeds",
            "mnist",
            ["experiment=mnist", "sweep=seeds"],
            parallel_launcher(3),
            QUICK_MNIST if quick else [],
        ),
    ]
    return [
        (name, root / folder, [*preset, *launcher, *budget, f"hydra.sweep.dir={quote(str(root / folder))}"])
        for name, folder, preset, launcher, budget in plan
    ]


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
    # the jobs run in workers of this process, which inherit its sys.path: the working folder is
    # kept off it, as `python -P` keeps it off for every command launch.py starts
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
    args.out = args.out.expanduser().resolve()  # folders named through a link: their real folders
    args.resume = args.resume.expanduser().resolve() if args.resume else None
    try:
        root, progress = open_reproduction(args)
    except UserError as err:
        print(f"[reproduce] error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    try:
        run_steps(root, progress)
    finally:
        locking.release(root)


def open_reproduction(args: argparse.Namespace) -> tuple[Path, dict]:
    """The reproduction folder to write into, its lock taken, and its progress record."""
    root = args.resume or (None if args.fresh else newest_unfinished(args.out))
    if root is not None:
        files.check_folder(root, "a reproduction folder")  # no link or special file to write through
        read_progress(root)  # checked before the lock is taken: a refusal writes nothing
        try:
            locking.acquire(root, "reproduction")
        except locking.FolderBusy as err:
            raise UserError(
                f"{err} (a reproduction is running there; `make reproduce FRESH=1` starts another one beside it)"
            ) from None
        try:
            progress = read_progress(root)
        except UserError:
            locking.release(root)
            raise
        print(
            f"[reproduce] resuming the unfinished reproduction in {root} (finished steps are kept; "
            f"`make reproduce FRESH=1` starts a new one)",
            flush=True,
        )
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
            print(
                f"[reproduce] {name}: a job folder of this finished step is gone; the step runs again for it",
                flush=True,
            )
        seconds, code = mdn_run(mdn_args)
        step["seconds"] += seconds
        interrupted = interrupted_jobs(sweep_dir)
        if code < 0 or code >= 128 or (code != 0 and interrupted) or code == 2:
            # stopped or killed by a signal (mdn-run itself, or a job's worker process under the
            # parallel launcher; the training states are saved; so is ours), or refused (2)
            save()
            what = (
                "refused"
                if code == 2
                else f"stopped ({len(interrupted)} job(s) interrupted: {', '.join(interrupted[:4])})"
            )
            print(f"[reproduce] {what}; resume with `make reproduce` or `mdn-resume {root}`", flush=True)
            sys.exit(code if code > 0 else 128 - code)
        step["done"] = True
        save()

    timings = {name: step["seconds"] for name, step in progress["steps"].items()}
    write_atomic(root / "REPORT.md", build_report(root, timings, mnist_note))
    latest = out / "REPORT.md"
    write_atomic(
        latest,
        f"<!-- the newest report; its run folder is {root.name}/ -->\n"
        + build_report(root, timings, mnist_note, prefix=f"{root.name}/"),
    )
    progress["finished"] = True
    save()
    bad = [
        f"{sweep}/{row['job']} ({row['status']})"
        for sweep, rows in job_rows(root).items()
        for row in rows
        if row["status"] != "ok"
    ]
    print(
        f"\n[reproduce] done in {sum(timings.values()) / 60:.1f} min: {root / 'REPORT.md'} (copy: {latest})", flush=True
    )
    if bad:
        print(f"[reproduce] error: {len(bad)} job(s) failed or are not ok: {', '.join(bad)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
