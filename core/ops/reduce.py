"""Reductions and normalisations along axes: sum, max, mean, var, std, norm, logsumexp, softmax, cumsum."""
import math

from core.autograd import Function, no_grad
from core.ops._util import wrap, xp_of
from core.ops.elementwise import abs, exp, log, where
from core.ops.shape import broadcast_to, flip, reshape


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(a % ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))) if ndim else ()
    return axes


def _keep_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _drop_axes(y, axes):
    """A keepdims result without its reduced axes."""
    return y.reshape([n for i, n in enumerate(y.shape) if i not in axes])


class Sum(Function):
    saves_inputs = False

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        shape = self.inputs[0].shape
        if not self.keepdims:
            gy = reshape(gy, _keep_shape(shape, self.axes))
        return broadcast_to(gy, shape)


class Max(Function):
    """max (or min) over axes; the gradient is shared evenly among tied extremes, or with `first` goes whole to
    the first of them in row-major order over the axes (max pooling's convention)."""

    def __init__(self, axes, keepdims, largest=True, first=False):
        self.axes, self.keepdims, self.largest, self.first = axes, keepdims, largest, first

    def forward(self, x):
        if x.size == 0:
            raise ValueError(f"{'max' if self.largest else 'min'} of an empty tensor of shape {x.shape}")
        y = x.max(axis=self.axes, keepdims=True) if self.largest else x.min(axis=self.axes, keepdims=True)
        hit = x == y
        if self.first:
            self.share = _first_true(hit, self.axes).astype(x.dtype)
        else:
            hit = hit.astype(x.dtype)
            self.share = hit / hit.sum(axis=self.axes, keepdims=True)
        return y if self.keepdims else _drop_axes(y, self.axes)

    def backward(self, gy):
        shape = self.inputs[0].shape
        if not self.keepdims:
            gy = reshape(gy, _keep_shape(shape, self.axes))
        return broadcast_to(gy, shape) * self.const(self.share)


def _first_true(mask, axes):
    """mask with only its first True kept along `axes` (taken together, row-major)."""
    xp = xp_of(mask)
    axes = sorted(axes)
    ends = list(range(mask.ndim - len(axes), mask.ndim))
    moved = xp.moveaxis(mask, axes, ends)
    flat = moved.reshape(moved.shape[:mask.ndim - len(axes)] + (-1,))
    first = flat & (flat.cumsum(axis=-1) == 1)
    return xp.moveaxis(first.reshape(moved.shape), ends, axes)


class Norm(Function):
    """Euclidean norm over axes. Where the norm is 0 its gradient x / norm is taken as 0 (as PyTorch takes
    it), not 0 / 0 = NaN; so is the second derivative there."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        y = xp_of(x).sqrt((x * x).sum(axis=self.axes, keepdims=True))
        self.nonzero = y > 0
        return y if self.keepdims else _drop_axes(y, self.axes)

    def backward(self, gy):
        (x,) = self.args
        y = self.output
        if not self.keepdims:
            shape = _keep_shape(x.shape, self.axes)
            gy, y = reshape(gy, shape), reshape(y, shape)
        nonzero = self.nonzero
        return x * where(nonzero, gy / where(nonzero, y, 1.0), 0.0)


class LogSoftmax(Function):
    saves_inputs = False

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        m = x.max(axis=self.axis, keepdims=True)
        z = x - m
        xp = xp_of(x)
        return z - xp.log(xp.exp(z).sum(axis=self.axis, keepdims=True))

    def backward(self, gy):
        return gy - exp(self.output) * gy.sum(self.axis, keepdims=True)


class Softmax(Function):
    saves_inputs = False

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = xp_of(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        return e / e.sum(axis=self.axis, keepdims=True)

    def backward(self, gy):
        y = self.output
        return y * (gy - (gy * y).sum(self.axis, keepdims=True))


class Normalize(Function):
    """(x - mean) / sqrt(var + eps) over `axes` (biased variance): the core of batch and layer norm as
    one node. Keeps the batch mean and variance (arrays) for running statistics."""

    saves_inputs = False

    def __init__(self, axes, eps):
        self.axes, self.eps = axes, eps

    def forward(self, x):
        xp = xp_of(x)
        self.mean = x.mean(axis=self.axes, keepdims=True)
        centered = x - self.mean
        self.var = (centered * centered).mean(axis=self.axes, keepdims=True)
        self.inv_std = 1.0 / xp.sqrt(self.var + self.eps)
        return centered * self.inv_std

    def backward(self, gy):
        xhat, axes = self.output, self.axes
        if self._raw:
            inv_std = self.inv_std
        else:  # rebuilt from x so that the gradient itself is differentiable
            (x,) = self.args
            centered = x - x.mean(axes, keepdims=True)
            inv_std = ((centered * centered).mean(axes, keepdims=True) + self.eps) ** -0.5
        return inv_std * (gy - gy.mean(axes, keepdims=True) - xhat * (gy * xhat).mean(axes, keepdims=True))


def normalize(x, axis, eps=1e-5):
    """Zero mean, unit (biased) variance over `axis`; returns the normalised tensor and the Function
    (its `.mean` and `.var` arrays feed running statistics)."""
    fn = Normalize(_axes(axis, x.ndim), eps)
    return fn(x), fn


class Cumsum(Function):
    saves_inputs = False

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        return x.cumsum(axis=self.axis)

    def backward(self, gy):
        return flip(cumsum(flip(gy, self.axis), self.axis), self.axis)


def sum(x, axis=None, keepdims=False):
    return Sum(_axes(axis, x.ndim), keepdims)(x)


class Mean(Sum):
    def forward(self, x):
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        shape = self.inputs[0].shape
        n = 1
        for a in self.axes:
            n *= shape[a]
        return Sum.backward(self, gy * (1.0 / n if n else 0.0))  # the mean of nothing: NaN, an empty gradient


def mean(x, axis=None, keepdims=False):
    return Mean(_axes(axis, x.ndim), keepdims)(x)


def max(x, axis=None, keepdims=False):
    return Max(_axes(axis, x.ndim), keepdims, True)(x)


def min(x, axis=None, keepdims=False):
    return Max(_axes(axis, x.ndim), keepdims, False)(x)


def _deviations(x, axes):
    """x minus its mean over axes, and the number of values each mean is taken over."""
    n = 1
    for a in axes:
        n *= x.shape[a]
    return x - mean(x, axes, keepdims=True), n


def var(x, axis=None, keepdims=False, correction=1):
    """Variance with PyTorch's default Bessel correction (correction=0 gives the biased estimate)."""
    axes = _axes(axis, x.ndim)
    d, n = _deviations(x, axes)
    return sum(d * d, axes, keepdims) * (1.0 / (n - correction) if n > correction else float("nan"))


def std(x, axis=None, keepdims=False, correction=1):
    """sqrt(var), as the norm of the deviations: its gradient is 0 (not 0 / 0) on a constant row."""
    axes = _axes(axis, x.ndim)
    d, n = _deviations(x, axes)
    return Norm(axes, keepdims)(d) * (1.0 / math.sqrt(n - correction) if n > correction else float("nan"))


def logsumexp(x, axis=None, keepdims=False):
    axes = _axes(axis, x.ndim)
    with no_grad():  # the shift only stabilises; it cancels out of the gradient
        m = max(x, axes, keepdims=True)
        m = wrap(m.xp.where(m.xp.isfinite(m.data), m.data, 0))
    out = log(sum(exp(x - m), axes, keepdims=True)) + m
    return out if keepdims else reshape(out, [n for i, n in enumerate(out.shape) if i not in axes])


def norm(x, ord=2, axis=None, keepdims=False):
    """Vector norm over axes (2, 1 or inf)."""
    if ord == 2:
        return Norm(_axes(axis, x.ndim), keepdims)(x)
    if ord == 1:
        return sum(abs(x), axis, keepdims)
    if ord in (float("inf"), "inf"):
        return max(abs(x), axis, keepdims)
    raise ValueError(f"norm: ord must be 1, 2 or inf, got {ord!r}")


def softmax(x, axis=-1):
    return Softmax(axis)(x)


def log_softmax(x, axis=-1):
    return LogSoftmax(axis)(x)


def cumsum(x, axis=0):
    return Cumsum(axis)(x)


def argmax(x, axis=None, keepdims=False):
    return wrap(x.xp.argmax(x.data, axis=axis, keepdims=keepdims))


def argmin(x, axis=None, keepdims=False):
    return wrap(x.xp.argmin(x.data, axis=axis, keepdims=keepdims))


def any(x, axis=None, keepdims=False):
    return wrap(x.xp.any(x.data, axis=axis, keepdims=keepdims))


def all(x, axis=None, keepdims=False):
    return wrap(x.xp.all(x.data, axis=axis, keepdims=keepdims))
