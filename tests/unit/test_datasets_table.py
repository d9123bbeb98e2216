"""Tables as data sets (datasets/table.py): the readers agree with each other on one table in every
format, columns by name or index, splits that are disjoint, complete and reproducible from the seed,
every bad-input class with one line naming what is wrong, the target's discreteness, and the
log-likelihood in the target's original units against an independent float64 computation (scipy)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from mdn_experiments import mdn
from mdn_experiments.datasets.table import TableDataset, discreteness, read_table
from mdn_experiments.errors import ConfigError, DataError
from mdn_experiments.evaluation.calibration import quantiles
from mdn_experiments.models import MLP, build_network


def frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.uniform(-3, 3, size=n),
            "c": rng.integers(0, 50, size=n).astype(float),
            "y": rng.normal(10, 4, size=n),
        }
    )


def write_all(df: pd.DataFrame, folder) -> dict[str, object]:
    """The same table in every format the reader takes."""
    paths = {
        "csv": folder / "t.csv",
        "tsv": folder / "t.tsv",
        "whitespace": folder / "t.txt",
        "npy": folder / "t.npy",
        "npz": folder / "t.npz",
        "npz_matrix": folder / "m.npz",
        "parquet": folder / "t.parquet",
    }
    df.to_csv(paths["csv"], index=False)
    df.to_csv(paths["tsv"], index=False, sep="\t")
    np.savetxt(paths["whitespace"], df.to_numpy())
    np.save(paths["npy"], df.to_numpy())
    np.savez(paths["npz"], **{c: df[c].to_numpy() for c in df.columns})
    np.savez(paths["npz_matrix"], data=df.to_numpy())
    df.to_parquet(paths["parquet"])
    return paths


def test_the_readers_agree_on_one_table_in_every_format(tmp_path):
    df = frame()
    truth = df.to_numpy()
    for kind, path in write_all(df, tmp_path).items():
        table = read_table(path)
        values = np.stack([np.asarray(c, dtype=np.float64) for c in table.columns], axis=1)
        np.testing.assert_allclose(values, truth, rtol=1e-15 if kind != "whitespace" else 1e-15, err_msg=kind)
        assert table.named == (kind in ("csv", "tsv", "npz", "parquet")), kind
        if table.named:
            assert table.names == list(df.columns)
    # the same data set, whichever file: by name where there are names, by index where not
    splits = {}
    for kind, path in write_all(df, tmp_path).items():
        named = kind in ("csv", "tsv", "npz", "parquet")
        data = TableDataset(path=str(path), target="y" if named else 3, features=["a", "c"] if named else [0, 2])
        splits[kind] = data.load(seed=3)
    first = splits.pop("csv")
    for kind, other in splits.items():
        for a, b in zip((first.train, first.val, first.test), (other.train, other.val, other.test)):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), kind


def test_features_default_to_every_other_column_and_a_list_target_is_multivariate(tmp_path):
    path = tmp_path / "t.csv"
    frame().to_csv(path, index=False)
    data = TableDataset(path=str(path), target="y")
    assert data.data.feature_names == ["a", "b", "c"] and data.input_shape == (3,) and data.output_dim == 1
    two = TableDataset(path=str(path), target=["y", 1])
    assert two.data.target_names == ["y", "b"] and two.data.feature_names == ["a", "c"] and two.output_dim == 2


def test_random_splits_are_disjoint_complete_and_reproducible(tmp_path):
    path = tmp_path / "t.csv"
    frame(n=200).to_csv(path, index=False)
    data = TableDataset(path=str(path), target="y", test_fraction=0.2, val_fraction=0.25)
    train, val, test = data.split_positions(seed=5)
    assert (len(test), len(val), len(train)) == (40, 40, 120)
    everything = np.concatenate([train, val, test])
    assert len(np.unique(everything)) == 200 and sorted(everything) == list(range(200))
    again = data.split_positions(seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = data.split_positions(seed=6)
    assert not np.array_equal(test, other[2])
    # the tensors are the rows they name (the data set hands its arrays to the splits)
    x_all, y_all = data.data.x.copy(), data.data.y.copy()
    splits = data.load(seed=5)
    for (x, y), positions in zip((splits.train, splits.val, splits.test), (train, val, test)):
        np.testing.assert_array_equal(x.numpy(), x_all[positions])
        np.testing.assert_array_equal(y.numpy(), y_all[positions].astype(np.float32))
    assert data.data.x is None
    # a second load reads the file again: the same parts for the same seed
    again = data.load(seed=5)
    for a, b in zip((splits.train, splits.val, splits.test), (again.train, again.val, again.test)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_index_files_give_the_test_rows_exactly_and_validation_comes_from_training(tmp_path):
    path = tmp_path / "t.csv"
    frame(n=50).to_csv(path, index=False)
    train_rows, test_rows = np.arange(0, 40)[::-1], np.arange(40, 50)
    np.savetxt(tmp_path / "train.txt", train_rows, fmt="%d")
    np.savetxt(tmp_path / "test.txt", test_rows, fmt="%d")
    data = TableDataset(
        path=str(path),
        target="y",
        split="index",
        train_index=str(tmp_path / "train.txt"),
        test_index=str(tmp_path / "test.txt"),
        val_fraction=0.25,
    )
    train, val, test = data.split_positions(seed=0)
    np.testing.assert_array_equal(test, test_rows)
    assert set(train) | set(val) == set(train_rows) and not set(train) & set(val) and len(val) == 10


def bad(tmp_path, match: str, error=DataError, **kwargs):
    with pytest.raises(error, match=match) as err:
        TableDataset(**kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_every_bad_input_is_one_line_naming_the_file_column_or_row(tmp_path):
    df = frame(n=30)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    p = str(path)
    bad(tmp_path, "no such file", path=str(tmp_path / "nope.csv"), target="y")
    (tmp_path / "t.xlsx").write_text("x")
    bad(tmp_path, r"unknown format '.xlsx'.*\.csv", path=str(tmp_path / "t.xlsx"), target="y")
    message = bad(tmp_path, r"dataset.target='prce': no such column .*columns: a, b, c, y", path=p, target="prce")
    assert p in message
    bad(tmp_path, r"has 4 columns \(0-based indices 0..3\)", path=p, target=9)
    bad(tmp_path, "column 'a' .* is given twice", path=p, target="y", features=["a", "b", "a"])
    bad(tmp_path, "both a target and a feature", path=p, target="y", features=["a", "y"])
    bad(tmp_path, "dataset.path", ConfigError, path=None, target="y")
    # a non-numeric column: named, with the way to leave it out
    text = df.assign(city=["Paris"] * 30)
    text.to_csv(tmp_path / "s.csv", index=False)
    bad(
        tmp_path,
        r"column 'city' .* is not numeric \(row 0: 'Paris'\): leave it out with dataset.features=\[a,b,c\]",
        path=str(tmp_path / "s.csv"),
        target="y",
    )
    # missing and non-finite values: how many and where, and the way to drop them
    holes = df.copy()
    holes.loc[[3, 7], "b"] = np.nan
    holes.loc[11, "y"] = np.inf
    holes.to_csv(tmp_path / "h.csv", index=False)
    bad(
        tmp_path,
        r"3 rows hold missing or non-finite values \(column 'y': 1 \(rows 11\); column 'b': 2 \(rows 3, 7\)\); "
        "set dataset.missing=drop",
        path=str(tmp_path / "h.csv"),
        target="y",
    )
    dropped = TableDataset(path=str(tmp_path / "h.csv"), target="y", missing="drop")
    assert dropped.data.dropped_rows == 3 and len(dropped.data.rows) == 27 and 3 not in dropped.data.rows
    assert dropped.describe()["dropped_rows"] == 3
    # a constant column, and too few rows
    df.assign(k=1.0).to_csv(tmp_path / "k.csv", index=False)
    bad(tmp_path, r"'k' .* is constant on the training rows: leave it out", path=str(tmp_path / "k.csv"), target="y")
    kept = TableDataset(path=str(tmp_path / "k.csv"), target="y", constant="drop")
    assert kept.data.feature_names == ["a", "b", "c"] and kept.describe()["dropped_features"] == "k"
    df.assign(y=2.0).to_csv(tmp_path / "ky.csv", index=False)
    bad(tmp_path, "target column 'y' .* is constant", path=str(tmp_path / "ky.csv"), target="y")
    df.head(3).to_csv(tmp_path / "few.csv", index=False)
    bad(tmp_path, "3 usable rows are too few", path=str(tmp_path / "few.csv"), target="y")


def test_index_files_that_overlap_repeat_or_point_outside_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    frame(n=30).to_csv(path, index=False)

    def with_files(train, test, match):
        (tmp_path / "tr.txt").write_text(" ".join(map(str, train)))
        (tmp_path / "te.txt").write_text(" ".join(map(str, test)))
        bad(
            tmp_path,
            match,
            path=str(path),
            target="y",
            split="index",
            train_index=str(tmp_path / "tr.txt"),
            test_index=str(tmp_path / "te.txt"),
        )

    with_files(range(20), range(18, 30), r"share 2 rows \(18, 19\): a test row may never be trained on")
    with_files([0, 1, 2, 2, 3, 4, 5], range(20, 30), r"repeats rows 2")
    with_files([*range(20), 30, 31], range(20, 30), r"rows 30, 31 point outside the table \(0-based rows 0..29\)")
    with_files([0, 1.5], range(20, 30), "must be integers")


def test_a_discrete_target_is_flagged_and_dequantised_within_its_resolution(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=n)
    wine = np.clip(np.round(5.5 + x + rng.normal(size=n) * 0.5), 3, 8)
    flags = discreteness(wine)
    assert flags["discrete"] and flags["resolution"] == 1.0 and "distinct values" in flags["reason"]
    assert not discreteness(rng.normal(size=n))["discrete"]
    capped = np.minimum(rng.normal(20, 10, size=n).round(1), 50.0)
    capped[:12] = 50.0
    assert "rows at 50" in discreteness(capped)["reason"] and discreteness(capped)["resolution"] == pytest.approx(0.1)
    pd.DataFrame({"x": x, "quality": wine}).to_csv(tmp_path / "w.csv", index=False)
    raw = TableDataset(path=str(tmp_path / "w.csv"), target="quality")
    fair = TableDataset(path=str(tmp_path / "w.csv"), target="quality", dequantize=True)
    assert raw.describe()["discrete_target"].startswith("quality: 6 distinct values")
    for a, b in zip((raw.load(1).train, raw.load(1).test), (fair.load(1).train, fair.load(1).test)):
        gap = (b[1] - a[1]).abs()
        assert torch.equal(a[0], b[0]) and gap.max() <= 0.5 and gap.min() > 0
        assert torch.equal(torch.round(b[1]), a[1])  # each value stays in its own cell
    assert torch.equal(fair.load(1).test[1], fair.load(1).test[1])  # the noise is the seed's


def test_log_likelihood_in_original_units_matches_an_independent_computation():
    """The network standardises its targets; its log-likelihood must be that of the mixture in the
    data's units: the standardised one minus log(std) (the Jacobian), checked against scipy."""
    torch.manual_seed(0)
    x = torch.randn(300, 3) * 5 + 2
    y = (x[:, :1] * 40 + 900 + torch.randn(300, 1) * 25).float()
    network = build_network(MLP([3], [8], "tanh"), (3,), 1, "mdn", 3)
    network.fit_standardization(x, y)
    with torch.no_grad():
        mixture = network(x)
        z = network.head(network.backbone((x - network.x_mean) / network.x_std))  # standardised units
    ll = mixture.log_prob(y).double().numpy()
    y_mean, y_std = float(network.y_mean), float(network.y_std)
    pi, mu_z, s_z = z.pi.double().numpy(), z.mu[..., 0].double().numpy(), z.sigma[..., 0].double().numpy()
    y64 = y[:, 0].double().numpy()
    independent = logsumexp(np.log(pi) + stats.norm.logpdf(y64[:, None], y_mean + y_std * mu_z, y_std * s_z), axis=1)
    np.testing.assert_allclose(ll, independent, rtol=1e-4, atol=1e-4)
    standardised = z.log_prob(((y - network.y_mean) / network.y_std)).double().numpy()
    np.testing.assert_allclose(ll, standardised - math.log(y_std), rtol=1e-4, atol=1e-4)


def test_quantiles_and_marginals_against_scipy():
    torch.manual_seed(1)
    log_pi = torch.log_softmax(torch.randn(5, 3), -1).double()
    mu = torch.randn(5, 3, 2).double()
    scale = torch.randn(5, 3, 2, 2).double() * 0.3
    cov = scale @ scale.transpose(-1, -2) + 0.1 * torch.eye(2, dtype=torch.float64)
    full = mdn.FullMixture(log_pi, mu, torch.linalg.cholesky(cov))
    for d in range(2):
        marginal = full.marginal(d)
        sd = cov[..., d, d].sqrt().numpy()
        y = torch.randn(5, 1).double()
        expected = logsumexp(log_pi.numpy() + stats.norm.logpdf(y.numpy(), mu[..., d].numpy(), sd), axis=1)
        np.testing.assert_allclose(marginal.log_prob(y).numpy(), expected, rtol=1e-10)
        q = quantiles(marginal, (0.05, 0.5, 0.95)).numpy()
        for level, column in zip((0.05, 0.5, 0.95), q.T):
            cdf = (log_pi.exp().numpy() * stats.norm.cdf(column[:, None], mu[..., d].numpy(), sd)).sum(1)
            np.testing.assert_allclose(cdf, level, atol=1e-9)


class TestEdges:
    """Duplicate header names, test rows that copy training rows, columns with no value or beyond
    float32: each one line about the file (issue 25)."""

    def test_a_header_naming_a_column_twice_is_refused(self, tmp_path):
        path = tmp_path / "twice.csv"
        path.write_text("a,b,a,y\n1,2,3,4\n5,6,7,8\n")
        with pytest.raises(DataError, match=r"the header names a column twice: a \(each column needs its own name"):
            read_table(path)

    def test_test_rows_that_copy_training_rows_are_counted(self, tmp_path):
        rng = np.random.default_rng(0)
        data = pd.DataFrame({"a": rng.normal(size=50), "y": rng.normal(size=50)})
        path = tmp_path / "dups.csv"
        pd.concat([data, data.iloc[:10]]).to_csv(path, index=False)  # rows 0-9 twice
        table = TableDataset(path=str(path), target="y", test_fraction=0.3)
        train, val, test = table.split_positions(0)
        expected = sum(
            any(
                (table.data.x[t] == table.data.x[r]).all() and (table.data.y[t] == table.data.y[r]).all()
                for r in np.concatenate([train, val])
            )
            for t in test
        )
        table.load(0)
        assert expected > 0 and table.duplicate_rows == expected and table.describe()["duplicate_rows"] == expected

    def test_a_column_without_any_value_is_not_advised_to_drop_rows(self, tmp_path):
        path = tmp_path / "empty.csv"
        path.write_text("a,b,y\n" + "".join(f"{i},,{i * 2}\n" for i in range(20)))
        with pytest.raises(DataError, match="feature column 'b' of .* holds no value at all: leave it out") as caught:
            TableDataset(path=str(path), target="y")
        assert "missing=drop" not in str(caught.value)

    @pytest.mark.parametrize("value, needle", [(1e39, "beyond float32's range"), (1e-33, "below 1e-30")])
    def test_magnitudes_float32_cannot_hold_are_advice_about_the_file(self, tmp_path, value, needle):
        path = tmp_path / "big.csv"
        path.write_text("a,y\n" + "".join(f"{i},{value * (1 + i % 3)!r}\n" for i in range(20)))
        with pytest.raises(DataError, match=needle) as caught:
            TableDataset(path=str(path), target="y")
        assert "rescale the column in the file" in str(caught.value) and "dataset.test_fraction" not in str(
            caught.value
        )


def test_a_test_part_scored_a_part_at_a_time_gives_the_numbers_of_one_pass(tmp_path, monkeypatch):
    """A large test part is predicted and scored in parts (models.predict_parts): no whole-set
    mixture is held. Parts of 7 rows give the one-pass metrics: the log-likelihoods and RMSEs to
    float rounding, each column's calibration exactly (the HDR draws follow one stream, drawn for
    7 inputs at a time either way) but the mean CRPS, a float64 sum taken a part at a time."""
    from mdn_experiments import models
    from mdn_experiments.evaluation import calibration

    df = frame(200)
    df["z"] = df["a"] * 2 + np.random.default_rng(5).normal(size=200)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    data = TableDataset(path=str(path), target=["y", "z"])
    splits = data.load(0)
    assert len(splits.test[1]) > 14  # three parts at least
    torch.manual_seed(0)
    network = build_network(MLP([3], [8], "tanh"), (3,), 2, "mdn", 3)
    baseline = build_network(MLP([3], [8], "tanh"), (3,), 2, "mse")
    for net in (network, baseline):
        net.fit_standardization(*splits.train)
    monkeypatch.setattr(calibration, "HDR_SAMPLE_BYTES", 7 * 1000 * 32)  # a 1-D draw costs 32 bytes
    whole = data.metrics(network, baseline, splits)
    monkeypatch.setattr(models, "PART_ROWS", 7)
    parts = data.metrics(network, baseline, splits)
    assert whole.keys() == parts.keys() and any("coverage_90[z]" in key for key in parts)
    for key, value in whole.items():
        if isinstance(value, float) and not key.startswith(("coverage", "pit_ks", "crps")):
            assert parts[key] == pytest.approx(value, rel=1e-6), key
        elif key.startswith("crps"):  # the same float64 values, summed a part at a time
            assert parts[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert parts[key] == value, key
