"""MNIST's files: the IDX format read with numpy, MD5 verification, and a careful downloader.

No torchvision needed. Files the user already has are never replaced: a missing file may be
downloaded (into a temporary name, verified, then renamed atomically); a corrupted one is an
error that says what to do.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mdn_experiments import files
from mdn_experiments.errors import DataError

# the four original files and their published MD5 sums
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# the mirrors torchvision uses, in the same order
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into an array of its stated shape.

    Layout: two zero bytes, a type code, the number of dimensions, each dimension as a big-endian
    uint32, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # gzip raises these on truncated or non-gzip files
        raise DataError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'IDX'} ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: holds {len(raw) - header} data bytes, its header promises {expected} "
            f"(shape {shape}); the file is truncated or corrupted"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file's bytes (hashlib's `algorithm`: md5, sha256), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with os.fdopen(files.read_descriptor(path, follow=True), "rb") as fh:  # a regular file: a FIFO never hangs
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")


def download(url: str, target: Path, expected_md5: str, timeout: float = 30.0, progress: bool = True) -> None:
    """Fetch url into target: streamed into a temporary file, MD5-checked, then renamed atomically.

    Raises DataError if the transfer fails or the checksum differs; target is untouched then.
    """
    digest = hashlib.md5()
    try:
        # a new temporary file beside target, renamed over it only when complete and checked
        with urllib.request.urlopen(url, timeout=timeout) as response, files.replaced(target) as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress, leave=False
            ) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != expected_md5:
                raise DataError(f"{url}: MD5 {digest.hexdigest()} differs from the published {expected_md5}")
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DataError(f"{url}: download failed ({getattr(err, 'reason', err)})") from None


def _download_with_torchvision(root: Path, name: str, md5: str, mirrors) -> bool:
    """Use torchvision's downloader when torchvision imports; False when it is not available."""
    try:
        from torchvision.datasets.utils import download_url  # optional extra; never needed
    except Exception:  # noqa: BLE001 - any import failure (absent, or built for another torch)
        return False
    for mirror in mirrors:
        try:
            download_url(mirror + name, root=str(root), filename=name, md5=md5)
            return md5sum(root / name) == md5
        except Exception:  # noqa: BLE001 - try the next mirror
            continue
    return False


def ensure_mnist_files(
    root: Path, download_missing: bool = True, mirrors=MNIST_MIRRORS, progress: bool = True
) -> dict[str, Path]:
    """Paths of the four verified MNIST files under root, downloading the missing ones if allowed."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(
            f"dataset.root={str(root)!r} is not a folder: dataset.root must be a folder holding "
            f"(or to receive) the four MNIST .gz files"
        )
    paths = {}
    for name, md5 in MNIST_FILES.items():
        path = root / name
        if not path.exists():
            if not download_missing:
                raise DataError(
                    f"{path} is missing (expected MD5 {md5}); put the four MNIST files in "
                    f"{root} or set dataset.root=FOLDER (or dataset.download=true)"
                )
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DataError(
                    f"dataset.root={str(root)!r} cannot be created ({err.strerror}); "
                    f"dataset.root must be a folder you can write to, or one holding the four "
                    f"MNIST .gz files"
                ) from None
            if not _download_with_torchvision(root, name, md5, mirrors):
                failures = []
                for mirror in mirrors:
                    try:
                        download(mirror + name, path, md5, progress=progress)
                        break
                    except DataError as err:
                        failures.append(str(err))
                else:
                    raise DataError(
                        f"{path} is missing and could not be downloaded ({'; '.join(failures)}); "
                        f"copy the file there (MD5 {md5}) or set dataset.root=FOLDER"
                    )
        actual = md5sum(path)
        if actual != md5:
            raise DataError(
                f"{path}: MD5 {actual} does not match the published {md5}; the file is corrupted "
                f"or truncated: delete it to download it again, or set dataset.root to a folder "
                f"holding the original files"
            )
        paths[name] = path
    return paths
