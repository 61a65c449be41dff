"""`emu`: a strict stand-in for cupy on the CPU, for tests only (device "emu").

It lets CI run the GPU code path without a GPU and catch the host/device mistakes that only cupy
would otherwise reveal. Like cupy, and unlike numpy, its arrays
- refuse implicit conversion to numpy (`numpy.asarray(a)`, `numpy.mean(a)`, a numpy array indexed
  or filled with one): TypeError, as cupy raises; `.get()` (or `backend.to_device(a, "cpu")`) is
  the explicit transfer,
- refuse host numpy arrays in their operations (`a + host`, `xp.where(host_mask, ...)`) and as the
  value of a plain-slice assignment (`a[...] = host`); `xp.asarray(host)` is the explicit transfer,
- give 0-d arrays, not Python or numpy scalars, from reductions and element access,
- offer only the random generators' methods that cupy's have.
Everything is computed by numpy on the wrapped array. This module is imported only when device
"emu" is asked for; it is not a way to run anything for real.

`stats` counts the device arrays made and the host reads (`.get()`, `.item()`, `float()`, `bool()`
... of a device array: each one a wait for the GPU on cupy); with LAB_EMU_STATS=<file> they are
added to the counts there (JSON) when each process ends, so a test can see that a run really used the device.
"""
import atexit
import contextlib
import json
import os
import types

import numpy as np

_IMPLICIT = ("emu: implicit conversion of a device array to a numpy array is not allowed (cupy raises this too); "
             "use .get() or core.backend.to_device(array, 'cpu')")
_MIXED = ("emu: a host numpy array was passed where a device array is needed (cupy raises TypeError: Unsupported "
          "type numpy.ndarray); move it with xp.asarray(array) first")
_FILL = ("emu: a host array was assigned into a slice of a device array (cupy raises ValueError: non-scalar "
         "numpy.ndarray cannot be used for fill); move it with xp.asarray(array) first")

stats = {"arrays": 0, "host_reads": 0}


def _write_stats(path):
    """Add this process's counts to the file's (a run's worker processes each add theirs)."""
    import fcntl
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        total = json.loads(text) if text.strip() else {}
        f.seek(0)
        f.truncate()
        json.dump({key: total.get(key, 0) + value for key, value in stats.items()}, f)


if os.environ.get("LAB_EMU_STATS"):
    atexit.register(_write_stats, os.environ["LAB_EMU_STATS"])


class ndarray:
    """A device array: a numpy array that only this module's functions and operators may touch."""

    __slots__ = ("_a",)
    __array_priority__ = 100  # cupy's: an operand with a higher priority (a core Tensor) takes over the operator
    __hash__ = None

    def __init__(self, array):
        self._a = array
        stats["arrays"] += 1

    # ----- explicit transfer; implicit conversion fails -----
    def get(self):
        """A host copy (cupy's device-to-host transfer)."""
        stats["host_reads"] += 1
        return self._a.copy()

    def item(self):
        stats["host_reads"] += 1
        return self._a.item()

    def tolist(self):
        stats["host_reads"] += 1
        return self._a.tolist()

    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        out = kwargs.get("out")
        if out is not None:  # the device arrays written into
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # ----- attributes: the common ones directly, the rest (methods included) through numpy's -----
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    T = property(lambda self: ndarray(self._a.T))
    device = property(lambda self: cuda.Device(0))

    def __getattr__(self, name):
        if name.startswith("_"):  # numpy's array protocols (__array_interface__ ...) would leak the host array
            raise AttributeError(name)
        attr = getattr(self._a, name)
        return _device_function(attr) if callable(attr) else _wrap(attr)

    # ----- indexing: integer/boolean index arrays may come from the host (cupy copies them over) -----
    def __getitem__(self, key):
        key = _index(key)
        out = self._a[key]
        if isinstance(out, np.generic):  # cupy gives a 0-d array (a view), not a scalar
            parts = key if type(key) is tuple else (key,)
            out = np.asarray(out) if any(k is Ellipsis for k in parts) else self._a[(*parts, ...)]
        return ndarray(out)

    def __setitem__(self, key, value):
        key = _index(key)
        if type(value) is ndarray:
            value = value._a
        elif isinstance(value, (np.ndarray, list, tuple)) and np.ndim(value) and not _advanced(key):
            raise ValueError(_FILL)
        self._a[key] = value

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self._a)))

    # ----- conversion to Python numbers (a host sync on cupy, allowed there too) -----
    def __bool__(self):
        stats["host_reads"] += 1
        return bool(self._a)

    def __float__(self):
        stats["host_reads"] += 1
        return float(self._a)

    def __int__(self):
        stats["host_reads"] += 1
        return int(self._a)

    def __format__(self, spec):
        stats["host_reads"] += 1
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __repr__(self):
        return "emu." + repr(self._a)

    # ----- operators, through numpy's ufuncs and so through __array_ufunc__ -----
    def __neg__(self):
        return ndarray(-self._a)

    def __pos__(self):
        return self

    def __abs__(self):
        return ndarray(abs(self._a))

    def __invert__(self):
        return ndarray(~self._a)


def _binary(ufunc):
    def forward(self, other):
        return NotImplemented if _defers(other) else ufunc(self, other)

    def reflected(self, other):
        return NotImplemented if _defers(other) else ufunc(other, self)

    def inplace(self, other):
        return ufunc(self, other, out=(self,))
    return forward, reflected, inplace


for _name, _ufunc in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
                      ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power),
                      ("matmul", np.matmul), ("and", np.bitwise_and), ("or", np.bitwise_or),
                      ("xor", np.bitwise_xor), ("lshift", np.left_shift), ("rshift", np.right_shift)]:
    for _prefix, _method in zip(("", "r", "i"), _binary(_ufunc)):
        setattr(ndarray, f"__{_prefix}{_name}__", _method)
for _name, _ufunc in [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                      ("gt", np.greater), ("ge", np.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_ufunc)[0])
del _name, _ufunc, _prefix, _method


def _defers(other):
    """True when `other` should handle a mixed operator (cupy's rule: it has the higher __array_priority__)."""
    return type(other) is not ndarray and getattr(other, "__array_priority__", 0) > ndarray.__array_priority__


def _unwrap(obj):
    """Device arrays to their numpy arrays, inside tuples, lists and dicts too; a host array is an error."""
    kind = type(obj)
    if kind is ndarray:
        return obj._a
    if kind in (tuple, list):
        return kind(_unwrap(v) for v in obj)
    if kind is dict:
        return {k: _unwrap(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        raise TypeError(_MIXED)
    return obj


def _wrap(obj):
    """numpy results to device arrays (scalars to 0-d arrays, as cupy returns them)."""
    if isinstance(obj, np.ndarray):
        return ndarray(obj)
    if isinstance(obj, np.generic):
        return ndarray(np.asarray(obj))
    if type(obj) in (tuple, list):
        return type(obj)(_wrap(v) for v in obj)
    return obj


def _index(key):
    """An index with device arrays unwrapped; host index arrays and lists stay (cupy accepts them)."""
    if type(key) is tuple:
        return tuple(v._a if type(v) is ndarray else v for v in key)
    return key._a if type(key) is ndarray else key


def _advanced(key):
    return any(isinstance(k, (np.ndarray, list, bool, np.bool_)) for k in (key if type(key) is tuple else (key,)))


def _device_function(fn):
    """`fn` (a numpy function or array method) taking and giving device arrays."""
    def call(*args, **kwargs):
        return _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))
    call.__name__ = call.__qualname__ = getattr(fn, "__name__", "function")
    call.__doc__ = fn.__doc__
    return call


class _Ufunc:
    """A numpy ufunc taking and giving device arrays (its methods reduce, accumulate, at ... too)."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self._call = _device_function(ufunc)
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self._ufunc, name)
        return _device_function(attr) if callable(attr) else attr


# ----- the module namespace: what code reaches through `xp.` -----
def asarray(a, dtype=None):
    """The host-to-device transfer (a copy of host data: device memory is separate); a device array
    stays as it is unless `dtype` differs."""
    if type(a) is ndarray:
        return a if dtype is None else ndarray(a._a.astype(dtype, copy=False))
    return ndarray(np.array(_unwrap_nested(a), dtype=dtype, copy=True))


def array(obj, dtype=None, copy=True):
    if type(obj) is ndarray:
        return ndarray(np.array(obj._a, dtype=dtype, copy=True if copy else None))
    return asarray(obj, dtype)


def _unwrap_nested(data):
    """Nested lists of device arrays (cupy.array([a, b]) stacks them); host data is left as it is."""
    if type(data) in (list, tuple):
        return type(data)(_unwrap_nested(v) for v in data)
    return data._a if type(data) is ndarray else data


def asnumpy(a):
    return a.get() if type(a) is ndarray else np.asarray(a)


def _device_attr(attr):
    """A numpy name as the emu offers it: functions, ufuncs and submodules on device arrays; dtypes and
    constants as they are."""
    if isinstance(attr, np.ufunc):
        return _Ufunc(attr)
    if isinstance(attr, types.ModuleType):
        return _Module(attr)
    if callable(attr) and not isinstance(attr, type):
        return _device_function(attr)
    return attr


class _Module:
    """A numpy submodule (lib.stride_tricks, linalg, ...) on device arrays."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return _device_attr(getattr(self._module, name))


_names = {}  # not globals(): `abs`, `max`, `round` ... would shadow the builtins in this module


def __getattr__(name):
    """Any other numpy name, as `_device_attr` makes it."""
    if name not in _names:
        _names[name] = _device_attr(getattr(np, name))
    return _names[name]


# ----- random: the methods of cupy's generators (no permutation, choice or normal on cupy.random.Generator) -----
class _Generator:
    """cupy.random.Generator's methods the lab uses, drawn by numpy."""

    def __init__(self, seed):
        self._g = np.random.default_rng(seed)

    def random(self, size=None, dtype=np.float64):
        return ndarray(np.asarray(self._g.random(size, dtype=dtype)))

    def standard_normal(self, size=None, dtype=np.float64):
        return ndarray(np.asarray(self._g.standard_normal(size, dtype=dtype)))

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return ndarray(np.asarray(self._g.integers(low, high, size, dtype=dtype, endpoint=endpoint)))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return ndarray(np.asarray(self._g.uniform(low, high, size)).astype(dtype, copy=False))


class _RandomState:
    """cupy.random.RandomState's methods the lab uses (it has no get_state/set_state)."""

    def __init__(self, seed=None):
        self._rs = np.random.RandomState(seed % 2 ** 32 if seed is not None else None)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
        return ndarray(np.asarray(self._rs.uniform(low, high, size)).astype(dtype, copy=False))


random = types.SimpleNamespace(default_rng=_Generator, Generator=_Generator, RandomState=_RandomState)


# ----- cuda: the device scope and count that code asks cupy for -----
class _Device(contextlib.nullcontext):
    def __init__(self, device=0):
        super().__init__()
        self.id = int(device)

    def synchronize(self):
        pass


cuda = types.SimpleNamespace(Device=_Device, runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))


# ----- cupyx: the extras of cupy the lab uses -----
def _scatter_add(target, index, values):
    np.add.at(target._a, _index(index), _unwrap(values))


def _erf(x):
    from scipy.special import erf
    return ndarray(np.asarray(erf(x._a), dtype=x.dtype))


cupyx = types.SimpleNamespace(scatter_add=_scatter_add,
                              scipy=types.SimpleNamespace(special=types.SimpleNamespace(erf=_erf)))
