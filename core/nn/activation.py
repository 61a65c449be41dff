"""Activation layers: thin modules over the activation functions of `core.ops`.

Each layer is one line of data: a subclass of `_Activation` that names its op and its hyperparameters with
their defaults, e.g. `class ELU(_Activation, op=ops.elu, alpha=1.0)`. The base class gives it PyTorch's
constructor (`ELU(alpha=1.0)`, positional or keyword), the hyperparameters as attributes (read at every
call, so changing one later takes effect), `forward` and the repr (`ELU(alpha=1.0)`).
"""
import inspect

from core import ops
from core.nn.module import Module


class _Activation(Module):
    def __init_subclass__(cls, op=None, **hyperparameters):
        super().__init_subclass__()
        if op is None:  # a user's subclass of a layer below: it keeps the layer's op
            return
        names = tuple(hyperparameters)
        cls._hyperparameters = names
        cls.__signature__ = inspect.Signature([
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
            for name, default in hyperparameters.items()])
        if names:
            def forward(self, x):
                return op(x, *[getattr(self, name) for name in names])
        else:  # ReLU, Tanh, ...: the layers of small RL networks, with nothing to read per call
            def forward(self, x):
                return op(x)
        cls.forward = forward

    def __init__(self, *args, **kwargs):
        super().__init__()
        try:
            bound = self.__signature__.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}{self.__signature__}: {e}") from None
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            setattr(self, name, value)

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self._hyperparameters)


class ReLU(_Activation, op=ops.relu):
    """max(x, 0)."""


class LeakyReLU(_Activation, op=ops.leaky_relu, negative_slope=0.01):
    """x for x > 0, negative_slope * x otherwise."""


class ELU(_Activation, op=ops.elu, alpha=1.0):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""


class SELU(_Activation, op=ops.selu):
    """ELU with the self-normalizing alpha and scale."""


class GELU(_Activation, op=ops.gelu, approximate="none"):
    """approximate="none" (exact erf form, PyTorch's default) or "tanh"."""

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):  # at construction, not at the first forward
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__(approximate)


class Tanh(_Activation, op=ops.tanh):
    """tanh(x)."""


class Sigmoid(_Activation, op=ops.sigmoid):
    """1 / (1 + exp(-x))."""


class LogSigmoid(_Activation, op=ops.logsigmoid):
    """log(sigmoid(x))."""


class Softplus(_Activation, op=ops.softplus, beta=1.0):
    """log(1 + exp(beta * x)) / beta."""


class SiLU(_Activation, op=ops.silu):
    """x * sigmoid(x)."""


class Softmax(_Activation, op=ops.softmax, dim=-1):
    """exp(x) normalized to sum 1 along `dim`."""


class LogSoftmax(_Activation, op=ops.log_softmax, dim=-1):
    """log(softmax(x)) along `dim`."""
