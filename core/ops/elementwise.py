"""Elementwise ops: arithmetic, math functions and activations, each forward beside its backward.

Primitives are Functions; the rest (softplus, elu, gelu, ...) are compositions of them, so their
gradients, and gradients of gradients, come for free.
"""
import math

import numpy as np

from core.autograd import Function
from core.ops._util import pair, relu_array, unbroadcast, wrap, xp_of
from core.tensor import Tensor


# ----- arithmetic -----
class Add(Function):
    saves_inputs = False

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        a, b = self.inputs
        return unbroadcast(gy, a.shape), unbroadcast(gy, b.shape)


class Sub(Function):
    saves_inputs = False

    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        a, b = self.inputs
        return unbroadcast(gy, a.shape), (unbroadcast(-gy, b.shape) if b.requires_grad else None)


class Mul(Function):
    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.args
        return (unbroadcast(gy * b, a.shape) if self.needs_grad(0) else None,
                unbroadcast(gy * a, b.shape) if self.needs_grad(1) else None)


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, gy):
        a, b = self.args
        ga = gy / b
        return (unbroadcast(ga, a.shape) if self.needs_grad(0) else None,
                unbroadcast(-ga * a / b, b.shape) if self.needs_grad(1) else None)


class Neg(Function):
    saves_inputs = False

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    def forward(self, x, p):
        return x ** p

    def backward(self, gy):
        x, p = self.args
        x_is_zero = self.inputs[0].data == 0
        gx = gp = None
        if self.needs_grad(0):
            # at x = 0, p = 0, p * x ** (p - 1) is 0 * inf = NaN though d(x ** 0)/dx = 0: the exponent 1 there
            # gives p * x = 0, whose own derivatives are finite too
            undefined = x_is_zero & (self.inputs[1].data == 0)
            gx = unbroadcast(gy * p * x ** where(undefined, 1.0, p - 1), x.shape)
        if self.needs_grad(1):
            # d(0 ** p)/dp = 0 for p > 0: out * log(x) would be 0 * -inf
            gp = unbroadcast(gy * self.output * log(where(x_is_zero, 1.0, x)), p.shape)
        return gx, gp


class PowConst(Function):
    """x ** c for a Python number c (the common case: squares, square roots, reciprocals)."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x * x if self.c == 2 else x ** self.c

    def backward(self, gy):
        (x,) = self.args
        c = self.c
        if c == 2:
            return gy * (2 * x)
        if c == 0:  # x ** 0 is constant: not 0 * x ** -1, which is NaN at 0 (and x ** 1's second derivative)
            return gy * 0.0
        return gy * (c * x ** (c - 1))


class AddScalar(Function):
    """x + c for a Python number c: one input, no constant tensor to build."""

    saves_inputs = False

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x + self.c

    def backward(self, gy):
        return gy


class MulScalar(Function):
    saves_inputs = False

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x * self.c

    def backward(self, gy):
        return gy * self.c


_NUMBER = (int, float)  # Python numbers (not bool, not numpy scalars) take the one-input scalar ops


def _commutative(name, op, scalar_op):
    """add or mul: a Python number on either side becomes `scalar_op(number)` of the tensor."""
    def apply(a, b):
        if type(b) in _NUMBER and isinstance(a, Tensor):
            return scalar_op(b)(a)
        if type(a) in _NUMBER and isinstance(b, Tensor):
            return scalar_op(a)(b)
        return op()(*pair(a, b))
    apply.__name__ = apply.__qualname__ = name
    return apply


add, mul = _commutative("add", Add, AddScalar), _commutative("mul", Mul, MulScalar)


def sub(a, b):
    if type(b) in _NUMBER and isinstance(a, Tensor):
        return AddScalar(-b)(a)
    if type(a) in _NUMBER and isinstance(b, Tensor):
        return AddScalar(a)(MulScalar(-1)(b))
    return Sub()(*pair(a, b))


def div(a, b):
    return Div()(*pair(a, b))


def pow(x, p):
    if isinstance(x, Tensor) and isinstance(p, (int, float)) and not isinstance(p, bool):
        return PowConst(p)(x)
    return Pow()(*pair(x, p))


def square(x):
    return x * x


# ----- math functions -----
class Exp(Function):
    saves_inputs = False

    def forward(self, x):
        return xp_of(x).exp(x)

    def backward(self, gy):
        return gy * self.output


def _unary(name, fwd, grad_of_x):
    """A primitive whose derivative is an expression of its input tensor."""
    cls = type(name, (Function,), {
        "forward": lambda self, x: fwd(xp_of(x), x),
        "backward": lambda self, gy: gy * grad_of_x(self.args[0]),
    })
    return cls


Log = _unary("Log", lambda xp, x: xp.log(x), lambda x: 1 / x)
Log1p = _unary("Log1p", lambda xp, x: xp.log1p(x), lambda x: 1 / (x + 1))
Sin = _unary("Sin", lambda xp, x: xp.sin(x), lambda x: cos(x))
Cos = _unary("Cos", lambda xp, x: xp.cos(x), lambda x: -sin(x))


class Sqrt(Function):
    saves_inputs = False

    def forward(self, x):
        return xp_of(x).sqrt(x)

    def backward(self, gy):
        return gy / (2 * self.output)


class Tanh(Function):
    saves_inputs = False

    def forward(self, x):
        return xp_of(x).tanh(x)

    def backward(self, gy):
        y = self.output
        return gy * (1 - y * y)


class Sigmoid(Function):
    """1 / (1 + exp(-x)), accurate to rounding over the whole range, and so is its derivative y (1 - y) with
    1 - y = exp(-x) y, free of cancellation for large x. (The tanh form 0.5 tanh(x/2) + 0.5 loses relative
    accuracy below about -20 and is 0 from about -38.) exp(-x) overflows below about -709 (-88 in float32):
    y is then exp(x), subnormal or 0, and 1 - y is 1."""

    def forward(self, x):
        xp = xp_of(x)
        with np.errstate(over="ignore"):
            self.e = e = xp.exp(-x)
            y = 1 / (1 + e)
            if xp is not np or not y.all():  # exp(-x) overflowed (cupy is not asked: that would wait for the GPU)
                y = xp.where(y == 0, xp.exp(x), y)
        return y

    def backward(self, gy):
        y = self.output
        if self._raw:
            with np.errstate(invalid="ignore"):  # where exp(-x) = inf, inf * 0 is NaN and fmin takes 1
                complement = xp_of(y).fmin(self.e * y, 1)
        else:  # differentiable, for higher orders
            complement = sigmoid(-self.args[0])
        return gy * y * complement


class _Masked(Function):
    """Primitives whose derivative is a constant (piecewise) factor of the input: gx = gy * factor."""

    def backward(self, gy):
        return gy * self.const(self.factor)


class Abs(_Masked):
    def forward(self, x):
        xp = xp_of(x)
        self.factor = xp.sign(x)
        return xp.abs(x)


class Relu(Function):
    def forward(self, x):
        return relu_array(x)

    def backward(self, gy):
        return gy * (self.args[0] > 0)  # the mask is a constant: no second-order term


class LeakyRelu(_Masked):
    def __init__(self, slope):
        self.slope = slope

    def forward(self, x):
        xp = xp_of(x)
        factor = (x > 0).astype(x.dtype)
        if 0 <= self.slope <= 1:  # max(1, slope) = 1, max(0, slope) = slope: 4x faster than where on numpy
            self.factor = xp.maximum(factor, x.dtype.type(self.slope), out=factor)
        else:
            self.factor = xp.where(factor > 0, x.dtype.type(1), x.dtype.type(self.slope))
        return x * self.factor


class Clip(_Masked):
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        xp = xp_of(x)
        y = xp.clip(x, self.lo, self.hi)
        self.factor = (y == x).astype(x.dtype)
        return y


class Erf(Function):
    def forward(self, x):
        xp = xp_of(x)
        if xp is np:
            try:
                from scipy.special import erf
            except ImportError:
                erf = np.frompyfunc(math.erf, 1, 1)
            return np.asarray(erf(x), dtype=x.dtype)
        from core.backend import extras
        return extras(xp).scipy.special.erf(x)

    def backward(self, gy):
        (x,) = self.args
        return gy * (2 / math.sqrt(math.pi)) * exp(-(x * x))


class Maximum(Function):
    def __init__(self, take_larger=True):
        self.take_larger = take_larger

    def forward(self, a, b):
        xp = xp_of(a)
        wins = a > b if self.take_larger else a < b
        # ties split the gradient evenly between the operands
        self.share = xp.where(wins, 1.0, xp.where(a == b, 0.5, 0.0)).astype(np.result_type(a, b))
        return xp.where(wins, a, b) if self.take_larger else xp.minimum(a, b)

    def backward(self, gy):
        a, b = self.inputs
        share = self.const(self.share)
        return (unbroadcast(gy * share, a.shape) if a.requires_grad else None,
                unbroadcast(gy * (1 - share), b.shape) if b.requires_grad else None)


class Where(Function):
    def __init__(self, cond):
        self.cond = cond

    def forward(self, a, b):
        return xp_of(a).where(self.cond, a, b)

    def backward(self, gy):
        a, b = self.inputs
        cond = self.cond
        return (unbroadcast(where(cond, gy, 0.0), a.shape) if a.requires_grad else None,
                unbroadcast(where(cond, 0.0, gy), b.shape) if b.requires_grad else None)


class Cast(Function):
    saves_inputs = False

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.src = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return cast(gy, self.src) if self.src.kind == "f" else None


class ToDevice(Function):
    saves_inputs = False

    def __init__(self, device):
        self.device = device

    def forward(self, x):
        from core import backend
        self.src = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy):
        return to_device(gy, self.src)


def _op_of(primitive):
    """The op of a one-input primitive without parameters: exp(x) is Exp()(x)."""
    def apply(x):
        return primitive()(x)
    apply.__name__ = apply.__qualname__ = primitive.__name__.lower()
    apply.__doc__ = primitive.__doc__
    return apply


neg, exp, log, log1p, sqrt, abs, sin, cos, tanh, sigmoid, relu, erf = map(
    _op_of, (Neg, Exp, Log, Log1p, Sqrt, Abs, Sin, Cos, Tanh, Sigmoid, Relu, Erf))


def leaky_relu(x, negative_slope=0.01):
    return LeakyRelu(negative_slope)(x)


def clip(x, min=None, max=None):
    if min is None and max is None:
        raise ValueError("clip needs at least one of min and max")
    return Clip(min, max)(x)


def maximum(a, b):
    return Maximum(True)(*pair(a, b))


def minimum(a, b):
    return Maximum(False)(*pair(a, b))


def where(cond, a, b):
    """Elementwise cond ? a : b; gradients flow to a and b, never to cond."""
    cond = cond.data if isinstance(cond, Tensor) else cond
    if not (isinstance(a, Tensor) or isinstance(b, Tensor)):  # raw arrays inside a no-graph backward
        return xp_of(cond).where(cond, a, b)
    a, b = pair(a, b)
    return Where(a.xp.asarray(cond))(a, b)


def cast(x, dtype):
    return Cast(np.dtype(dtype))(x)


def to_device(x, device):
    return ToDevice(device)(x)


# ----- activations composed from primitives -----
class Softplus(Function):
    """log(1 + exp(x)), overflow-free; the derivative is sigmoid(x), exact everywhere (also at 0)."""

    def forward(self, x):
        return xp_of(x).logaddexp(0, x).astype(x.dtype, copy=False)

    def backward(self, gy):
        return gy * sigmoid(self.args[0])


def logsigmoid(x):
    """log(sigmoid(x)) = -softplus(-x): accurate and finite over the whole range (log of a sigmoid that
    underflows would be -inf)."""
    return -Softplus()(-x)


def softplus(x, beta=1.0):
    """log(1 + exp(beta x)) / beta."""
    if beta == 1.0:
        return Softplus()(x)
    return Softplus()(x * beta) / beta


def elu(x, alpha=1.0):
    """x for x > 0, alpha (exp(x) - 1) otherwise; at 0 the derivative is the left one, alpha (1 for the smooth
    alpha = 1). The exp sees only the non-positive part, so the unused branch stays finite and its zero gradient
    stays zero (not inf * 0); not minimum(x, 0), whose tie at 0 would halve the derivative there."""
    positive = x.data > 0
    return where(positive, x, alpha * (exp(where(positive, 0.0, x)) - 1))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def selu(x):
    return _SELU_SCALE * elu(x, _SELU_ALPHA)


def gelu(x, approximate="none"):
    """GELU: x * Phi(x) with the exact erf ('none', PyTorch's default) or the tanh approximation."""
    if approximate == "tanh":
        return 0.5 * x * (1 + tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
    if approximate != "none":
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))


def silu(x):
    return x * sigmoid(x)


# ----- comparisons and logic (no gradient) -----
def _compare(name):
    def compare(a, b):
        a, b = pair(a, b)
        return wrap(getattr(a.xp, name)(a.data, b.data))
    compare.__name__ = name
    return compare


eq, ne, lt, le, gt, ge = (_compare(name) for name in ("equal", "not_equal", "less", "less_equal", "greater",
                                                       "greater_equal"))
logical_and, logical_or = _compare("logical_and"), _compare("logical_or")


def logical_not(x):
    return wrap(~x.data if x.dtype == np.bool_ else x.data == 0)


def isfinite(x):
    return wrap(x.xp.isfinite(x.data))
