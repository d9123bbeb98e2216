"""`make table-defaults`: does `dataset=table`'s one-line default lose to its own foils?

Five small tables, each run with the default command (`mdn-run dataset=table dataset.path=FILE
dataset.target=COL seed=S`, random splits drawn with the seed) for seeds 0, 1, 2. Two tables
ship with the project's dependencies or are made here: scikit-learn's diabetes table (442 rows)
and a synthetic unimodal, heteroscedastic table (1000 rows: one Gaussian per input is the truth).
Three are UCI tables (yacht, concrete, energy), read as plain tables from the suite's folder
(MDN_UCI_ROOT or --uci-root). For each table the report gives the MDN's test log-likelihood beside
its K=1 foil's, their difference, and the RMSE of the mixture's mean beside the MSE network's.
`--set KEY=VALUE` adds overrides to every run (for example, to measure other defaults). Writes
outputs/table_defaults/REPORT.md; finished runs are kept and reused.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mdn_experiments import files
from mdn_experiments.errors import UserError
from mdn_experiments.tools import launch

SEEDS = (0, 1, 2)
UCI_TABLES = ("yacht", "concrete", "energy")
OUT = Path("outputs/table_defaults")


def _csv(path: Path, data: np.ndarray, header: list[str]) -> None:
    text = io.StringIO()
    np.savetxt(text, data, delimiter=",", header=",".join(header), comments="")
    files.write_text(path, text.getvalue())


def tables(out: Path, uci_root: Path) -> dict[str, tuple[Path, str]]:
    """{name: (file, target column)} of the five tables (the two made here written into out)."""
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes()
    _csv(out / "diabetes.csv", np.c_[diabetes.data, diabetes.target], [*diabetes.feature_names, "y"])
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(1000, 4))
    y = np.sin(x[:, 0]) + x[:, 1] + (0.1 + 0.4 * np.abs(x[:, 2])) * rng.normal(size=1000)
    _csv(out / "synthetic.csv", np.c_[x, y], ["a", "b", "c", "d", "y"])
    found = {"diabetes": (out / "diabetes.csv", "y"), "synthetic": (out / "synthetic.csv", "y")}
    for name in UCI_TABLES:
        folder = uci_root / name
        target = files.read_text(folder / "index_target.txt", files.DATA_TEXT_BYTES, follow=True).split()[0]
        found[name] = (folder / "data.txt", target)
    return found


def run_one(out: Path, name: str, path: Path, target: str, seed: int, extra: list[str]) -> dict:
    folder = out / "runs" / name / f"seed{seed}"
    if not (folder / "metrics.json").exists():
        args = [
            "dataset=table",
            f"dataset.path={path}",
            f"dataset.target={target}",
            f"seed={seed}",
            "figures=false",
            "trainer.threads=1",
            *extra,
            f"hydra.run.dir={folder}",
        ]
        proc = launch.run("mdn_experiments.cli", args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"{name}, seed {seed}: mdn-run failed: {proc.stderr.strip()[-500:]}")
    return files.read_json(folder / "metrics.json")


def report(results: dict[str, list[dict]], extra: list[str]) -> str:
    def spread(values) -> str:
        a = np.asarray(values, dtype=float)
        return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}"

    lines = [
        "# The table defaults beside their foils",
        "",
        f"`mdn-run dataset=table dataset.path=FILE dataset.target=COL seed=S {' '.join(extra)}`".replace(" `", "`"),
        "for seeds 0, 1, 2 (random splits drawn with the seed); mean ± standard deviation over the seeds.",
        "",
        "| table | training rows | MDN test LL | K=1 foil test LL | MDN − foil | seeds the MDN won "
        "| RMSE, mixture mean | RMSE, MSE network |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        ll = [m["test_ll"] for m in runs]
        foil = [m["test_ll_gaussian"] for m in runs]
        gain = [a - b for a, b in zip(ll, foil)]
        lines.append(
            f"| {name} | {runs[0]['n_train']} | {spread(ll)} | {spread(foil)} | {spread(gain)} | "
            f"{sum(g > 0 for g in gain)} of {len(gain)} | {spread([m['rmse_mixture_mean'] for m in runs])} | "
            f"{spread([m['rmse_baseline'] for m in runs])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="table-defaults", description=__doc__)
    parser.add_argument("--uci-root", type=Path, default=Path(os.environ.get("MDN_UCI_ROOT", "data/uci")))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        out = files.make_folder(args.out.resolve())
        found = tables(out, args.uci_root.resolve())
        jobs = [(name, seed) for name in found for seed in SEEDS]
        with ThreadPoolExecutor(2) as pool:  # two one-thread runs side by side
            done = list(pool.map(lambda job: run_one(out, job[0], *found[job[0]], job[1], args.set), jobs))
    except UserError as err:
        print(f"table-defaults: error: {err}", file=sys.stderr)
        sys.exit(2)
    results: dict[str, list[dict]] = {}
    for (name, _), metrics in zip(jobs, done):
        results.setdefault(name, []).append(metrics)
    text = report(results, args.set)
    files.write_text(out / "REPORT.md", text)
    print(text, end="")


if __name__ == "__main__":
    main()
