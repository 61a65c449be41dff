"""Image datasets as numpy arrays: images NCHW float32, labels int64.

    images, labels = load_dataset("mnist", split="test", normalize="tanh")

Datasets (`DATASETS`):
- "mnist", "fashion_mnist": the official IDX files (`train-images-idx3-ubyte.gz`,
  `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`),
  gzipped or not, in `<data dir>/mnist/` or `<data dir>/fashion_mnist/`. 28×28, 1 channel.
- "cifar10": the official `cifar-10-python.tar.gz` in `<data dir>/cifar10/`, read straight from
  the archive (nothing is extracted to disk). 32×32, 3 channels (RGB).
- "digits": scikit-learn's bundled 8×8 digits (1797 images, no file needed), the offline
  stand-in for MNIST. Its 17 grey levels 0..16 are put on the 0..255 scale (×255/16) so every
  dataset has the same raw range. It has no official split: "train" is the first 1437 images
  in scikit-learn's order, "test" the last 360 (an 80/20 split by position).

The data dir is `root`, else the `LAB_DATA_DIR` environment variable, else `~/.cache/lab/data`.

Integrity: every file is checked against a published MD5 before use. For the IDX files the
checksum is that of the decompressed IDX bytes, because gzip output depends on the compressor
(a re-gzipped copy of the official data differs byte-wise from the official `.gz` but holds
the same images). CIFAR-10 is checked against the MD5 of the official archive.

`image_size` resizes each axis with a linear filter: when enlarging, bilinear interpolation
between pixel centres (half-pixel convention, edge pixels repeated: PIL's and OpenCV's
bilinear); when shrinking, the exact average of the input area under each output pixel,
fractional pixels included (PIL's BOX gives the same for integer ratios), so nothing aliases.
E.g. `load_dataset("digits", image_size=28)` gives 28×28 stand-ins for the MNIST models.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from core.runtime.choices import Choice

__all__ = ["DATASETS", "CLASS_NAMES", "ChecksumError", "data_dir", "load_dataset", "resize_images"]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")
SPLITS = ("train", "test")
NORMALIZATIONS = ("01", "tanh", None)
# the config schemas' types (null, raw 0..255, makes a Normalize field Optional)
DatasetName = Choice("DatasetName", DATASETS)
Split = Choice("Split", SPLITS)
Normalize = Choice("Normalize", NORMALIZATIONS[:2])
DATA_DIR_ENV = "LAB_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/lab/data"
DOWNLOAD_TIMEOUT_S = 15

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "digits": tuple(str(d) for d in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

# MD5 of each decompressed IDX file, as published with the official data (the same values
# torchvision checks for Fashion-MNIST's raw files and many MNIST tools check after gunzip).
_IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

_DIGITS_TRAIN_SIZE = 1437
_DIGITS_SCALE = 255 / 16  # 15.9375, exact in float32, so 16 maps to exactly 255


class ChecksumError(ValueError):
    """A data file does not hold the official content."""


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data directory: `root`, else $LAB_DATA_DIR, else ~/.cache/lab/data."""
    return Path(root or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    normalize: str | None = "01",
    classes: Iterable[int] | None = None,
    image_size: int | tuple[int, int] | None = None,
    limit: int | None = None,
    download: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a dataset split as `(images, labels)`: float32 (N, C, H, W) and int64 (N,).

    normalize: "01" → [0, 1] (x/255); "tanh" → [−1, 1] ((x − 127.5)/127.5); None → raw 0..255.
    classes: keep only images with these labels (labels keep their original values).
    image_size: resize to this size (int for square, or (height, width)); see the module doc.
    limit: keep the first `limit` images (after class filtering), in file order.
    download: fetch a missing file from the official mirror (needs a network). Otherwise a
        missing file is an error that says which file to put in which directory.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")

    directory = data_dir(root) / name
    if name == "digits":
        images, labels = _digits(split)
    elif name == "cifar10":
        images, labels = _cifar10(directory, split, download)
    else:
        images, labels = _idx_dataset(name, directory, split, download)

    # Filter and cut while the pixels are still uint8: cheaper than after the float conversion.
    if classes is not None:
        wanted = np.unique(np.asarray(list(classes), dtype=np.int64))
        n_classes = len(CLASS_NAMES[name])
        if wanted.size == 0 or wanted.min() < 0 or wanted.max() >= n_classes:
            raise ValueError(f"classes must be a non-empty list of labels in 0..{n_classes - 1}, got {wanted.tolist()}")
        keep = np.isin(labels, wanted)
        images, labels = images[keep], labels[keep]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]

    images = images.astype(np.float32)
    if name == "digits":
        images *= np.float32(_DIGITS_SCALE)
    if image_size is not None:
        images = resize_images(images, image_size)
        np.clip(images, 0, 255, out=images)  # float rounding of the filter weights may overshoot 255
    if normalize == "01":
        images /= np.float32(255)
    elif normalize == "tanh":
        images -= np.float32(127.5)
        images /= np.float32(127.5)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def resize_images(images: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Resize (N, C, H, W) images to `size` (int or (height, width)), float32 result.

    Enlarging interpolates bilinearly between pixel centres; shrinking averages the exact input
    area under each output pixel. Both are linear maps applied per axis as one matrix product.
    """
    height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if min(height, width) < 1:
        raise ValueError(f"image size must be positive, got {size!r}")
    n, c, h, w = images.shape
    rows = _resize_matrix(h, height)
    cols = _resize_matrix(w, width)
    x = images.astype(np.float32, copy=False).reshape(n * c * h, w) @ cols.T  # (n·c·h, width)
    x = x.reshape(n * c, h, width).transpose(0, 2, 1).reshape(n * c * width, h) @ rows.T
    return x.reshape(n, c, width, height).transpose(0, 1, 3, 2).copy()


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights that map one row of n_in pixels to n_out pixels."""
    weights = np.zeros((n_out, n_in))
    if n_out >= n_in:
        # Output pixel centre in input pixel coordinates; beyond the outer centres, repeat the edge.
        centre = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        left = np.floor(centre).astype(np.int64)
        right = np.minimum(left + 1, n_in - 1)
        frac = centre - left
        np.add.at(weights, (np.arange(n_out), left), 1 - frac)
        np.add.at(weights, (np.arange(n_out), right), frac)
    else:
        # Output pixel o covers input interval [o, o + 1)·n_in/n_out; weight = overlap with pixel i.
        edges = np.arange(n_out + 1) * n_in / n_out
        pixel = np.arange(n_in)
        overlap = np.minimum(edges[1:, None], pixel + 1) - np.maximum(edges[:-1, None], pixel)
        weights = np.clip(overlap, 0, None) * n_out / n_in
    return weights.astype(np.float32)


# --- MNIST / Fashion-MNIST ---------------------------------------------------------------


def _idx_dataset(name: str, directory: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    prefix = _IDX_PREFIX[split]
    images = _read_idx(name, directory, f"{prefix}-images-idx3-ubyte", download)
    labels = _read_idx(name, directory, f"{prefix}-labels-idx1-ubyte", download)
    return images[:, None], labels  # add the channel axis: (N, 28, 28) → (N, 1, 28, 28)


def _read_idx(name: str, directory: Path, filename: str, download: bool) -> np.ndarray:
    expected = _IDX_MD5[name][filename]
    path = next((p for p in (directory / f"{filename}.gz", directory / filename) if p.exists()), None)
    if path is None:
        if not download:
            raise FileNotFoundError(
                f"{name}: missing {filename}.gz (or uncompressed {filename}) in {directory}; "
                f"put the official file there, or pass download=True"
            )
        path = directory / f"{filename}.gz"
        _download([m + path.name for m in _IDX_MIRRORS[name]], path, lambda p: _idx_content(p, expected))
    return _parse_idx(_idx_content(path, expected))


def _idx_content(path: Path, expected_md5: str) -> bytes:
    """The file's IDX bytes (decompressed if .gz), checked against the published MD5."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic; an IDX file starts with two zero bytes
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise ChecksumError(f"{path} is not a valid gzip file ({err}); replace it with the official file") from None
    _check_md5(path, hashlib.md5(data).hexdigest(), expected_md5, " (MD5 of its IDX content)")
    return data


def _parse_idx(data: bytes) -> np.ndarray:
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    # then each dimension as a big-endian uint32. The checksum already vouched for the content.
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# --- CIFAR-10 -----------------------------------------------------------------------------


def _cifar10(directory: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    archive = directory / _CIFAR_ARCHIVE
    if archive.exists():
        _check_md5(archive, _file_md5(archive), _CIFAR_MD5)
    elif download:
        _download([_CIFAR_URL], archive, lambda p: _check_md5(p, _file_md5(p), _CIFAR_MD5))
    else:
        raise FileNotFoundError(
            f"cifar10: missing {_CIFAR_ARCHIVE} in {directory}; put the official file there, or pass download=True"
        )
    wanted = {f"cifar-10-batches-py/{batch}": batch for batch in _CIFAR_BATCHES[split]}
    batches = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted:
                # Unpickling runs code from the file; safe here only because its MD5 was verified.
                batches[wanted[member.name]] = pickle.loads(tar.extractfile(member).read(), encoding="bytes")
    ordered = [batches[b] for b in _CIFAR_BATCHES[split]]
    # Each row holds 3072 bytes: the 32×32 red plane, then green, then blue, i.e. already CHW.
    images = np.concatenate([b[b"data"] for b in ordered]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[b"labels"]) for b in ordered])
    return images, labels


# --- scikit-learn digits ------------------------------------------------------------------


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None]  # values 0..16
    labels = digits.target
    part = slice(None, _DIGITS_TRAIN_SIZE) if split == "train" else slice(_DIGITS_TRAIN_SIZE, None)
    return images[part], labels[part]


# --- files --------------------------------------------------------------------------------


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(path: Path, actual: str, expected: str, what: str = "") -> None:
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {path}: expected MD5 {expected}, got {actual}{what}; "
            f"replace it with the official file"
        )


def _download(urls: Sequence[str], dest: Path, verify: Callable[[Path], object]) -> None:
    """Fetch the first URL that answers into `dest`, verified before it takes the final name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    failures = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                partial.write_bytes(response.read())
        except OSError as err:  # URLError, HTTPError, timeouts and socket errors are all OSErrors
            failures.append(f"{url}: {err}")
            continue
        try:
            verify(partial)
        except ChecksumError:
            partial.unlink()
            raise
        partial.replace(dest)
        return
    raise ConnectionError(
        f"could not download {dest.name} ({'; '.join(failures)}); put the official file in {dest.parent} by hand"
    )
