"""Reading a table from disk into the columns a run uses, at any size.

CSV/TSV and Parquet are read through pyarrow (`pip install 'mdn-experiments[table]'`, imported only
when such a file is read): multithreaded, a piece of the file at a time (PIECE_BYTES of text, or
the rows of as many bytes of Parquet), straight into the arrays the run keeps. The features go into
one float32 array, the targets into one float64 array, both column-major, allocated once for the
file's rows; nothing else of the file stays in memory, so the peak is the data's size plus one
piece. Each column's facts (finite count, magnitude, spread, the first value float32 cannot hold)
are gathered from the exact float64 values on the way, for the checks the data set makes.

Whitespace text, .npy and .npz are read whole with numpy (pickles refused), then copied into the
same arrays: the small formats.

A caller names the columns it wants (`pick`) once the names are known (the header, the Parquet
schema, or the array's width), so columns it does not use are never converted or kept.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mdn_experiments import files, memory
from mdn_experiments.errors import ConfigError, DataError, clip

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
STREAMED = ("csv", "tsv", "parquet")  # read a piece at a time; the others are read whole
SHOWN = 5  # rows or values named in an error message
PIECE_BYTES = 16 * 1024**2  # text (or Parquet values) converted at a time
HEADER_BYTES = 64 * 1024**2  # the longest header line read
CHUNK_ROWS = 1 << 16  # rows of one column checked and copied at a time
# what one piece costs while it is converted: its text, pyarrow's float64 columns, one numpy column
PIECE_MEMORY = 6 * PIECE_BYTES
FLOAT32_MAX = float(np.finfo(np.float32).max)
TEXT_MEMORY_PER_BYTE = 4  # a whole-read text table: 8 bytes per value of about 4 bytes, read, then copied

# A pick: the groups of columns a caller keeps, each as (0-based column indices, dtype). The
# default keeps every column as float64 (or as read, when it is not numeric).
Groups = dict[str, tuple[list[int], Any]]
Pick = Callable[["Table"], Groups]


def shown(items: Sequence[Any]) -> str:
    head = ", ".join(clip(i, 80) for i in items[:SHOWN])
    return head + (f", ... ({len(items)} in all)" if len(items) > SHOWN else "")


@dataclass
class Facts:
    """What a numeric column's exact (float64) values say, gathered a piece at a time: the number
    of finite values, their mean and sum of squared deviations (merged by Chan's rule), the
    largest magnitude, and the first value beyond float32's range (row, value)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    magnitude: float = 0.0
    beyond: tuple[int, float] | None = None

    def add(self, values: np.ndarray, offset: int) -> None:
        finite = np.isfinite(values)
        kept = values[finite]
        if not kept.size:
            return
        size = np.abs(kept)
        if self.beyond is None and size.max() > FLOAT32_MAX:
            row = int(np.flatnonzero(finite)[np.argmax(size > FLOAT32_MAX)])
            self.beyond = (offset + row, float(values[row]))
        self.magnitude = max(self.magnitude, float(size.max()))
        mean = float(kept.mean())
        m2 = float(np.square(kept - mean).sum())
        n = self.n + kept.size
        delta = mean - self.mean
        self.mean += delta * kept.size / n
        self.m2 += m2 + delta * delta * self.n * kept.size / n
        self.n = n

    @property
    def std(self) -> float:
        """The finite values' standard deviation (ddof 0), as numpy's std gives it."""
        return math.sqrt(max(self.m2, 0.0) / self.n) if self.n else math.nan


@dataclass
class Table:
    """A file's columns, as read: names (the header, the Parquet schema, the .npz keys, or "0",
    "1", ... when the file has none); the picked columns, each a view into its group's array (or,
    when it is not numeric, an object array as read); the numeric columns' facts."""

    path: Path
    names: list[str]
    named: bool  # the names come from the file
    columns: list[np.ndarray | None] = field(default_factory=list)  # None: not picked
    facts: dict[int, Facts] = field(default_factory=dict)
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # column-major, (rows, columns)
    layout: Groups = field(default_factory=dict)
    n_rows: int = 0

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
        names = f"columns: {shown(self.names)}" if self.named else f"it has no header: indices 0..{len(self.names) - 1}"
        raise DataError(f"{key}={selector!r}: no such column in {self.path} ({names})")

    def group(self, name: str) -> np.ndarray:
        return self.groups[name]

    def slot(self, index: int) -> tuple[str, int]:
        """The group and position a picked column is kept at."""
        for name, (indices, _) in self.layout.items():
            if index in indices:
                return name, indices.index(index)
        raise KeyError(index)

    def numeric(self, index: int, role: str, other_features: list[str] | None) -> Facts:
        """Make sure column `index` is numeric, in its group's array, and return its facts; one line
        naming it when it is not (`other_features`: the features that would be left, for the
        advice; None: no advice)."""
        if index in self.facts:
            return self.facts[index]
        values = self.columns[index]
        try:
            numbers = values.astype(np.float64)  # numbers written as text (" 1.5"), booleans
        except (TypeError, ValueError):
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
            ) from None
        self._store(index, numbers, 0)
        return self.facts[index]

    def _store(self, index: int, values: np.ndarray, offset: int) -> None:
        """Numeric values of column `index` for rows offset.. into its group's array, with their
        facts; CHUNK_ROWS at a time, so the float64 work stays small."""
        facts = self.facts.setdefault(index, Facts())
        name, position = self.slot(index)
        for start in range(0, len(values), CHUNK_ROWS):
            chunk = values[start : start + CHUNK_ROWS].astype(np.float64, copy=False)
            facts.add(chunk, offset + start)
            with np.errstate(over="ignore"):  # beyond float32: refused by the data set from the facts
                self.groups[name][offset + start : offset + start + len(chunk), position] = chunk
        self.columns[index] = self.groups[name][:, position]


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


def require_pyarrow(what: str):
    try:
        import pyarrow
    except ImportError:
        raise DataError(f"reading {what} files needs pyarrow: {INSTALL_TABLE}") from None
    return pyarrow


# --- the memory a read costs, known before it starts ----------------------------------------


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
    """The memory reading a whole-read table costs, estimated before it is read: from the .npy
    header and the .npz members' headers (their arrays, as float64, twice: read, then copied), or
    the size of a text file. Refuses (FileRefused) a file that is not a regular file."""
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
    except Exception:  # noqa: BLE001 - a header that cannot be read: the reader says what is wrong
        return size
    return TEXT_MEMORY_PER_BYTE * size


def kept_bytes(n_rows: int, layout: Groups) -> int:
    """The arrays a streamed read fills: its rows times the picked columns' item sizes."""
    return n_rows * sum(len(indices) * np.dtype(dtype).itemsize for indices, dtype in layout.values())


def _check_fits(path: Path, parts: dict[str, int]) -> None:
    memory.Estimate(parts).check(
        memory.available_memory(),
        f"reading {clip(path, 120)}",
        "use a smaller file, fewer columns (dataset.features), or a machine with more memory",
    )


# --- reading ------------------------------------------------------------------------------


@memory.mapped_blocks()  # columns and their pieces: large blocks, freed as the read goes on
def read_table(
    path: Path | str, fmt: str = "auto", *, format_key: str | None = "dataset.format", pick: Pick | None = None
) -> Table:
    """Read a table from `path` (format by suffix, or `fmt`): a regular file (a link to one is
    followed) whose memory, estimated before the read, fits in what this process may still use.
    `pick` chooses the columns to keep once the names are known (default: every column, float64).
    `format_key`: where the user names a format (None: nowhere, as in mdn-predict)."""
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise ConfigError("dataset.format", fmt, "one of " + ", ".join(FORMATS))
    if not path.exists():
        raise DataError(f"{clip(path)}: no such file")
    if path.is_dir():
        raise DataError(f"{clip(path)}: no such file (it is a folder)")
    kind = detect_format(path, fmt, format_key)
    pick = pick or _every_column
    try:
        if kind in STREAMED:
            table = _read_csv(path, kind, pick) if kind != "parquet" else _read_parquet(path, pick)
        else:
            _check_fits(path, {f"the table {clip(path, 120)}": table_bytes(path, kind)})
            table = _read_whole(path, kind, pick)
    except (DataError, ConfigError, memory.ResourceError, files.FileRefused):
        raise
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - a reader's complaint about the file is bad input
        raise DataError(f"{clip(path)} cannot be read as {kind}: {clip(' '.join(str(err).split()), 300)}") from None
    if not table.names or table.n_rows == 0:
        raise DataError(f"{path} holds no rows")
    return table


def _every_column(table: Table) -> Groups:
    return {"all": (list(range(len(table.names))), np.float64)}


def _named(path: Path, names: list[str], named: bool, pick: Pick) -> Table:
    """The table's shell once its names are known: names checked, the caller's pick made."""
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{clip(path)}: column names used twice: {shown(twice)} (each column needs its own name)")
    table = Table(path, names, named, columns=[None] * len(names))
    table.layout = pick(table)
    return table


def _allocate(table: Table, rows: int) -> None:
    """One column-major array per group for `rows` rows (pages are only taken as they are written)."""
    table.groups = {
        name: np.empty((rows, len(indices)), dtype=dtype, order="F") for name, (indices, dtype) in table.layout.items()
    }


def _finish(table: Table, n_rows: int, text: dict[int, list[tuple[int, np.ndarray]]]) -> Table:
    """Cut the arrays to the rows read; a column that was not numeric everywhere becomes one object
    array (its numeric pieces as numbers)."""
    table.n_rows = n_rows
    table.groups = {name: array[:n_rows] for name, array in table.groups.items()}
    for index, pieces in text.items():
        name, position = table.slot(index)
        column = table.groups[name][:, position].astype(object)
        for offset, values in pieces:
            column[offset : offset + len(values)] = values
        table.columns[index] = column
        table.facts.pop(index, None)
    for index in table.facts:
        name, position = table.slot(index)
        table.columns[index] = table.groups[name][:, position]
    return table


def _put(table: Table, index: int, values: np.ndarray, offset: int, text: dict) -> None:
    """One piece of a picked column: numbers into its array, anything else kept as read."""
    if values.dtype.kind in "biuf":
        table._store(index, values, offset)
    else:
        text.setdefault(index, []).append((offset, values))


def _header(path: Path, delimiter: str) -> tuple[list[str], int]:
    """The header's names (a byte-order mark dropped) and the bytes it takes."""
    with os.fdopen(files.read_descriptor(path, follow=True), "rb") as fh:
        line = fh.readline(HEADER_BYTES + 1)
    if not line.strip():
        raise DataError(f"{path} holds no rows")
    if len(line) > HEADER_BYTES:
        raise DataError(f"{clip(path)}: the header line is longer than {HEADER_BYTES // 2**20} MB (is it a table?)")
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(line) + 1))  # a long column name is the checks' to refuse
    try:
        names = next(csv.reader([line.decode("utf-8-sig", errors="replace")], delimiter=delimiter), [])
    finally:
        csv.field_size_limit(limit)
    stripped = [name.strip() for name in names]
    twice = sorted({name for name in stripped if stripped.count(name) > 1})
    if twice:
        raise DataError(
            f"{clip(path)}: the header names a column twice: {shown(twice)} (each column needs its own name; "
            "rename one of them in the file)"
        )
    return names, len(line)


def _lines(fh, start: int) -> int:
    """Newlines after `start` (+1 for a last line without one): a bound on the rows, counted a block
    at a time."""
    fh.seek(start)
    count, last = 0, b"\n"
    while block := fh.read(PIECE_BYTES):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")


def _pieces(fh, start: int):
    """The file from `start` in pieces of about PIECE_BYTES, each ending at a newline."""
    fh.seek(start)
    rest = b""
    while block := fh.read(PIECE_BYTES):
        block = rest + block
        end = block.rfind(b"\n") + 1
        if end == 0:
            rest = block
            continue
        rest = block[end:]
        yield block[:end]
    if rest.strip():
        yield rest


def _read_csv(path: Path, kind: str, pick: Pick) -> Table:
    """CSV or TSV through pyarrow: the header, a count of lines (the rows' bound, for the arrays and
    the memory check), then the pieces, each parsed on all cores into the picked columns."""
    pa = require_pyarrow(kind.upper())
    import pyarrow.csv as pacsv

    delimiter = "," if kind == "csv" else "\t"
    names, start = _header(path, delimiter)
    table = _named(path, names, True, pick)
    wanted = [table.names[i] for indices, _ in table.layout.values() for i in indices]
    with os.fdopen(files.read_descriptor(path, follow=True), "rb") as fh:
        bound = _lines(fh, start)
        _check_fits(path, {"its columns": kept_bytes(bound, table.layout), "a piece being read": PIECE_MEMORY})
        _allocate(table, bound)
        read = pacsv.ReadOptions(column_names=names, use_threads=True)
        parse = pacsv.ParseOptions(delimiter=delimiter)
        offset, text = 0, {}
        for piece in _pieces(fh, start):
            try:
                types = {name: pa.float64() for name in wanted}
                batch = pacsv.read_csv(
                    pa.py_buffer(piece), read, parse, pacsv.ConvertOptions(column_types=types, include_columns=wanted)
                )
            except pa.ArrowInvalid as err:
                if "conversion error" not in str(err):
                    raise
                # a column is not numbers here: read the piece as text, convert what converts
                types = {name: pa.string() for name in wanted}
                batch = pacsv.read_csv(
                    pa.py_buffer(piece), read, parse, pacsv.ConvertOptions(column_types=types, include_columns=wanted)
                )
            del piece
            for name in wanted:
                _put(table, names.index(name), _numbers(pa, batch.column(name)), offset, text)
            offset += batch.num_rows
            del batch
            memory.give_back()
    return _finish(table, offset, text)


def _numbers(pa, column) -> np.ndarray:
    """A pyarrow column as numpy: float64 (nulls as NaN) when its values convert to numbers,
    otherwise an object array as read."""
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            column = pc.cast(column, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return column.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    return column.to_numpy(zero_copy_only=False)


def _read_parquet(path: Path, pick: Pick) -> Table:
    """Parquet through pyarrow: names from the schema, rows from the metadata, then each row group
    a few columns at a time (about PIECE_BYTES of float64 values), decoded on all cores, into the
    picked columns."""
    pa = require_pyarrow("Parquet")
    import pyarrow.parquet as pq

    with os.fdopen(files.read_descriptor(path, follow=True), "rb") as fh:
        source = pq.ParquetFile(fh, pre_buffer=False)
        names = list(source.schema_arrow.names)
        table = _named(path, names, True, pick)
        wanted = [table.names[i] for indices, _ in table.layout.values() for i in indices]
        rows = source.metadata.num_rows
        _check_fits(path, {"its columns": kept_bytes(rows, table.layout), "a piece being read": PIECE_MEMORY})
        _allocate(table, rows)
        offset, text = 0, {}
        for group in range(source.metadata.num_row_groups):  # a row group is Parquet's smallest read
            group_rows = source.metadata.row_group(group).num_rows
            step = max(1, PIECE_BYTES // (8 * max(1, group_rows)))  # columns read at a time
            for first in range(0, len(wanted), step):
                chosen = wanted[first : first + step]
                piece = source.read_row_group(group, columns=chosen, use_threads=True)
                for name in chosen:
                    _put(table, names.index(name), _numbers(pa, piece.column(name)), offset, text)
                del piece
                memory.give_back()
            offset += group_rows
    return _finish(table, offset, text)


def _read_whole(path: Path, kind: str, pick: Pick) -> Table:
    """Whitespace text, .npy, .npz: read whole with numpy, then the picked columns copied."""
    names, columns, named = READERS[kind](path)
    table = _named(path, names, named, pick)
    n = len(columns[0]) if columns else 0
    _allocate(table, n)
    text: dict = {}
    for indices, _ in table.layout.values():
        for index in indices:
            _put(table, index, columns[index], 0, text)
    return _finish(table, n, text)


def _matrix(path: Path, array: np.ndarray) -> tuple[list[str], list[np.ndarray], bool]:
    array = np.asarray(array)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{path}: a table needs a 2-D array (rows x columns), got shape {array.shape}")
    return [str(i) for i in range(array.shape[1])], [array[:, i] for i in range(array.shape[1])], False


def _read_whitespace(path: Path):
    try:
        array = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DataError(
            f"{clip(path)} cannot be read as whitespace-separated numbers: {clip(' '.join(str(err).split()), 200)} "
            "(a file with a header row: name it .csv or .tsv)"
        ) from None
    return _matrix(path, array)


def _read_npy(path: Path):
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path}: {err} (only plain numeric arrays are read; pickled objects never are)") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: not a .npy array")
    return _matrix(path, array)


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if len(arrays) == 1 and next(iter(arrays.values())).ndim == 2:
        return _matrix(path, next(iter(arrays.values())))
    lengths = {name: a.shape[0] if a.ndim else 0 for name, a in arrays.items()}
    if not arrays or any(a.ndim != 1 for a in arrays.values()) or len(set(lengths.values())) != 1:
        shapes = ", ".join(f"{name}: {a.shape}" for name, a in arrays.items())
        raise DataError(
            f"{path}: an .npz table holds one 2-D array, or 1-D arrays of one length (its columns); got {shapes}"
        )
    return list(arrays), list(arrays.values()), True


READERS = {"whitespace": _read_whitespace, "npy": _read_npy, "npz": _read_npz}
