"""A researcher's own table as a data set (`dataset=table`): any file, chosen target and feature
columns, a random or an index-file split, metrics in the target's original units.

Reading is datasets/reading.py's: CSV, TSV and Parquet through pyarrow a piece at a time (tables of
any size), whitespace text and .npy/.npz through numpy (pickles refused). Only the target and
feature columns are kept: the features as one float32 array, the targets as float64, both
column-major. A split is made in place, one column at a time, and handed to the run as views:
the data live in memory once.

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

from mdn_experiments import memory
from mdn_experiments.datasets.base import Dataset, Splits, require
from mdn_experiments.datasets.reading import Table, read_table
from mdn_experiments.datasets.reading import shown as _shown
from mdn_experiments.errors import DataError, clip
from mdn_experiments.evaluation import contract as C
from mdn_experiments.evaluation.scores import means_over_parts
from mdn_experiments.models import Network, predict_parts

log = logging.getLogger(__name__)

SPLITS = ("random", "index")
MISSING = ("error", "drop")
CONSTANT = ("error", "drop")
# a target is flagged as discrete when its training values take few distinct values, or one value
# holds many of them (a cap, as Boston's 50.0): a mixture can put spikes there
DISCRETE_DISTINCT_SHARE = 0.10
DISCRETE_TOP_SHARE = 0.02
SHOWN = 5  # rows or values named in an error message
STAT_CHUNK = 1 << 14  # rows a statistic of a column takes at a time
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


def _size(rows: np.ndarray | slice) -> int:
    """The number of positions in an array of them or a slice (start:stop) of them."""
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def _is_list(value: Any) -> bool:
    """A list of columns (a Python list or Hydra's ListConfig), not a single name."""
    return isinstance(value, Sequence) and not isinstance(value, str)


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
    distinct values) and whether it is flagged as discrete (see DISCRETE_*). One sorted copy of
    the values, then a pass over it a chunk at a time."""
    values = np.sort(y)
    distinct, top, top_value, gap = 1, 0, values[0], math.inf
    run_value, run = values[0], 0  # the run of equal values still open
    for start in range(0, values.size, STAT_CHUNK):
        chunk = values[start : start + STAT_CHUNK]
        steps = np.diff(chunk, prepend=run_value)  # against the value before the chunk
        positive = steps[steps > 0]
        if positive.size:
            gap = min(gap, float(positive.min()))
        starts = np.flatnonzero(steps != 0)  # where a new value's run begins
        if not starts.size:
            run += chunk.size
            continue
        distinct += starts.size
        lengths = np.diff(starts, prepend=0)  # the open run's rest, then each run the chunk closes
        lengths[0] += run
        values_of = np.concatenate([[run_value], chunk[starts[:-1]]])
        best = int(np.argmax(lengths))
        if lengths[best] > top:
            top, top_value = int(lengths[best]), values_of[best]
        run_value, run = chunk[starts[-1]], chunk.size - int(starts[-1])
    if run > top:
        top, top_value = run, run_value
    resolution = float(f"{gap:.6g}") if math.isfinite(gap) else math.nan
    distinct_share, top_share = distinct / y.size, top / y.size
    reasons = []
    if distinct_share < DISCRETE_DISTINCT_SHARE:
        reasons.append(f"{distinct} distinct values in {y.size} rows")
    if top_share >= DISCRETE_TOP_SHARE:
        reasons.append(f"{top} of {y.size} rows at {top_value:g}")
    return {
        "distinct": int(distinct),
        "top_share": float(top_share),
        "resolution": resolution,
        "discrete": bool(reasons),
        "reason": "; ".join(reasons),
    }


@dataclass
class Prepared:
    """A table reduced to what a run uses: features (float32) and targets (float64), each a
    column-major array, the rows they came from, and what was dropped on the way. `x` and `y` are
    None once load() has handed them to a run."""

    x: np.ndarray | None
    y: np.ndarray | None
    n: int  # usable rows
    feature_names: list[str]
    target_names: list[str]
    dropped_rows: int = 0
    dropped_features: list[str] = field(default_factory=list)
    kept: np.ndarray | None = None  # the usable rows' numbers in the file, when some were dropped

    @property
    def rows(self) -> np.ndarray:
        """Each usable row's number in the file (0-based)."""
        return self.kept if self.kept is not None else np.arange(self.n)


class TableDataset(Dataset):
    """Any table: `dataset.path`, `dataset.target` (a column, or a list), `dataset.features` (null:
    every other column). See conf/dataset/table.yaml for every key."""

    figure_set = "table"  # run.figures draws these for a trained run

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
        self.n_rows = self.data.n
        self.output_dim = self.data.y.shape[1]
        self.input_shape = (self.data.x.shape[1],)
        self._train_rows, self._test_rows = self._split_rows()
        self.n_test = _size(self._test_rows)
        self.n_val = max(1, round(self.val_fraction * _size(self._train_rows)))
        self.n_train = _size(self._train_rows) - self.n_val
        if self.n_train < 2:
            raise DataError(
                f"{self.path}: {self.data.n} usable rows are too few for these splits "
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
        return read_table(self.path, self.format, pick=self._pick)

    def _indices(self, table: Table, spec: list, key: str) -> list[int]:
        indices = [table.index_of(s, key) for s in spec]
        twice = sorted({table.names[i] for i in indices if indices.count(i) > 1})
        if twice:
            raise DataError(f"{key}: column {', '.join(map(repr, twice))} of {self.path} is given twice")
        return indices

    def _pick(self, table: Table) -> dict[str, tuple[list[int], Any]]:
        """The columns to keep, chosen from the names before the rows are read: the features as
        float32 (what the networks compute in), the targets as float64 (their exact values set the
        recording resolution)."""
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
        return {"x": (features, np.float32), "y": (targets, np.float64)}

    def prepare(self, table: Table) -> Prepared:
        """Target and feature columns as numbers; missing values refused or their rows dropped (in
        place, a column at a time)."""
        features, targets = table.layout["x"][0], table.layout["y"][0]
        names = [table.names[i] for i in features]
        others = lambda i: [n for n in names if n != table.names[i]] if self.features_key else None  # noqa: E731
        facts = {i: table.numeric(i, "feature", others(i)) for i in features}
        facts.update({i: table.numeric(i, "target", []) for i in targets})
        self._check_columns(table, facts, features, targets)
        x, y = table.group("x"), table.group("y")
        bad = np.zeros(table.n_rows, dtype=bool)
        for array in (x, y):
            for j in range(array.shape[1]):
                bad |= ~np.isfinite(array[:, j])
        dropped = int(bad.sum())
        if dropped and self.missing == "error":
            where = []
            for i in [*targets, *features]:
                array, j = (y, targets.index(i)) if i in targets else (x, features.index(i))
                missing_rows = np.flatnonzero(~np.isfinite(array[:, j]))
                if missing_rows.size:
                    rows = _shown(missing_rows.tolist())
                    where.append(f"column {clip(table.names[i], 80)!r}: {missing_rows.size} (rows {rows})")
            raise DataError(
                f"{clip(self.path)}: {dropped} rows hold missing or non-finite values ({'; '.join(where[:SHOWN])}); "
                "set dataset.missing=drop to drop those rows (their number is reported)"
            )
        kept = None
        if dropped:
            kept = np.flatnonzero(~bad)
            for array in (x, y):
                for j in range(array.shape[1]):
                    array[: kept.size, j] = array[kept, j]
            x, y = x[: kept.size], y[: kept.size]
        n = table.n_rows - dropped
        return Prepared(x, y, n, names, [table.names[i] for i in targets], dropped_rows=dropped, kept=kept)

    def _check_columns(self, table: Table, facts: dict, features: list[int], targets: list[int]) -> None:
        """Columns the run cannot use, whatever the settings: one with no value at all, one with
        values beyond float32's range (the networks compute in float32), a target whose spread
        float32 cannot hold at its magnitude. Each is refused with advice about the file; the
        checks read the facts the reader gathered from the exact values."""
        for index, role in [*((i, "feature") for i in features), *((i, "target") for i in targets)]:
            name, fact = clip(table.names[index], 80), facts[index]
            if not fact.n:
                advice = (
                    f"leave it out with {self.features_key}=[...]"
                    if role == "feature" and self.features_key
                    else "choose another target column"
                    if role == "target"
                    else "fill it in the file"
                )
                raise DataError(f"{role} column {name!r} of {clip(self.path)} holds no value at all: {advice}")
            magnitude = fact.magnitude
            if 0 < magnitude < SMALLEST_MAGNITUDE:
                raise DataError(
                    f"{role} column {name!r} of {clip(self.path)} holds only values below {SMALLEST_MAGNITUDE:g} in "
                    f"size (at most {magnitude:.3g}); the networks compute in float32, which holds no such numbers "
                    "with full precision: rescale the column in the file (multiply it by a power of ten)"
                )
            if fact.beyond is not None:
                row, value = fact.beyond
                raise DataError(
                    f"{role} column {name!r} of {clip(self.path)} holds values beyond float32's range (±3.4e38), "
                    f"first in row {row} ({value:g}); the networks compute in float32: rescale the "
                    "column in the file (divide it by a power of ten)"
                )
            if role == "target":
                std = fact.std
                if 0 < std < RELATIVE_RESOLUTION * magnitude:
                    raise DataError(
                        f"target column {name!r} of {clip(self.path)} varies by {std:.3g} around values up to "
                        f"{magnitude:.6g}, less than {RELATIVE_RESOLUTION:g} of its magnitude: float32 cannot hold "
                        "those differences; subtract a constant (its mean) from the column in the file"
                    )

    def _split_rows(self) -> tuple[np.ndarray | slice, np.ndarray | slice]:
        """Positions (into the prepared rows) of the training part (validation still inside it) and
        of the test part: two slices for a random split (drawn per seed in split_positions), two
        arrays for index files."""
        n = self.data.n
        if self.split == "random":
            n_test = max(1, round(self.test_fraction * n))
            if n - n_test < 3:
                raise DataError(
                    f"{self.path}: {n} usable rows are too few for dataset.test_fraction={self.test_fraction} "
                    f"and dataset.val_fraction={self.val_fraction} (at least 2 training, 1 validation and 1 test row)"
                )
            return slice(0, n - n_test), slice(n - n_test, n)  # shuffled per seed in load()
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
        return self.data.n + self.data.dropped_rows

    def _check_constant(self) -> None:
        x = self.data.x
        constant = [i for i in range(x.shape[1]) if np.ptp(x[self._train_rows, i]) == 0]  # a column at a time
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
        keep_idx = [i for i in range(x.shape[1]) if i not in constant]
        if not keep_idx:
            raise DataError(f"{self.path}: every feature column is constant on the training rows")
        for k, i in enumerate(keep_idx):  # in place: the kept columns moved to the front
            if k != i:
                x[:, k] = x[:, i]
        self.data.x = x[:, : len(keep_idx)]
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
            # int32 positions where they fit: the same permutation as of arange(n), in half the memory
            order = rng.permutation(np.arange(self.data.n, dtype=np.int32 if self.data.n < 2**31 else np.int64))
            test, rest = order[: self.n_test], order[self.n_test :]
        else:
            test, rest = self._test_rows, rng.permutation(self._train_rows)
        return rest[self.n_val :], rest[: self.n_val], test

    def resolutions(self) -> np.ndarray:
        """The dequantisation width of each target column."""
        if self.resolution is not None:
            return np.full(self.output_dim, float(self.resolution))
        return np.array([s["resolution"] for s in self.target_stats])

    def _row_hashes(self, positions: np.ndarray) -> np.ndarray:
        """A 64-bit hash of each row's bits (features and targets), STAT_CHUNK rows at a time."""
        columns = [*(self.data.x[:, j] for j in range(self.data.x.shape[1])), *self.data.y.T]
        out = np.empty(len(positions), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, len(positions), STAT_CHUNK):
                rows = positions[start : start + STAT_CHUNK]
                h = np.full(len(rows), 0xCBF29CE484222325, dtype=np.uint64)
                for column in columns:
                    bits = column[rows].view(np.uint32 if column.dtype.itemsize == 4 else np.uint64)
                    h = (h ^ bits.astype(np.uint64)) * np.uint64(0x100000001B3)
                    h ^= h >> np.uint64(29)
                out[start : start + len(rows)] = h
        return out

    def count_duplicates(self, train: np.ndarray, test: np.ndarray) -> int:
        """Test rows (positions) whose features and target equal, bit for bit, a row of `train`.
        Rows are hashed (32 bits a training row, kept sorted), the test rows whose hash is there
        become candidates, and each candidate is compared value by value with the training row of
        its full 64-bit hash: exact, in a few bytes a row."""
        test_hash = self._row_hashes(test)
        folded = lambda h: (h ^ (h >> np.uint64(32))).astype(np.uint32)  # noqa: E731
        seen = np.empty(len(train), dtype=np.uint32)
        for start in range(0, len(train), STAT_CHUNK):
            seen[start : start + STAT_CHUNK] = folded(self._row_hashes(train[start : start + STAT_CHUNK]))
        seen.sort()
        found = np.minimum(np.searchsorted(seen, folded(test_hash)), max(len(seen) - 1, 0))
        maybe = seen[found] == folded(test_hash) if len(seen) else np.zeros(len(test), dtype=bool)
        del seen
        candidates, wanted = test[maybe], test_hash[maybe]
        if not candidates.size:
            return 0
        pool, pool_hash = [], []  # the training rows whose full hash a candidate has
        for start in range(0, len(train), STAT_CHUNK):
            rows = train[start : start + STAT_CHUNK]
            h = self._row_hashes(rows)
            hit = np.isin(h, wanted)
            pool.append(rows[hit])
            pool_hash.append(h[hit])
        pool_rows, pool_hash = np.concatenate(pool), np.concatenate(pool_hash)
        order = np.argsort(pool_hash)
        where = np.minimum(np.searchsorted(pool_hash[order], wanted), max(len(order) - 1, 0))
        paired = pool_hash[order][where] == wanted if len(order) else np.zeros(len(wanted), dtype=bool)
        a, b = candidates[paired], pool_rows[order[where[paired]]]
        equal = np.ones(len(a), dtype=bool)
        for column in [*(self.data.x[:, j] for j in range(self.data.x.shape[1])), *self.data.y.T]:
            kind = np.uint32 if column.dtype.itemsize == 4 else np.uint64
            equal &= column[a].view(kind) == column[b].view(kind)
        return int(equal.sum())

    @memory.mapped_blocks()  # the split's column buffers: large, freed one after the other
    def load(self, seed: int) -> Splits:
        """The training, validation and test parts for this seed. The rows are put in that order in
        place, a column at a time, and the parts handed over as views of the one array (a float32
        copy of the targets): the data are in memory once. The data set then no longer holds them;
        a later load reads the file again."""
        if self.data.x is None:
            self._reread()
        train, val, test = self.split_positions(seed)
        self.duplicate_rows = self.count_duplicates(np.concatenate([train, val]), test)
        if self.duplicate_rows:
            _warn_once(
                f"{self.duplicate_rows} of the {len(test)} test rows of {clip(self.path)} are exact copies (features "
                "and target) of training rows: their scores are not out-of-sample (duplicate_rows in metrics.json)"
            )
        x, y = self.data.x, self.data.y
        if self.dequantize:  # uniform noise over each recorded value's cell: a density, no spikes
            noise = np.random.default_rng([seed, 1]).uniform(-0.5, 0.5, size=y.shape)
            y = y + noise * self.resolutions()
        ends = np.cumsum([0, train.size, val.size, test.size])
        for array in (x, y):
            gathered = np.empty(ends[-1], dtype=array.dtype)  # one column at a time
            for j in range(array.shape[1]):
                column = array[:, j]
                for part, first in zip((train, val, test), ends):
                    for start in range(0, part.size, STAT_CHUNK):
                        chunk = part[start : start + STAT_CHUNK]
                        np.take(column, chunk, out=gathered[first + start : first + start + chunk.size])
                column[: ends[-1]] = gathered
            del gathered
        self.data.x = self.data.y = None  # handed over

        def part(k: int):
            rows = slice(ends[k], ends[k + 1])
            return torch.from_numpy(x[rows]), torch.from_numpy(y[rows].astype(np.float32))

        return Splits(part(0), part(1), part(2))

    def _reread(self) -> None:
        """The data again, after an earlier load took them: the same file, the same checks."""
        self.data = self.prepare(self.read())
        if self.data.n != self.n_rows:
            raise DataError(
                f"{clip(self.path)} changed while it was in use: {self.data.n} usable rows, "
                f"{self.n_rows} when the data set was built"
            )
        self._check_constant()

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
            "n_features": len(self.data.feature_names),
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
        """The test part's log-likelihood and the RMSE of each point rule, and for several targets
        each column's own scores; scored a part of the test set at a time (a table can be large)."""
        rules = (C.MIXTURE_MEAN, C.TOP_MODE, C.TOP_PI)
        per_row = {
            C.TEST_LL: lambda mixture, y: mixture.log_prob(y),
            **{
                rule: lambda mixture, y, rule=rule: (C.point(mixture, rule).double() - y.double()).square()
                for rule in rules
            },  # (n, D): each column's squared errors
        }
        if self.output_dim > 1:
            per_row["marginal_ll"] = lambda mixture, y: torch.stack(
                [mixture.marginal(d).log_prob(y[:, d : d + 1]) for d in range(y.shape[1])], -1
            )
        means = means_over_parts(predict_parts(mdn_net, *splits.test), **per_row)
        out: dict[str, Any] = {**self.describe(), C.TEST_LL: float(means[C.TEST_LL])}
        for rule in rules:
            out[C.key("rmse", rule)] = float(means[rule].sum().sqrt())
        if self.output_dim > 1:
            out.update(self.per_target(mdn_net, baseline, splits, means, rules))
        return out

    def per_target(self, mdn_net, baseline, splits, means, rules) -> dict[str, float]:
        """The 1-D scores of each target column (its marginal mixture), keyed `metric[column]`."""
        from mdn_experiments.evaluation.calibration import calibrate_parts

        n = len(splits.test[1])
        if baseline is not None:
            baseline_squared = means_over_parts(
                predict_parts(baseline, *splits.test),
                squared=lambda pred, y: (pred.double() - y.double()).square(),
            )["squared"]
        out = {}
        for d, name in enumerate(self.data.target_names):
            marginals = ((mixture.marginal(d), y[:, d : d + 1]) for mixture, y in predict_parts(mdn_net, *splits.test))
            scores = {
                C.TEST_LL: float(means["marginal_ll"][d]),
                **{C.key("rmse", rule): float(means[rule][d].sqrt()) for rule in rules},
                **calibrate_parts(marginals, n).metrics(),
            }
            if baseline is not None:
                scores[C.RMSE_BASELINE] = float(baseline_squared[d].sqrt())
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

    @memory.mapped_blocks()  # the split's column buffers: large, freed one after the other
    def load(self, seed: int) -> Splits:
        raise DataError(f"the run's table {self.path} is not there: its rows cannot be loaded (--index needs them)")
