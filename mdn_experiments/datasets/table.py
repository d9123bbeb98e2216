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

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mdn_experiments import files, memory
from mdn_experiments.datasets.base import Dataset, Splits, require
from mdn_experiments.errors import ConfigError, DataError, clip
from mdn_experiments.evaluation import contract as C
from mdn_experiments.evaluation.scores import rmse
from mdn_experiments.models import Network, predict

log = logging.getLogger(__name__)

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
# a target whose spread is below this share of its magnitude loses its differences in float32 (whose
# resolution is 6e-8 of the magnitude): refused, with the advice to subtract an offset in the file
RELATIVE_RESOLUTION = 1e-5
SMALLEST_MAGNITUDE = 1e-30  # float32's smallest normal number is 1.2e-38: a column below this is rescaled


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning line about the data, once per process (a dataset is built to check it, then to run)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _shown(items: Sequence[Any]) -> str:
    head = ", ".join(clip(i, 80) for i in items[:SHOWN])
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

    def numeric(self, index: int, role: str, other_features: list[str] | None) -> np.ndarray:
        """Column `index` as float64, or one line naming it when it is not numeric
        (`other_features`: the features that would be left, for the advice; None: no advice)."""
        values = self.columns[index]
        if values.dtype.kind in "biuf":
            return values.astype(np.float64)
        try:
            return values.astype(np.float64)
        except (TypeError, ValueError):
            pass
        bad = next((i for i, v in enumerate(values) if not _is_number(v)), 0)
        hint = (
            f": leave it out with dataset.features=[{','.join(clip(n, 80) for n in other_features)}]"
            if role == "feature" and other_features is not None
            else ": choose a numeric target column"
            if role == "target"
            else ""
        )
        raise DataError(
            f"column {clip(self.names[index], 80)!r} of {clip(self.path)} is not numeric "
            f"(row {bad}: {clip(repr(values[bad]), 60)}){hint}"
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


def detect_format(path: Path, fmt: str, format_key: str | None = "dataset.format") -> str:
    """The reader for `path`: `fmt`, or by the file's suffix. `format_key`: the setting that names a
    format (advice for the user); None where there is none (mdn-predict: rename the file)."""
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        advice = f" (or set {format_key} to one of {', '.join(FORMATS[1:])})" if format_key else ""
        raise DataError(
            f"{clip(path)}: unknown format {clip(suffix or '(no suffix)', 40)!r}; known suffixes: "
            f"{', '.join(SUFFIXES)}{advice}"
        )
    return SUFFIXES[suffix]


TEXT_MEMORY_PER_BYTE = 4  # a text table in memory: 8 bytes per value of about 4 bytes, read, then prepared


def _npy_bytes(header_source) -> int:
    """The bytes of the array a .npy stream's header promises (as float64, the way it is used)."""
    version = np.lib.format.read_magic(header_source)
    shape, _, _ = (
        np.lib.format.read_array_header_1_0(header_source)
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0(header_source)
    )
    return int(np.prod(shape, dtype=np.float64)) * 8


def table_bytes(path: Path, kind: str) -> int:
    """The memory reading a table costs, estimated before it is read: from the .npy header and the
    .npz members' headers (their arrays, as float64), Parquet's row and column counts, or the
    size of a text file. Refuses (FileRefused) a file that is not a regular file."""
    size = files.regular_size(path, follow=True)
    try:
        if kind == "npy":
            with path.open("rb") as fh:
                return 2 * _npy_bytes(fh)
        if kind == "npz":
            import zipfile

            total = 0
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    with archive.open(member) as fh:
                        total += _npy_bytes(fh)
            return 2 * total
        if kind == "parquet":
            import pyarrow.parquet

            meta = pyarrow.parquet.ParquetFile(path).metadata
            return 2 * 8 * meta.num_rows * meta.num_columns
    except Exception:  # noqa: BLE001 - a header that cannot be read: the reader says what is wrong
        return size
    return TEXT_MEMORY_PER_BYTE * size


def read_table(path: Path | str, fmt: str = "auto", *, format_key: str | None = "dataset.format") -> Table:
    """Read a table from `path` (format by suffix, or `fmt`): a regular file (a link to one is
    followed), whose estimated memory (table_bytes) fits in what this process may still use.
    `format_key`: where the user names a format (None: nowhere, as in mdn-predict)."""
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise ConfigError("dataset.format", fmt, "one of " + ", ".join(FORMATS))
    if not path.exists():
        raise DataError(f"{clip(path)}: no such file")
    if path.is_dir():
        raise DataError(f"{clip(path)}: no such file (it is a folder)")
    kind = detect_format(path, fmt, format_key)
    memory.Estimate({f"the table {clip(path, 120)}": table_bytes(path, kind)}).check(
        memory.available_memory(), f"reading {clip(path, 120)}", "use a smaller file, or a machine with more memory"
    )
    if kind in ("csv", "tsv"):
        _check_header(path, "," if kind == "csv" else "\t")
    try:
        table = READERS[kind](path)
    except DataError:
        raise
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - a reader's complaint about the file is bad input
        raise DataError(f"{clip(path)} cannot be read as {kind}: {clip(' '.join(str(err).split()), 300)}") from None
    if not table.columns or table.n_rows == 0:
        raise DataError(f"{path} holds no rows")
    if len(set(table.names)) != len(table.names):
        twice = sorted({n for n in table.names if table.names.count(n) > 1})
        raise DataError(f"{clip(path)}: column names used twice: {_shown(twice)} (each column needs its own name)")
    return table


def _check_header(path: Path, separator: str) -> None:
    """A header names each column once (pandas would rename a second `a` to `a.1` without a word)."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh, delimiter=separator), [])
    except (OSError, csv.Error):
        return  # the reader reports what is wrong with the file
    names = [name.strip() for name in header]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(
            f"{clip(path)}: the header names a column twice: {_shown(twice)} (each column needs its own name; "
            "rename one of them in the file)"
        )


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
            f"{clip(path)} cannot be read as whitespace-separated numbers: {clip(' '.join(str(err).split()), 200)} "
            "(a file with a header row: name it .csv or .tsv)"
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
    features_key: str | None = "dataset.features"  # where the user chooses the features (advice)

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
        self.duplicate_rows = 0  # set by load(): test rows that are copies of training rows
        if not self.dequantize:
            for d, stats in enumerate(self.target_stats):
                if stats["discrete"]:
                    _warn_once(
                        f"target column {clip(self.data.target_names[d], 80)!r} of {clip(self.path)} looks discrete "
                        f"({stats['reason']}): a mixture can put a spike on such values and report a log-likelihood "
                        "that says little about the model; dataset.dequantize=true scores it fairly"
                    )

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
        others = lambda i: [n for n in names if n != table.names[i]] if self.features_key else None  # noqa: E731
        x = np.stack([table.numeric(i, "feature", others(i)) for i in features], axis=1)
        y = np.stack([table.numeric(i, "target", []) for i in targets], axis=1)
        self._check_columns(table, x, y, features, targets)
        rows = np.arange(table.n_rows)
        bad = ~(np.isfinite(x).all(1) & np.isfinite(y).all(1))
        dropped = int(bad.sum())
        if dropped and self.missing == "error":
            where = []
            for i, name in [*zip(targets, [table.names[t] for t in targets]), *zip(features, names)]:
                column = y[:, targets.index(i)] if i in targets else x[:, features.index(i)]
                missing_rows = np.flatnonzero(~np.isfinite(column))
                if missing_rows.size:
                    where.append(
                        f"column {clip(name, 80)!r}: {missing_rows.size} (rows {_shown(missing_rows.tolist())})"
                    )
            raise DataError(
                f"{clip(self.path)}: {dropped} rows hold missing or non-finite values ({'; '.join(where[:SHOWN])}); "
                "set dataset.missing=drop to drop those rows (their number is reported)"
            )
        if dropped:
            x, y, rows = x[~bad], y[~bad], rows[~bad]
        return Prepared(x, y, rows, names, [table.names[i] for i in targets], dropped_rows=dropped)

    def _check_columns(
        self, table: Table, x: np.ndarray, y: np.ndarray, features: list[int], targets: list[int]
    ) -> None:
        """Columns the run cannot use, whatever the settings: one with no value at all, one with
        values beyond float32's range (the networks compute in float32), a target whose spread
        float32 cannot hold at its magnitude. Each is refused with advice about the file."""
        limit = float(np.finfo(np.float32).max)
        for values, index, role in [
            *((x[:, j], i, "feature") for j, i in enumerate(features)),
            *((y[:, j], i, "target") for j, i in enumerate(targets)),
        ]:
            name = clip(table.names[index], 80)
            finite = np.isfinite(values)
            if not finite.any():
                advice = (
                    f"leave it out with {self.features_key}=[...]"
                    if role == "feature" and self.features_key
                    else "choose another target column"
                    if role == "target"
                    else "fill it in the file"
                )
                raise DataError(f"{role} column {name!r} of {clip(self.path)} holds no value at all: {advice}")
            magnitude = float(np.abs(values[finite]).max())
            if 0 < magnitude < SMALLEST_MAGNITUDE:
                raise DataError(
                    f"{role} column {name!r} of {clip(self.path)} holds only values below {SMALLEST_MAGNITUDE:g} in "
                    f"size (at most {magnitude:.3g}); the networks compute in float32, which holds no such numbers "
                    "with full precision: rescale the column in the file (multiply it by a power of ten)"
                )
            huge = np.flatnonzero(finite & (np.abs(np.where(finite, values, 0.0)) > limit))
            if huge.size:
                raise DataError(
                    f"{role} column {name!r} of {clip(self.path)} holds values beyond float32's range (±3.4e38), "
                    f"first in row {huge[0]} ({values[huge[0]]:g}); the networks compute in float32: rescale the "
                    "column in the file (divide it by a power of ten)"
                )
            if role == "target":
                std = float(values[finite].std())
                if 0 < std < RELATIVE_RESOLUTION * magnitude:
                    raise DataError(
                        f"target column {name!r} of {clip(self.path)} varies by {std:.3g} around values up to "
                        f"{magnitude:.6g}, less than {RELATIVE_RESOLUTION:g} of its magnitude: float32 cannot hold "
                        "those differences; subtract a constant (its mean) from the column in the file"
                    )

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
            leave = (
                f"leave it out with {self.features_key}=[{','.join(clip(n, 80) for n in keep)}] or "
                if self.features_key
                else ""
            )
            raise DataError(
                f"feature column {', '.join(clip(repr(n), 80) for n in names[:SHOWN])} of {clip(self.path)} is "
                f"constant on the training rows: {leave}set dataset.constant=drop"
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

    def count_duplicates(self, train: np.ndarray, test: np.ndarray) -> int:
        """Test rows (positions) whose features and target equal, exactly, a row of `train`."""
        rows = np.concatenate([self.data.x, self.data.y], axis=1)
        seen = {row.tobytes() for row in np.ascontiguousarray(rows[train])}
        return sum(row.tobytes() in seen for row in np.ascontiguousarray(rows[test]))

    def load(self, seed: int) -> Splits:
        train, val, test = self.split_positions(seed)
        self.duplicate_rows = self.count_duplicates(np.concatenate([train, val]), test)
        if self.duplicate_rows:
            _warn_once(
                f"{self.duplicate_rows} of the {len(test)} test rows of {clip(self.path)} are exact copies (features "
                "and target) of training rows: their scores are not out-of-sample (duplicate_rows in metrics.json)"
            )
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
            "duplicate_rows": int(self.duplicate_rows),
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
            out[C.key("rmse", rule)] = rmse(value, y)
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
                **{C.key("rmse", rule): rmse(p[:, d : d + 1], yd) for rule, p in points.items()},
                **calibrate(marginal, yd).metrics(),
            }
            if baseline_pred is not None:
                scores[C.RMSE_BASELINE] = rmse(baseline_pred[:, d : d + 1], yd)
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
