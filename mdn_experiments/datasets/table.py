"""A researcher's own table as a data set (`dataset=table`): any file, chosen target and feature
columns, a random or an index-file split, metrics in the target's original units.

Reading is left to libraries: numpy for whitespace-separated text and .npy/.npz (always there),
pandas for CSV/TSV and Parquet (pandas with pyarrow: `pip install 'mdn-experiments[table]'`,
imported only when such a file is read). Nothing read may choose code: .npy/.npz are loaded with
pickles refused.

Every check of the data is made when the data set is built, before a run folder is written: a
bad file, column, value or split is one line naming the file, the column or the row and what is
allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mdn_experiments.datasets.base import Dataset, Splits, require
from mdn_experiments.errors import ConfigError, DataError
from mdn_experiments.evaluation import contract as C
from mdn_experiments.models import Network, predict

INSTALL_TABLE = "pip install 'mdn-experiments[table]'"
SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "whitespace",
    ".dat": "whitespace",
    ".data": "whitespace",
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
}
FORMATS = ("auto", "csv", "tsv", "whitespace", "npy", "npz", "parquet")
SPLITS = ("random", "index")
MISSING = ("error", "drop")
CONSTANT = ("error", "drop")
# a target is flagged as discrete when its training values take few distinct values, or one value
# holds many of them (a cap, as Boston's 50.0): a mixture can put spikes there
DISCRETE_DISTINCT_SHARE = 0.10
DISCRETE_TOP_SHARE = 0.02
SHOWN = 5  # rows or values named in an error message


def _shown(items: Sequence[Any]) -> str:
    head = ", ".join(str(i) for i in items[:SHOWN])
    return head + (f", ... ({len(items)} in all)" if len(items) > SHOWN else "")


def require_pandas(what: str):
    """pandas, or one line saying how to install it."""
    try:
        import pandas
    except ImportError:
        raise DataError(f"reading {what} files needs pandas: {INSTALL_TABLE}") from None
    return pandas


@dataclass
class Table:
    """A file's columns, as read: names (the header, the .npz keys, or "0", "1", ... when the file
    has none) and one 1-D array per column (numeric or not, as the reader found it)."""

    path: Path
    names: list[str]
    columns: list[np.ndarray]
    named: bool  # the names come from the file

    @property
    def n_rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def index_of(self, selector: Any, key: str) -> int:
        """The 0-based position of a column given by name or 0-based index."""
        if isinstance(selector, bool) or not isinstance(selector, (int, str)):
            raise ConfigError(key, selector, "a column name or a 0-based column index")
        if isinstance(selector, str) and selector in self.names:
            return self.names.index(selector)
        if isinstance(selector, int) or (isinstance(selector, str) and selector.strip().lstrip("-").isdigit()):
            index = int(selector)
            if 0 <= index < len(self.names):
                return index
            raise DataError(
                f"{key}={selector!r}: {self.path} has {len(self.names)} columns "
                f"(0-based indices 0..{len(self.names) - 1})"
            )
        names = (
            f"columns: {_shown(self.names)}" if self.named else f"it has no header: indices 0..{len(self.names) - 1}"
        )
        raise DataError(f"{key}={selector!r}: no such column in {self.path} ({names})")

    def numeric(self, index: int, role: str, other_features: list[str]) -> np.ndarray:
        """Column `index` as float64, or one line naming it when it is not numeric."""
        values = self.columns[index]
        if values.dtype.kind in "biuf":
            return values.astype(np.float64)
        try:
            return values.astype(np.float64)
        except (TypeError, ValueError):
            pass
        bad = next((i for i, v in enumerate(values) if not _is_number(v)), 0)
        hint = (
            f"leave it out with dataset.features=[{','.join(other_features)}]"
            if role == "feature"
            else "choose a numeric target column"
        )
        raise DataError(
            f"column {self.names[index]!r} of {self.path} is not numeric (row {bad}: {values[bad]!r}): {hint}"
        )


def _is_list(value: Any) -> bool:
    """A list of columns (a Python list or Hydra's ListConfig), not a single name."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"{path}: unknown format {suffix or '(no suffix)'!r}; known suffixes: {', '.join(SUFFIXES)} "
            "(or set dataset.format to one of " + ", ".join(FORMATS[1:]) + ")"
        )
    return SUFFIXES[suffix]


def read_table(path: Path | str, fmt: str = "auto") -> Table:
    """Read a table from `path` (format by suffix, or `fmt`)."""
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise ConfigError("dataset.format", fmt, "one of " + ", ".join(FORMATS))
    if not path.is_file():
        raise DataError(f"{path}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    kind = detect_format(path, fmt)
    try:
        table = READERS[kind](path)
    except DataError:
        raise
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - a reader's complaint about the file is bad input
        message = " ".join(str(err).split())[:300]
        raise DataError(f"{path} cannot be read as {kind}: {message}") from None
    if not table.columns or table.n_rows == 0:
        raise DataError(f"{path} holds no rows")
    if len(set(table.names)) != len(table.names):
        twice = sorted({n for n in table.names if table.names.count(n) > 1})
        raise DataError(f"{path}: column names used twice: {_shown(twice)} (each column needs its own name)")
    return table


def _from_frame(path: Path, frame) -> Table:
    return Table(path, [str(c) for c in frame.columns], [frame[c].to_numpy() for c in frame.columns], True)


def _from_matrix(path: Path, array: np.ndarray) -> Table:
    array = np.asarray(array)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{path}: a table needs a 2-D array (rows x columns), got shape {array.shape}")
    return Table(path, [str(i) for i in range(array.shape[1])], [array[:, i] for i in range(array.shape[1])], False)


def _read_csv(path: Path) -> Table:
    return _from_frame(path, require_pandas("CSV").read_csv(path, sep=","))


def _read_tsv(path: Path) -> Table:
    return _from_frame(path, require_pandas("TSV").read_csv(path, sep="\t"))


def _read_whitespace(path: Path) -> Table:
    try:
        array = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DataError(
            f"{path} cannot be read as whitespace-separated numbers: {' '.join(str(err).split())[:200]} "
            "(a file with a header row: name it .csv or .tsv, or set dataset.format=csv)"
        ) from None
    return _from_matrix(path, array)


def _read_npy(path: Path) -> Table:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path}: {err} (only plain numeric arrays are read; pickled objects never are)") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: not a .npy array")
    return _from_matrix(path, array)


def _read_npz(path: Path) -> Table:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if len(arrays) == 1 and next(iter(arrays.values())).ndim == 2:
        return _from_matrix(path, next(iter(arrays.values())))
    lengths = {name: a.shape[0] if a.ndim else 0 for name, a in arrays.items()}
    if not arrays or any(a.ndim != 1 for a in arrays.values()) or len(set(lengths.values())) != 1:
        shapes = ", ".join(f"{name}: {a.shape}" for name, a in arrays.items())
        raise DataError(
            f"{path}: an .npz table holds one 2-D array, or 1-D arrays of one length (its columns); got {shapes}"
        )
    return Table(path, list(arrays), list(arrays.values()), True)


def _read_parquet(path: Path) -> Table:
    pandas = require_pandas("Parquet")
    try:
        import pyarrow  # noqa: F401 - pandas' Parquet engine
    except ImportError:
        raise DataError(f"reading Parquet files needs pyarrow: {INSTALL_TABLE}") from None
    return _from_frame(path, pandas.read_parquet(path))


READERS = {
    "csv": _read_csv,
    "tsv": _read_tsv,
    "whitespace": _read_whitespace,
    "npy": _read_npy,
    "npz": _read_npz,
    "parquet": _read_parquet,
}


def read_index(path: Path | str, n_rows: int, what: str) -> np.ndarray:
    """0-based row numbers from a whitespace-separated file, checked: integers, no repeats, inside
    the table."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{what} index file {path}: no such file")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).ravel()
    except ValueError as err:
        raise DataError(f"{what} index file {path}: {' '.join(str(err).split())[:200]} (0-based row numbers)") from None
    if values.size == 0:
        raise DataError(f"{what} index file {path} holds no row numbers")
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        bad = [f"{v:g}" for v in values[~(np.isfinite(values) & (values == np.round(values)))]]
        raise DataError(f"{what} index file {path}: row numbers must be integers, got {_shown(bad)}")
    rows = values.astype(np.int64)
    outside = rows[(rows < 0) | (rows >= n_rows)]
    if outside.size:
        raise DataError(
            f"{what} index file {path}: rows {_shown(outside.tolist())} point outside the table "
            f"(0-based rows 0..{n_rows - 1})"
        )
    unique, counts = np.unique(rows, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{what} index file {path} repeats rows {_shown(unique[counts > 1].tolist())}")
    return rows


def discreteness(y: np.ndarray) -> dict[str, Any]:
    """What a target's training values say about how it was recorded: the number of distinct
    values, the share of the most frequent one, the recording resolution (the smallest gap between
    distinct values) and whether it is flagged as discrete (see DISCRETE_*)."""
    values, counts = np.unique(y, return_counts=True)
    gap = float(np.diff(values).min()) if values.size > 1 else math.nan
    resolution = float(f"{gap:.6g}") if math.isfinite(gap) else math.nan
    distinct_share, top_share = values.size / y.size, counts.max() / y.size
    reasons = []
    if distinct_share < DISCRETE_DISTINCT_SHARE:
        reasons.append(f"{values.size} distinct values in {y.size} rows")
    if top_share >= DISCRETE_TOP_SHARE:
        reasons.append(f"{counts.max()} of {y.size} rows at {values[counts.argmax()]:g}")
    return {
        "distinct": int(values.size),
        "top_share": float(top_share),
        "resolution": resolution,
        "discrete": bool(reasons),
        "reason": "; ".join(reasons),
    }


@dataclass
class Prepared:
    """A table reduced to what a run uses: features and targets (float64), the rows they came from,
    and what was dropped on the way."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray  # each row's number in the file (0-based)
    feature_names: list[str]
    target_names: list[str]
    dropped_rows: int = 0
    dropped_features: list[str] = field(default_factory=list)


class TableDataset(Dataset):
    """Any table: `dataset.path`, `dataset.target` (a column, or a list), `dataset.features` (null:
    every other column). See conf/dataset/table.yaml for every key."""

    main_metric = C.TEST_LL
    compare_gaussian = True  # the K=1 MDN is trained beside the MDN (what the mixture adds)

    def __init__(
        self,
        name: str = "table",
        path: str | None = None,
        target: Any = None,
        features: Any = None,
        format: str = "auto",
        split: str = "random",
        test_fraction: float = 0.1,
        val_fraction: float = 0.1,
        train_index: str | None = None,
        test_index: str | None = None,
        missing: str = "error",
        constant: str = "error",
        dequantize: bool = False,
        resolution: Any = None,
    ) -> None:
        require(path is not None, "path", path, "the table's file (dataset.path=FILE)")
        require(target is not None, "target", target, "a column name or 0-based index, or a list of them")
        require(split in SPLITS, "split", split, "one of " + ", ".join(SPLITS))
        require(missing in MISSING, "missing", missing, "error (refuse missing values) or drop (drop their rows)")
        require(constant in CONSTANT, "constant", constant, "error or drop (leave constant features out)")
        for key, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
            require(isinstance(value, (int, float)) and 0 < value < 1, key, value, "a fraction in (0, 1)")
        if split == "random":
            require(test_index is None and train_index is None, "split", split, "index when index files are given")
        else:
            for key, value in (("train_index", train_index), ("test_index", test_index)):
                require(value is not None, key, value, "a file of 0-based row numbers (dataset.split=index)")
        if resolution is not None:
            require(
                isinstance(resolution, (int, float)) and not isinstance(resolution, bool) and resolution > 0,
                "resolution",
                resolution,
                "null (the smallest gap between the training targets' distinct values) or a number > 0",
            )
        self.name, self.path, self.format = name, Path(str(path)).expanduser(), format
        self.target_spec = list(target) if _is_list(target) else [target]
        require(features is None or _is_list(features), "features", features, "null or a list of columns")
        self.feature_spec = None if features is None else list(features)
        self.split, self.test_fraction, self.val_fraction = split, float(test_fraction), float(val_fraction)
        self.train_index, self.test_index = train_index, test_index
        self.missing, self.constant = missing, constant
        self.dequantize, self.resolution = bool(dequantize), resolution
        require(len(self.target_spec) >= 1, "target", target, "at least one column")
        self.data = self.prepare(self.read())
        self.output_dim = self.data.y.shape[1]
        self.input_shape = (self.data.x.shape[1],)
        self._train_rows, self._test_rows = self._split_rows()
        self.n_test = len(self._test_rows)
        self.n_val = max(1, round(self.val_fraction * len(self._train_rows)))
        self.n_train = len(self._train_rows) - self.n_val
        if self.n_train < 2:
            raise DataError(
                f"{self.path}: {len(self.data.rows)} usable rows are too few for these splits "
                f"({self.n_train} training, {self.n_val} validation, {self.n_test} test rows; at least 2, 1, 1): "
                "use smaller dataset.test_fraction or dataset.val_fraction"
            )
        self.target_stats = [discreteness(self.data.y[self._train_rows, d]) for d in range(self.output_dim)]
        self._check_constant()

    # --- reading and checking -----------------------------------------------------------------

    def read(self) -> Table:
        return read_table(self.path, self.format)

    def _indices(self, table: Table, spec: list, key: str) -> list[int]:
        indices = [table.index_of(s, key) for s in spec]
        twice = sorted({table.names[i] for i in indices if indices.count(i) > 1})
        if twice:
            raise DataError(f"{key}: column {', '.join(map(repr, twice))} of {self.path} is given twice")
        return indices

    def prepare(self, table: Table) -> Prepared:
        """Target and feature columns as numbers; missing values refused or their rows dropped."""
        targets = self._indices(table, self.target_spec, "dataset.target")
        if self.feature_spec is None:
            features = [i for i in range(len(table.names)) if i not in targets]
        else:
            features = self._indices(table, self.feature_spec, "dataset.features")
            both = [table.names[i] for i in features if i in targets]
            if both:
                raise DataError(
                    f"column {', '.join(map(repr, both))} of {self.path} is both a target and a feature: "
                    "leave it out of dataset.features"
                )
        if not features:
            raise DataError(f"{self.path}: no feature columns are left beside the target")
        names = [table.names[i] for i in features]
        x = np.stack([table.numeric(i, "feature", [n for n in names if n != table.names[i]]) for i in features], axis=1)
        y = np.stack([table.numeric(i, "target", []) for i in targets], axis=1)
        rows = np.arange(table.n_rows)
        bad = ~(np.isfinite(x).all(1) & np.isfinite(y).all(1))
        dropped = int(bad.sum())
        if dropped and self.missing == "error":
            where = []
            for i, name in [*zip(targets, [table.names[t] for t in targets]), *zip(features, names)]:
                column = y[:, targets.index(i)] if i in targets else x[:, features.index(i)]
                missing_rows = np.flatnonzero(~np.isfinite(column))
                if missing_rows.size:
                    where.append(f"column {name!r}: {missing_rows.size} (rows {_shown(missing_rows.tolist())})")
            raise DataError(
                f"{self.path}: {dropped} rows hold missing or non-finite values ({'; '.join(where)}); "
                "set dataset.missing=drop to drop those rows (their number is reported)"
            )
        if dropped:
            x, y, rows = x[~bad], y[~bad], rows[~bad]
        return Prepared(x, y, rows, names, [table.names[i] for i in targets], dropped_rows=dropped)

    def _split_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions (into the prepared rows) of the training part (validation still inside it) and
        of the test part."""
        n = len(self.data.rows)
        if self.split == "random":
            n_test = max(1, round(self.test_fraction * n))
            if n - n_test < 3:
                raise DataError(
                    f"{self.path}: {n} usable rows are too few for dataset.test_fraction={self.test_fraction} "
                    f"and dataset.val_fraction={self.val_fraction} (at least 2 training, 1 validation and 1 test row)"
                )
            return np.arange(n - n_test), np.arange(n - n_test, n)  # shuffled per seed in load()
        table_rows = self.data_file_rows()
        train = read_index(self.train_index, table_rows, "training")
        test = read_index(self.test_index, table_rows, "test")
        both = np.intersect1d(train, test)
        if both.size:
            raise DataError(
                f"the training index file {self.train_index} and the test index file {self.test_index} share "
                f"{both.size} rows ({_shown(both.tolist())}): a test row may never be trained on"
            )
        position = np.full(table_rows, -1)
        position[self.data.rows] = np.arange(n)
        train, test = position[train], position[test]  # rows dropped for missing values are left out
        return train[train >= 0], test[test >= 0]

    def data_file_rows(self) -> int:
        return len(self.data.rows) + self.data.dropped_rows

    def _check_constant(self) -> None:
        x_train = self.data.x[self._train_rows]
        constant = [i for i in range(x_train.shape[1]) if np.ptp(x_train[:, i]) == 0]
        for d, stats in enumerate(self.target_stats):
            if stats["distinct"] < 2:
                raise DataError(
                    f"target column {self.data.target_names[d]!r} of {self.path} is constant on the training rows: "
                    "there is nothing to predict"
                )
        if not constant:
            return
        names = [self.data.feature_names[i] for i in constant]
        if self.constant == "error":
            keep = [n for n in self.data.feature_names if n not in names]
            raise DataError(
                f"feature column {', '.join(map(repr, names))} of {self.path} is constant on the training rows: "
                f"leave it out with dataset.features=[{','.join(keep)}] or set dataset.constant=drop"
            )
        keep_idx = [i for i in range(x_train.shape[1]) if i not in constant]
        if not keep_idx:
            raise DataError(f"{self.path}: every feature column is constant on the training rows")
        self.data.x = self.data.x[:, keep_idx]
        self.data.feature_names = [self.data.feature_names[i] for i in keep_idx]
        self.data.dropped_features = names
        self.input_shape = (len(keep_idx),)

    # --- splits -------------------------------------------------------------------------------

    def split_positions(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions (into the prepared rows) of the training, validation and test parts for this
        seed: the test part is fixed (index files) or drawn with the seed (random); the validation
        part is drawn from the training part with the seed."""
        rng = np.random.default_rng(seed)
        if self.split == "random":
            order = rng.permutation(len(self.data.rows))
            test, rest = order[: self.n_test], order[self.n_test :]
        else:
            test, rest = self._test_rows, rng.permutation(self._train_rows)
        return rest[self.n_val :], rest[: self.n_val], test

    def resolutions(self) -> np.ndarray:
        """The dequantisation width of each target column."""
        if self.resolution is not None:
            return np.full(self.output_dim, float(self.resolution))
        return np.array([s["resolution"] for s in self.target_stats])

    def load(self, seed: int) -> Splits:
        train, val, test = self.split_positions(seed)
        y = self.data.y
        if self.dequantize:  # uniform noise over each recorded value's cell: a density, no spikes
            noise = np.random.default_rng([seed, 1]).uniform(-0.5, 0.5, size=y.shape)
            y = y + noise * self.resolutions()

        def pair(positions: np.ndarray):
            return torch.from_numpy(self.data.x[positions]).float(), torch.from_numpy(y[positions]).float()

        return Splits(pair(train), pair(val), pair(test))

    def columns(self) -> dict[str, list[str]]:
        """The feature and target columns' names, in the network's order (saved in model.pt)."""
        return {"features": list(self.data.feature_names), "targets": list(self.data.target_names)}

    # --- metrics ------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the data: sizes, columns, drops, how the target was
        recorded and treated."""
        stats = self.target_stats
        return {
            "targets": ", ".join(self.data.target_names),
            "n_features": int(self.data.x.shape[1]),
            "dropped_rows": self.data.dropped_rows,
            "dropped_features": ", ".join(self.data.dropped_features),
            "discrete_target": "; ".join(
                f"{self.data.target_names[d]}: {s['reason']}" for d, s in enumerate(stats) if s["discrete"]
            ),
            "target_resolution": float(min(self.resolutions())),
            "dequantized": self.dequantize,
            "nll_units": "nats per example in the target's original units (the standardisation's Jacobian "
            "included: the network's mixture is mapped back before the likelihood is taken)"
            + (
                "; targets dequantised: uniform noise of one recording resolution added to every target"
                if self.dequantize
                else ""
            ),
        }

    @torch.no_grad()
    def metrics(self, mdn_net: Network, baseline: Network | None, splits: Splits) -> dict[str, Any]:
        x, y = splits.test
        mixture = predict(mdn_net, x)
        out: dict[str, Any] = {**self.describe(), C.TEST_LL: float(mixture.log_prob(y).mean())}
        points = {rule: C.point(mixture, rule) for rule in (C.MIXTURE_MEAN, C.TOP_MODE, C.TOP_PI)}
        for rule, value in points.items():
            out[C.key("rmse", rule)] = float((value - y).square().sum(-1).mean().sqrt())
        if self.output_dim > 1:
            out.update(self.per_target(mixture, points, predict(baseline, x) if baseline is not None else None, y))
        return out

    def per_target(self, mixture, points, baseline_pred, y) -> dict[str, float]:
        """The 1-D scores of each target column (its marginal mixture), keyed `metric[column]`."""
        from mdn_experiments.evaluation.calibration import calibrate

        out = {}
        for d, name in enumerate(self.data.target_names):
            marginal = mixture.marginal(d)
            yd = y[:, d : d + 1]
            scores = {
                C.TEST_LL: float(marginal.log_prob(yd).mean()),
                **{
                    C.key("rmse", rule): float((p[:, d] - yd[:, 0]).square().mean().sqrt())
                    for rule, p in points.items()
                },
                **calibrate(marginal, yd).metrics(),
            }
            if baseline_pred is not None:
                scores[C.RMSE_BASELINE] = float((baseline_pred[:, d] - yd[:, 0]).square().mean().sqrt())
            out.update({C.column_key(metric, name): value for metric, value in scores.items()})
        return out


class SavedColumns(Dataset):
    """A table's run without its file: the columns its model.pt names (features, targets), enough
    to rebuild and ask the trained networks (mdn-predict --file, load_run) when the training file
    is no longer where it was. Its data cannot be loaded."""

    def __init__(self, name: str, columns: dict[str, list[str]], path: str) -> None:
        self.name, self.path = name, path
        self.feature_names, self.target_names = list(columns["features"]), list(columns["targets"])
        self.input_shape, self.output_dim = (len(self.feature_names),), len(self.target_names)

    def load(self, seed: int) -> Splits:
        raise DataError(f"the run's table {self.path} is not there: its rows cannot be loaded (--index needs them)")
