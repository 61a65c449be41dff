"""Weight initializers, all in place on a Tensor or Parameter (and returning it).

Every initializer takes an optional `generator` (a `core.Generator`); without one it draws from the global
generator that `core.manual_seed` seeds. Values are drawn on the CPU in float64 and then cast and copied to
the tensor's device, so one seed gives the same network on numpy and cupy, in float32 and float64.

Fans follow PyTorch's weight layout (out, in, *kernel): fan_in = in * prod(kernel), fan_out = out * prod(kernel).
For a Keras kernel (in, out) or (kh, kw, in, out) these are the same numbers, so the formulas match Keras'.

Defaults. Layers initialise like PyTorch unless asked otherwise:

- Linear (and Conv): weight kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)), bias U(+-1/sqrt(fan_in));
- Embedding: N(0, 1); SimpleRNN/LSTM/GRU: every weight and bias U(+-1/sqrt(hidden_size));
- BatchNorm/LayerNorm: weight 1, bias 0 (the same in Keras).

The books' Keras code assumes Keras' defaults, which the experiment catalogue relies on:

- Dense, Conv2D, Conv2DTranspose: kernel glorot_uniform, bias zeros;
- Embedding: uniform(-0.05, 0.05);
- SimpleRNN/LSTM/GRU: kernel glorot_uniform, recurrent kernel orthogonal, bias zeros, and for LSTM the
  forget-gate bias 1 (`unit_forget_bias`). Keras' LSTM and SimpleRNN have one bias vector (so pass
  `init="keras"`, which also drops the recurrent bias, to get Keras' parameter counts); Keras' GRU
  (`reset_after=True`) has two, like PyTorch's.

Get them with `init="keras"` on a layer (`nn.Linear(784, 300, init="keras")`) or for a whole model with
`keras_init_(model)`. Keras' BatchNormalization momentum 0.99 and epsilon 1e-3 correspond to
`nn.BatchNorm2d(c, momentum=0.01, eps=1e-3)` (not an initializer, so `keras_init_` leaves them alone).
Keras' "normal" variance-scaling initializers (glorot_normal, he_normal, lecun_normal) draw from a
normal truncated at 2 std with the std divided by 0.87962566: `variance_scaling_` reproduces them.
"""
import inspect
import math

import numpy as np

from core import backend
from core.autograd import no_grad
from core.random import default_generator
from core.tensor import Tensor

INITS = ("torch", "keras")


def check_init(init):
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return init


def _draw(generator):
    """The numpy generator to draw float64 values from on the CPU."""
    return (generator if generator is not None else default_generator).np


def _fill(tensor, values):
    """Write `values` (a float64 numpy array or a scalar) into `tensor` in place."""
    with no_grad():
        values = np.asarray(values, dtype=np.float64)
        tensor.data[...] = backend.to_device(values.astype(tensor.dtype), tensor.device)
        tensor._version += 1
    return tensor


def calculate_fans(tensor):
    shape = tensor.shape
    if len(shape) < 2:
        raise ValueError(f"fan_in/fan_out need a tensor with at least 2 dimensions (out, in, ...), got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor, mode):
    fan_in, fan_out = calculate_fans(tensor)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    if mode == "fan_avg":
        return (fan_in + fan_out) / 2
    raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")


def calculate_gain(nonlinearity, param=None):
    """PyTorch's recommended gains: 1 for linear/conv/sigmoid, 5/3 tanh, sqrt(2) relu,
    sqrt(2 / (1 + slope^2)) leaky_relu (slope `param`, default 0.01), 3/4 selu."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                        "conv_transpose2d", "conv_transpose3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}: expected linear, sigmoid, tanh, relu, leaky_relu, "
                     "selu or a conv name")


# ----- basic distributions -----
def uniform_(tensor, a=0.0, b=1.0, generator=None):
    return _fill(tensor, _draw(generator).uniform(a, b, tensor.shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """N(mean, std); DCGAN initialises its weights with normal_(w, 0.0, 0.02)."""
    return _fill(tensor, _draw(generator).normal(mean, std, tensor.shape))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """N(mean, std) restricted to [a, b] (absolute bounds, as PyTorch), by redrawing what falls outside."""
    if not a < b:
        raise ValueError(f"trunc_normal_ needs a < b, got a={a}, b={b}")
    low, high = (a - mean) / std, (b - mean) / std
    if math.erf(high / math.sqrt(2)) - math.erf(low / math.sqrt(2)) < 2e-3:
        raise ValueError(f"trunc_normal_: [{a}, {b}] holds less than 0.1% of N({mean}, {std}); widen the bounds")
    rng = _draw(generator)
    values = rng.standard_normal(tensor.shape)
    outside = (values < low) | (values > high)
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = (values < low) | (values > high)
    return _fill(tensor, values * std + mean)


def constant_(tensor, value):
    return _fill(tensor, value)


def zeros_(tensor):
    return _fill(tensor, 0.0)


def ones_(tensor):
    return _fill(tensor, 1.0)


# ----- variance scaling -----
def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot uniform: U(+-gain * sqrt(6 / (fan_in + fan_out))); Keras' default for Dense and Conv kernels."""
    fan_in, fan_out = calculate_fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot normal: N(0, gain * sqrt(2 / (fan_in + fan_out)))."""
    fan_in, fan_out = calculate_fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He uniform: U(+-gain * sqrt(3 / fan)), gain from `nonlinearity` (slope `a` for leaky_relu)."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He normal: N(0, gain / sqrt(fan)); with the defaults std = sqrt(2 / fan_in)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def lecun_uniform_(tensor, generator=None):
    """U(+-sqrt(3 / fan_in)): unit variance for SELU networks."""
    bound = math.sqrt(3.0 / _fan(tensor, "fan_in"))
    return uniform_(tensor, -bound, bound, generator)


def lecun_normal_(tensor, generator=None):
    """N(0, sqrt(1 / fan_in))."""
    return normal_(tensor, 0.0, math.sqrt(1.0 / _fan(tensor, "fan_in")), generator)


glorot_uniform_, glorot_normal_ = xavier_uniform_, xavier_normal_
he_uniform_, he_normal_ = kaiming_uniform_, kaiming_normal_

_KERAS_TRUNCATION = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]


def variance_scaling_(tensor, scale=1.0, mode="fan_in", distribution="truncated_normal", generator=None):
    """Keras' VarianceScaling: variance scale / fan. distribution "truncated_normal" (Keras' he_normal,
    lecun_normal, glorot_normal = scale 2/1/1 with mode fan_in/fan_in/fan_avg), "untruncated_normal" or
    "uniform" (bound sqrt(3 * scale / fan))."""
    variance = scale / _fan(tensor, mode)
    if distribution == "truncated_normal":
        std = math.sqrt(variance) / _KERAS_TRUNCATION
        return trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std, generator)
    if distribution == "untruncated_normal":
        return normal_(tensor, 0.0, math.sqrt(variance), generator)
    if distribution == "uniform":
        bound = math.sqrt(3 * variance)
        return uniform_(tensor, -bound, bound, generator)
    raise ValueError("distribution must be 'truncated_normal', 'untruncated_normal' or 'uniform', "
                     f"got {distribution!r}")


def orthogonal_(tensor, gain=1.0, generator=None):
    """A (semi-)orthogonal matrix times `gain`, trailing axes flattened: rows orthonormal when there are
    fewer rows than columns, columns otherwise. QR of a Gaussian matrix with the signs of R's diagonal
    folded in, so the result is uniformly (Haar) distributed."""
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_ needs a tensor with at least 2 dimensions, got shape {tensor.shape}")
    rows, cols = tensor.shape[0], math.prod(tensor.shape[1:])
    flat = _draw(generator).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(tensor, gain * q.reshape(tensor.shape))


# ----- layer defaults -----
def torch_default_(weight, bias=None, generator=None):
    """PyTorch's Linear/Conv default: weight kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), bias the same."""
    kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        bound = 1 / math.sqrt(calculate_fans(weight)[0])
        uniform_(bias, -bound, bound, generator)
    return weight


def keras_default_(weight, bias=None, generator=None):
    """Keras' Dense/Conv default: kernel glorot_uniform, bias zeros."""
    xavier_uniform_(weight, generator=generator)
    if bias is not None:
        zeros_(bias)
    return weight


def keras_init_(module, generator=None):
    """Re-initialise a whole model as Keras would: every layer whose `reset_parameters` takes `init` gets
    `init="keras"`; any other layer with a weight matrix gets glorot_uniform weights and zero bias
    (norm layers, with 1-d weights, are left alone). Returns the module."""
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if reset is not None and "init" in inspect.signature(reset).parameters:
            reset(init="keras", generator=generator)
        elif isinstance(getattr(m, "weight", None), Tensor) and m.weight.ndim >= 2:
            bias = getattr(m, "bias", None)
            keras_default_(m.weight, bias if isinstance(bias, Tensor) else None, generator)
    return module
