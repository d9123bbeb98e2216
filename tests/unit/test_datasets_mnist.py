"""MNIST: IDX parsing, MD5 checks, the downloader against a loopback server, a short real run."""

import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from mdn_experiments.datasets.idx import MNIST_FILES, DataError, download, ensure_mnist_files, md5sum, read_idx
from mdn_experiments.datasets.mnist import Mnist
from mdn_experiments.errors import ConfigError


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """An IDX file written independently of the reader: magic 0 0 type ndim, big-endian dims."""
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    data = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)
    return path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def serve(tmp_path):
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder: Path) -> str:
        handler = lambda *a, **k: QuietHandler(*a, directory=str(folder), **k)  # noqa: E731
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_idx_images_and_labels_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i.gz", images)), images)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", labels)), labels)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "raw-idx", labels, compress=False)), labels)
    wide = rng.integers(-1000, 1000, size=(3, 4), dtype=np.int32)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "w.gz", wide)), wide)


def test_wrong_magic_number_is_refused(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


def test_truncated_data_is_refused(tmp_path):
    path = write_idx(tmp_path / "full.gz", np.zeros((10, 28, 28), dtype=np.uint8))
    raw = gzip.open(path).read()
    with gzip.open(tmp_path / "short.gz", "wb") as fh:
        fh.write(raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    # a gzip stream cut short is refused as well
    (tmp_path / "cut.gz").write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="cannot be read"):
        read_idx(tmp_path / "cut.gz")


def test_md5_mismatch_names_the_file_and_keeps_it(tmp_path, mnist_root):
    for name in MNIST_FILES:
        shutil.copy(mnist_root / name, tmp_path / name)
    victim = tmp_path / "train-labels-idx1-ubyte.gz"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        ensure_mnist_files(tmp_path, download_missing=True, mirrors=["http://127.0.0.1:9/"])
    message = str(err.value)
    assert str(victim) in message and MNIST_FILES[victim.name] in message and "\n" not in message
    assert victim.read_bytes() == bytes(data)  # never replaced behind the user's back


def test_missing_file_without_download_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"is missing \(expected MD5 [0-9a-f]{32}\).*dataset.root"):
        ensure_mnist_files(tmp_path, download_missing=False)


def test_downloader_fetches_and_verifies_every_file(tmp_path, serve, mnist_root):
    url = serve(mnist_root)
    root = tmp_path / "data" / "mnist"
    paths = ensure_mnist_files(root, mirrors=[url], progress=False)
    for name, md5 in MNIST_FILES.items():
        assert paths[name] == root / name and md5sum(root / name) == md5
    assert sorted(p.name for p in root.iterdir()) == sorted(MNIST_FILES)  # no partial files left


def test_a_corrupted_download_is_rejected_and_replaces_nothing(tmp_path, serve):
    served = tmp_path / "served"
    served.mkdir()
    (served / "file.gz").write_bytes(b"not the real content")
    url = serve(served)
    target = tmp_path / "out" / "file.gz"
    target.parent.mkdir()
    with pytest.raises(DataError, match="MD5 .* differs from the published"):
        download(url + "file.gz", target, expected_md5="0" * 32, progress=False)
    assert list(target.parent.iterdir()) == []
    good = hashlib.md5(b"not the real content").hexdigest()
    download(url + "file.gz", target, expected_md5=good, progress=False)
    assert target.read_bytes() == b"not the real content"


def test_the_next_mirror_is_tried_after_a_corrupted_one(tmp_path, serve, mnist_root):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in MNIST_FILES:
        (corrupt / name).write_bytes(b"garbage")
    root = tmp_path / "root"
    ensure_mnist_files(root, mirrors=[serve(corrupt), serve(mnist_root)], progress=False)
    assert all(md5sum(root / name) == md5 for name, md5 in MNIST_FILES.items())


def test_unreachable_mirrors_end_in_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not be downloaded.*dataset.root"):
        ensure_mnist_files(tmp_path, mirrors=["http://127.0.0.1:9/"], progress=False)
    assert list(tmp_path.iterdir()) == []


def test_real_files_load_into_the_documented_splits(mnist_root):
    splits = Mnist(root=str(mnist_root), n_train=1000, n_val=500, n_test=200).load(seed=0)
    x, y = splits.train
    assert x.shape == (1000, 1, 28, 28) and y.shape == (1000, 1)
    assert 0 <= x.min() and x.max() <= 1
    assert set(y[:, 0].long().tolist()) == set(range(10))
    assert splits.val[0].shape[0] == 500 and splits.test[0].shape[0] == 200
    # the full training file holds the published label counts (digit 1: 6742 images)
    labels = read_idx(mnist_root / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and np.bincount(labels)[1] == 6742


def test_pixels_and_labels_are_the_files_values_scaled_bit_for_bit(mnist_root):
    """The splits hold numpy's float32(byte) / 255 and float32(label), whichever library converts."""
    import torch

    splits = Mnist(root=str(mnist_root), n_train=700, n_val=300, n_test=400).load(seed=0)
    images = read_idx(mnist_root / "train-images-idx3-ubyte.gz")
    labels = read_idx(mnist_root / "train-labels-idx1-ubyte.gz")
    test_images = read_idx(mnist_root / "t10k-images-idx3-ubyte.gz")
    expect = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)  # noqa: E731
    assert torch.equal(splits.train[0][:, 0], expect(images[:700]))
    assert torch.equal(splits.val[0][:, 0], expect(images[-300:]))
    assert torch.equal(splits.test[0][:, 0], expect(test_images[:400]))
    assert torch.equal(splits.train[1][:, 0], torch.from_numpy(labels[:700].astype(np.float32)))
    assert splits.train[0].dtype == splits.train[1].dtype == torch.float32


def test_subset_sizes_are_checked():
    with pytest.raises(ConfigError, match="dataset.n_train"):
        Mnist(n_train=59000, n_val=5000)
    with pytest.raises(ConfigError, match="dataset.n_test"):
        Mnist(n_test=20000)
