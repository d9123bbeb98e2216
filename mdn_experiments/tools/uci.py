"""`make uci`: the UCI regression suite end to end, beside the published MC-dropout results.

Every data set of the suite, every standard split, one sweep per data set (and a second one,
dequantised, for each data set whose target is flagged as discrete), two sweeps side by side;
then REPORT.md: per data set, mean ± standard error over the splits of the MDN's, the K=1 MDN's
and the MSE network's scores beside MC dropout's published test log-likelihood, the per-split
difference and its standard error, the settings and the seconds.

Each suite lives in its own folder outputs/uci/<date>_<time>/ (earlier ones are kept) holding the
sweeps, uci.json (its steps and their state) and REPORT.md; outputs/uci/REPORT.md is a copy of
the newest report. A suite that was stopped is resumed by the next `make uci` (finished jobs are
kept, interrupted ones continue from their saved state); FRESH=1 starts anew. `--quick` runs the
first 3 splits of each data set. Extra arguments go to every mdn-run (e.g.
`make uci ARGS="hydra/launcher=slurm"` runs the jobs on SLURM). Exits non-zero, after writing the
report, when any job failed or is not ok.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path

from mdn_experiments import files
from mdn_experiments.config.safety import check_overrides, quote
from mdn_experiments.config.settings import step_budget
from mdn_experiments.datasets.table import DISCRETE_DISTINCT_SHARE, DISCRETE_TOP_SHARE
from mdn_experiments.errors import UserError, one_line
from mdn_experiments.evaluation import contract as C
from mdn_experiments.run import locking
from mdn_experiments.run.layout import UCI_FILE
from mdn_experiments.tools import launch
from mdn_experiments.tools.report import collect, write_atomic
from mdn_experiments.tools.reproduce import (
    load_jobs,
    machine,
    new_run_folder,
    newest_unfinished,
    read_progress,
    versions,
)

QUICK_SPLITS = 3  # --quick: the first splits of each data set
SIDE_BY_SIDE = 2  # sweeps running at once (one core each)
DEQUANTIZED = "dequantized"  # the suffix of a flagged data set's fair-treatment sweep


STEPS = 2000  # optimizer steps per network at most, every data set alike (early stopping may end sooner)
TRAIN_SHARE = 0.9 * 0.8  # the training part of a data set's rows: 90 % training split, less 20 % validation


def budget(n_rows: int) -> tuple[int, int]:
    """(minibatch, epochs) of a data set of n_rows examples, fixed in advance for the whole suite
    from its size alone (settings.step_budget: about 20 steps per epoch, minibatches of 32 to 1024
    examples, at most STEPS steps in all, 20 to 300 epochs): what `dataset=table` does by default."""
    n_train = max(1, round(TRAIN_SHARE * n_rows))
    return step_budget(n_train, STEPS, 300)


def suite(root: Path, names: list[str] | None = None) -> list[dict]:
    """The suite's data sets (all, or `names`) as found under root: name, splits, rows, and the
    discreteness of the target (on split 0's training part)."""
    from mdn_experiments.datasets.uci import UCI_NAMES, Uci, n_splits, uci_folder

    out = []
    for name in names or UCI_NAMES:
        folder = uci_folder(root, name)
        data = Uci(name=name, root=str(root), split=0)
        stats = data.target_stats[0]
        out.append(
            {
                "name": name,
                "splits": n_splits(folder),
                "rows": data.data_file_rows(),
                "inputs": len(data.data.feature_names),
                "discrete": stats["reason"] if stats["discrete"] else "",
                "resolution": stats["resolution"],
            }
        )
    return out


def duplicate_counts(root: Path, names: list[str] | None = None) -> list[dict]:
    """Per data set: how many test rows of the standard splits are exact copies (features and
    target) of a row of their training split, summed over the splits (the `duplicate_rows` each
    run reports), and the fewest and most in one split."""
    from mdn_experiments.datasets.uci import UCI_NAMES, Uci, n_splits, uci_folder

    out = []
    for name in names or UCI_NAMES:
        counts, tests = [], 0
        for split in range(n_splits(uci_folder(root, name))):
            data = Uci(name=name, root=str(root), split=split)
            counts.append(data.count_duplicates(data._train_rows, data._test_rows))
            tests += len(data._test_rows)
        out.append(
            {
                "name": name,
                "duplicates": sum(counts),
                "test_rows": tests,
                "splits": len(counts),
                "fewest": min(counts),
                "most": max(counts),
            }
        )
    return out


def plan(
    root: Path, sets: list[dict], quick: bool, extra: list[str], uci_root: Path
) -> list[tuple[str, Path, list[str]]]:
    """(step name, sweep folder, mdn-run arguments) of every sweep, the largest data sets first."""
    out = []
    for entry in sorted(sets, key=lambda e: -e["rows"] * e["splits"]):
        splits = min(entry["splits"], QUICK_SPLITS) if quick else entry["splits"]
        treatments = [("", [])] + ([(DEQUANTIZED, ["dataset.dequantize=true"])] if entry["discrete"] else [])
        for suffix, treatment in treatments:
            folder = root / (entry["name"] + (f"-{suffix}" if suffix else ""))
            args = [
                "-m",
                "experiment=uci",
                f"dataset.name={entry['name']}",
                f"dataset.root={quote(str(uci_root.resolve()))}",
                f"dataset.split=range(0,{splits})",
                f"trainer.batch_size={budget(entry['rows'])[0]}",
                f"trainer.epochs={budget(entry['rows'])[1]}",
                *treatment,
                *extra,
                f"hydra.sweep.dir={quote(str(folder))}",
            ]
            given = {a.split("=", 1)[0].lstrip("+~") for a in extra if "=" in a}
            args = [a for a in args if a in extra or a.split("=", 1)[0] not in given]  # extra wins
            out.append((folder.name, folder, args))
    return out


class Sweeps:
    """Runs mdn-run sweeps, SIDE_BY_SIDE at a time, passing a SIGTERM/SIGINT on to each (they save
    their training states and stop)."""

    def __init__(self) -> None:
        self.children: list = []
        self.lock = threading.Lock()
        self.stopped = False

    def forward(self, signum, frame) -> None:
        self.stopped = True
        with self.lock:
            for child in self.children:
                if child.poll() is None:
                    child.send_signal(signum)

    def run(self, steps: list[tuple[str, Path, list[str]]], progress: dict, save) -> list[tuple[str, int]]:
        queue = list(steps)
        results: list[tuple[str, int]] = []

        def worker() -> None:
            while True:
                with self.lock:
                    if not queue or self.stopped:
                        return
                    name, folder, args = queue.pop(0)
                    print(f"[uci] {name}: mdn-run {' '.join(args)}", flush=True)
                    child = launch.start("mdn_experiments.cli", args, resume=True)
                    self.children.append(child)
                    start = time.perf_counter()
                code = child.wait()
                with self.lock:
                    step = progress["steps"].setdefault(name, {"seconds": 0.0, "done": False})
                    step["seconds"] += time.perf_counter() - start
                    step["done"] = code == 0 or (code == 1 and not self.stopped)
                    results.append((name, code))
                    save()
                    print(f"[uci] {name}: exit {code} ({step['seconds']:.0f} s)", flush=True)

        previous = {s: signal.signal(s, self.forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            threads = [threading.Thread(target=worker) for _ in range(SIDE_BY_SIDE)]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return results


# --- the report --------------------------------------------------------------------------------------


def mean_se(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else math.nan
    return mean, se, n


def fmt(summary: tuple[float, float, int], digits: int = 2) -> str:
    """mean ± standard error with `digits` decimals, or 3 significant digits for small values."""
    mean, se, n = summary
    if n == 0:
        return "—"
    if 0 < abs(mean) < 0.1:
        return f"{mean:.3g} ± {se:.2g}" if math.isfinite(se) else f"{mean:.3g}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{mean:.{digits}f}"


def split_of(metrics: dict, job: str) -> int | None:
    value = metrics.get("split")
    if isinstance(value, int):
        return value
    for part in job.split(","):
        if part.startswith("dataset.split="):
            try:
                return int(part.split("=", 1)[1])
            except ValueError:
                return None
    return None


def table_rows(root: Path, sets: list[dict], uci_root: Path) -> list[dict]:
    """One row per sweep: the scores' mean ± standard error over its ok jobs, beside MC dropout."""
    from mdn_experiments.datasets.uci import reference

    rows = []
    for entry in sets:
        ref_ll = reference(uci_root / entry["name"], "ll") or []
        ref_rmse = reference(uci_root / entry["name"], "rmse") or []
        for suffix in ("", DEQUANTIZED) if entry["discrete"] else ("",):
            folder = root / (entry["name"] + (f"-{suffix}" if suffix else ""))
            jobs = load_jobs(folder) if folder.is_dir() else {}
            ok = {job: m for job, m in jobs.items() if m.get("status") == "ok"}
            splits = {job: split_of(m, job) for job, m in ok.items()}
            paired = [
                (m, splits[job]) for job, m in ok.items() if splits[job] is not None and splits[job] < len(ref_ll)
            ]

            def col(key: str, members=ok.values()) -> tuple[float, float, int]:
                return mean_se([float(m[key]) for m in members if isinstance(m.get(key), (int, float))])

            diff = mean_se([m[C.TEST_LL] - ref_ll[s] for m, s in paired if isinstance(m.get(C.TEST_LL), (int, float))])
            treatment = "dequantised" if suffix else ("as is" if entry["discrete"] else "")
            counts = win_counts(entry, suffix)
            rows.append(
                {
                    "name": entry["name"],
                    "treatment": treatment,
                    "n_ok": len(ok),
                    "n_jobs": len(collect(folder)) if folder.is_dir() else 0,
                    "mdn_ll": fmt(col(C.TEST_LL)),
                    "gauss_ll": fmt(col(C.key(C.TEST_LL, C.GAUSSIAN))),
                    "ref_ll": fmt(mean_se([ref_ll[s] for _, s in paired])),
                    "diff": fmt(diff),
                    "diff_value": diff[0],
                    "win": diff[2] > 0 and diff[0] > 0,
                    "counts": counts,
                    "mdn_rmse": fmt(col(C.RMSE_MIXTURE_MEAN)),
                    "gauss_rmse": fmt(col(C.key("rmse", C.GAUSSIAN))),
                    "mse_rmse": fmt(col(C.RMSE_BASELINE)),
                    "ref_rmse": fmt(mean_se([ref_rmse[s] for _, s in paired if s < len(ref_rmse)])),
                    "mdn_crps": fmt(col(C.CRPS), 3),
                    "gauss_crps": fmt(col(C.key(C.CRPS, C.GAUSSIAN)), 3),
                    "mse_crps": fmt(col(C.CRPS_BASELINE), 3),
                    "coverage_90": fmt(col(C.COVERAGE_90)),
                    "gauss_coverage_90": fmt(col(C.key(C.COVERAGE_90, C.GAUSSIAN))),
                    "seconds": sum(
                        float(m.get("wall_seconds") or 0) + float(m.get("data_seconds") or 0) for m in jobs.values()
                    ),
                }
            )
    return rows


def win_counts(entry: dict, suffix: str) -> bool:
    """Whether this sweep's comparison counts: the fair treatment where the target is flagged."""
    return bool(suffix) or not entry["discrete"]


def settings_text(root: Path) -> str:
    """The settings every job ran with, read back from one job's saved config."""
    from mdn_experiments.run.layout import read_yaml

    for path in sorted(root.glob("*/*/.hydra/config.yaml")):
        try:
            cfg = read_yaml(path)
        except Exception:  # noqa: BLE001 - a damaged file: try the next job
            continue
        t, m = cfg.get("trainer", {}), cfg.get("model", {})
        backbone = m.get("backbone", {})
        optimizer = {k: v for k, v in t.get("optimizer", {}).items() if not k.startswith("_")}
        members = m.get("members") or 1
        ensemble = (
            f"an ensemble of {members} MDNs of K={cfg.get('K')} (trained independently, scored as one mixture of "
            f"{members * (cfg.get('K') or 0)} components; the K=1 MDN is one network)"
            if members > 1
            else f"K={cfg.get('K')}"
        )
        return (
            f"{ensemble}, MLP {backbone.get('hidden')} {backbone.get('activation')} units, "
            f"covariance {m.get('covariance')}, sigma floor {m.get('sigma_min')} (standardised units); "
            f"{str(t.get('optimizer', {}).get('_target_', '')).rsplit('.', 1)[-1]} lr {t.get('lr')}"
            f"{''.join(f', {k} {v}' for k, v in optimizer.items())} with a {t.get('lr_schedule')} schedule, "
            f"early stopping after {t.get('patience')} epochs without a better "
            f"validation NLL (the best epoch's weights kept), gradient clipping at {t.get('grad_clip')}, "
            f"input noise {t.get('input_noise')}, target noise {t.get('target_noise')}; validation part "
            f"{cfg.get('dataset', {}).get('val_fraction')} of each training split"
        )
    return "no job ran"


def build_report(root: Path, sets: list[dict], uci_root: Path, progress: dict) -> str:
    rows = table_rows(root, sets, uci_root)
    counted = [r for r in rows if r["counts"] and r["n_ok"]]
    wins = sum(r["win"] for r in counted)
    seconds = float(progress.get("wall_seconds", 0.0))
    step_seconds = ", ".join(f"{name} {step['seconds']:.0f} s" for name, step in progress["steps"].items())
    lines = [
        "# The UCI regression suite: MDN beside MC dropout",
        "",
        f"Made by `make uci`{' --quick (the first 3 splits of each data set)' if progress.get('quick') else ''} on "
        f"{machine()}; {versions()}. Wall time {seconds / 60:.1f} min (each sweep's seconds, "
        f"{SIDE_BY_SIDE} side by side: {step_seconds}).",
        "",
        "Test log-likelihood per example in the target's original units (higher is better), mean ± standard "
        "error over the splits that ran; MC dropout: the published per-split results of Gal & Ghahramani (2016, "
        "grid search, one hidden layer) on the same splits. MDN: the suite's MDN (see the protocol below); K=1 MDN: "
        "one network predicting one Gaussian, trained beside it alike. Difference: MDN − MC dropout, per split, "
        "then mean ± standard error.",
        "",
        f"**The MDN is above MC dropout on {wins} of {len(counted)} data sets** "
        "(a discrete target counts only under its fair treatment, dequantised).",
        "",
        "| data set | target | MDN | K=1 MDN | MC dropout | MDN − MC dropout | above | ok jobs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        above = ("**yes**" if r["win"] else "no") if r["counts"] else f"({'yes' if r['win'] else 'no'}: not counted)"
        lines.append(
            f"| {r['name']} | {r['treatment'] or 'continuous'} | {r['mdn_ll']} | {r['gauss_ll']} | {r['ref_ll']} | "
            f"{r['diff']} | {above} | {r['n_ok']}/{r['n_jobs']} |"
        )
    lines += [
        "",
        "## RMSE and CRPS (original units, lower is better)",
        "",
        "RMSE of the predictive mean (the MDN's mixture mean, the K=1 MDN's mean, the MSE network); MC dropout's "
        "published RMSE beside them; CRPS of the predictive distributions (the MSE network's: its absolute error); "
        "the share of test targets inside the 90 % region (MDN, K=1 MDN); the seconds of the sweep's jobs.",
        "",
        "| data set | target | RMSE MDN | RMSE K=1 | RMSE MSE | RMSE MC dropout | CRPS MDN | CRPS K=1 | CRPS MSE "
        "| 90 % MDN | 90 % K=1 | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['treatment'] or 'continuous'} | {r['mdn_rmse']} | {r['gauss_rmse']} | "
            f"{r['mse_rmse']} | {r['ref_rmse']} | {r['mdn_crps']} | {r['gauss_crps']} | {r['mse_crps']} | "
            f"{r['coverage_90']} | {r['gauss_coverage_90']} | {r['seconds']:.0f} |"
        )
    flagged = [e for e in sets if e["discrete"]]
    lines += [
        "",
        "## Discrete targets",
        "",
        f"A target is flagged when its training values take few distinct values (under "
        f"{DISCRETE_DISTINCT_SHARE * 100:g} % of the rows) or one value holds {DISCRETE_TOP_SHARE * 100:g} % "
        "of them or more: a mixture can put spikes on such values and "
        "report a log-likelihood that says nothing about the model. Each flagged data set is shown as is and "
        "under a fair treatment, uniform dequantisation: every target (training, validation and test) gets "
        "uniform noise over one recording resolution (the smallest gap between distinct training values), so "
        "that no density can exceed 1 / resolution. MC dropout's published numbers are on the raw targets.",
        "",
    ]
    lines += [f"- {e['name']}: {e['discrete']}; resolution {e['resolution']:g}" for e in flagged] or ["- none"]
    lines += [
        "",
        "## Protocol",
        "",
        "Every setting was fixed in advance for the whole suite, chosen by the mean validation NLL of splits 0-2 "
        "of eight data sets (never a test split; docs/uci.md lists what was tried): "
        + settings_text(root)
        + f". The minibatch and the epochs are fixed per data set by its size alone (about 20 steps per epoch, "
        f"at most {STEPS} steps): "
        + ", ".join(f"{e['name']} {budget(e['rows'])[0]} x {budget(e['rows'])[1]} epochs" for e in sets)
        + ". Per split, the validation part is drawn from the training split with the run's seed; it chooses the "
        "epoch whose weights are kept. The test split is touched once, for the final score. The K=1 MDN and the "
        "MSE network have the same backbone and training.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mdn-uci", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/uci"))
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_SPLITS} splits of each data set")
    parser.add_argument("--fresh", action="store_true", help="start a new suite even if one is unfinished")
    parser.add_argument("--resume", type=Path, metavar="FOLDER", help="continue this suite's folder")
    parser.add_argument("--root", type=Path, help="the suite's data folder (default: dataset.root of dataset=uci)")
    parser.add_argument(
        "--datasets", help="comma-separated data sets of the suite to run (default: all nine)", default=""
    )
    parser.add_argument(
        "--duplicates",
        action="store_true",
        help="only count the test rows of the standard splits that are exact copies of training rows, and exit",
    )
    parser.add_argument("args", nargs="*", help="more mdn-run arguments for every job (they win over the suite's)")
    args = parser.parse_args(argv)
    args.out = args.out.expanduser().resolve()  # folders named through a link: their real folders
    args.resume = args.resume.expanduser().resolve() if args.resume else None
    names = lambda text: [n for n in str(text or "").split(",") if n]  # noqa: E731
    if args.duplicates:
        logging.getLogger("mdn_experiments.datasets").setLevel(logging.ERROR)  # the counts only
        try:
            rows = duplicate_counts(args.root or Path(_default_root()), names(args.datasets))
        except UserError as err:
            print(f"[uci] error: {one_line(err)}", file=sys.stderr)
            sys.exit(2)
        print("| data set | test rows that copy a training row | of | splits | per split |\n|---|---|---|---|---|")
        for r in rows:
            share = f"{100 * r['duplicates'] / r['test_rows']:.1f} %"
            print(
                f"| {r['name']} | {r['duplicates']} ({share}) | {r['test_rows']} | {r['splits']} | "
                f"{r['fewest']}-{r['most']} |"
            )
        return
    try:
        # the extra arguments are recorded in uci.json and replayed when the suite resumes: only
        # what the replay rules allow is taken (a run folder's rules), checked before any folder is made
        check_overrides(args.args, "make uci ARGS", replay=True)
        uci_root = args.root or Path(_default_root())
        sets = suite(uci_root, names(args.datasets))  # checked before any folder is made
        root, progress = open_suite(args)
    except UserError as err:
        print(f"[uci] error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    try:
        if progress.get("datasets") != args.datasets:  # --resume FOLDER: the suite's own choice
            sets = suite(uci_root, names(progress.get("datasets")))
        run_suite(root, progress, sets, uci_root, list(progress.get("args") or []))
    except UserError as err:  # a recorded choice the suite's data refuse (an unknown data set)
        print(f"[uci] error: {root / UCI_FILE}: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    finally:
        locking.release(root)


def _default_root() -> str:
    from mdn_experiments.config.compose import compose

    return compose(["dataset=uci"]).dataset.root


def open_suite(args: argparse.Namespace) -> tuple[Path, dict]:
    root = args.resume or (None if args.fresh else newest_unfinished(args.out, UCI_FILE))
    if root is not None:
        files.check_folder(root, "a UCI suite folder")  # no link or special file to write through
        read_progress(root, UCI_FILE)  # checked before the lock is taken: a refusal writes nothing
        try:
            locking.acquire(root, "UCI suite")
        except locking.FolderBusy as err:
            raise UserError(f"{err} (a suite is running there; `make uci FRESH=1` starts another one)") from None
        try:
            progress = read_progress(root, UCI_FILE)  # its args pass the replay rules (check_progress)
        except UserError:
            locking.release(root)
            raise
        if args.resume is None and _choices(progress) != _choices(vars(args)):
            locking.release(root)  # an unfinished suite of other choices: left as it is
            root = None
        else:
            print(f"[uci] resuming the unfinished suite in {root} (FRESH=1 starts a new one)", flush=True)
            return root, progress
    root = new_run_folder(args.out)
    locking.acquire(root, "UCI suite")
    print(f"[uci] writing into {root}", flush=True)
    return root, {**_choices(vars(args)), "finished": False, "steps": {}}


def _choices(record: dict) -> dict:
    """What makes two suites the same: quick or not, the data sets, the extra arguments."""
    return {
        "quick": bool(record.get("quick")),
        "datasets": record.get("datasets") or "",
        "args": record.get("args") or [],
    }


def run_suite(root: Path, progress: dict, sets: list[dict], uci_root: Path, extra: list[str]) -> None:
    save = lambda: write_atomic(root / UCI_FILE, json.dumps(progress, indent=2) + "\n")  # noqa: E731
    save()
    steps = [
        s for s in plan(root, sets, bool(progress.get("quick")), extra, uci_root) if not _done(progress, s[0], s[1])
    ]
    runner = Sweeps()
    start = time.perf_counter()
    try:
        results = runner.run(steps, progress, save)
    finally:
        progress["wall_seconds"] = progress.get("wall_seconds", 0.0) + time.perf_counter() - start
        save()
    refused = [name for name, code in results if code == 2]
    if runner.stopped or any(code < 0 or code >= 128 for _, code in results) or refused:
        what = f"refused ({', '.join(refused)})" if refused else "stopped"
        print(f"[uci] {what}; resume with `make uci` (finished jobs are kept)", flush=True)
        sys.exit(2 if refused else 130)
    report = build_report(root, sets, uci_root, progress)
    write_atomic(root / "REPORT.md", report)
    write_atomic(root.parent / "REPORT.md", f"<!-- the newest suite; its folder is {root.name}/ -->\n" + report)
    progress["finished"] = True
    save()
    bad = [
        f"{sweep}/{row['job']} ({row['status']})"
        for sweep in _sweeps(root)
        for row in collect(sweep)
        if row["status"] != "ok"
    ]
    print(f"\n[uci] done: {root / 'REPORT.md'} (copy: {root.parent / 'REPORT.md'})", flush=True)
    if bad:
        print(f"[uci] error: {len(bad)} job(s) failed or are not ok: {', '.join(bad[:10])}", file=sys.stderr)
        sys.exit(1)


def _sweeps(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def _done(progress: dict, name: str, folder: Path) -> bool:
    from mdn_experiments.run.layout import sweep_finished

    return bool(progress["steps"].get(name, {}).get("done")) and sweep_finished(folder, failed_ok=True)


if __name__ == "__main__":
    main()
