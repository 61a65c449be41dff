"""Shape and indexing ops: reshape, permute, broadcast, index, concatenate, pad, flip."""
import numpy as np

from core import backend
from core.autograd import Function
from core.ops._util import check_device, xp_of
from core.tensor import Tensor


def _normalize_shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


class _ToShape(Function):
    """reshape, broadcast_to and sum_to: x to `shape`. Backward takes gy back to x's shape by another of the
    three, so it reads no input values."""

    saves_inputs = False

    def __init__(self, shape):
        self.shape = shape


class Reshape(_ToShape):
    def forward(self, x):
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape tensor of shape {x.shape} ({x.size} elements) into {self.shape}") from None

    def backward(self, gy):
        return reshape(gy, self.inputs[0].shape)


class Permute(Function):
    saves_inputs = False

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        if len(self.axes) != x.ndim or sorted(a % x.ndim for a in self.axes) != list(range(x.ndim)):
            raise ValueError(f"permute: axes {self.axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
        return x.transpose(self.axes)

    def backward(self, gy):
        return permute(gy, tuple(np.argsort([a % gy.ndim for a in self.axes])))


class BroadcastTo(_ToShape):
    def forward(self, x):
        try:
            return xp_of(x).broadcast_to(x, self.shape)
        except ValueError:
            raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {self.shape}") from None

    def backward(self, gy):
        return sum_to(gy, self.inputs[0].shape)


class SumTo(_ToShape):
    def forward(self, x):
        lead = x.ndim - len(self.shape)
        axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(self.shape) if n == 1 and x.shape[i + lead] != 1)
        y = x.sum(axis=axes, keepdims=True) if axes else x
        return y.reshape(self.shape)

    def backward(self, gy):
        return broadcast_to(gy, self.inputs[0].shape)


def unwrap_index(key):
    """Replace tensors inside an index by their arrays."""
    if isinstance(key, Tensor):
        return key.data
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    if isinstance(key, list):
        return np.asarray(key)
    return key


def _is_basic(key):
    """True when an index is only ints, slices, None and Ellipsis (each element picked at most once)."""
    parts = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (int, np.integer, slice)) for k in parts)


class GetItem(Function):
    saves_inputs = False

    def __init__(self, key):
        self.key = key

    def forward(self, x):
        try:
            return x[self.key]
        except IndexError as e:
            raise IndexError(f"index into tensor of shape {x.shape}: {e}") from None

    def backward(self, gy):
        return IndexAdd(self.key, self.inputs[0].shape)(gy)


class IndexAdd(Function):
    """zeros(shape) with gy added at `key` (repeated indices accumulate); the backward of indexing."""

    saves_inputs = False

    def __init__(self, key, shape):
        self.key, self.shape = key, shape

    def forward(self, gy):
        xp = xp_of(gy)
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        if _is_basic(self.key):
            gx[self.key] = gy
        else:
            backend.scatter_add(xp, gx, self.key, gy)
        return gx

    def backward(self, ggx):
        return getitem(ggx, self.key)


def getitem(x, key):
    return GetItem(unwrap_index(key))(x)


class Concatenate(Function):
    saves_inputs = False

    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        try:
            return xp_of(xs[0]).concatenate(xs, axis=self.axis)
        except ValueError:
            raise ValueError(f"concatenate along axis {self.axis}: shapes {[x.shape for x in xs]} do not match") from None

    def backward(self, gy):
        grads, start = [], 0
        lead = (slice(None),) * (self.axis % gy.ndim)
        for x in self.inputs:
            stop = start + x.shape[self.axis]
            grads.append(gy[lead + (slice(start, stop),)] if x.requires_grad else None)
            start = stop
        return tuple(grads)


class Pad(Function):
    saves_inputs = False

    def __init__(self, pad_width, value):
        self.pad_width, self.value = pad_width, value

    def forward(self, x):
        return xp_of(x).pad(x, self.pad_width, constant_values=self.value)

    def backward(self, gy):
        return gy[tuple(slice(lo, gy.shape[i] - hi) for i, (lo, hi) in enumerate(self.pad_width))]


class Flip(Function):
    saves_inputs = False

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return xp_of(x).flip(x, self.axes)

    def backward(self, gy):
        return flip(gy, self.axes)


def reshape(x, *shape):
    return Reshape(_normalize_shape(shape))(x)


def permute(x, *axes):
    return Permute(_normalize_shape(axes))(x)


def swapaxes(x, a, b):
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Permute(tuple(axes))(x)


def transpose(x, dim0=None, dim1=None):
    """Reverse all axes (numpy's default) or swap two (PyTorch's transpose(dim0, dim1))."""
    if dim0 is None:
        return permute(x, tuple(reversed(range(x.ndim))))
    return swapaxes(x, dim0, dim1)


def broadcast_to(x, *shape):
    shape = _normalize_shape(shape)
    return x if x.shape == shape else BroadcastTo(shape)(x)


def expand_as(x, other):
    return broadcast_to(x, other.shape)


def sum_to(x, shape):
    return x if x.shape == tuple(shape) else SumTo(tuple(shape))(x)


def reshape_as(x, other):
    return reshape(x, other.shape)


def squeeze(x, axis=None):
    if axis is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        axes = {a % x.ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))}
        for a in axes:
            if x.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
        shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    return reshape(x, shape)


def unsqueeze(x, axis):
    axis = axis if axis >= 0 else axis + x.ndim + 1
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def flatten(x, start_dim=0, end_dim=-1):
    end = end_dim % x.ndim if x.ndim else 0
    return reshape(x, x.shape[:start_dim] + (-1,) + x.shape[end + 1:])


def concatenate(tensors, axis=0):
    tensors = list(tensors)
    check_device("concatenate", *tensors)
    return Concatenate(axis)(*tensors)


cat = concat = concatenate


def stack(tensors, axis=0):
    return concatenate([unsqueeze(t, axis) for t in tensors], axis)


def split(x, split_size_or_sections, axis=0):
    """PyTorch semantics: an int is the size of each chunk; a list gives each chunk's size."""
    n = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        sizes = [split_size_or_sections] * (n // split_size_or_sections)
        if n % split_size_or_sections:
            sizes.append(n % split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n}, the size of axis {axis}")
    lead = (slice(None),) * (axis % x.ndim)
    out, start = [], 0
    for size in sizes:
        out.append(x[lead + (slice(start, start + size),)])
        start += size
    return out


def chunk(x, chunks, axis=0):
    return split(x, -(-x.shape[axis] // chunks), axis)


def pad(x, pad_width, value=0.0):
    """Constant padding; pad_width is numpy's ((before, after), ...) per axis, or an int for all."""
    if isinstance(pad_width, int):
        pad_width = ((pad_width, pad_width),) * x.ndim
    pad_width = tuple((int(lo), int(hi)) for lo, hi in pad_width)
    if len(pad_width) != x.ndim:
        raise ValueError(f"pad: got {len(pad_width)} (before, after) pairs for a tensor of rank {x.ndim}")
    return Pad(pad_width, value)(x)


def flip(x, axis=None):
    axes = tuple(range(x.ndim)) if axis is None else (tuple(axis) if isinstance(axis, (tuple, list)) else (axis,))
    return Flip(axes)(x)


def _pick_along_axis(op, x, indices, axis, broadcast):
    """x[..., indices, ...] along `axis` as one fancy index: an arange grid per other axis, of x's sizes where
    the indices broadcast against x (numpy), of the indices' sizes otherwise (PyTorch's gather). Backward
    scatters, repeated indices accumulating."""
    idx = indices.data if isinstance(indices, Tensor) else x.xp.asarray(indices)
    if idx.ndim != x.ndim:
        raise ValueError(f"{op}: indices of rank {idx.ndim} for a tensor of rank {x.ndim}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be integers, got {idx.dtype}")
    axis = axis % x.ndim
    sizes = x.shape if broadcast else idx.shape
    if broadcast:
        others = [(n, m) for i, (n, m) in enumerate(zip(x.shape, idx.shape)) if i != axis]
        if any(n != m and 1 not in (n, m) for n, m in others):
            raise ValueError(f"{op}: indices of shape {idx.shape} do not broadcast against the tensor's shape "
                             f"{x.shape} outside axis {axis}")
    xp = x.xp
    grids = [xp.arange(n).reshape((1,) * i + (n,) + (1,) * (x.ndim - i - 1)) for i, n in enumerate(sizes)]
    grids[axis] = idx
    return GetItem(tuple(grids))(x)


def take_along_axis(x, indices, axis):
    """numpy's take_along_axis: outside `axis` the indices and x broadcast against each other."""
    return _pick_along_axis("take_along_axis", x, indices, axis, broadcast=True)


def gather(x, dim, index):
    """PyTorch's gather(input, dim, index): no broadcasting; outside `dim` the index may be smaller than input,
    and picks from its leading part."""
    return _pick_along_axis("gather", x, index, dim, broadcast=False)


def one_hot(indices, num_classes, dtype=None):
    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    xp = xp_of(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ValueError(f"one_hot: indices must lie in [0, {num_classes}), got range [{idx.min()}, {idx.max()}]")
    from core.tensor import get_default_dtype
    out = (idx[..., None] == xp.arange(num_classes)).astype(dtype or get_default_dtype())
    return Tensor._make(out)
