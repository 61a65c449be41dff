"""The Tensor: an array (numpy or cupy) plus what autodiff needs to know about it."""
from operator import attrgetter

import numpy as np

from core import backend

float16, float32, float64 = np.float16, np.float32, np.float64
int8, int16, int32, int64, uint8 = np.int8, np.int16, np.int32, np.int64, np.uint8
bool_ = np.bool_
_default_dtype = np.dtype(np.float32)


def get_default_dtype():
    return _default_dtype


class DeviceShorthands:
    """cpu(), cuda(index), float() and double() as calls of `to(device, dtype)`: shared by Tensor and nn.Module."""

    __slots__ = ()

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)


class Tensor(DeviceShorthands):
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_version", "__weakref__")
    __array_priority__ = 1000  # numpy defers `ndarray op Tensor` to Tensor's reflected operators

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        t = tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        self.data, self.grad, self.requires_grad, self._ctx, self._version = t.data, None, t.requires_grad, None, 0

    @staticmethod
    def _make(data, requires_grad=False):
        t = Tensor.__new__(Tensor)
        t.data = data
        t.grad = None
        t.requires_grad = requires_grad
        t._ctx = None
        t._version = 0
        return t

    # ----- properties -----
    shape, ndim, dtype, size = (property(attrgetter(f"data.{name}"), doc=f"The array's {name}.")
                                for name in ("shape", "ndim", "dtype", "size"))

    def numel(self):
        return self.data.size

    def dim(self):
        return self.data.ndim

    def __len__(self):
        return len(self.data)

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def xp(self):
        return backend.get_array_module(self.data)

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    @property
    def T(self):
        return ops.permute(self, tuple(reversed(range(self.ndim))))

    @property
    def mT(self):
        return ops.swapaxes(self, -1, -2)

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        body = np.array2string(backend.to_device(self.data, "cpu"), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    __hash__ = object.__hash__  # == is elementwise (an op, attached below); tensors hash by identity

    # ----- conversion -----
    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()")
        return backend.to_device(self.data, "cpu")

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return backend.to_device(self.data, "cpu").tolist()

    def __array__(self, dtype=None, copy=None):
        if type(self.data) is not np.ndarray:  # as in PyTorch: a host copy of a device tensor is asked for by name
            raise TypeError(f"can't convert a {self.device} tensor to a numpy array implicitly; use tensor.cpu() "
                            "or tensor.numpy()")
        return self.data if dtype is None else self.data.astype(dtype)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.size != 1:
            raise TypeError("only integer tensors of one element can be used as an index")
        return int(self.item())

    def to(self, device=None, dtype=None):
        """Move to a device and/or cast; returns self when nothing changes. Differentiable."""
        if isinstance(device, (type, np.dtype)) and dtype is None:
            device, dtype = None, device
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = ops.cast(out, np.dtype(dtype))
        if device is not None and backend.parse_device(device) != backend.parse_device(self.device):
            backend.array_module(device)  # raises a clear error when the device is unavailable
            out = ops.to_device(out, device)
        return out

    def long(self):
        return self.to(dtype=np.int64)

    def int(self):
        return self.to(dtype=np.int32)

    def bool(self):
        return self.to(dtype=np.bool_)

    # ----- autodiff -----
    def detach(self):
        return Tensor._make(self.data)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind not in "fc":
            raise RuntimeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        if self._ctx is not None and not requires_grad:
            raise RuntimeError("requires_grad_(False) is only valid on leaf tensors; use detach()")
        self.requires_grad = requires_grad
        return self

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        if gradient is None:  # a loss: the fast path of autograd.backward
            autograd.backward(self, None, retain_graph, create_graph)
        else:
            autograd.backward([self], [gradient], retain_graph, create_graph)

    # ----- in-place (bump the version so backward can detect stale saved inputs) -----
    def _check_inplace(self):
        if self.requires_grad and self._ctx is None and autograd.is_grad_enabled():
            raise RuntimeError("a leaf tensor that requires grad is being used in an in-place operation; "
                               "wrap it in core.no_grad()")

    def _assign(self, value):
        self._check_inplace()
        self.data[...] = value
        self._version += 1
        return self

    def copy_(self, src):
        return self._assign(src.data if isinstance(src, Tensor) else src)

    def fill_(self, value):
        return self._assign(value)

    def zero_(self):
        return self._assign(0)

    def add_(self, other, alpha=1):
        other = other.data if isinstance(other, Tensor) else other
        return self._assign(self.data + (other if alpha == 1 else alpha * other))

    def sub_(self, other):
        return self.add_(other, alpha=-1)

    def mul_(self, other):
        return self._assign(self.data * (other.data if isinstance(other, Tensor) else other))

    def clamp_(self, min=None, max=None):
        return self._assign(self.xp.clip(self.data, min, max))

    def __setitem__(self, key, value):
        self._check_inplace()
        key = ops.unwrap_index(key)
        self.data[key] = value.data if isinstance(value, Tensor) else value
        self._version += 1

    # ----- operators (all but these two are ops themselves, attached by _bind_methods) -----
    def __pos__(self):
        return self

    def __iter__(self):
        return (self[i] for i in range(len(self)))


# Methods that are the op of the same (or mapped) name with the tensor first: `t.exp()` is ops.exp(t).
_METHOD_NAMES = (
    "exp log log1p sqrt abs sin cos tanh sigmoid relu leaky_relu elu selu softplus gelu silu erf maximum minimum "
    "clip max min sum mean var std logsumexp norm matmul reshape permute transpose swapaxes squeeze unsqueeze "
    "flatten broadcast_to pad flip gather take_along_axis softmax log_softmax cumsum argmax argmin split chunk "
    "eq ne lt le gt ge logical_not any all isfinite square expand_as reshape_as"
)
_METHOD_ALIASES = {"clamp": "clip", "amax": "max", "amin": "min", "view": "reshape", "expand": "broadcast_to"}
# Operators: `t + u` is ops.add(t, u), `-t` ops.neg(t); those in _REFLECTED also take the tensor second
# (`2 - t` calls t.__rsub__(2), which is ops.sub(2, t)).
_OPERATORS = {"add": "add", "sub": "sub", "mul": "mul", "truediv": "div", "pow": "pow", "matmul": "matmul",
              "neg": "neg", "abs": "abs", "getitem": "getitem", "eq": "eq", "ne": "ne", "lt": "lt", "le": "le",
              "gt": "gt", "ge": "ge", "invert": "logical_not", "and": "logical_and", "or": "logical_or"}
_REFLECTED = ("add", "sub", "mul", "truediv", "pow", "matmul")


def _bind_methods():
    """Attach the methods and operators above. Each is the op function itself (a function binds as a method),
    so `t + u` and `t.exp()` cost no call beyond the op's own."""
    def reflected(fn):
        def swapped(self, other):
            return fn(other, self)
        return swapped
    names = ({name: name for name in _METHOD_NAMES.split()} | _METHOD_ALIASES
             | {f"__{name}__": op for name, op in _OPERATORS.items()})
    for name, op in names.items():
        setattr(Tensor, name, getattr(ops, op))
    for name in _REFLECTED:
        setattr(Tensor, f"__r{name}__", reflected(getattr(ops, _OPERATORS[name])))


def _infer_dtype(data):
    if isinstance(data, bool) or (isinstance(data, np.ndarray) and data.dtype == np.bool_):
        return np.bool_
    if isinstance(data, int):
        return np.int64
    if isinstance(data, float):
        return _default_dtype
    return None


def tensor(data, dtype=None, device=None, requires_grad=False):
    """Make a tensor from an array-like (a copy). float64 arrays keep float64; python floats
    and lists of floats become the default dtype (float32)."""
    if isinstance(data, Tensor):
        data = data.data
    device = device if device is not None else backend.device_of(data)
    xp = backend.array_module(device)
    if dtype is None:
        dtype = _infer_dtype(data)
        if dtype is None and not hasattr(data, "dtype"):
            arr = np.asarray(data)
            dtype = _default_dtype if arr.dtype.kind == "f" else arr.dtype
    arr = backend.to_device(data, device) if hasattr(data, "dtype") else xp.asarray(data)
    arr = xp.array(arr, dtype=dtype, copy=True)
    t = Tensor._make(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def as_tensor(data, dtype=None, device=None):
    """Like `tensor` but shares memory when the array already has the right dtype and device."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype)
    if hasattr(data, "dtype") and (dtype is None or np.dtype(dtype) == data.dtype) and (
            device is None or backend.parse_device(device) == backend.parse_device(backend.device_of(data))):
        return Tensor._make(data)
    return tensor(data, dtype=dtype, device=device)


def _factory(name):
    def make(*shape, dtype=None, device="cpu", requires_grad=False):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        xp = backend.array_module(device)
        with _on(xp, device):
            t = Tensor._make(getattr(xp, name)(shape, dtype=dtype or _default_dtype))
        return t.requires_grad_(True) if requires_grad else t
    make.__name__ = name
    make.__doc__ = f"A tensor of the given shape filled by numpy.{name}."
    return make


zeros, ones, empty = _factory("zeros"), _factory("ones"), _factory("empty")


def _on(xp, device):
    """Context that makes cupy allocate on the right GPU (no-op for numpy)."""
    if xp is np:
        import contextlib
        return contextlib.nullcontext()
    return xp.cuda.Device(backend.parse_device(device)[1])


def full(shape, fill_value, dtype=None, device="cpu", requires_grad=False):
    xp = backend.array_module(device)
    with _on(xp, device):
        t = Tensor._make(xp.full(shape, fill_value, dtype=dtype or _default_dtype))
    return t.requires_grad_(True) if requires_grad else t


def _like(fill):
    def make(t, dtype=None, requires_grad=False):
        return full(t.shape, fill, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)
    return make


zeros_like, ones_like = _like(0), _like(1)


def full_like(t, fill_value, dtype=None, requires_grad=False):
    return _like(fill_value)(t, dtype, requires_grad)


def arange(start, stop=None, step=1, dtype=None, device="cpu"):
    xp = backend.array_module(device)
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = np.int64 if all(isinstance(v, int) for v in (start, stop, step)) else _default_dtype
    with _on(xp, device):
        return Tensor._make(xp.arange(start, stop, step, dtype=dtype))


def linspace(start, stop, num, dtype=None, device="cpu"):
    xp = backend.array_module(device)
    with _on(xp, device):
        return Tensor._make(xp.linspace(start, stop, num, dtype=dtype or _default_dtype))


def eye(n, m=None, dtype=None, device="cpu"):
    xp = backend.array_module(device)
    with _on(xp, device):
        return Tensor._make(xp.eye(n, m, dtype=dtype or _default_dtype))


from core import autograd, ops  # noqa: E402  (ops build on Tensor; imported last to break the cycle)

_bind_methods()
