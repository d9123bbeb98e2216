"""Sweep summaries: one row per job, mean +- std over seeds per K, the K chosen by validation NLL
and by BIC, and the k_sweep figure. Written at the end of every multirun by a Hydra callback,
and rebuilt for any sweep folder (finished, interrupted or partly failed) by `mdn-report PATH`."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

SUMMARY_COLUMNS = ["job", "dataset", "K", "seed", "status", "test_nll", "val_nll", "train_nll", "main_metric",
                   "main_value", "effective_components", "dead_components", "n_params", "n_train", "bic", "reason"]
# a job's status: ok, diverged, degenerate (from its metrics.json), failed (error.txt: an exception),
# incomplete (neither: interrupted, still running, or killed). Only `ok` jobs enter the means.
STATUSES = ("ok", "diverged", "degenerate", "failed", "incomplete")
SWEEP_DONE_FILE = "sweep_done.json"  # written when a multirun ends; mdn-resume reads it
FAILED_JOBS: list[str] = []  # filled by the callback; the CLI exits non-zero when it is not empty


def bic(train_nll: float, n_train: int, n_params: int) -> float:
    """Bayesian information criterion from the per-sample training NLL (nats):
    BIC = -2 ln L + p ln n = 2 n NLL + p ln n. Lower is better."""
    return 2.0 * n_train * train_nll + n_params * math.log(n_train)


def _job_row(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text()) or {}
    row: dict[str, Any] = {column: "" for column in SUMMARY_COLUMNS}
    row.update(job=str(job_dir.relative_to(sweep_dir)), dataset=config.get("dataset", {}).get("name", ""),
               K=config.get("K", ""), seed=config.get("seed", ""))
    metrics_path, error_path = job_dir / "metrics.json", job_dir / "error.txt"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        main = metrics.get("main_metric", "test_nll")
        row.update(status=metrics.get("status", "ok"), reason=metrics.get("status_reason", ""),
                   test_nll=metrics["test_nll"], val_nll=metrics["val_nll"],
                   train_nll=metrics["train_nll"], main_metric=main, main_value=metrics.get(main, ""),
                   n_params=metrics["n_params"], n_train=metrics["n_train"],
                   # runs from before the health metrics existed leave these empty
                   effective_components=metrics.get("effective_components", math.nan),
                   dead_components=metrics.get("dead_components", math.nan),
                   bic=bic(metrics["train_nll"], metrics["n_train"], metrics["n_params"]))
    elif error_path.exists():
        row.update(status="failed", reason=error_path.read_text().strip().splitlines()[0][:200])
    else:
        row.update(status="incomplete", reason="no metrics.json: interrupted (mdn-resume continues it), "
                                               "still running, or killed")
    return row


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder (any folder under sweep_dir holding .hydra/config.yaml)."""
    jobs = sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml") if p.parent.parent != sweep_dir)
    return [_job_row(job, sweep_dir) for job in jobs]


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def aggregate(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per dataset, per K: mean and std over the jobs (seeds) whose status is ok; `n_not_ok`
    counts the others of that K (never averaged in)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    not_ok: dict[tuple, int] = defaultdict(int)
    for row in rows:
        if row["status"] == "ok":
            groups[(row["dataset"], row["K"])].append(row)
        else:
            not_ok[(row["dataset"], row["K"])] += 1
    table: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (dataset, K), members in sorted(groups.items()):
        entry: dict[str, Any] = {"K": K, "n_seeds": len(members), "n_not_ok": not_ok[(dataset, K)],
                                 "main_metric": members[0]["main_metric"]}
        for key in ("test_nll", "val_nll", "main_value", "bic", "effective_components", "dead_components"):
            entry[key], entry[f"{key}_std"] = _mean_std([float(m[key]) for m in members])
        table[dataset].append(entry)
    return dict(table)


def chosen_k(entries: list[dict[str, Any]]) -> dict[str, int]:
    return {"by_val_nll": min(entries, key=lambda e: e["val_nll"])["K"],
            "by_bic": min(entries, key=lambda e: e["bic"])["K"]}


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def write_summary(sweep_dir: Path | str) -> dict[str, Any]:
    """Write summary.csv, summary.md and k_sweep.png into sweep_dir; return what was found."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    with (sweep_dir / "summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = aggregate(rows)
    choices = {dataset: chosen_k(entries) for dataset, entries in table.items()}

    lines = [f"# Sweep summary: {sweep_dir}", "",
             f"{len(rows)} jobs: " + ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in STATUSES)
             + ". Means are over the ok jobs only; the others are listed under Jobs with the reason.", ""]
    for dataset, entries in table.items():
        main = entries[0]["main_metric"]
        lines += [f"## {dataset}: mean ± std over seeds (ok jobs)", "",
                  f"| K | seeds ok | not ok | test NLL | val NLL | {main} | effective components | dead | BIC (train) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in entries:
            lines.append(f"| {e['K']} | {e['n_seeds']} | {e['n_not_ok']} | "
                         f"{e['test_nll']:.4f} ± {e['test_nll_std']:.4f} | "
                         f"{e['val_nll']:.4f} ± {e['val_nll_std']:.4f} | {e['main_value']:.4g} ± "
                         f"{e['main_value_std']:.2g} | {e['effective_components']:.2f} ± "
                         f"{e['effective_components_std']:.2f} | {e['dead_components']:.1f} | "
                         f"{e['bic']:.1f} ± {e['bic_std']:.1f} |")
        c = choices[dataset]
        lines += ["", f"K chosen by validation NLL: **{c['by_val_nll']}**; by BIC: **{c['by_bic']}**.", ""]
    lines += ["## Jobs", "", "| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in SUMMARY_COLUMNS) + " |" for r in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    if table:
        from mdn_experiments import plots  # matplotlib only when there is something to draw

        plots.k_sweep(sweep_dir / "k_sweep.png", table)
    return {"rows": rows, "table": table, "chosen_k": choices}


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep when the multirun ends."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        result = write_summary(sweep_dir)
        (sweep_dir / SWEEP_DONE_FILE).write_text(json.dumps(
            {"jobs": len(result["rows"]), **{s: sum(r["status"] == s for r in result["rows"]) for s in STATUSES}}) + "\n")
        failed = [row["job"] for row in result["rows"] if row["status"] != "ok"]
        FAILED_JOBS[:] = failed
        for dataset, choice in result["chosen_k"].items():
            print(f"[mdn-run] {dataset}: K chosen by validation NLL = {choice['by_val_nll']}, "
                  f"by BIC = {choice['by_bic']}")
        print(f"[mdn-run] sweep summary: {sweep_dir / 'summary.md'}"
              + (f" ({len(failed)} of {len(result['rows'])} jobs are not ok: {', '.join(failed)})"
                 if failed else ""), flush=True)


def main(argv: list[str] | None = None) -> None:
    """`mdn-report PATH`: rebuild the summary of a sweep folder."""
    parser = argparse.ArgumentParser(prog="mdn-report", description=__doc__)
    parser.add_argument("path", type=Path, help="a sweep folder (outputs/multirun/<date>_<time>)")
    args = parser.parse_args(argv)
    if not args.path.is_dir():
        print(f"mdn-report: error: {args.path} is not a folder", file=sys.stderr)
        sys.exit(2)
    result = write_summary(args.path)
    if not result["rows"]:
        print(f"mdn-report: error: {args.path} holds no job folders (no */.hydra/config.yaml)", file=sys.stderr)
        sys.exit(2)
    print(f"mdn-report: {len(result['rows'])} jobs summarised in {args.path / 'summary.md'}")


if __name__ == "__main__":
    main()
