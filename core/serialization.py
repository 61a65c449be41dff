"""Checkpoints: `save(obj, path)` / `load(path, map_location=None)`.

File layout (all integers little-endian):

    magic  b"RLGENCKP"            8 bytes
    format version                uint32
    payload length                uint64
    SHA-256 of the payload        32 bytes
    payload                       pickle (protocol 5) of the object

In the payload every numpy array, numpy scalar and cupy array becomes an `_ArrayRecord`
(dtype description, shape, raw bytes) and every core Tensor a `_TensorRecord` wrapping one, so
the pickle holds nothing but builtin containers, Python scalars and those two classes.

Safety: `load` unpickles with `_RestrictedUnpickler`, whose `find_class` allows only a few
builtins (complex, set, frozenset, bytearray), `collections.OrderedDict` and the two record
classes. A foreign or crafted pickle therefore cannot import or call anything else, so it cannot
run code. numpy's own pickle path (`_reconstruct`, `_frombuffer`, `dtype.__setstate__`) is
deliberately not allowed: a crafted dtype state can build an object array out of raw bytes,
i.e. forge pointers. Arrays are rebuilt with `np.frombuffer` from a dtype that `np.dtype`
validates, and dtypes holding Python objects are refused.

Writes are atomic: a temporary file in the target directory is written, flushed and fsynced,
then renamed over the target with `os.replace` and the directory is fsynced, so a crash at any
point leaves either the old file or the new one, never a mix.
"""
import collections
import hashlib
import io
import math
import os
import pickle
import secrets
import struct
import sys

import numpy as np

from core import backend

MAGIC = b"RLGENCKP"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint: foreign, truncated, corrupted or unsupported."""


class _ArrayRecord:
    """A numpy array as plain data; `scalar` marks a numpy scalar (restored as one)."""
    __slots__ = ("dtype", "shape", "data", "scalar")

    def __init__(self, dtype, shape, data, scalar):
        self.dtype, self.shape, self.data, self.scalar = dtype, shape, data, scalar

    def __reduce__(self):
        return _ArrayRecord, (self.dtype, self.shape, self.data, self.scalar)


class _TensorRecord:
    """Marks where a core Tensor stood; `array` is its `_ArrayRecord`."""
    __slots__ = ("array", "requires_grad")

    def __init__(self, array, requires_grad):
        self.array, self.requires_grad = array, requires_grad

    def __reduce__(self):
        return _TensorRecord, (self.array, self.requires_grad)


# ----- writing -----

def atomic_write(path, data):
    """Replace `path` by `data` (bytes-like) atomically; the old file survives any failure."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None and error.filename is None:  # name the file
            raise OSError(error.errno, error.strerror, path) from error
        raise
    if os.name == "posix":  # persist the rename itself
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(obj, path):
    """Write `obj` (nested dict/list/tuple/set of scalars, strings, bytes, None, numpy or cupy
    arrays, numpy scalars and core Tensors) to `path` as one versioned, checksummed file."""
    payload = pickle.dumps(_encode(obj, "obj", {}), protocol=5)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    atomic_write(path, header + payload)


def _encode(obj, where, tensors_seen):
    """Copy of `obj` with arrays and Tensors as records; `where` names the position for errors."""
    kind = type(obj)
    if obj is None or kind in (bool, int, float, complex, str, bytes):
        return obj
    if kind in (dict, collections.OrderedDict):
        for key in obj:
            _check_key(key, where)
        return kind((key, _encode(value, f"{where}[{key!r}]", tensors_seen)) for key, value in obj.items())
    if kind in (list, tuple, set, frozenset):
        return kind(_encode(value, f"{where}[{i}]", tensors_seen) for i, value in enumerate(obj))
    if isinstance(obj, (np.ndarray, np.generic)):
        return _array_record(obj, where)
    if backend.get_array_module(obj) is not np:  # a cupy (or emu) array
        return _array_record(obj.get(), where)
    # core.tensor is looked up, not imported: if it was never imported no Tensor can exist
    Tensor = getattr(sys.modules.get("core.tensor"), "Tensor", None)
    if Tensor is not None and isinstance(obj, Tensor):
        if id(obj) not in tensors_seen:  # a tensor stored twice (tied weights) stays one record
            tensors_seen[id(obj)] = _TensorRecord(_array_record(obj.detach().numpy(), where), obj.requires_grad)
        return tensors_seen[id(obj)]
    raise TypeError(f"cannot save {where} of type {kind.__qualname__}: allowed are dict, OrderedDict, list, "
                    "tuple, set, scalars, str, bytes, None, numpy/cupy arrays and core Tensors")


def _check_key(key, where):
    if type(key) is tuple:
        for part in key:
            _check_key(part, where)
    elif key is not None and type(key) not in (bool, int, float, str, bytes):
        raise TypeError(f"cannot save {where}: dict key {key!r} of type {type(key).__qualname__}; keys must be "
                        "str, int, float, bool, bytes, None or tuples of those")


def _array_record(array, where):
    if array.dtype.hasobject:
        raise TypeError(f"cannot save {where}: arrays of dtype {array.dtype} hold Python objects")
    dtype = array.dtype.descr if array.dtype.names else array.dtype.str
    # raw bytes as a uint8 view: the buffer protocol refuses some dtypes (datetime64) and pickle
    # then copies the bytes straight from the array
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return _ArrayRecord(dtype, array.shape, pickle.PickleBuffer(raw), isinstance(array, np.generic))


# ----- reading -----

class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("builtins", "complex"): complex, ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray, ("collections", "OrderedDict"): collections.OrderedDict,
        (__name__, "_ArrayRecord"): _ArrayRecord, (__name__, "_TensorRecord"): _TensorRecord,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def load(path, map_location=None):
    """Read a file written by `save`; Tensors come back as core Tensors on `map_location`
    (default "cpu"), arrays as numpy arrays. Raises CheckpointError for anything that is not an
    intact checkpoint (the file is checked completely before anything is returned)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < _HEADER.size:
        if MAGIC.startswith(blob[:len(MAGIC)]):
            raise CheckpointError(f"{path}: truncated checkpoint ({len(blob)} bytes, header alone is {_HEADER.size})")
        raise CheckpointError(f"{path}: not a checkpoint file (no {MAGIC!r} header)")
    magic, version, length, digest = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"{path}: not a checkpoint file (starts with {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is not supported (this code reads "
                              f"version {FORMAT_VERSION})")
    payload = memoryview(blob)[_HEADER.size:]
    if len(payload) != length:
        what = "truncated" if len(payload) < length else "has trailing bytes"
        raise CheckpointError(f"{path}: checkpoint {what}: header says {length} payload bytes, file has {len(payload)}")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path}: checkpoint corrupted: SHA-256 of the payload does not match the header")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(payload)).load()
    except (pickle.UnpicklingError, TypeError, ValueError, EOFError, struct.error) as e:
        raise CheckpointError(f"{path}: checkpoint payload is invalid: {e}") from e
    return _decode(obj, map_location or "cpu", path, {})


def _decode(obj, device, path, tensors_made):
    kind = type(obj)
    if kind in (dict, collections.OrderedDict):
        return kind((key, _decode(value, device, path, tensors_made)) for key, value in obj.items())
    if kind in (list, tuple, set, frozenset):
        return kind(_decode(value, device, path, tensors_made) for value in obj)
    if kind is _ArrayRecord:
        return _array_from_record(obj, path)
    if kind is _TensorRecord:
        if id(obj) not in tensors_made:  # a tensor saved twice (tied weights) comes back as one
            from core.tensor import tensor  # lazy: core.tensor may import this module
            array = _array_from_record(obj.array, path)
            tensors_made[id(obj)] = tensor(array, dtype=array.dtype, device=device, requires_grad=obj.requires_grad)
        return tensors_made[id(obj)]
    return obj


def _array_from_record(record, path):
    try:
        dtype = np.dtype(record.dtype)
        shape = tuple(int(n) for n in record.shape)
        expected = math.prod(shape) * dtype.itemsize
        found = len(record.data)
    except (AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint holds an invalid array record: {e}") from e
    if dtype.hasobject:
        raise CheckpointError(f"{path}: checkpoint holds an array of dtype {dtype}, which would hold Python objects")
    if found != expected:
        raise CheckpointError(f"{path}: checkpoint array of shape {shape} and dtype {dtype} needs {expected} bytes, "
                              f"record has {found}")
    array = np.frombuffer(record.data, dtype=dtype).reshape(shape)
    if not array.flags.writeable:  # read-only source buffer: hand out an array the caller can modify
        array = array.copy()
    return array[()] if record.scalar else array
