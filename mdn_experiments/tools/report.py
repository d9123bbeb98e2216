"""Sweep summaries: one row per job, mean +- std over seeds per K, the K chosen by validation NLL
and by BIC, and the k_sweep figure. Written at the end of every multirun by a Hydra callback,
and rebuilt for any sweep folder (finished, interrupted or partly failed) by `mdn-report PATH`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from mdn_experiments import files
from mdn_experiments.errors import RunFolderError, UserError, clip, one_line
from mdn_experiments.evaluation.contract import RUN_STATUSES, STATUSES, upgrade
from mdn_experiments.run import locking
from mdn_experiments.run.layout import SWEEP_DONE_FILE, job_folders, read_json, read_yaml
from mdn_experiments.search import study as search_study
from mdn_experiments.search import summary as search_summary

SUMMARY_COLUMNS = [
    "job",
    "dataset",
    "K",
    "seed",
    "status",
    "test_nll",
    "val_nll",
    "train_nll",
    "main_metric",
    "main_value",
    "effective_components",
    "dead_components",
    "n_params",
    "n_train",
    "bic",
    "reason",
]
SUMMARY_FILES = ("summary.md", "summary.csv", "k_sweep.png")  # what a summary writes into a sweep folder
SUMMARY_TITLE = "# Sweep summary"
FAILED_JOBS: list[str] = []  # filled by the callback; the CLI exits non-zero when it is not empty
METRIC_KEYS = ("test_nll", "val_nll", "train_nll", "n_params", "n_train")  # a summary row needs these


def bic(train_nll: float, n_train: int, n_params: int) -> float:
    """Bayesian information criterion from the per-sample training NLL (nats):
    BIC = -2 ln L + p ln n = 2 n NLL + p ln n. Lower is better."""
    return 2.0 * n_train * train_nll + n_params * math.log(n_train)


def _plain(value: Any, kinds: tuple[type, ...], where: str) -> Any:
    """A value read back from a job's files, of one of `kinds` (bools are not numbers here), or a
    RunFolderError naming where it came from (the job is then a `damaged` row)."""
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    raise RunFolderError(f"{where} holds {clip(repr(value), 60)}, not a {' or '.join(k.__name__ for k in kinds)}")


def _job_row(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {column: "" for column in SUMMARY_COLUMNS}
    row["job"] = str(job_dir.relative_to(sweep_dir))
    try:
        config = read_yaml(job_dir / ".hydra" / "config.yaml")
        dataset = config.get("dataset")
        where = ".hydra/config.yaml: "
        row.update(
            dataset=_plain(dataset.get("name", ""), (str,), where + "dataset.name")
            if isinstance(dataset, dict)
            else "",
            K=_plain(config["K"], (int,), where + "K") if "K" in config else "",
            seed=_plain(config["seed"], (int,), where + "seed") if "seed" in config else "",
        )
        metrics_path, error_path = job_dir / "metrics.json", job_dir / "error.txt"
        if metrics_path.exists() or metrics_path.is_symlink():
            metrics = upgrade(read_json(metrics_path))
            # a search trial (search.role=trial) is scored on its validation part: it has no test_nll
            trial = metrics.get("scored_on") == "validation"
            needed = [key for key in METRIC_KEYS if not (trial and key == "test_nll")]
            missing = [key for key in needed if not isinstance(metrics.get(key), (int, float))]
            status = _plain(metrics.get("status", "ok"), (str,), "metrics.json: status")
            if status not in RUN_STATUSES:
                raise RunFolderError(f"metrics.json: status {clip(status, 40)!r} is none of {', '.join(RUN_STATUSES)}")
            if missing and status == "ok":
                raise RunFolderError(f"{metrics_path} has no number for {', '.join(missing)}")
            number = lambda key: metrics[key] if isinstance(metrics.get(key), (int, float)) else math.nan  # noqa: E731
            main = _plain(metrics.get("main_metric", "test_nll"), (str,), "metrics.json: main_metric")
            row.update(
                status=status,
                reason=clip(metrics.get("status_reason", ""), 200),
                test_nll=number("test_nll"),
                val_nll=number("val_nll"),
                train_nll=number("train_nll"),
                main_metric=main,
                main_value=number(main),
                n_params=number("n_params"),
                n_train=number("n_train"),
                # runs from before the health metrics existed leave these empty
                effective_components=number("effective_components"),
                dead_components=number("dead_components"),
                bic=bic(number("train_nll"), number("n_train"), number("n_params")) if not missing else math.nan,
            )
        elif error_path.exists() or error_path.is_symlink():
            try:
                lines = files.read_bytes(error_path).decode("utf-8", "replace").strip().splitlines()
            except OSError as err:
                raise RunFolderError(f"{error_path} cannot be read ({err.strerror})") from None
            row.update(
                status="failed", reason=clip(lines[0], 200) if lines else "error.txt is empty (no reason recorded)"
            )
        else:
            row.update(
                status="incomplete",
                reason="no metrics.json: interrupted (mdn-resume continues it), still running, or killed",
            )
    except RunFolderError as err:  # the job's own files, named from its folder
        row.update(status="damaged", reason=clip(" ".join(str(err).replace(f"{job_dir}/", "").split()), 200))
    return row


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder (see job_folders); a damaged job is a row with status `damaged`."""
    return [_job_row(job, Path(sweep_dir)) for job in job_folders(sweep_dir)]


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
    order = lambda item: (item[0][0], (0, item[0][1]) if isinstance(item[0][1], int) else (1, str(item[0][1])))  # noqa: E731
    for (dataset, K), members in sorted(groups.items(), key=order):
        entry: dict[str, Any] = {
            "K": K,
            "n_seeds": len(members),
            "n_not_ok": not_ok[(dataset, K)],
            "main_metric": members[0]["main_metric"],
        }
        for key in ("test_nll", "val_nll", "main_value", "bic", "effective_components", "dead_components"):
            entry[key], entry[f"{key}_std"] = _mean_std([float(m[key]) for m in members])
        table[dataset].append(entry)
    return dict(table)


def chosen_k(entries: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "by_val_nll": min(entries, key=lambda e: e["val_nll"])["K"],
        "by_bic": min(entries, key=lambda e: e["bic"])["K"],
    }


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def summary_text(sweep_dir: Path, rows: list[dict[str, Any]]) -> tuple[str, str, dict, dict]:
    """summary.md's and summary.csv's text, the table per dataset and the K chosen, from the rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    table = aggregate(rows)
    choices = {dataset: chosen_k(entries) for dataset, entries in table.items()}

    lines = [
        f"{SUMMARY_TITLE}: {sweep_dir}",
        "",
        f"{len(rows)} jobs: "
        + ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in STATUSES)
        + ". Means are over the ok jobs only; the others are listed under Jobs with the reason.",
        "",
    ]
    for dataset, entries in table.items():
        main = entries[0]["main_metric"]
        lines += [
            f"## {dataset}: mean ± std over seeds (ok jobs)",
            "",
            f"| K | seeds ok | not ok | test NLL | val NLL | {main} | effective components | dead | BIC (train) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for e in entries:
            lines.append(
                f"| {e['K']} | {e['n_seeds']} | {e['n_not_ok']} | "
                + (
                    f"{e['test_nll']:.4f} ± {e['test_nll_std']:.4f} | "
                    if not math.isnan(e["test_nll"])
                    else "— (validation only) | "  # search trials: never scored on the test part
                )
                + f"{e['val_nll']:.4f} ± {e['val_nll_std']:.4f} | {e['main_value']:.4g} ± "
                f"{e['main_value_std']:.2g} | {e['effective_components']:.2f} ± "
                f"{e['effective_components_std']:.2f} | {e['dead_components']:.1f} | "
                f"{e['bic']:.1f} ± {e['bic_std']:.1f} |"
            )
        c = choices[dataset]
        lines += ["", f"K chosen by validation NLL: **{c['by_val_nll']}**; by BIC: **{c['by_bic']}**.", ""]
    lines += ["## Jobs", "", "| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]).replace("|", "\\|") for c in SUMMARY_COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n", buffer.getvalue(), table, choices


def owned(path: Path, title: str = SUMMARY_TITLE, csv_start: str | None = None) -> bool:
    """Whether a summary file may be overwritten: absent, or written by a summary (its first line:
    `title` for the markdown, the sweep summary's header, or `csv_start` for a search's CSV)."""
    if not path.exists() and not path.is_symlink():
        return True
    if path.suffix == ".png":
        return owned(path.with_name("summary.md"), title) and path.with_name("summary.md").exists()
    try:
        first = files.read_bytes(path).decode("utf-8", "replace").split("\n", 1)[0]
    except (OSError, UserError):  # unreadable, a link, a special file, too large: not a summary of ours
        return False
    if path.suffix == ".md":
        return first.startswith(title)
    return first.startswith(csv_start) if csv_start else first.strip() == ",".join(SUMMARY_COLUMNS)


def write_atomic(path: Path, text: str) -> None:
    """path's new text, whole or not at all, never through a link (files.write_text)."""
    files.write_text(path, text)


def write_summary(sweep_dir: Path | str, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write summary.csv, summary.md and k_sweep.png into sweep_dir; return what was found.
    k_sweep.png draws against K: a sweep with one K of finished jobs per dataset (over seeds, say)
    gets none, and an earlier summary's is removed.

    Checks first, writes second: a summary file that was not written by a summary (a user's own
    summary.md) is never overwritten (RunFolderError), and each file is replaced whole or not at
    all. The caller holds the sweep's lock (the sweep itself, or mdn-report)."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir) if rows is None else rows
    markdown, csv_text, table, choices = summary_text(sweep_dir, rows)
    foreign = [name for name in SUMMARY_FILES if not owned(sweep_dir / name)]
    if foreign:
        raise RunFolderError(
            f"{sweep_dir / foreign[0]} was not written by a sweep summary: it is left as it is, "
            f"and no summary was written (move it away to get one)"
        )
    write_atomic(sweep_dir / "summary.csv", csv_text)
    write_atomic(sweep_dir / "summary.md", markdown)
    figure = sweep_dir / "k_sweep.png"
    if any(len(entries) > 1 for entries in table.values()):
        from mdn_experiments.figures import common  # matplotlib only when there is something to draw

        common.k_sweep(figure, table=table)
    elif figure.is_file() and not figure.is_symlink():  # an earlier summary's (owned, checked above): stale now
        figure.unlink()
    return {"rows": rows, "table": table, "chosen_k": choices, "markdown": markdown}


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep when the multirun ends."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()  # the real folder (no write goes through a link)
        if search_study.is_search(sweep_dir):
            self._search_end(sweep_dir)
            return
        try:
            result = write_summary(sweep_dir)
        except (UserError, OSError) as err:
            rows = collect(sweep_dir)
            result = {"rows": rows, "chosen_k": {}}
            print(f"[mdn-run] warning: the sweep summary was not written: {err}", file=sys.stderr, flush=True)
        _write_done(sweep_dir, result["rows"])
        failed = [row["job"] for row in result["rows"] if row["status"] != "ok"]
        FAILED_JOBS[:] = failed
        for dataset, choice in result["chosen_k"].items():
            print(
                f"[mdn-run] {dataset}: K chosen by validation NLL = {choice['by_val_nll']}, by BIC = {choice['by_bic']}"
            )
        print(
            f"[mdn-run] sweep summary: {sweep_dir / 'summary.md'}"
            + (f" ({len(failed)} of {len(result['rows'])} jobs are not ok: {', '.join(failed)})" if failed else ""),
            flush=True,
        )

    @staticmethod
    def _search_end(sweep_dir: Path) -> None:
        """A search ended: its summary (search.summary), sweep_done.json naming its finished job
        folders; the command fails when the final run did not end ok."""
        try:
            result = search_summary.write(sweep_dir)
        except (UserError, OSError) as err:  # as for a sweep: the jobs' results stay, the summary is said missing
            print(f"[mdn-run] warning: the search summary was not written: {err}", file=sys.stderr, flush=True)
            FAILED_JOBS[:] = [search_study.FINAL]
            return
        _write_done(sweep_dir, result["rows"])
        status = result["final"].get("status", "missing")
        FAILED_JOBS[:] = [] if status == "ok" else [search_study.FINAL]
        sentence = result["final"].get("foil_sentence")
        if isinstance(sentence, str):
            print(f"[mdn-run] {sentence}")
        print(
            f"[mdn-run] search summary: {sweep_dir / 'summary.md'}; the chosen settings: "
            f"{sweep_dir / search_study.BEST_FILE}; the final run: {sweep_dir / search_study.FINAL} (status {status})",
            flush=True,
        )


def _write_done(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_atomic(
        sweep_dir / SWEEP_DONE_FILE,
        json.dumps(
            {
                "jobs": len(rows),
                "job_folders": [row["job"] for row in rows],
                **{s: sum(r["status"] == s for r in rows) for s in STATUSES},
            }
        )
        + "\n",
    )


def main(argv: list[str] | None = None) -> None:
    """`mdn-report PATH`: rebuild the summary of a sweep folder (or of a search)."""
    parser = argparse.ArgumentParser(prog="mdn-report", description=__doc__)
    parser.add_argument("path", type=Path, help="a sweep folder (outputs/multirun/<date>_<time>)")
    args = parser.parse_args(argv)

    def fail(message: str, code: int = 2) -> None:
        print(f"mdn-report: error: {one_line(message)}", file=sys.stderr)
        sys.exit(code)

    args.path = args.path.expanduser().resolve()  # a folder named through a link: its real folder

    if not args.path.is_dir():
        fail(f"{args.path} is not a folder: give a sweep folder (outputs/multirun/<date>_<time>)")
    if search_study.is_search(args.path):
        _report_search(args.path, fail)
        return
    rows = collect(args.path)
    if not rows:  # checked before anything is written
        fail(f"{args.path} holds no job folders (no */.hydra/): nothing to summarise, nothing written")
    damaged = [row["job"] for row in rows if row["status"] == "damaged"]
    try:
        files.check_folder(args.path, "a sweep folder")  # no link or special file to write through
        foreign = [name for name in SUMMARY_FILES if not owned(args.path / name)]
        if foreign:  # checked before the lock is taken: a refusal writes nothing at all
            raise RunFolderError(
                f"{args.path / foreign[0]} was not written by a sweep summary: it is left as it "
                "is (move it away to get a summary written)"
            )
        with locking.FolderLock(args.path, "sweep summary"):
            result = write_summary(args.path, rows)
    except (UserError, OSError) as err:  # busy, read-only, full, or a file that is not ours
        markdown = summary_text(args.path, rows)[0]
        try:
            sys.stdout.write(markdown)
            sys.stdout.flush()
        except BrokenPipeError:
            pass
        reason = err if isinstance(err, UserError) else f"{err.strerror or err} ({err.filename or args.path})"
        fail(f"the summary above was not written into {args.path}: {reason}", 1)
    print(
        f"mdn-report: {len(result['rows'])} jobs summarised in {args.path / 'summary.md'}"
        + (f"; {len(damaged)} damaged (marked in the summary): {', '.join(damaged[:5])}" if damaged else "")
    )


def _report_search(path: Path, fail) -> None:
    """mdn-report on a search's folder: its summary again, from the study and the trial folders."""
    try:
        files.check_folder(path, "a search folder")
        foreign = [
            name
            for name in search_summary.SEARCH_SUMMARY_FILES[:2]  # the figure goes with them
            if not owned(path / name, search_summary.SUMMARY_TITLE, search_summary.CSV_START)
        ]
        if foreign:
            raise RunFolderError(
                f"{path / foreign[0]} was not written by a search summary: it is left as it is (move it away to get a "
                "summary written)"
            )
        with locking.FolderLock(path, "search summary"):
            result = search_summary.write(path)
    except (UserError, OSError) as err:
        reason = err if isinstance(err, UserError) else f"{err.strerror or err} ({err.filename or path})"
        fail(f"the search summary was not written into {path}: {reason}", 1)
    print(f"mdn-report: {len(result['rows'])} job folders of a search summarised in {path / 'summary.md'}")


if __name__ == "__main__":
    main()
