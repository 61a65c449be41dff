"""Helpers shared by the op modules: turning operands into tensors and undoing broadcasting."""
import numpy as np

from core import backend
from core.tensor import Tensor


def const(value, like):
    """A constant tensor for a Python/numpy scalar or array next to tensor `like` (same device;
    scalars take `like`'s float dtype so they never promote float32 to float64)."""
    if isinstance(value, Tensor):
        return value
    xp = like.xp
    if isinstance(value, (int, float, bool, np.generic)):
        kind = like.dtype.kind
        if kind == "f" and not isinstance(value, (bool, np.bool_)):
            return Tensor._make(xp.asarray(value, dtype=like.dtype))
        return Tensor._make(xp.asarray(value, dtype=np.result_type(like.dtype, value)))
    if backend.get_array_module(value) is not xp:
        if xp is np and backend.get_array_module(value) is not np:
            raise RuntimeError(f"expected all tensors on the same device, got cpu and {backend.device_of(value)}")
        value = backend.to_device(value, like.device) if xp is not np else np.asarray(value)
    return Tensor._make(xp.asarray(value))


def pair(a, b):
    """Both operands as tensors on one device."""
    if not isinstance(a, Tensor):
        return const(a, b), b
    if not isinstance(b, Tensor):
        return a, const(b, a)
    if type(a.data) is not type(b.data):
        raise RuntimeError(f"expected all tensors on the same device, got {a.device} and {b.device}")
    return a, b


def wrap(array):
    """A constant tensor around an array computed in forward (numpy hands back scalars for 0-d results)."""
    return Tensor._make(np.asarray(array) if isinstance(array, np.generic) else array)


def xp_of(array):
    """numpy or cupy for a raw array (fast path for numpy)."""
    return np if type(array) is np.ndarray else backend.get_array_module(array)


_ZEROS = {}  # dtype -> a read-only flat numpy array of zeros, grown on demand (see relu_array)
_ZEROS_CAP = 1 << 22  # elements; larger inputs take the scalar form


def relu_array(x, out=None):
    """max(x, 0) of a raw array. On numpy against an array of zeros: numpy's maximum has no SIMD loop
    for a broadcast scalar and takes about 4x as long with a scalar 0 (13 us against 3 us for
    128x256 float32); the values are bitwise the same, NaN payloads and signed zeros included."""
    if type(x) is not np.ndarray or x.size > _ZEROS_CAP:
        return xp_of(x).maximum(x, 0, out=out)
    zeros = _ZEROS.get(x.dtype)
    if zeros is None or zeros.size < x.size:
        zeros = np.zeros(max(x.size, 1 << 16), x.dtype)
        zeros.flags.writeable = False
        _ZEROS[x.dtype] = zeros
    return np.maximum(x, zeros[:x.size].reshape(x.shape), out=out)


def sum_rows(g):
    """g.sum(0) of a 2-D gradient (a bias gradient). On raw arrays as ones @ g: BLAS does it 5-10x
    faster than numpy's reduction at the batch sizes of RL and GAN training."""
    if isinstance(g, Tensor):
        return g.sum(0)
    return xp_of(g).ones(g.shape[0], dtype=g.dtype).dot(g)


def unbroadcast(g, shape):
    """Sum a broadcast gradient back to an operand's shape."""
    if g.shape == shape:
        return g
    from core.ops.shape import sum_to
    return sum_to(g, shape)


def check_device(op, *tensors):
    """Raise unless every operand is a Tensor and all are on one device (the operands are inspected only on failure)."""
    try:
        if len({type(t.data) for t in tensors}) <= 1:
            return
    except AttributeError:  # no .data at all: a scalar, a list
        pass
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: operand {i} is a {type(t).__module__}.{type(t).__qualname__}, not a Tensor; "
                            "wrap it with core.tensor(...)")
    raise RuntimeError(f"{op}: expected all tensors on the same device, got "
                       + " and ".join(sorted({t.device for t in tensors})))
