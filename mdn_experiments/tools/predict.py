"""`mdn-predict RUN_DIR | FILE.onnx`: ask a trained MDN about new inputs.

For every input it prints the predicted mixture's components (pi, mu, sigma), its modes with
their probability mass, and optionally samples; `--out FILE.json|FILE.csv` writes the same.
The model is a finished run folder, or a file made from one by `mdn-export`: that path needs
neither torch nor the run folder (`pip install 'mdn-experiments[serve]'`), and gives the same
answers (one piece of numpy maths computes them for both).

Inputs, one source per call:
  --x 0.45 --x 0.6            one input per --x (comma-separated for several input dimensions)
  --file inputs.csv|.npy      one row per input (.npy: (N, *input_shape) or (N, n_features))
                              a run on a table (dataset=table, uci): any file its reader takes,
                              the feature columns found by name in any order; the other columns
                              (identifiers) are kept in --out FILE.csv, one row per input
  --index 0 --index 17        test-set examples of the run's dataset (e.g. MNIST images; a run
                              folder only)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mdn_experiments import files
from mdn_experiments.errors import one_line
from mdn_experiments.evaluation.contract import MIN_MODE_MASS
from mdn_experiments.serve.mixture import Mixture

PROG = "mdn-predict"


class PredictError(Exception):
    """Bad input to mdn-predict: reported as one line."""


def describe(
    mixture: Mixture, n_samples: int = 0, temperature_pi: float = 1.0, temperature_sigma: float = 1.0, seed: int = 0
) -> list[dict[str, Any]]:
    """The whole answer of a batch of mixtures (batch shape (N,)) as plain data, one dict per input:
    components (pi, mu, sigma = marginal standard deviations, covariance), modes (location, mass,
    log_density; highest first) and, if n_samples > 0, samples of the tempered mixture (numpy's
    generator, seeded: the same draws for a run folder and for its export)."""
    modes = mixture.modes()
    covariance = mixture.component_covariance()
    std = mixture.component_std()
    pi = mixture.pi
    samples = mixture.sample(n_samples, seed, temperature_pi, temperature_sigma) if n_samples > 0 else None
    out = []
    for i in range(mixture.n):
        record: dict[str, Any] = {
            "components": [
                {
                    "pi": float(pi[i, k]),
                    "mu": mixture.means[i, k].tolist(),
                    "sigma": std[i, k].tolist(),
                    "covariance": covariance[i, k].tolist(),
                }
                for k in range(mixture.n_components)
            ],
            "modes": [
                {
                    "location": modes.location[i, j].tolist(),
                    "mass": float(modes.mass[i, j]),
                    "log_density": float(modes.log_density[i, j]),
                }
                for j in range(mixture.n_components)
                if modes.valid[i, j]
            ],
        }
        if samples is not None:
            record["samples"] = samples[:, i].tolist()
        out.append(record)
    return out


def served(mixture) -> Mixture:
    """A torch mixture (mdn.Mixture, batch (N,)) as the numpy mixture every answer is computed from."""
    kind = type(mixture).covariance_kind
    fields = [mixture.log_pi.double().cpu().numpy(), mixture.mu.double().cpu().numpy()]
    if kind == "full":
        return Mixture(*fields, cholesky=mixture.scale_tril.double().cpu().numpy(), covariance_kind=kind)
    return Mixture(*fields, scales=mixture.component_std().double().cpu().numpy(), covariance_kind=kind)


def _parse_x(values: list[str], n_features: int) -> np.ndarray:
    rows = []
    for text in values:
        try:
            row = [float(v) for v in text.split(",")]
        except ValueError:
            raise PredictError(f"--x {text!r} is not a number or comma-separated real numbers") from None
        if not all(math.isfinite(v) and abs(v) <= np.finfo(np.float32).max for v in row):
            raise PredictError(
                f"--x {text!r}: inputs must be finite numbers within the float32 range (nan and inf are not allowed)"
            )
        if len(row) != n_features:
            raise PredictError(
                f"--x {text!r} has {len(row)} value(s); this model takes {n_features} "
                f"input value(s) per example" + (", e.g. --x 0.5,0.6" if n_features == 2 else "")
            )
        rows.append(row)
    return np.asarray(rows, dtype=np.float32)


def _is_name(text: str) -> bool:
    """A header field: a column name, starting with a letter or an underscore (not a number with a typo)."""
    text = text.strip().strip('"').strip("'")
    return bool(text) and (text[0].isalpha() or text[0] == "_")


def _csv_rows(path: Path) -> list[list[str]]:
    """The non-blank rows of a CSV file, as text fields."""
    try:
        with path.open(newline="") as fh:
            return [row for row in csv.reader(fh) if any(field.strip() for field in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise PredictError(
            f"--file {path} cannot be read as CSV text ({getattr(err, 'strerror', None) or err})"
        ) from None


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The numbers of a CSV file, one row per input, and its header if it has one. The first row
    is a header only when every field of it is a name; any other field that is not a number is
    an error naming its row and column: no row is ever dropped."""
    rows = _csv_rows(path)
    header = None
    if rows and all(_is_name(field) for field in rows[0]):
        header, rows = [field.strip() for field in rows[0]], rows[1:]
    if not rows:
        raise PredictError(f"--file {path} holds no data rows" + (" (only a header)" if header else ""))
    width = len(rows[0])
    values = []
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise PredictError(f"--file {path}, line {number}: {len(row)} fields where the first data row has {width}")
        try:
            values.append([float(field) for field in row])
        except ValueError:
            column = next(i for i, field in enumerate(row) if not _is_float(field))
            raise PredictError(
                f"--file {path}, line {number}, column {column + 1}: {row[column]!r} is not a number"
                + ("" if header or number > 1 else " (a header row must hold only column names)")
            ) from None
    return np.asarray(values, dtype=np.float64), header


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _check_input_file(path: Path) -> None:
    """--file is a regular file (through a link or not) whose size fits in memory."""
    from mdn_experiments import memory
    from mdn_experiments.errors import UserError

    if not path.exists():
        raise PredictError(f"--file {path}: no such file")
    try:
        size = files.regular_size(path, follow=True)
        # text: at least 2 bytes per number, 8 bytes each as float64, a few copies on the way
        memory.Estimate({"the --file's numbers": 4 * 4 * size}).check(
            memory.available_memory(), f"--file {path}", "split the file and ask about fewer rows at a time"
        )
    except UserError as err:
        raise PredictError(f"--file {err}") from None


def _read_file(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    _check_input_file(path)
    n_features = int(np.prod(input_shape))
    header = None
    if path.suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise PredictError(
                f"--file {path} cannot be read as a .npy array ({' '.join(str(err).split())[:120]})"
            ) from None
        if np.iscomplexobj(data):
            raise PredictError(f"--file {path} holds complex numbers ({data.dtype}); inputs must be real numbers")
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
            raise PredictError(f"--file {path} holds an array of {data.dtype} values; inputs must be numbers")
    elif path.suffix == ".csv":
        data, header = _read_csv(path)
    else:
        raise PredictError(f"--file {path}: unknown format {path.suffix!r}; allowed: .csv, .npy")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 1 and n_features == 1:
        data = data[:, None]
    if data.ndim < 1 or data.shape[0] == 0 or int(np.prod(data.shape[1:])) != n_features:
        raise PredictError(
            f"--file {path} holds an array of shape {data.shape}"
            + (f" (columns {', '.join(header)})" if header else "")
            + f"; this model takes (N, {', '.join(map(str, input_shape))}) or (N, {n_features})"
        )
    if not np.isfinite(data).all():
        row = int(np.argwhere(~np.isfinite(data.reshape(data.shape[0], -1)))[0][0])
        raise PredictError(
            f"--file {path} holds non-finite values (nan or inf), first in row {row + 1}; inputs must be finite numbers"
        )
    if np.abs(data).max() > np.finfo(np.float32).max:
        raise PredictError(f"--file {path} holds values beyond the float32 range (±3.4e38)")
    if header:
        print(
            f"[{PROG}] {path}: first line read as a header ({', '.join(header)}); {data.shape[0]} data rows",
            file=sys.stderr,
        )
    return data.astype(np.float32).reshape(data.shape[0], *input_shape)


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _plain_csv_table(path: Path):
    """A CSV file with a header, by the standard library's reader (where pyarrow is not installed):
    every column as text, converted by name as the table reader's are."""
    from types import SimpleNamespace

    _check_input_file(path)
    rows = _csv_rows(path)
    if len(rows) < 2:
        raise PredictError(f"--file {path} holds no data rows under a header of column names")
    names = [name.strip() for name in rows[0]]
    bad = next((i for i, row in enumerate(rows[1:], start=2) if len(row) != len(names)), None)
    if bad is not None:
        raise PredictError(f"--file {path}, line {bad}: {len(rows[bad - 1])} fields where the header has {len(names)}")
    columns = [np.array([row[j].strip() for row in rows[1:]], dtype=object) for j in range(len(names))]
    return SimpleNamespace(names=names, columns=columns, named=True)


def _read_table_file(path: Path, features: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A table run's new rows: the feature columns by name (any order) as (N, F) float32, and the
    file's other columns (identifiers, kept in the answer)."""
    from mdn_experiments.datasets.reading import read_table
    from mdn_experiments.errors import UserError

    if path.suffix.lower() == ".csv" and not _has_pyarrow():
        table = _plain_csv_table(path)  # the serve extra alone: the standard library's reader
    else:
        try:
            table = read_table(path, format_key=None)  # no dataset.format here: the suffix says the format
        except UserError as err:
            raise PredictError(f"--file {err}") from None
    missing = [name for name in features if name not in table.names]
    if missing:
        hint = "" if table.named else " (the file has no header: give it the training file's column names)"
        raise PredictError(
            f"--file {path} lacks the feature column(s) {', '.join(map(repr, missing))} the model was trained on "
            f"(it needs {', '.join(features)}){hint}"
        )
    columns = []
    for name in features:
        values = table.columns[table.names.index(name)]
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise PredictError(f"--file {path}: column {name!r} is not numeric") from None
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise PredictError(
                f"--file {path}: column {name!r} holds {bad.size} missing or non-finite value(s) "
                f"(rows {', '.join(map(str, bad[:5].tolist()))}); inputs must be finite numbers"
            )
        columns.append(values)
    kept = {name: table.columns[i] for i, name in enumerate(table.names) if name not in features}
    return np.stack(columns, axis=1).astype(np.float32), kept


QUANTILE_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads a cell starting so as a formula
OUR_FILES = (".hydra", "model.pt", "metrics.json", "state.pt", "multirun.yaml", "reproduce.json", "uci.json")


def output_columns(targets: list[str]) -> list[str]:
    """The columns the answer adds per target: mean, sd, highest mode and the quantiles."""
    suffixes = ["mean", "sd", "mode", *(f"q{round(level * 100):02d}" for level in QUANTILE_LEVELS)]
    return [f"{name}_{suffix}" for name in targets for suffix in suffixes]


def cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never runs: a text that is not a number and starts
    with = + - @ (or a tab or carriage return) gets a leading apostrophe; numbers are kept."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_float(value):
        return "'" + value
    return value


def _write_table(path: Path, kept: dict[str, np.ndarray], mixture: Mixture, targets: list[str]) -> None:
    """One row per input: its identifier columns, then per target the predictive mean, standard
    deviation, highest mode and the 5, 25, 50, 75 and 95 % quantiles of its marginal."""
    mean, std = mixture.mean(), np.sqrt(np.diagonal(mixture.covariance(), axis1=-2, axis2=-1))
    mode = mixture.modes().location[:, 0, :]
    columns: dict[str, Any] = dict(kept)
    for d, name in enumerate(targets):
        q = mixture.marginal(d).quantiles(QUANTILE_LEVELS)
        columns[f"{name}_mean"] = mean[:, d].tolist()
        columns[f"{name}_sd"] = std[:, d].tolist()
        columns[f"{name}_mode"] = mode[:, d].tolist()
        for j, level in enumerate(QUANTILE_LEVELS):
            columns[f"{name}_q{round(level * 100):02d}"] = q[:, j].tolist()
    names = list(columns)
    with files.replaced(path, text=True) as f:
        writer = csv.writer(f)
        writer.writerow([cell(n) for n in names])
        for i in range(len(mean)):
            writer.writerow([cell(columns[n][i]) for n in names])


def _inside_a_folder_of_ours(folder: Path) -> Path | None:
    """The run, sweep or suite folder that holds `folder` (itself or one above it), or None."""
    for candidate in (folder, *folder.parents):
        if any((candidate / name).exists() for name in OUR_FILES):
            return candidate
    return None


def check_out(out: Path, file: Path | None, run_dir: Path, force: bool) -> None:
    """--out never destroys results: not inside a run (or sweep, or suite) folder, not the --file
    being read, not an existing file unless --force, never a link or a special file."""
    if out.suffix not in (".json", ".csv"):
        raise PredictError(f"--out {out}: allowed formats are .json and .csv")
    target = out.expanduser().absolute()
    if target.parent.resolve() == Path(run_dir).expanduser().resolve() or _inside_a_folder_of_ours(
        target.parent.resolve()
    ):
        holder = _inside_a_folder_of_ours(target.parent.resolve()) or run_dir
        raise PredictError(
            f"--out {out} lies inside {holder}, a folder of mdn-experiments: its files are results; "
            "write the answer somewhere else"
        )
    if file is not None and target.exists() and file.exists() and target.resolve() == file.resolve():
        raise PredictError(f"--out {out} is the --file being read: write the answer to another file")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise PredictError(f"--out {out} is not a regular file (a link, a folder or a special file): choose another")
    if target.exists() and not force:
        raise PredictError(f"--out {out} exists: give --force to replace it, or choose another file")


def check_columns(kept: dict[str, np.ndarray], targets: list[str], file: Path) -> None:
    """No column of the --file is overwritten by a column of the answer."""
    clash = [name for name in output_columns(targets) if name in kept]
    if clash:
        raise PredictError(
            f"--file {file} has the column(s) {', '.join(map(repr, clash[:5]))}, which the answer adds "
            "(per target: _mean, _sd, _mode and the quantiles): rename them in the file"
        )


def _finite(value: Any) -> Any:
    """Standard JSON: a non-finite float (a log density of -inf) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _write(path: Path, header: dict[str, Any], inputs: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    rows = [{**inp, **rec} for inp, rec in zip(inputs, records)]
    if path.suffix == ".json":
        files.write_text(path, json.dumps(_finite({**header, "predictions": rows}), indent=1, allow_nan=False) + "\n")
        return
    # .csv: one row per component, mode and sample ("long" format)
    D = len(records[0]["components"][0]["mu"])
    names = (
        ["input", "source", "kind", "rank", "weight", "log_density"]
        + [f"y{d + 1}" for d in range(D)]
        + [f"sigma{d + 1}" for d in range(D)]
    )
    with files.replaced(path, text=True) as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for i, (inp, rec) in enumerate(zip(inputs, records)):
            source = inp.get("index", inp.get("x"))
            source = ";".join(map(str, source)) if isinstance(source, list) else source
            for k, c in enumerate(rec["components"]):
                writer.writerow([i, source, "component", k + 1, c["pi"], "", *c["mu"], *c["sigma"]])
            for j, m in enumerate(rec["modes"]):
                writer.writerow([i, source, "mode", j + 1, m["mass"], m["log_density"], *m["location"]] + [""] * D)
            for j, s in enumerate(rec.get("samples", [])):
                writer.writerow([i, source, "sample", j + 1, "", "", *s] + [""] * D)


def _vector(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]" if len(values) > 1 else f"{values[0]:.4g}"


def _print(inputs: list[dict[str, Any]], records: list[dict[str, Any]], min_mass: float, max_samples: int = 5) -> None:
    for i, (inp, rec) in enumerate(zip(inputs, records)):
        if "index" in inp:
            what = f"test example #{inp['index']}" + (f" (target {_vector(inp['target'])})" if "target" in inp else "")
        else:
            what = f"x = {_vector(inp['x'])}"
        print(f"input {i}: {what}")
        print("  components:")
        for k, c in sorted(enumerate(rec["components"]), key=lambda kc: -kc[1]["pi"]):
            print(f"    {k + 1:>2}  pi = {c['pi']:.4f}  mu = {_vector(c['mu'])}  sigma = {_vector(c['sigma'])}")
        shown = [m for m in rec["modes"] if m["mass"] >= min_mass]
        print(f"  modes (mass >= {min_mass:g}, highest density first):")
        for j, m in enumerate(shown):
            print(
                f"    {j + 1:>2}  at {_vector(m['location'])}  mass = {m['mass']:.4f}  "
                f"log density = {m['log_density']:.4g}"
            )
        if "samples" in rec:
            head = ", ".join(_vector(s) for s in rec["samples"][:max_samples])
            more = f", ... ({len(rec['samples'])} in all)" if len(rec["samples"]) > max_samples else ""
            print(f"  samples: {head}{more}")


def _check_args(args: argparse.Namespace) -> None:
    sources = sum(bool(s) for s in (args.x, args.file, args.index))
    if sources != 1:
        raise PredictError(
            "give the inputs in one way: --x VALUES (repeatable), --file FILE.csv|.npy "
            "or --index N (repeatable, test-set examples)"
        )
    if args.samples < 0:
        raise PredictError(f"--samples {args.samples}: must be >= 0")
    for flag, value in (("--temperature-pi", args.temperature_pi), ("--temperature-sigma", args.temperature_sigma)):
        if not (math.isfinite(value) and value > 0):
            raise PredictError(f"{flag} {value}: must be a finite number > 0")
    if not (math.isfinite(args.min_mass) and 0 <= args.min_mass <= 1):
        raise PredictError(f"--min-mass {args.min_mass}: must be a number in [0, 1]")
    if not 0 <= args.seed <= 2**63 - 1:
        raise PredictError(f"--seed {args.seed}: must be an integer from 0 to {2**63 - 1}")
    if args.out is not None:
        check_out(args.out, args.file, args.run_dir, args.force)  # before any work: nothing is lost


def _new_inputs(
    args: argparse.Namespace, input_shape: tuple[int, ...], features: list[str], targets: list[str]
) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, np.ndarray] | None]:
    """--x or --file as float32 (N, *input_shape), the inputs as the answer names them, and a
    table's other columns (identifiers) when its features are found by name."""
    kept = None
    if args.x:
        if len(input_shape) != 1:
            raise PredictError(
                f"--x is for vector inputs; this model takes inputs of shape {input_shape}: "
                "use --file FILE.npy or --index N"
            )
        array = _parse_x(args.x, input_shape[0])
    elif features:  # a table's model: features by name, identifiers kept
        array, kept = _read_table_file(args.file, features)
        if args.out is not None and args.out.suffix == ".csv":
            check_columns(kept, targets, args.file)
    else:
        array = _read_file(args.file, input_shape)
    if not np.isfinite(array).all():
        raise PredictError("inputs must be finite numbers (nan and inf are not allowed)")
    inputs = (
        [{"x": [float(f"{v:.7g}") for v in row.reshape(-1)]} for row in array]
        if len(input_shape) == 1
        else [{"row": i} for i in range(len(array))]
    )
    return array, inputs, kept


def _check_samples(args: argparse.Namespace, n_inputs: int, K: int, D: int) -> None:
    from mdn_experiments.errors import UserError
    from mdn_experiments.memory import available_memory
    from mdn_experiments.run import resources

    try:
        resources.sample_estimate(n_inputs, args.samples, K, D).check(
            available_memory(),
            f"--samples {args.samples} for {n_inputs} input(s)",
            "ask for fewer samples or fewer inputs at a time",
        )
    except UserError as err:
        raise PredictError(str(err)) from None


def _ask_run(args: argparse.Namespace) -> tuple[Mixture, list[dict[str, Any]], dict[str, Any], dict | None]:
    """A run folder's answer: the mixtures, the inputs, the --out header and its table columns."""
    import torch

    from mdn_experiments.errors import UserError
    from mdn_experiments.run.artifacts import is_columns, load_trained
    from mdn_experiments.train.trainer import predict

    try:
        network, _, dataset, checkpoint = load_trained(args.run_dir, need_data=bool(args.index))
    except UserError as err:
        raise PredictError(str(err)) from None
    config = checkpoint["config"]
    input_shape = tuple(dataset.input_shape)
    columns = checkpoint.get("columns")
    if columns is not None and not is_columns(columns):
        raise PredictError(f"{args.run_dir / 'model.pt'}: its table columns are damaged (not lists of names)")
    columns = columns or {"features": [], "targets": []}
    kept = None
    if args.index:
        try:
            x_test, y_test = dataset.load(config.get("seed", 0)).test
        except UserError as err:
            raise PredictError(str(err)) from None
        bad = [i for i in args.index if not 0 <= i < x_test.shape[0]]
        if bad:
            raise PredictError(
                f"--index {bad[0]}: the test set has {x_test.shape[0]} examples (0..{x_test.shape[0] - 1})"
            )
        x = x_test[args.index]
        inputs = [{"index": i, "target": y_test[i].tolist()} for i in args.index]
    else:
        array, inputs, kept = _new_inputs(args, input_shape, list(columns["features"]), list(columns["targets"]))
        x = torch.from_numpy(array)
    head = network.head
    _check_samples(args, x.shape[0], head.n_components, head.out_dim)
    with torch.no_grad():
        mixture = served(predict(network, x))
    header = {"run": str(args.run_dir), "dataset": dataset.name}
    return mixture, inputs, header, {**columns, "kept": kept} if kept is not None else None


def _ask_export(args: argparse.Namespace) -> tuple[Mixture, list[dict[str, Any]], dict[str, Any], dict | None]:
    """An exported model's answer (torch is never imported): as _ask_run."""
    from mdn_experiments.errors import UserError
    from mdn_experiments.serve.exported import load_exported

    if args.index:
        raise PredictError(
            f"--index asks about the run's test set, which {args.run_dir} does not hold: give --x or --file, "
            "or ask the run folder it was exported from"
        )
    try:
        model = load_exported(args.run_dir)
    except UserError as err:
        raise PredictError(str(err)) from None
    array, inputs, kept = _new_inputs(args, model.input_shape, model.features, model.targets)
    _check_samples(args, array.shape[0], model.n_components, model.target_dim)
    mixture = model.predict(array)
    header = {"model": str(args.run_dir), "dataset": model.sidecar.get("dataset", "")}
    table = {"features": model.features, "targets": model.targets, "kept": kept}
    return mixture, inputs, header, table if kept is not None else None


def run(args: argparse.Namespace) -> None:
    from mdn_experiments.errors import UserError

    _check_args(args)
    exported = args.run_dir.suffix == ".onnx"
    mixture, inputs, header, table = (_ask_export if exported else _ask_run)(args)
    records = describe(mixture, args.samples, args.temperature_pi, args.temperature_sigma, args.seed)
    _print(inputs, records, args.min_mass)
    if args.out is not None:
        header.update(
            {
                "K": mixture.n_components,
                "covariance": mixture.covariance_kind,
                "temperature_pi": args.temperature_pi,
                "temperature_sigma": args.temperature_sigma,
                "seed": args.seed,
            }
        )
        try:
            if table is not None and args.out.suffix == ".csv":
                _write_table(args.out, table["kept"], mixture, list(table["targets"]))
            else:
                _write(args.out, header, inputs, records)
        except (OSError, UserError) as err:
            raise PredictError(f"--out {args.out} cannot be written: {getattr(err, 'strerror', None) or err}") from None
        print(f"[{PROG}] wrote {args.out}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR|FILE.onnx",
        help="a finished run folder (holds model.pt), or a model exported from one by mdn-export",
    )
    p.add_argument("--x", action="append", metavar="VALUES", help="one input; comma-separated values")
    p.add_argument("--file", type=Path, help="inputs from a .csv or .npy file, one row per input")
    p.add_argument("--index", action="append", type=int, metavar="N", help="a test-set example by its index")
    p.add_argument("--samples", type=int, default=0, metavar="N", help="draw N samples per input (default 0)")
    p.add_argument(
        "--temperature-pi",
        type=float,
        default=1.0,
        metavar="T",
        help="sample with the pi logits divided by T (T < 1: sharper weights)",
    )
    p.add_argument(
        "--temperature-sigma",
        type=float,
        default=1.0,
        metavar="T",
        help="sample with every component's standard deviation multiplied by T",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument(
        "--min-mass",
        type=float,
        default=MIN_MODE_MASS,
        metavar="M",
        help=f"print the modes holding at least this mass (default {MIN_MODE_MASS}; files hold them all)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="also write the answer to FILE.json or FILE.csv (never inside a run folder; text cells "
        "starting with = + - @ get a leading ' so that a spreadsheet shows them as text)",
    )
    p.add_argument("--force", action="store_true", help="replace the --out file if it exists")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        run(args)
        sys.stdout.flush()
    except PredictError as err:
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `mdn-predict ... | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(141)


if __name__ == "__main__":
    main()
