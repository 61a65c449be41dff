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

The data dir is `root` (`dataset.root=...`), else the `LAB_DATA_DIR` environment variable, else
`data/` in the platform's user cache directory for the lab (`user_cache_dir()`: `$XDG_CACHE_HOME/lab`
or `~/.cache/lab` on Linux, `~/Library/Caches/lab` on macOS, `%LOCALAPPDATA%\\lab\\Cache` on Windows).

Downloads: a missing file is fetched (`download=True`, the default; `dataset.download=false` forbids
it) from the official mirrors, or instead from the base URLs in `$LAB_DATA_MIRROR` (space-separated,
laid out like the data dir: `<mirror>/mnist/train-images-idx3-ubyte.gz`), with a progress bar on a
terminal. It streams into a temporary file beside its place and takes its name only once its
checksum holds, so a cut connection, a corrupt download or a killed run leaves nothing
half-written. A file that cannot be had stops the load with one line (`DatasetError`, a
`ConfigError`) naming the files, the directory to put them in and the URLs to get them from.

Integrity: every file is checked against a published MD5 before use (a corrupt or truncated file is
a `ChecksumError` that names it; nothing of it is used). For the IDX files the
checksum is that of the decompressed IDX bytes, because gzip output depends on the compressor
(a re-gzipped copy of the official data differs byte-wise from the official `.gz` but holds
the same images). CIFAR-10 is checked against the MD5 of the official archive.

`image_size` resizes each axis with a linear filter: when enlarging, bilinear interpolation
between pixel centres (half-pixel convention, edge pixels repeated: PIL's and OpenCV's
bilinear); when shrinking, the exact average of the input area under each output pixel,
fractional pixels included (PIL's BOX gives the same for integer ratios), so nothing aliases.
E.g. `load_dataset("digits", image_size=28)` gives 28×28 stand-ins for MNIST (the run config
conf/dataset/digits.yaml keeps them at 8×8).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import secrets
import struct
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from core.runtime.choices import Choice
from core.runtime.errors import ConfigError

__all__ = ["DATASETS", "CLASS_NAMES", "ChecksumError", "DatasetError", "data_dir", "load_dataset", "mirrors",
           "resize_images", "user_cache_dir"]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")
SPLITS = ("train", "test")
NORMALIZATIONS = ("01", "tanh", None)
# the config schemas' types (null, raw 0..255, makes a Normalize field Optional)
DatasetName = Choice("DatasetName", DATASETS)
Split = Choice("Split", SPLITS)
Normalize = Choice("Normalize", NORMALIZATIONS[:2])
DATA_DIR_ENV = "LAB_DATA_DIR"
MIRROR_ENV = "LAB_DATA_MIRROR"
DOWNLOAD_TIMEOUT_S = 15  # per blocking socket operation, not for the whole file
_CHUNK = 1 << 16

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
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
# base URLs of the official files, tried in order
_MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}

_DIGITS_TRAIN_SIZE = 1437
_DIGITS_SCALE = 255 / 16  # 15.9375, exact in float32, so 16 maps to exactly 255


class DatasetError(ConfigError):
    """The data cannot be had as asked (an unknown name, split or class, a missing file that cannot be
    downloaded, a corrupt file): one line that names it and what exists or where to get it."""


class ChecksumError(DatasetError):
    """A data file does not hold the official content."""


class MissingDataError(DatasetError):
    """A split's files are not in the data directory and could not be downloaded."""


def user_cache_dir() -> Path:
    """The platform's per-user cache directory for the lab (the XDG, macOS and Windows conventions)."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or "~/AppData/Local").expanduser() / "lab" / "Cache"
    if sys.platform == "darwin":
        return Path("~/Library/Caches/lab").expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path("~/.cache").expanduser()) / "lab"  # XDG: relative is invalid


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data directory: `root`, else $LAB_DATA_DIR, else `data/` in `user_cache_dir()`."""
    return Path(root or os.environ.get(DATA_DIR_ENV) or user_cache_dir() / "data").expanduser()


def mirrors(name: str) -> list[str]:
    """The base URLs `name`'s files are downloaded from: $LAB_DATA_MIRROR's (`<mirror>/<name>/`) when
    set, instead of the official ones."""
    custom = os.environ.get(MIRROR_ENV, "").split()
    return [f"{m.rstrip('/')}/{name}/" for m in custom] if custom else list(_MIRRORS[name])


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    normalize: str | None = "01",
    classes: Iterable[int] | None = None,
    image_size: int | tuple[int, int] | None = None,
    limit: int | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a dataset split as `(images, labels)`: float32 (N, C, H, W) and int64 (N,).

    normalize: "01" → [0, 1] (x/255); "tanh" → [−1, 1] ((x − 127.5)/127.5); None → raw 0..255.
    classes: keep only images with these labels (labels keep their original values).
    image_size: resize to this size (int for square, or (height, width)); see the module doc.
    limit: keep the first `limit` images (after class filtering), in file order.
    download: fetch a missing file (see the module doc). Otherwise a missing file is a
        `DatasetError` that says which file to put in which directory and where to get it.
    Bad arguments, missing and corrupt files raise `DatasetError` (a `ConfigError`, so a ValueError).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} of {name}; allowed: {', '.join(SPLITS)}")
    if normalize not in NORMALIZATIONS:
        raise DatasetError(f"unknown normalize {normalize!r}; allowed: 01, tanh, null (raw 0..255)")
    if limit is not None and not _positive_int(limit):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}")
    sizes = (image_size, image_size) if _positive_int(image_size) else image_size
    if image_size is not None and not (isinstance(sizes, Sequence) and len(sizes) == 2
                                       and all(map(_positive_int, sizes))):
        raise DatasetError(f"image_size must be a positive integer or (height, width), got {image_size!r}")
    wanted = None if classes is None else _class_labels(name, classes)

    if name == "digits":
        images, labels = _digits(split)
    else:
        directory = data_dir(root) / name
        _ensure_files(name, directory, split, download)
        images, labels = (_cifar10 if name == "cifar10" else _idx_dataset)(name, directory, split)

    # Filter and cut while the pixels are still uint8: cheaper than after the float conversion.
    if wanted is not None:
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


def _positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _class_labels(name: str, classes: Iterable[int]) -> np.ndarray:
    """The sorted labels asked for; a DatasetError naming the dataset's classes when one does not exist."""
    names = CLASS_NAMES[name]
    wanted = list(classes)
    unknown = [c for c in wanted if not (isinstance(c, (int, np.integer)) and 0 <= c < len(names))]
    if unknown or not wanted:
        listed = "" if names == tuple(map(str, range(len(names)))) else ": " + ", ".join(
            f"{i} {n}" for i, n in enumerate(names))
        what = (f"has no class {', '.join(map(repr, unknown))}" if unknown
                else "needs at least one class in dataset.classes")
        raise DatasetError(f"{name} {what}; its classes are 0..{len(names) - 1}{listed}")
    return np.unique(np.asarray(wanted, dtype=np.int64))


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


def _idx_dataset(name: str, directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (_parse_idx(_read_verified(name, directory, f)) for f in _split_files(name, split))
    return images[:, None], labels  # add the channel axis: (N, 28, 28) → (N, 1, 28, 28)


def _idx_content(path: Path, expected_md5: str) -> bytes:
    """The file's IDX bytes (decompressed if .gz), checked against the published MD5."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic; an IDX file starts with two zero bytes
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise ChecksumError(f"not a valid gzip file: {err}") from None
    _check_md5(hashlib.md5(data).hexdigest(), expected_md5, " of its IDX content")
    return data


def _parse_idx(data: bytes) -> np.ndarray:
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    # then each dimension as a big-endian uint32. The checksum already vouched for the content.
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# --- CIFAR-10 -----------------------------------------------------------------------------


def _cifar10(name: str, directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    archive = _read_verified(name, directory, _CIFAR_ARCHIVE)
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
        raise DatasetError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None]  # values 0..16
    labels = digits.target
    part = slice(None, _DIGITS_TRAIN_SIZE) if split == "train" else slice(_DIGITS_TRAIN_SIZE, None)
    return images[part], labels[part]


# --- files --------------------------------------------------------------------------------


def _split_files(name: str, split: str) -> tuple[str, ...]:
    """The files (as published) a split of a file-based dataset is read from."""
    if name == "cifar10":
        return (_CIFAR_ARCHIVE,)
    prefix = _IDX_PREFIX[split]
    return (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")


def _local_file(directory: Path, filename: str) -> Path | None:
    """Where a published file is on disk; an IDX file may also be there uncompressed."""
    candidates = [directory / filename]
    if filename.endswith("-ubyte.gz"):
        candidates.append(directory / filename.removesuffix(".gz"))
    return next((p for p in candidates if p.is_file()), None)


def _verify(name: str, filename: str, path: Path):
    """The checked content of a file (IDX bytes, or the archive's path); ChecksumError when it is not the
    official one."""
    if name == "cifar10":
        _check_md5(_file_md5(path), _CIFAR_MD5)
        return path
    return _idx_content(path, _IDX_MD5[name][filename.removesuffix(".gz")])


def _read_verified(name: str, directory: Path, filename: str):
    path = _local_file(directory, filename)
    try:
        return _verify(name, filename, path)
    except ChecksumError as err:
        raise ChecksumError(f"{name}: {path} is corrupt or truncated ({err}); delete it (with dataset.download=true "
                            f"the next run fetches it again) or replace it with {mirrors(name)[0]}{filename}") from None


def _ensure_files(name: str, directory: Path, split: str, download: bool) -> None:
    """Download the split's missing files, or raise a DatasetError that says where to put them and where to get them."""
    missing = [f for f in _split_files(name, split) if _local_file(directory, f) is None]
    if missing and not download:
        raise MissingDataError(_missing(name, directory, split, missing,
                                        "downloads are off (dataset.download=false; =true fetches them)"))
    for i, filename in enumerate(missing):
        failures = []
        for base in mirrors(name):
            try:
                _download(base + filename, directory / filename, lambda path: _verify(name, filename, path))
                break
            except (OSError, http.client.HTTPException, DatasetError) as err:  # the next mirror may have it
                failures.append(f"{base}{filename}: {_reason(err)}")
        else:
            raise MissingDataError(_missing(name, directory, split, missing[i:],
                                            f"the download failed ({'; '.join(failures)})"))


def _missing(name: str, directory: Path, split: str, files: Sequence[str], why: str) -> str:
    present = [s for s in SPLITS if all(_local_file(directory, f) for f in _split_files(name, s))]
    which = "" if name == "cifar10" else f" for the {split} split (splits present: {', '.join(present) or 'none'})"
    urls = ", ".join(mirrors(name)[0] + f for f in files)
    return (f"{name}: missing {', '.join(files)} in {directory}{which}; {why}; get {urls} and put them in that "
            f"directory, or point LAB_DATA_DIR=<dir> or dataset.root=<dir> at a directory whose {name}/ holds them")


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _download(url: str, dest: Path, verify: Callable[[Path], object]) -> None:
    """Stream `url` into a temporary file beside `dest` (a progress bar on a terminal); it takes the
    name `dest` only once `verify` accepts it, and is removed whatever stops it before."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own (two runs may fetch the same file at once), made with the umask's permissions
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(partial, "xb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            received = 0
            with tqdm(total=total, desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                      disable=None) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:  # http.client returns a cut body without complaint
            raise DatasetError(f"the connection closed after {received} of {total} bytes")
        verify(partial)
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(actual: str, expected: str, what: str = "") -> None:
    if actual != expected:
        raise ChecksumError(f"MD5{what} {actual}, expected {expected}")
