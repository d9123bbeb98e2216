"""A search's summary: trials.csv, summary.md (the trials ranked by validation NLL, the chosen
settings, the final run's test scores) and search.png, from the study and the trial folders.
Written when the search ends (the sweep's summary callback) and by `mdn-report SWEEP`."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from mdn_experiments import files
from mdn_experiments.errors import RunFolderError, UserError
from mdn_experiments.search.study import BEST_FILE, FINAL, TRIALS_CSV, open_study, trial_folder

SEARCH_SUMMARY_FILES = ("summary.md", TRIALS_CSV, "search.png")
SUMMARY_TITLE = "# Search summary"
CSV_START = "rank,trial,status,val_nll,"  # trials.csv's header begins so (the searched keys follow)
FINAL_KEYS = ("test_nll", "test_ll", "test_ll_gaussian", "rmse", "rmse_baseline", "crps", "coverage_90")


def _metrics(folder: Path) -> dict[str, Any]:
    try:
        return files.read_json(folder / "metrics.json")
    except (RunFolderError, UserError, OSError):
        return {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def trial_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per trial of the study: number, status, validation NLL, settings, seconds, folder."""
    from optuna.trial import TrialState

    study = open_study(sweep_dir)
    rows = []
    for t in study.trials:
        folder = Path(sweep_dir) / trial_folder(t.number)
        metrics = _metrics(folder)
        status = {TrialState.COMPLETE: "ok", TrialState.RUNNING: "incomplete"}.get(t.state, "failed")
        if status == "failed" and isinstance(metrics.get("status"), str):
            status = metrics["status"]  # diverged, degenerate, ...
        rows.append(
            {
                "trial": t.number,
                "status": status,
                "val_nll": t.value if t.state == TrialState.COMPLETE else None,
                "K": metrics.get("K", t.params.get("K")),
                "settings": dict(t.params),
                "seconds": _number(metrics.get("wall_seconds")),
                "job": trial_folder(t.number),
            }
        )
    return rows


def write(sweep_dir: Path) -> dict[str, Any]:
    """Write the search's summary files; returns {"rows": one per job folder with a status (trials
    and the final run), "best": the chosen trial's number or None, "final": its metrics or {}}."""
    sweep_dir = Path(sweep_dir)
    rows = trial_rows(sweep_dir)
    ranked = sorted((r for r in rows if r["val_nll"] is not None), key=lambda r: (r["val_nll"], r["trial"]))
    best = ranked[0]["trial"] if ranked else None
    final = _metrics(sweep_dir / FINAL)
    keys = sorted({k for r in rows for k in r["settings"]})

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_START.rstrip(",").split(","), *keys, "seconds", "job"])
    rank = {r["trial"]: i + 1 for i, r in enumerate(ranked)}
    for r in sorted(rows, key=lambda r: (rank.get(r["trial"], math.inf), r["trial"])):
        writer.writerow(
            [rank.get(r["trial"], ""), r["trial"], r["status"], r["val_nll"] if r["val_nll"] is not None else ""]
            + [r["settings"].get(k, "") for k in keys]
            + [f"{r['seconds']:.1f}" if r["seconds"] is not None else "", r["job"]]
        )
    files.write_text(sweep_dir / TRIALS_CSV, out.getvalue())
    files.write_text(sweep_dir / "summary.md", _markdown(sweep_dir, rows, ranked, keys, final))
    if ranked:
        from mdn_experiments.figures.search import search_trials  # matplotlib only here

        search_trials(
            sweep_dir / "search.png",
            trial=[r["trial"] for r in ranked],
            val_nll=[r["val_nll"] for r in ranked],
            K=[r["K"] if isinstance(r["K"], int) else 0 for r in ranked],
            best=best,
            title=f"search: {len(rows)} trials, validation NLL (lower is better)",
        )
    jobs = [{"job": r["job"], "status": r["status"]} for r in rows if (sweep_dir / r["job"] / "metrics.json").exists()]
    if final:
        jobs.append({"job": FINAL, "status": final.get("status", "damaged")})
    return {"rows": jobs, "best": best, "final": final}


def _cell(value: Any) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(sweep_dir: Path, rows, ranked, keys, final: dict[str, Any]) -> str:
    failed = [r for r in rows if r["status"] not in ("ok", "incomplete")]
    lines = [
        SUMMARY_TITLE,
        "",
        f"`{sweep_dir}`: {len(rows)} trials ({len(ranked)} finished ok, {len(failed)} not). The objective is the "
        "MDN's validation NLL (nats/sample, lower is better); no trial scored the test part.",
        "",
    ]
    if ranked:
        lines += [
            f"Chosen: trial {ranked[0]['trial']} (validation NLL {ranked[0]['val_nll']:.4f}); its settings and the "
            f"`mdn-run` line that runs them are in `{BEST_FILE}`.",
            "",
        ]
    if final:
        scores = ", ".join(f"{k} = {_cell(final[k])}" for k in FINAL_KEYS if isinstance(final.get(k), float))
        lines += [
            f"The final run (`{FINAL}/`, the chosen settings, the test part scored once): status "
            f"{final.get('status', '?')}; {scores}.",
            "",
        ]
        sentence = final.get("foil_sentence")
        if isinstance(sentence, str):
            lines += [_cell(sentence), ""]
    else:
        lines += ["The final run has not finished yet (`mdn-resume` on this folder runs it).", ""]
    lines += [
        "| rank | trial | validation NLL | " + " | ".join(keys) + " | seconds | status |",
        "|" + "---|" * (len(keys) + 5),
    ]
    rank = {r["trial"]: i + 1 for i, r in enumerate(ranked)}
    for r in sorted(rows, key=lambda r: (rank.get(r["trial"], math.inf), r["trial"])):
        value = f"{r['val_nll']:.4f}" if r["val_nll"] is not None else "—"
        seconds = f"{r['seconds']:.1f}" if r["seconds"] is not None else "—"
        settings = " | ".join(_cell(r["settings"].get(k, "")) for k in keys)
        place = rank.get(r["trial"], "—")
        lines.append(f"| {place} | {r['trial']} | {value} | {settings} | {seconds} | {r['status']} |")
    lines += ["", "![the search](search.png)", ""]
    return "\n".join(lines)
