"""Reductions and normalisations along axes: sum, max, mean, var, logsumexp, softmax, cumsum."""
from core.autograd import Function, no_grad
from core.ops._util import wrap, xp_of
from core.ops.elementwise import exp, log, sqrt, abs
from core.ops.shape import broadcast_to, flip, reshape


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(a % ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))) if ndim else ()
    return axes


def _keep_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


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
    """max (or min) over axes; the gradient is shared evenly among tied extremes."""

    def __init__(self, axes, keepdims, largest=True):
        self.axes, self.keepdims, self.largest = axes, keepdims, largest

    def forward(self, x):
        if x.size == 0:
            raise ValueError(f"{'max' if self.largest else 'min'} of an empty tensor of shape {x.shape}")
        y = x.max(axis=self.axes, keepdims=True) if self.largest else x.min(axis=self.axes, keepdims=True)
        hit = (x == y).astype(x.dtype)
        self.share = hit / hit.sum(axis=self.axes, keepdims=True)
        return y if self.keepdims else y.reshape([n for i, n in enumerate(y.shape) if i not in self.axes])

    def backward(self, gy):
        shape = self.inputs[0].shape
        if not self.keepdims:
            gy = reshape(gy, _keep_shape(shape, self.axes))
        return broadcast_to(gy, shape) * self.const(self.share)


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
        return Sum.backward(self, gy * (1.0 / n))


def mean(x, axis=None, keepdims=False):
    return Mean(_axes(axis, x.ndim), keepdims)(x)


def max(x, axis=None, keepdims=False):
    return Max(_axes(axis, x.ndim), keepdims, True)(x)


def min(x, axis=None, keepdims=False):
    return Max(_axes(axis, x.ndim), keepdims, False)(x)


def var(x, axis=None, keepdims=False, correction=1):
    """Variance with PyTorch's default Bessel correction (correction=0 gives the biased estimate)."""
    axes = _axes(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    d = x - mean(x, axes, keepdims=True)
    return sum(d * d, axes, keepdims) * (1.0 / (n - correction) if n > correction else float("nan"))


def std(x, axis=None, keepdims=False, correction=1):
    return sqrt(var(x, axis, keepdims, correction))


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
        return sqrt(sum(x * x, axis, keepdims))
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
