"""core.data (batching) and gans.datasets (real files, checksums, resizing, errors)."""

import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from core.data import ArrayDataset, DataLoader
from gans import datasets
from core.runtime.errors import ConfigError
from gans.datasets import ChecksumError, DatasetError, data_dir, load_dataset, resize_images

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
                                 reason="shared MNIST test set not found")

# Published MNIST test-set facts, independent of the loader.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TEST_IMAGES_MD5 = "2646ac647ad5339dbf082846283269ea"  # of the decompressed IDX file
MNIST_TEST_LABELS_MD5 = "27ae3e4e09519cfbb04c329615203637"


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv("LAB_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def mnist_test_raw():
    images, labels = load_dataset("mnist", root=SHARED, split="test", normalize=None)
    return images, labels


def _mnist_copy(tmp_path, compress=True, corrupt=None):
    """Copy the shared MNIST test files into tmp_path/mnist, optionally uncompressed or with one byte changed."""
    target = tmp_path / "mnist"
    target.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        data = bytearray(gzip.decompress((MNIST_DIR / f"{name}.gz").read_bytes()))
        if corrupt == name:
            data[1000] ^= 0xFF
        if compress:
            (target / f"{name}.gz").write_bytes(gzip.compress(bytes(data), compresslevel=1))
        else:
            (target / name).write_bytes(bytes(data))
    return target


# --- DataLoader --------------------------------------------------------------------------


def test_batches_cover_data_in_order_without_shuffle():
    x = np.arange(20).reshape(10, 2)
    y = np.arange(10) * 10
    loader = DataLoader((x, y), batch_size=3)
    batches = list(loader)
    assert len(loader) == 4 and len(batches) == 4
    assert [len(bx) for bx, _ in batches] == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([bx for bx, _ in batches]), x)
    np.testing.assert_array_equal(np.concatenate([by for _, by in batches]), y)
    assert np.shares_memory(batches[0][0], x)  # views, no copy


def test_drop_last():
    loader = DataLoader(np.arange(10), batch_size=3, drop_last=True)
    batches = [b for (b,) in loader]
    assert len(loader) == 3
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(9))
    assert len(DataLoader(np.arange(9), batch_size=3, drop_last=True)) == 3
    assert len(DataLoader(np.arange(9), batch_size=3)) == 3


def test_shuffle_is_a_permutation_matching_the_seeded_generator():
    x = np.arange(100)
    y = -np.arange(100)
    loader = DataLoader((x, y), batch_size=32, shuffle=True, seed=7)
    rng = np.random.default_rng(7)
    for _ in range(2):  # each epoch draws the next permutation of the same stream
        expected = rng.permutation(100)
        batches = list(loader)
        assert [len(b) for b, _ in batches] == [32, 32, 32, 4]
        got = np.concatenate([b for b, _ in batches])
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), -got)  # pairs stay aligned


def test_shuffle_determinism():
    data = np.arange(50)

    def epochs(**kw):
        loader = DataLoader(data, batch_size=8, shuffle=True, **kw)
        return [np.concatenate([b for (b,) in loader]) for _ in range(3)]

    a, b = epochs(seed=3), epochs(seed=3)
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(a[0], a[1])  # a new order every epoch
    assert not np.array_equal(a[0], epochs(seed=4)[0])
    for ea, eg in zip(a, epochs(generator=np.random.default_rng(3))):
        np.testing.assert_array_equal(ea, eg)


def test_array_dataset_is_indexed_once_per_batch():
    class Counting(ArrayDataset):
        calls = 0

        def __getitem__(self, index):
            Counting.calls += 1
            return super().__getitem__(index)

    ds = Counting(np.zeros((1000, 3)), np.zeros(1000))
    assert sum(1 for _ in DataLoader(ds, batch_size=100, shuffle=True, seed=0)) == 10
    assert Counting.calls == 10


def test_generic_dataset_is_collated_like_arrays():
    x = np.random.default_rng(0).normal(size=(23, 2, 3)).astype(np.float32)
    y = np.arange(23)

    class Samples:
        def __len__(self):
            return 23

        def __getitem__(self, i):
            return x[i], int(y[i])

    for shuffle in (False, True):
        generic = list(DataLoader(Samples(), batch_size=5, shuffle=shuffle, seed=1))
        arrays = list(DataLoader(ArrayDataset(x, y), batch_size=5, shuffle=shuffle, seed=1))
        assert len(generic) == len(arrays) == 5
        for (gx, gy), (ax, ay) in zip(generic, arrays):
            np.testing.assert_array_equal(gx, ax)
            np.testing.assert_array_equal(gy, ay)
            assert gx.dtype == np.float32 and gx.shape[1:] == (2, 3)


def test_loader_errors():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        DataLoader(np.arange(3), batch_size=0)
    with pytest.raises(ValueError, match="either seed or generator"):
        DataLoader(np.arange(3), seed=1, generator=np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"same length .* got \[3, 4\]"):
        ArrayDataset(np.arange(3), np.arange(4))
    with pytest.raises(TypeError, match="got int"):
        DataLoader(5)


# --- MNIST from the shared test set ------------------------------------------------------


@needs_mnist
def test_shared_files_hold_the_published_content():
    for name, md5 in (("t10k-images-idx3-ubyte", MNIST_TEST_IMAGES_MD5), ("t10k-labels-idx1-ubyte", MNIST_TEST_LABELS_MD5)):
        assert hashlib.md5(gzip.decompress((MNIST_DIR / f"{name}.gz").read_bytes())).hexdigest() == md5
        assert datasets._IDX_MD5["mnist"][name] == md5


@needs_mnist
def test_mnist_test_set(mnist_test_raw):
    images, labels = mnist_test_raw
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == MNIST_TEST_COUNTS
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Pixels equal the raw bytes after the 16-byte IDX header, image by image, row by row.
    raw = gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    np.testing.assert_array_equal(images.ravel(), np.frombuffer(raw, np.uint8, offset=16))
    assert images.min() == 0 and images.max() == 255


@needs_mnist
def test_mnist_normalizations(mnist_test_raw):
    raw, _ = mnist_test_raw
    unit, _ = load_dataset("mnist", root=SHARED, split="test", normalize="01")
    tanh, _ = load_dataset("mnist", root=SHARED, split="test", normalize="tanh")
    assert (unit.min(), unit.max()) == (0.0, 1.0)
    assert (tanh.min(), tanh.max()) == (-1.0, 1.0)
    np.testing.assert_allclose(unit, raw / 255, atol=1e-7)
    np.testing.assert_allclose(tanh, (raw - 127.5) / 127.5, atol=1e-7)
    assert unit.dtype == tanh.dtype == np.float32


@needs_mnist
def test_uncompressed_files_load_the_same(tmp_path, mnist_test_raw):
    _mnist_copy(tmp_path, compress=False)
    images, labels = load_dataset("mnist", root=tmp_path, split="test", normalize=None)
    np.testing.assert_array_equal(images, mnist_test_raw[0])
    np.testing.assert_array_equal(labels, mnist_test_raw[1])


@needs_mnist
def test_class_filter_and_limit(mnist_test_raw):
    raw, all_labels = mnist_test_raw
    sevens, labels = load_dataset("mnist", root=SHARED, split="test", classes=[7], normalize=None)
    assert len(sevens) == 1028 and set(labels.tolist()) == {7}
    np.testing.assert_array_equal(sevens, raw[all_labels == 7])
    _, labels = load_dataset("mnist", root=SHARED, split="test", classes=(1, 0))
    assert np.bincount(labels).tolist() == [980, 1135]
    images, labels = load_dataset("mnist", root=SHARED, split="test", limit=5)
    assert images.shape == (5, 1, 28, 28) and labels.tolist() == [7, 2, 1, 0, 4]
    _, labels = load_dataset("mnist", root=SHARED, split="test", classes=[9], limit=3)
    assert labels.tolist() == [9, 9, 9]
    with pytest.raises(ValueError, match=r"mnist has no class 10; its classes are 0\.\.9"):
        load_dataset("mnist", root=SHARED, split="test", classes=[10, 3])
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_dataset("mnist", root=SHARED, split="test", limit=0)


@needs_mnist
def test_mnist_resize_keeps_range():
    images, _ = load_dataset("mnist", root=SHARED, split="test", image_size=32, normalize="tanh", limit=50)
    assert images.shape == (50, 1, 32, 32)
    assert images.min() >= -1.0 and images.max() <= 1.0


@needs_mnist
def test_missing_train_split_names_the_files_the_present_split_and_where_to_get_them(monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(SHARED))
    monkeypatch.delenv("LAB_DATA_MIRROR")  # the official URLs
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", split="train", download=False)
    assert str(err.value) == (
        f"mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz in {MNIST_DIR} for the train split "
        "(splits present: test); downloads are off (dataset.download=false; =true fetches them); get "
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz, "
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz and put them in that directory, "
        "or point LAB_DATA_DIR=<dir> or dataset.root=<dir> at a directory whose mnist/ holds them")


def test_missing_file_message(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_DATA_MIRROR")
    with pytest.raises(DatasetError, match="fashion_mnist: missing t10k-images-idx3-ubyte.gz, t10k-labels") as err:
        load_dataset("fashion_mnist", root=tmp_path, split="test", download=False)
    assert str(tmp_path / "fashion_mnist") in str(err.value) and "(splits present: none)" in str(err.value)
    assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz" in str(err.value)
    with pytest.raises(DatasetError, match=r"cifar10: missing cifar-10-python\.tar\.gz in .*cifar10; downloads are off"
                                           r".*get https://www\.cs\.toronto\.edu/~kriz/cifar-10-python\.tar\.gz and"):
        load_dataset("cifar10", root=tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []  # nothing made where nothing was downloaded


@needs_mnist
def test_checksum_mismatch_names_file_and_both_checksums(tmp_path):
    for compress in (False, True):
        target = _mnist_copy(tmp_path / str(compress), compress=compress, corrupt="t10k-images-idx3-ubyte")
        path = target / ("t10k-images-idx3-ubyte" + (".gz" if compress else ""))
        data = bytearray(gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes()))
        data[1000] ^= 0xFF
        actual = hashlib.md5(bytes(data)).hexdigest()
        with pytest.raises(ChecksumError) as err:
            load_dataset("mnist", root=target.parent, split="test")
        assert str(err.value) == (f"mnist: {path} is corrupt or truncated (MD5 of its IDX content {actual}, expected "
                                  f"{MNIST_TEST_IMAGES_MD5}); delete it (with dataset.download=true the next run "
                                  f"fetches it again) or replace it with {datasets.mirrors('mnist')[0]}"
                                  "t10k-images-idx3-ubyte.gz")


@needs_mnist
@pytest.mark.parametrize("compress", [True, False])
def test_a_truncated_file_in_the_data_dir_is_reported_not_loaded(tmp_path, monkeypatch, compress):
    """The shared files copied into a data directory and one of them cut short, as a stopped copy leaves it."""
    target = _mnist_copy(tmp_path, compress=compress)
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    cut = target / ("t10k-labels-idx1-ubyte" + (".gz" if compress else ""))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    reason = "not a valid gzip file" if compress else "MD5 of its IDX content"
    with pytest.raises(ChecksumError, match=f"mnist: {cut} is corrupt or truncated \\({reason}") as err:
        load_dataset("mnist", split="test")
    assert "\n" not in str(err.value)


def test_unknown_name_split_class_and_size_say_what_exists():
    with pytest.raises(DatasetError, match="unknown dataset 'mnsit'; allowed: mnist, fashion_mnist, cifar10, digits"):
        load_dataset("mnsit")
    with pytest.raises(DatasetError, match="unknown split 'val' of digits; allowed: train, test"):
        load_dataset("digits", split="val")
    with pytest.raises(DatasetError, match=r"unknown normalize 'standard'; allowed: 01, tanh, null \(raw 0\.\.255\)"):
        load_dataset("digits", normalize="standard")
    with pytest.raises(DatasetError, match=r"^digits has no class 10, -1; its classes are 0\.\.9$"):
        load_dataset("digits", classes=[3, 10, -1])
    with pytest.raises(DatasetError, match=r"^cifar10 has no class 10; its classes are 0\.\.9: 0 airplane, 1 automobile"):
        load_dataset("cifar10", classes=[10])  # before any file is looked for
    with pytest.raises(DatasetError, match="needs at least one class in dataset.classes"):
        load_dataset("digits", classes=[])
    for size in (0, -3, (28,), (28, 0), 2.5):
        with pytest.raises(DatasetError, match=r"image_size must be a positive integer or \(height, width\), got"):
            load_dataset("digits", image_size=size)
    assert issubclass(DatasetError, ConfigError) and issubclass(ChecksumError, DatasetError)


# --- data directory ----------------------------------------------------------------------


@needs_mnist
def test_env_var_sets_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_DATA_DIR", str(SHARED))
    assert data_dir() == SHARED
    images, _ = load_dataset("mnist", split="test", limit=3)
    assert images.shape == (3, 1, 28, 28)
    with pytest.raises(DatasetError, match=str(tmp_path)):  # an explicit root wins over the env var
        load_dataset("mnist", root=tmp_path, split="test", download=False)


def test_default_data_dir_is_the_platform_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert data_dir() == tmp_path / ".cache" / "lab" / "data"
    monkeypatch.setenv("LAB_DATA_DIR", "")  # empty counts as unset
    assert data_dir() == tmp_path / ".cache" / "lab" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "lab" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: ignore a relative path
    assert data_dir() == tmp_path / ".cache" / "lab" / "data"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert data_dir() == tmp_path / "Library" / "Caches" / "lab" / "data"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert data_dir() == tmp_path / "Local" / "lab" / "Cache" / "data"
    assert data_dir("~/x") == tmp_path / "x"


# --- downloads, from HTTP servers on localhost ---------------------------------------------


class _Mirror(http.server.SimpleHTTPRequestHandler):
    """Serves a data directory (`<mirror>/<name>/<file>`); `damage` changes what a GET sends."""
    damage = None  # None: the files as they are; "cut": the full Content-Length, half the body, then closed

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        path = Path(self.translate_path(self.path))
        if self.damage != "cut" or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def mirror(monkeypatch):
    """serve(directory, damage=None) -> the URL of a mirror serving it; `serve.requests` lists the paths asked for."""
    servers = []

    def serve(directory, damage=None):
        handler = type("Handler", (_Mirror,), {"damage": damage, "requests": serve.requests})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    serve.requests = []
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _downloaded(directory):
    """The files in a data directory, temporary ones included."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@needs_mnist
def test_a_missing_split_is_downloaded_verified_and_placed(mirror, monkeypatch, tmp_path, mnist_test_raw):
    url = mirror(SHARED)
    monkeypatch.setenv("LAB_DATA_MIRROR", url)
    images, labels = load_dataset("mnist", root=tmp_path, split="test", normalize=None)
    np.testing.assert_array_equal(images, mnist_test_raw[0])
    np.testing.assert_array_equal(labels, mnist_test_raw[1])
    names = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert mirror.requests == [f"/mnist/{n}" for n in names]
    assert _downloaded(tmp_path / "mnist") == names
    umask = os.umask(0)
    os.umask(umask)
    for name in names:
        assert (tmp_path / "mnist" / name).read_bytes() == (MNIST_DIR / name).read_bytes()
        assert (tmp_path / "mnist" / name).stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user makes
    load_dataset("mnist", root=tmp_path, split="test", limit=1)  # now there: no second download
    assert len(mirror.requests) == 2


@needs_mnist
def test_the_next_mirror_is_tried(mirror, monkeypatch, tmp_path, refused_url):
    empty = tmp_path / "empty_mirror"
    (empty / "mnist").mkdir(parents=True)
    monkeypatch.setenv("LAB_DATA_MIRROR", f"{refused_url} {mirror(empty)} {mirror(SHARED)}")
    _, labels = load_dataset("mnist", root=tmp_path / "data", split="test", limit=3)
    assert labels.tolist() == [7, 2, 1]
    assert mirror.requests == ["/mnist/t10k-images-idx3-ubyte.gz"] * 2 + ["/mnist/t10k-labels-idx1-ubyte.gz"] * 2


@needs_mnist
@pytest.mark.parametrize("damage, reason", [
    ("cut", r"the connection closed after \d+ of \d+ bytes"),
    ("truncated", "not a valid gzip file"),
    ("corrupt", f"MD5 of its IDX content [0-9a-f]{{32}}, expected {MNIST_TEST_IMAGES_MD5}"),
])
def test_a_bad_download_leaves_nothing_behind(mirror, monkeypatch, tmp_path, damage, reason):
    served = tmp_path / "served" / "mnist"
    served.mkdir(parents=True)
    data = (MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "corrupt":  # valid gzip, one pixel changed
        raw = bytearray(gzip.decompress(data))
        raw[5000] ^= 0xFF
        data = gzip.compress(bytes(raw), compresslevel=1)
    (served / "t10k-images-idx3-ubyte.gz").write_bytes(data)
    url = mirror(served.parent, damage="cut" if damage == "cut" else None)
    monkeypatch.setenv("LAB_DATA_MIRROR", url)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path / "data", split="test")
    message = str(err.value)
    assert re.search(f"the download failed \\({url}/mnist/t10k-images-idx3-ubyte.gz: {reason}[^;]*\\); ", message), message
    assert message.startswith(f"mnist: missing t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in "
                              f"{tmp_path / 'data' / 'mnist'} for the test split (splits present: none)")
    assert _downloaded(tmp_path / "data" / "mnist") == []


def test_without_a_network_one_line_names_files_place_and_urls(tmp_path, monkeypatch, refused_url):
    monkeypatch.setenv("LAB_DATA_MIRROR", refused_url)
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion_mnist", root=tmp_path, split="train")
    message = str(err.value)
    base = f"{os.environ['LAB_DATA_MIRROR']}fashion_mnist/"
    assert message.startswith(f"fashion_mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz in "
                              f"{tmp_path / 'fashion_mnist'} for the train split (splits present: none); the download "
                              f"failed ({base}train-images-idx3-ubyte.gz: [Errno 111] Connection refused); get "
                              f"{base}train-images-idx3-ubyte.gz, {base}train-labels-idx1-ubyte.gz and put them")
    assert "\n" not in message and "LAB_DATA_DIR=<dir> or dataset.root=<dir>" in message
    assert _downloaded(tmp_path / "fashion_mnist") == []


def test_download_false_asks_no_server(mirror, monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_DATA_MIRROR", mirror(SHARED))
    with pytest.raises(DatasetError, match="downloads are off"):
        load_dataset("mnist", root=tmp_path, split="test", download=False)
    assert mirror.requests == []


def test_the_official_mirrors_and_the_override(monkeypatch):
    monkeypatch.delenv("LAB_DATA_MIRROR")
    assert datasets.mirrors("mnist")[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    monkeypatch.setenv("LAB_DATA_MIRROR", "http://a/data/ file:///srv/data")
    assert datasets.mirrors("cifar10") == ["http://a/data/cifar10/", "file:///srv/data/cifar10/"]


# --- CIFAR-10 (a small archive in the official layout) -------------------------------------


def _fake_cifar(directory, per_batch=3):
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    chw = {n: rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8) for n in names}
    labels = {n: rng.integers(0, 10, per_batch).tolist() for n in names}
    directory.mkdir(parents=True)
    archive = directory / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for n in names:
            # Official row layout: 1024 red bytes (row-major 32×32), then 1024 green, then 1024 blue.
            rows = np.concatenate([chw[n][:, c].reshape(per_batch, 1024) for c in range(3)], axis=1)
            blob = pickle.dumps({b"data": rows, b"labels": labels[n]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{n}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive, chw, labels


def test_cifar10_reads_the_archive(monkeypatch, tmp_path):
    archive, chw, labels = _fake_cifar(tmp_path / "cifar10")
    monkeypatch.setattr(datasets, "_CIFAR_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    images, y = load_dataset("cifar10", root=tmp_path, split="train", normalize=None)
    train = [f"data_batch_{i}" for i in range(1, 6)]
    assert images.shape == (15, 3, 32, 32) and images.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(images, np.concatenate([chw[n] for n in train]))
    assert y.tolist() == sum((labels[n] for n in train), [])
    test_images, test_labels = load_dataset("cifar10", root=tmp_path, split="test", normalize="tanh")
    np.testing.assert_allclose(test_images, (chw["test_batch"] - 127.5) / 127.5, atol=1e-7)
    assert test_labels.tolist() == labels["test_batch"]
    assert list((tmp_path / "cifar10").iterdir()) == [archive]  # nothing extracted


def test_cifar10_checksum_mismatch(tmp_path):
    archive, _, _ = _fake_cifar(tmp_path / "cifar10")
    actual = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(archive) in str(err.value)
    assert "c58f30108f718f92721af3b95e74349a" in str(err.value) and actual in str(err.value)


# --- digits and resizing -----------------------------------------------------------------


def test_digits_default_and_split():
    from sklearn.datasets import load_digits

    reference = load_digits()
    train_x, train_y = load_dataset("digits", normalize=None)
    test_x, test_y = load_dataset("digits", split="test", normalize=None)
    assert train_x.shape == (1437, 1, 8, 8) and test_x.shape == (360, 1, 8, 8)
    np.testing.assert_array_equal(np.concatenate([train_y, test_y]), reference.target)
    np.testing.assert_array_equal(np.concatenate([train_x, test_x])[:, 0], reference.images * (255 / 16))
    assert train_x.max() == 255.0
    unit, _ = load_dataset("digits", normalize="01")
    np.testing.assert_array_equal(unit[:, 0], reference.images[:1437] / 16)


def test_digits_upscaled_to_mnist_size():
    images, labels = load_dataset("digits", image_size=28, normalize="tanh", classes=[3])
    assert images.shape == (len(labels), 1, 28, 28) and set(labels.tolist()) == {3}
    assert images.min() >= -1.0 and images.max() <= 1.0
    small, _ = load_dataset("digits", normalize="tanh", classes=[3])
    np.testing.assert_allclose(images, resize_images(small, 28), atol=1e-6)
    wide, _ = load_dataset("digits", image_size=(28, 14), limit=2)
    assert wide.shape == (2, 1, 28, 14)


def test_resize_exact_values():
    row = np.array([0, 255], np.float32).reshape(1, 1, 1, 2)
    np.testing.assert_allclose(resize_images(row, (1, 4))[0, 0, 0], [0, 63.75, 191.25, 255])
    three = np.array([3, 6, 12], np.float32).reshape(1, 1, 1, 3)
    # Shrinking 3 → 2: each output pixel averages 1.5 input pixels.
    np.testing.assert_allclose(resize_images(three, (1, 2))[0, 0, 0], [(3 + 0.5 * 6) / 1.5, (0.5 * 6 + 12) / 1.5])
    image = np.random.default_rng(1).normal(size=(2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(resize_images(image, (5, 7)), image)


def test_resize_matches_pillow():
    rng = np.random.default_rng(0)
    small = rng.uniform(0, 255, (8, 8)).astype(np.float32)
    for height, width in ((28, 28), (20, 13)):
        expected = np.asarray(Image.fromarray(small, mode="F").resize((width, height), Image.BILINEAR))
        np.testing.assert_allclose(resize_images(small[None, None], (height, width))[0, 0], expected, atol=1e-3)
    big = rng.uniform(0, 255, (28, 28)).astype(np.float32)
    for size in (14, 7):  # integer ratios, where PIL's box filter is the exact area average
        expected = np.asarray(Image.fromarray(big, mode="F").resize((size, size), Image.BOX))
        np.testing.assert_allclose(resize_images(big[None, None], size)[0, 0], expected, atol=1e-3)


def test_a_restored_loader_hands_out_the_batches_it_would_have():
    data = (np.arange(20), np.arange(20) * 10)
    whole = DataLoader(data, batch_size=3, shuffle=True, seed=5, drop_last=True)
    expected = [batch[0].tolist() for _ in range(3) for batch in whole]
    first = DataLoader(data, batch_size=3, shuffle=True, seed=5, drop_last=True)
    seen = [batch[0].tolist() for batch in first]
    for batch in first:  # stop in the middle of the second epoch, as a killed run would
        seen.append(batch[0].tolist())
        if first.batches_done == 4:
            break
    state = first.state_dict()
    resumed = DataLoader(data, batch_size=3, shuffle=True, seed=99, drop_last=True)
    resumed.load_state_dict(state)
    assert resumed.batches_done == 4
    seen += [batch[0].tolist() for batch in resumed]
    seen += [batch[0].tolist() for batch in resumed]
    assert seen == expected


# --- through the command line ---------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _train(tmp_path, *overrides, **env):
    """scripts/train.py in a subprocess started in tmp_path, with the test process's environment plus `env`."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *overrides, "quiet=true"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_cli_without_the_files_or_a_network_says_what_to_get_and_where(tmp_path, refused_url):
    empty = tmp_path / "data"
    done = _train(tmp_path, "model=dcgan", "dataset=mnist", LAB_DATA_DIR=str(empty), LAB_DATA_MIRROR=refused_url)
    assert done.returncode == 2, done.stderr
    files = f"{refused_url}mnist/train-images-idx3-ubyte.gz, {refused_url}mnist/train-labels-idx1-ubyte.gz"
    assert done.stderr.startswith(f"error: mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz in "
                                  f"{empty / 'mnist'} for the train split (splits present: none); the download failed ("), done.stderr
    assert f"; get {files} and put them in that directory, or point LAB_DATA_DIR=<dir> or dataset.root=<dir>" in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no run directory (runs/) was left
    assert _downloaded(empty / "mnist") == []


@needs_mnist
def test_cli_with_a_truncated_file_fails_in_one_line(tmp_path):
    target = _mnist_copy(tmp_path / "data")
    cut = target / "t10k-images-idx3-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:-1000])
    done = _train(tmp_path, "model=vae", "dataset=mnist", "dataset.split=test", LAB_DATA_DIR=str(tmp_path / "data"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: mnist: {cut} is corrupt or truncated (not a valid gzip file"), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_generative_run_without_a_dataset_trains_on_the_bundled_digits(tmp_path):
    run_dir = tmp_path / "run"
    done = _train(tmp_path, "model=vae", "model.epochs=1", "model.quality.enabled=false", f"hydra.run.dir={run_dir}",
                  LAB_DATA_DIR=str(tmp_path / "nowhere"))
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["choices"]["dataset"] == "digits"
    # at their own 8x8, an epoch seven passes over the 1,437 training images (conf/dataset/digits.yaml)
    assert {k: config["dataset"][k] for k in ("name", "image_size", "repeat")} == {
        "name": "digits", "image_size": 8, "repeat": 7}
    assert "dataset=digits" in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/epochs"] == 1
    assert metrics["train/steps"] == 7 * (1437 // config["model"]["batch_size"])  # full batches each pass
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("argv, expected", [
    (["model=vae"], ["model=vae", "dataset=digits"]),
    (["-m", "model=vae,dcgan", "seed=1", "--cfg", "job"], ["-m", "model=vae,dcgan", "dataset=digits", "seed=1", "--cfg",
                                                          "job"]),
    (["model=vae", "dataset=mnist"], ["model=vae", "dataset=mnist"]),
    (["experiment=homl17-vae-fashion", "model.epochs=1"], ["experiment=homl17-vae-fashion", "model.epochs=1"]),
    (["agent=dqn", "env=cartpole"], ["agent=dqn", "env=cartpole"]),
])
def test_the_default_dataset_is_added_beside_the_model(argv, expected):
    from scripts.train import with_default_dataset
    assert with_default_dataset(argv) == expected


def test_every_generative_model_takes_the_default_dataset_or_says_which_size_it_needs():
    """The default dataset's images (digits at their own 8×8) fit every model config's networks, but for the
    books' fixed 64×64 architectures, which name the size to set."""
    from hydra import compose, initialize_config_dir

    from core.runtime.config import config_object
    from gans.common import load_data
    from scripts import trainers
    from scripts.train import CONF_DIR, DEFAULT_DATASET, group_options, register_configs

    register_configs()
    needs_64 = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in (m for m in group_options("model") if m != "supervised"):
            cfg = compose(config_name="config", overrides=[f"model={name}", f"dataset={DEFAULT_DATASET}"])
            module = trainers.options("model")[name]
            args = config_object(module.Config, cfg.model)
            data = load_data(cfg.dataset, args.normalize)
            assert data.shape == (1, 8, 8)
            try:
                module.build(args, data.shape, data.n_classes, data.normalize)
            except ConfigError as e:
                assert str(e).endswith("the dataset has 8×8; set dataset.image_size=64"), (name, str(e))
                needs_64.append(name)
    assert needs_64 == ["dcgan_bdl", "wgan_gp_bdl"]
