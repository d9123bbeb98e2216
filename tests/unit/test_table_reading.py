"""Tables of any size (datasets/reading.py and the data set's in-place work): a file read a piece at
a time gives the same numbers as one read whole; the facts the checks use agree with numpy on the
float64 values; the memory a read and a load take is the data's size plus a fixed part (traced
allocations, not time); the memory check refuses before a byte of the body is parsed; the
statistics and the duplicate count computed a chunk at a time agree with their whole-array forms;
a column-major split trains exactly as a row-major one."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch

from mdn_experiments import memory
from mdn_experiments.datasets import reading
from mdn_experiments.datasets import table as T
from mdn_experiments.errors import DataError


def frame(n: int, seed: int = 0, columns: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"x{j}": rng.normal(size=n) * 10**j for j in range(columns - 1)}
    data["count"] = rng.integers(0, 9, size=n)  # integers: read as numbers
    data["y"] = rng.normal(3, 2, size=n)
    return pd.DataFrame(data)


def pick_all_but_y(table):
    y = table.names.index("y")
    return {"x": ([i for i in range(len(table.names)) if i != y], np.float32), "y": ([y], np.float64)}


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of a few KB and chunks of a few rows: every boundary is crossed many times."""
    monkeypatch.setattr(reading, "PIECE_BYTES", 4096)
    monkeypatch.setattr(reading, "CHUNK_ROWS", 37)
    monkeypatch.setattr(T, "STAT_CHUNK", 53)


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet"])
def test_a_file_read_in_pieces_gives_the_numbers_and_facts_of_one_read_whole(tmp_path, small_pieces, kind):
    df = frame(3000)
    df.loc[[5, 2500], "x1"] = np.nan  # missing values in two different pieces
    path = tmp_path / f"t.{kind}"
    if kind == "parquet":
        df.to_parquet(path, row_group_size=700)  # several row groups, each read a few columns at a time
    else:
        df.to_csv(path, index=False, sep="," if kind == "csv" else "\t")
    table = reading.read_table(path, pick=pick_all_but_y)
    assert table.n_rows == 3000
    x, y = table.group("x"), table.group("y")
    assert x.dtype == np.float32 and y.dtype == np.float64 and x.flags.f_contiguous
    truth = df.drop(columns="y").to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(x, truth.astype(np.float32))
    np.testing.assert_array_equal(y[:, 0], df["y"].to_numpy())  # the targets exactly
    for j, name in enumerate(df.columns):
        values = df[name].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        fact = table.facts[j]
        assert fact.n == finite.size
        assert fact.magnitude == np.abs(finite).max()
        assert fact.std == pytest.approx(finite.std(), rel=1e-12)
        assert fact.beyond is None


def test_only_the_picked_columns_are_kept_and_a_text_column_left_out_costs_nothing(tmp_path, small_pieces):
    df = frame(500)
    df.insert(0, "id", [f"patient-{i}" for i in range(500)])
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    data = T.TableDataset(path=str(path), target="y", features=["x0", "x2"])
    assert data.data.feature_names == ["x0", "x2"]
    np.testing.assert_array_equal(data.data.x[:, 1], df["x2"].to_numpy(dtype=np.float32))


def test_a_column_that_turns_to_text_in_a_later_piece_is_one_line_naming_its_row(tmp_path, small_pieces):
    df = frame(2000)
    df["x3"] = df["x3"].astype(object)
    df.loc[1700, "x3"] = "n/a?"
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'x3' of .* is not numeric \(row 1700: 'n/a\?'\)"):
        T.TableDataset(path=str(path), target="y")


def test_numbers_written_with_spaces_are_still_numbers(tmp_path, small_pieces):
    path = tmp_path / "t.csv"
    rows = "\n".join(f"{i}, {i * 0.5}, {i % 7}" for i in range(400))
    path.write_text("a, b, y\n" + rows + "\n")
    data = T.TableDataset(path=str(path), target=" y", features=[" b", "a"])
    np.testing.assert_array_equal(data.data.x[:, 0], (np.arange(400) * 0.5).astype(np.float32))


def test_a_value_beyond_float32_in_a_later_piece_is_named_by_its_row(tmp_path, small_pieces):
    df = frame(2000)
    df.loc[1234, "x2"] = 5e39
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"beyond float32's range .* first in row 1234 \(5e\+39\)"):
        T.TableDataset(path=str(path), target="y")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_memory_check_refuses_before_the_body_is_parsed(tmp_path, monkeypatch, kind):
    path = tmp_path / f"t.{kind}"
    (frame(1000).to_parquet if kind == "parquet" else lambda p: frame(1000).to_csv(p, index=False))(path)
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 10_000)
    parsed = []
    monkeypatch.setattr(reading, "_put", lambda *args: parsed.append(1))
    with pytest.raises(memory.ResourceError) as err:
        T.TableDataset(path=str(path), target="y")
    line = str(err.value)
    assert "\n" not in line and f"reading {path} needs about" in line and "fewer columns (dataset.features)" in line
    assert not parsed  # refused from the line count (CSV) or the metadata (Parquet), not after reading


def traced_peak(path) -> tuple[int, object]:
    """The traced peak of building a table's data set and loading a split (numpy reports its
    arrays to tracemalloc), and the split."""
    tracemalloc.start()
    try:
        splits = T.TableDataset(path=str(path), target="y").load(0)
        return tracemalloc.get_traced_memory()[1], splits
    finally:
        tracemalloc.stop()


def test_reading_and_loading_take_the_data_once_plus_a_fixed_part(tmp_path, monkeypatch):
    """The peak of building the data set and loading a split grows with the rows by at most 1.2
    times the arrays kept (float32 features, float64 target), and stays within 1.25 times them
    plus 4 MB; the whole-file pandas reading this replaced took over eight times the data."""
    monkeypatch.setattr(reading, "PIECE_BYTES", 256 * 1024)
    columns, peaks, kept = 20, [], []
    for n in (40_000, 160_000):
        rng = np.random.default_rng(1)
        df = pd.DataFrame({f"x{j}": rng.normal(size=n) for j in range(columns - 1)})
        df["y"] = rng.normal(size=n)
        path = tmp_path / f"t{n}.parquet"
        df.to_parquet(path, row_group_size=10_000)
        peak, splits = traced_peak(path)
        peaks.append(peak)
        kept.append(n * ((columns - 1) * 4 + 8))
    slope = (peaks[1] - peaks[0]) / (kept[1] - kept[0])
    assert slope <= 1.2, f"the peak grows by {slope:.2f} times the data"
    assert peaks[1] <= 1.25 * kept[1] + 4 * 2**20, f"peak {peaks[1] / 2**20:.1f} MiB for {kept[1] / 2**20:.1f} MiB"
    # the parts are views of one column-major array: no copy of the features was made
    x_train, x_test = splits.train[0], splits.test[0]
    assert x_train.stride() == x_test.stride() == (1, n)
    assert x_test.data_ptr() == x_train.data_ptr() + 4 * (len(splits.train[0]) + len(splits.val[0]))


def test_load_gives_the_same_parts_as_indexing_would(tmp_path, small_pieces):
    df = frame(1500)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    data = T.TableDataset(path=str(path), target="y", dequantize=True, resolution=0.01)
    x_all, y_all = data.data.x.copy(), data.data.y.copy()
    train, val, test = data.split_positions(3)
    noise = np.random.default_rng([3, 1]).uniform(-0.5, 0.5, size=y_all.shape) * 0.01
    splits = data.load(3)
    for (x, y), rows in zip((splits.train, splits.val, splits.test), (train, val, test)):
        np.testing.assert_array_equal(x.numpy(), x_all[rows])
        np.testing.assert_array_equal(y.numpy(), (y_all + noise)[rows].astype(np.float32))


def test_a_split_drawn_in_int32_is_the_one_numpy_draws_for_arange(tmp_path):
    rng = np.random.default_rng(11)
    n = 100_003
    np.testing.assert_array_equal(
        rng.permutation(np.arange(n, dtype=np.int32)), np.random.default_rng(11).permutation(n)
    )


@pytest.mark.parametrize("chunk", [3, 7, 1 << 16])
def test_discreteness_a_chunk_at_a_time_agrees_with_unique(monkeypatch, chunk):
    monkeypatch.setattr(T, "STAT_CHUNK", chunk)
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 150))
        if trial % 3 == 0:
            y = rng.integers(0, int(rng.integers(1, 20)), n).astype(float)
        elif trial % 3 == 1:
            y = rng.normal(size=n)
            y[: n // 2] = 2.5
        else:
            y = rng.normal(size=n)
        values, counts = np.unique(y, return_counts=True)
        gap = float(np.diff(values).min()) if values.size > 1 else math.nan
        stats = T.discreteness(y)
        assert stats["distinct"] == values.size
        assert stats["top_share"] == counts.max() / n
        assert (math.isnan(gap) and math.isnan(stats["resolution"])) or stats["resolution"] == float(f"{gap:.6g}")
        if stats["discrete"] and "rows at" in stats["reason"]:
            assert f"{counts.max()} of {n} rows at {values[counts.argmax()]:g}" in stats["reason"]


def test_duplicates_are_exact_copies_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "STAT_CHUNK", 29)
    rng = np.random.default_rng(2)
    base = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300), "y": rng.normal(size=300)})
    near = base.iloc[:20].copy()
    near["a"] = np.nextafter(near["a"].to_numpy(np.float32), np.float32(np.inf)).astype(np.float64)  # one bit
    copies = base.iloc[20:60]
    path = tmp_path / "t.parquet"
    pd.concat([base, near, copies], ignore_index=True).to_parquet(path)
    data = T.TableDataset(path=str(path), target="y", test_fraction=0.3)
    train, val, test = data.split_positions(0)
    rows = np.concatenate([data.data.x.view(np.uint32), data.data.y.view(np.uint64).astype(object)], axis=1)
    seen = {tuple(rows[r]) for r in np.concatenate([train, val])}
    expected = sum(tuple(rows[t]) in seen for t in test)
    assert expected > 0
    assert data.count_duplicates(np.concatenate([train, val]), test) == expected


def test_a_second_load_reads_the_file_again_and_notices_a_changed_file(tmp_path):
    path = tmp_path / "t.csv"
    frame(300).to_csv(path, index=False)
    data = T.TableDataset(path=str(path), target="y")
    first = data.load(0)
    second = data.load(0)
    assert torch.equal(first.test[0], second.test[0]) and torch.equal(first.train[1], second.train[1])
    frame(200).to_csv(path, index=False)
    with pytest.raises(DataError, match="changed while it was in use"):
        data.load(0)
