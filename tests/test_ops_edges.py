"""Every differentiable op exported by `core` and `core.functional` at its edge points: exact zeros, ties,
kinks, saturation and large inputs, in float64. First- and second-order gradients against central finite
differences where the function is smooth enough there, against the analytic value where the true derivative
exists, and against the lab's convention (docs/core.md) at kinks; gradients of both orders are finite
everywhere a value is. A test fails when an exported op has no entry in the table."""
import inspect
import math
import warnings
from collections.abc import Callable
from decimal import Decimal, localcontext
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import core
import core.functional as F

settings.register_profile("edges", max_examples=60, deadline=None)


def a(*values):
    return np.array(values, dtype=np.float64)


def const(values):
    return core.tensor(np.asarray(values, dtype=np.float64))


class Edge(NamedTuple):
    label: str
    fn: Callable
    inputs: tuple          # float64 arrays: each becomes a leaf that requires grad
    grad: object = None    # the gradient of fn(...).sum(): an array per leaf (or one array for one leaf)
    fd: tuple = (1, 2)     # orders checked by finite differences: none across a kink (or a tie) of that order
    eps: float = 1e-6
    grad2: object = None   # d/dx of <grad, 1>, where the convention fixes it at a kink
    finite: bool = True    # the value is finite (the mean of nothing is NaN)
    second: bool = True    # differentiable twice (fused nodes are first order: their composed forms are not)


def edge(label, fn, *inputs, **kw):
    return Edge(label, fn, inputs, **kw)


def sigmoid_np(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


def d_sigmoid_np(x):
    e = np.exp(-np.abs(x))
    return e / (1 + e) ** 2


SAT = a(-800.0, -40.0, -20.0, 0.0, 20.0, 40.0, 800.0)  # saturation: far tails, where tanh-style forms round off
BIG = a(-1e6, -3e3, 3e3, 1e6)                            # large inputs (finite differences need eps ~ 1e-3 there)
SAT_OFF_0 = SAT[SAT != 0]                                # off a kink at 0 that a case checks separately
TIES = a(2.0, 2.0, -1.0, -1.0)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
IMG = np.arange(16.0).reshape(1, 1, 4, 4) / 8 - 1           # distinct values
FLAT = np.zeros((1, 1, 4, 4))                                 # every window a tie
UNEVEN_FLAT = np.ones((1, 1, 3, 5))
MLP_W = np.array([[1.0, -1.0], [0.5, 2.0]])


def first_in_windows(shape, windows):
    """A one-hot mask of the first element (row-major) of each (row slice, column slice) window, summed."""
    m = np.zeros(shape)
    for rows, cols in windows:
        m[..., rows.start, cols.start] += 1
    return m


EDGES = {
    # ----- arithmetic -----
    "add": [edge("zeros_broadcast", lambda x, y: x + y, np.zeros((2, 1)), np.zeros(3), grad=[np.full((2, 1), 3.0),
                                                                                              np.full(3, 2.0)]),
            edge("large", lambda x, y: x + y + 1e6, BIG, BIG[::-1].copy(), grad=[np.ones(4), np.ones(4)], eps=1e-3)],
    "sub": [edge("zeros", lambda x, y: x - y, np.zeros(3), np.zeros(3), grad=[np.ones(3), -np.ones(3)]),
            edge("large", lambda x, y: 1e6 - x - y, BIG, BIG, grad=[-np.ones(4), -np.ones(4)], eps=1e-3)],
    "mul": [edge("zeros", lambda x, y: x * y, np.zeros(3), a(0.0, 1.0, -2.0), grad=[a(0.0, 1.0, -2.0), np.zeros(3)]),
            edge("large", lambda x, y: x * y, BIG, a(1.0, -2.0, 0.5, 0.0), grad=[a(1.0, -2.0, 0.5, 0.0), BIG],
                 eps=1e-3)],
    "div": [edge("zero_numerator", lambda x, y: x / y, np.zeros(3), a(1.0, -2.0, 4.0),
                 grad=[a(1.0, -0.5, 0.25), np.zeros(3)]),
            edge("large", lambda x, y: x / y, BIG, a(1e3, -2e3, 5e2, 4e3), eps=1e-3)],
    "neg": [edge("zero_and_large", core.neg, a(0.0, -0.0, 1e6, -1e6), grad=-np.ones(4), eps=1e-3)],
    "pow": [edge("x**0_at_0", lambda x: x ** 0, a(0.0, 1.0, -2.0), grad=np.zeros(3), grad2=np.zeros(3)),
            edge("x**1_at_0", lambda x: x ** 1, a(0.0, 1.5), grad=np.ones(2), grad2=np.zeros(2)),
            edge("x**2_x**3_at_0", lambda x: x ** 2 + x ** 3, a(0.0, -1.0), grad=a(0.0, 1.0)),
            edge("tensor_exponent_0_at_0", lambda x: x ** const([0.0, 0.0, 1.0]), a(0.0, 2.0, 0.0),
                 grad=a(0.0, 0.0, 1.0), grad2=np.zeros(3)),
            edge("exponent_of_0**p", lambda p: const([0.0, 0.0, 2.0]) ** p, a(2.0, 0.5, 3.0),
                 grad=a(0.0, 0.0, 8.0 * math.log(2.0))),
            # not second order by finite differences: x - eps < 0 makes d(x ** p)/dp = x ** p log(x) NaN
            edge("base_0_both", lambda x, p: x ** p, a(0.0, 0.0), a(2.0, 3.0), grad=[np.zeros(2), np.zeros(2)],
                 fd=(1,)),
            edge("rpow_tails", lambda x: 2.0 ** x, a(-60.0, 0.0), grad=2.0 ** a(-60.0, 0.0) * math.log(2)),
            edge("rpow_large", lambda x: 2.0 ** x, a(60.0,), grad=2.0 ** a(60.0) * math.log(2))],
    # central differences are exact for a quadratic, so eps 1 keeps float64 rounding of 1e12 out of them
    # abs at 0 takes sign(0) = 0, also the central difference there
    "abs": [edge("zero", core.abs, a(0.0, -0.0, 1.5, -1.5), grad=a(0.0, 0.0, 1.0, -1.0), fd=(1,)),
            edge("large", core.abs, BIG, grad=np.sign(BIG), eps=1e-3)],
    "square": [edge("zero_and_large", core.square, a(0.0, 1e6), grad=a(0.0, 2e6), eps=1.0)],
    # ----- math functions -----
    # one magnitude per case: rounding of a 1e304 term would swamp the finite differences of the others
    "exp": [edge("tails", core.exp, a(-800.0, -40.0, 0.0), grad=np.exp(a(-800.0, -40.0, 0.0))),
            edge("large", core.exp, a(700.0,), grad=np.exp(a(700.0)))],
    "log": [edge("tiny", core.log, a(1e-8, 2e-8), grad=1 / a(1e-8, 2e-8), eps=1e-12),
            edge("large", core.log, a(1e6, 3e6), grad=1 / a(1e6, 3e6), eps=1e-1)],
    "log1p": [edge("zero_and_tiny", core.log1p, a(0.0, -1e-10, 1e-10), grad=1 / (1 + a(0.0, -1e-10, 1e-10))),
              edge("large", core.log1p, a(1e6, 3e6), grad=1 / (1 + a(1e6, 3e6)), eps=1e-1)],
    "sqrt": [edge("tiny", core.sqrt, a(1e-8, 4e-8), grad=0.5 / np.sqrt(a(1e-8, 4e-8)), eps=1e-12),
             edge("large", core.sqrt, a(1e12, 4e12), grad=0.5 / np.sqrt(a(1e12, 4e12)), eps=1.0)],
    "sin": [edge("zero_and_large", core.sin, a(0.0, 1e6), grad=np.cos(a(0.0, 1e6)), eps=1e-4)],
    "cos": [edge("zero_and_large", core.cos, a(0.0, 1e6), grad=-np.sin(a(0.0, 1e6)), eps=1e-4)],
    "tanh": [edge("saturation", core.tanh, SAT, grad=1 / np.cosh(np.clip(SAT, -300, 300)) ** 2),  # cosh(800): inf
             edge("large", core.tanh, BIG, grad=np.zeros(4), eps=1e-3)],
    "sigmoid": [edge("saturation", core.sigmoid, SAT, grad=d_sigmoid_np(SAT)),
                edge("scalars", lambda x: core.sigmoid(x[0]) + core.sigmoid(x[1]), a(-800.0, 2.0),
                     grad=d_sigmoid_np(a(-800.0, 2.0)))],
    "logsigmoid": [edge("saturation", core.logsigmoid, SAT, grad=sigmoid_np(-SAT)),
                   edge("large", core.logsigmoid, BIG, grad=sigmoid_np(-BIG), eps=1e-3)],
    "log_of_sigmoid": [edge("saturation", lambda x: core.log(core.sigmoid(x)), SAT[1:-1], grad=sigmoid_np(-SAT[1:-1]))],
    "softplus": [edge("saturation", core.softplus, SAT, grad=sigmoid_np(SAT)),
                 edge("beta", lambda x: core.softplus(x, beta=2.0), SAT, grad=sigmoid_np(2 * SAT))],
    "erf": [edge("zero_and_saturation", core.erf, a(-10.0, 0.0, 10.0),
                 grad=2 / math.sqrt(math.pi) * np.exp(-a(-10.0, 0.0, 10.0) ** 2))],
    # ----- activations -----
    "relu": [edge("kink_at_0", core.relu, a(0.0, -0.0, 1.0, -1.0), grad=a(0.0, 0.0, 1.0, 0.0), fd=()),
             edge("large", core.relu, BIG, grad=a(0.0, 0.0, 1.0, 1.0), eps=1e-3)],
    "leaky_relu": [edge("kink_at_0", lambda x: core.leaky_relu(x, 0.2), a(0.0, 1.0, -1.0), grad=a(0.2, 1.0, 0.2),
                        fd=()),
                   # slopes outside [0, 1] take the other branch of the factor
                   edge("slope_above_1", lambda x: core.leaky_relu(x, 3.0), a(0.0, 1.0, -1.0), grad=a(3.0, 1.0, 3.0),
                        fd=()),
                   edge("negative_slope", lambda x: core.leaky_relu(x, -0.5), a(0.0, 1.0, -1.0),
                        grad=a(-0.5, 1.0, -0.5), fd=())],
    # alpha = 1: C1 at 0 (derivative 1), a kink of the second derivative (left 1, right 0; the lab takes the left)
    "elu": [edge("smooth_at_0", core.elu, a(0.0, -0.0), grad=np.ones(2), fd=(1,), grad2=np.ones(2)),
            edge("kink_at_0_alpha", lambda x: core.elu(x, 0.5), a(0.0,), grad=a(0.5), fd=()),
            edge("saturation", core.elu, SAT_OFF_0,
                 grad=np.where(SAT_OFF_0 > 0, 1.0, np.exp(np.minimum(SAT_OFF_0, 0))))],
    "selu": [edge("kink_at_0", core.selu, a(0.0,), grad=a(SELU_SCALE * SELU_ALPHA), fd=()),
             edge("saturation", core.selu, SAT_OFF_0,
                  grad=SELU_SCALE * np.where(SAT_OFF_0 > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(SAT_OFF_0, 0))))],
    "gelu": [edge("saturation", core.gelu, SAT[1:-1]),
             edge("tanh_saturation", lambda x: core.gelu(x, approximate="tanh"), SAT[1:-1])],
    "silu": [edge("saturation", core.silu, SAT, grad=sigmoid_np(SAT) * (1 + SAT * sigmoid_np(-SAT)))],
    "clip": [edge("at_the_bounds", lambda x: core.clip(x, -0.5, 0.5), a(-0.5, 0.5, 0.0, 1.0),
                  grad=a(1.0, 1.0, 1.0, 0.0), fd=())],
    "maximum": [edge("ties", core.maximum, TIES, a(2.0, 1.0, -1.0, 0.0), grad=[a(0.5, 1.0, 0.5, 0.0),
                                                                             a(0.5, 0.0, 0.5, 1.0)], fd=(1,)),
                edge("large", core.maximum, BIG, -BIG, grad=[a(0.0, 0.0, 1.0, 1.0), a(1.0, 1.0, 0.0, 0.0)], eps=1e-3)],
    "minimum": [edge("ties", core.minimum, TIES, a(2.0, 1.0, -1.0, 0.0), grad=[a(0.5, 0.0, 0.5, 1.0),
                                                                             a(0.5, 1.0, 0.5, 0.0)], fd=(1,))],
    "where": [edge("branches", lambda x, y: core.where(x.data > 0, x * y, y * y), a(-1.0, 1.0), a(3.0, 2.0),
                   grad=[a(0.0, 2.0), a(6.0, 1.0)])],
    "cast": [edge("same_dtype", lambda x: core.cast(x, core.float64).exp(), a(0.0, 1.0), grad=np.exp(a(0.0, 1.0))),
             # float32 values, so the round trip is exact at the point; eps 1e-3 outruns float32 rounding. The gradient
             # comes back through float32, as the input's gradient of a cast has the input's dtype
             edge("round_trip_float32", lambda x: core.cast(core.cast(x, core.float32), core.float64).exp(),
                  a(0.0, 0.5, -1.25), grad=np.exp(a(0.0, 0.5, -1.25)).astype(np.float32), eps=1e-3)],
    "to_device": [edge("cpu", lambda x: core.to_device(x * x, "cpu"), a(0.0, 2.0), grad=a(0.0, 4.0))],
    # ----- reductions -----
    "sum": [edge("zeros", lambda x: core.sum(x * x, 1), np.zeros((2, 3)), grad=np.zeros((2, 3)))],
    "mean": [edge("zeros", lambda x: core.mean(x * x, 0, keepdims=True), np.zeros((2, 3)), grad=np.zeros((2, 3))),
             edge("empty", lambda x: core.mean(x), np.zeros((0, 3)), grad=np.zeros((0, 3)), fd=(), finite=False)],
    # ties share the gradient evenly: for a two-way tie that is each entry's central difference, half the slope
    "max": [edge("ties", lambda x: core.max(x, 1), np.array([TIES, TIES[::-1]]),
                 grad=np.array([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]), fd=(1,))],
    "min": [edge("ties", lambda x: core.min(x), TIES, grad=a(0.0, 0.0, 0.5, 0.5), fd=(1,))],
    "var": [edge("constant_rows", lambda x: core.var(x, 1), np.full((2, 3), 0.1), grad=np.zeros((2, 3)))],
    "std": [edge("constant_rows", lambda x: core.std(x, 1), np.array([[0.1] * 3, [2.0] * 3]), grad=np.zeros((2, 3)),
                 fd=(1,)),
            edge("biased_constant", lambda x: core.std(x, correction=0), np.zeros(4), grad=np.zeros(4), fd=(1,)),
            edge("large", lambda x: core.std(x), BIG, eps=1e-3)],
    "norm": [edge("zero_vector", core.norm, np.zeros(3), grad=np.zeros(3), fd=(1,), grad2=np.zeros(3)),
             edge("zero_row", lambda x: core.norm(x, axis=1), np.array([[0.0, 0.0], [3.0, 4.0]]),
                  grad=np.array([[0.0, 0.0], [0.6, 0.8]]), fd=(1,)),
             edge("zero_keepdims", lambda x: core.norm(x, axis=0, keepdims=True), np.zeros((2, 2)),
                  grad=np.zeros((2, 2)), fd=(1,)),
             edge("l1_zeros", lambda x: core.norm(x, ord=1), a(0.0, 0.0, 2.0), grad=a(0.0, 0.0, 1.0), fd=(1,)),
             edge("inf_ties", lambda x: core.norm(x, ord="inf"), a(-2.0, 2.0, 1.0), grad=a(-0.5, 0.5, 0.0), fd=(1,)),
             edge("large", core.norm, BIG, grad=BIG / np.linalg.norm(BIG), eps=1e-3)],
    "logsumexp": [edge("large", lambda x: core.logsumexp(x, 1), np.array([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]]),
                       grad=np.array([[1.0, 0.0, 0.0], [1 / 3] * 3]))],
    "softmax": [edge("large", lambda x: core.softmax(x, -1) * const([1.0, 2.0, 3.0]),
                     np.array([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]]))],
    "log_softmax": [edge("large", lambda x: core.log_softmax(x, -1), np.array([[1000.0, 0.0, -1000.0], [5.0] * 3]),
                         grad=np.array([[-2.0, 1.0, 1.0], [0.0] * 3]))],
    "cumsum": [edge("zeros", lambda x: core.cumsum(x * x, 0), np.zeros(3), grad=np.zeros(3))],
    # ----- shapes and indexing -----
    "broadcast_to": [edge("ones", lambda x: core.broadcast_to(x, (2, 3)) ** 2, np.zeros((1, 3)),
                          grad=np.zeros((1, 3)))],
    "expand_as": [edge("row", lambda x: core.expand_as(x, core.zeros(2, 3)).exp(), np.zeros(3),
                       grad=np.full(3, 2.0))],
    "sum_to": [edge("broadcast_back", lambda x: core.sum_to(x.exp(), (1, 3)), np.zeros((2, 3)), grad=np.ones((2, 3)))],
    "reshape": [edge("zeros", lambda x: core.reshape(x, (3, 2)).exp(), np.zeros((2, 3)), grad=np.ones((2, 3)))],
    "reshape_as": [edge("zeros", lambda x: core.reshape_as(x, core.zeros(6)).exp(), np.zeros((2, 3)),
                        grad=np.ones((2, 3)))],
    "permute": [edge("axes", lambda x: core.permute(x, (2, 0, 1)).sin(), np.zeros((1, 2, 3)), grad=np.ones((1, 2, 3)))],
    "transpose": [edge("all_and_two", lambda x: core.transpose(x).exp() + core.transpose(x, 0, 1).exp(),
                       np.zeros((2, 3)), grad=np.full((2, 3), 2.0))],
    "swapaxes": [edge("last_two", lambda x: core.swapaxes(x, -1, -2).exp(), np.zeros((1, 2, 3)),
                      grad=np.ones((1, 2, 3)))],
    "squeeze": [edge("axis", lambda x: core.squeeze(x, 1).exp(), np.zeros((2, 1)), grad=np.ones((2, 1)))],
    "unsqueeze": [edge("front", lambda x: core.unsqueeze(x, 0).exp(), np.zeros(2), grad=np.ones(2))],
    "flatten": [edge("all", lambda x: core.flatten(x).exp(), np.zeros((2, 2)), grad=np.ones((2, 2)))],
    "flip": [edge("axis", lambda x: core.flip(x, 0) * const([1.0, 2.0]), a(0.0, 0.0), grad=a(2.0, 1.0))],
    "pad": [edge("value", lambda x: core.pad(x, ((1, 2),), value=-1.0).exp(), np.zeros(2), grad=np.ones(2))],
    "getitem": [edge("repeated", lambda x: core.getitem(x, [0, 0, 2]).exp(), np.zeros(3), grad=a(2.0, 0.0, 1.0)),
                edge("basic", lambda x: x[1:, ::2].exp(), np.zeros((2, 3)), grad=np.array([[0, 0, 0], [1.0, 0, 1]]))],
    "concatenate": [edge("axis1", lambda x, y: core.concatenate([x, y], 1).exp(), np.zeros((2, 1)), np.zeros((2, 2)),
                         grad=[np.ones((2, 1)), np.ones((2, 2))])],
    "stack": [edge("last", lambda x, y: core.stack([x, y], -1).exp(), np.zeros(2), np.zeros(2),
                   grad=[np.ones(2), np.ones(2)])],
    "split": [edge("sizes", lambda x: core.split(x, [1, 2])[1].exp(), np.zeros(3), grad=a(0.0, 1.0, 1.0))],
    "chunk": [edge("uneven", lambda x: core.chunk(x, 2)[0].exp(), np.zeros(3), grad=a(1.0, 1.0, 0.0))],
    # numpy broadcasting of the indices both ways, repeated indices accumulating
    "take_along_axis": [edge("broadcast_indices", lambda x: core.take_along_axis(x, np.array([[0, 2, 0]]), 1).exp(),
                             np.zeros((2, 3)), grad=np.array([[2.0, 0, 1], [2.0, 0, 1]])),
                        edge("broadcast_tensor", lambda x: core.take_along_axis(x, np.array([[1], [1], [0]]), 1).exp(),
                             np.zeros((1, 2)), grad=np.array([[1.0, 2.0]]))],
    "gather": [edge("smaller_index", lambda x: core.gather(x, 1, np.array([[1, 1]])).exp(), np.zeros((2, 3)),
                    grad=np.array([[0, 2.0, 0], [0, 0, 0]]))],
    # ----- products -----
    "matmul": [edge("zeros", core.matmul, np.zeros((2, 3)), np.zeros((3, 2)),
                    grad=[np.zeros((2, 3)), np.zeros((3, 2))]),
               edge("vectors", core.matmul, np.zeros(3), a(1.0, 2.0, 3.0), grad=[a(1.0, 2.0, 3.0), np.zeros(3)])],
    "linear": [edge("zeros", core.linear, np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(4),
                    grad=[np.zeros((2, 3)), np.zeros((4, 3)), np.full(4, 2.0)])],
    "sum_rows": [edge("tensor", lambda x: core.sum_rows(x * x), a(0.0, 1.0).reshape(2, 1),
                      grad=a(0.0, 2.0).reshape(2, 1))],
    # ----- convolution and pooling -----
    "conv2d": [edge("zero_input", lambda x, w: core.conv2d(x, w, padding="same"), np.zeros((1, 2, 3, 3)),
                    np.arange(16.0).reshape(2, 2, 2, 2) / 16)],
    "conv_transpose2d": [edge("zero_input", lambda x, w: core.conv_transpose2d(x, w, stride=2), np.zeros((1, 2, 2, 2)),
                              np.arange(16.0).reshape(2, 2, 2, 2) / 16)],
    "avg_pool2d": [edge("same_padding", lambda x: core.avg_pool2d(x, 2, padding="same") ** 2, IMG[:, :, :3, :3])],
    # max pooling's gradient goes to the first maximum of a window (PyTorch): a kink at ties
    "max_pool2d": [edge("ties", lambda x: core.max_pool2d(x, 2), FLAT,
                        grad=first_in_windows(FLAT.shape, [(slice(i, i + 2), slice(j, j + 2))
                                                           for i in (0, 2) for j in (0, 2)]), fd=()),
                   edge("distinct", lambda x: core.max_pool2d(x, 2, stride=1) ** 2, IMG)],
    "global_avg_pool2d": [edge("zeros", lambda x: core.global_avg_pool2d(x), FLAT, grad=np.full(FLAT.shape, 1 / 16))],
    # Keras' GlobalMaxPooling2D is a reduce_max: ties share (evenly, so a 16-way tie is no two-sided difference)
    "global_max_pool2d": [edge("ties", lambda x: core.global_max_pool2d(x), FLAT, grad=np.full(FLAT.shape, 1 / 16),
                               fd=())],
    "adaptive_avg_pool2d": [edge("uneven", lambda x: core.adaptive_avg_pool2d(x, (2, 3)) ** 2, IMG[:, :, :3, :])],
    "adaptive_max_pool2d": [
        edge("ties_even", lambda x: core.adaptive_max_pool2d(x, 2), FLAT,
             grad=first_in_windows(FLAT.shape, [(slice(i, i + 2), slice(j, j + 2)) for i in (0, 2) for j in (0, 2)]),
             fd=()),
        edge("ties_whole", lambda x: core.adaptive_max_pool2d(x, 1), FLAT,
             grad=first_in_windows(FLAT.shape, [(slice(0, 4), slice(0, 4))]), fd=()),
        edge("ties_uneven", lambda x: core.adaptive_max_pool2d(x, (2, 2)), UNEVEN_FLAT,
             grad=first_in_windows(UNEVEN_FLAT.shape,
                                   [(slice(i, i + 2), slice(j, j + 3)) for i in (0, 1) for j in (0, 2)]),
             fd=()),
        edge("distinct_uneven", lambda x: core.adaptive_max_pool2d(x, (2, 3)) ** 2, IMG[:, :, :3, :])],
    # ----- fused nodes and their composed forms: relu's kink at 0, tanh's saturation -----
    "mlp": [edge("relu_kink", lambda x, w: F.mlp(x, [w, const([0.0, 0.0]), const([[1.0, 1.0]]), const([0.0])], "relu"),
                 np.zeros((1, 2)), MLP_W, grad=[np.zeros((1, 2)), np.zeros((2, 2))], fd=()),
            edge("tanh_saturation", lambda x, w: F.mlp(x, [w, const([0.0, 0.0])], "tanh", activate_output=True),
                 a(40.0, -40.0).reshape(1, 2), MLP_W)],
    "fused_mlp": [edge("relu_kink", lambda x, w: F.fused_mlp(x, [w, const([0.0, 0.0]), const([[1.0, 1.0]]),
                                                              const([0.0])], "relu"),
                       np.zeros((1, 2)), MLP_W, grad=[np.zeros((1, 2)), np.zeros((2, 2))], fd=(), second=False),
                  edge("tanh_saturation", lambda x, w: F.fused_mlp(x, [w, const([0.0, 0.0])], "tanh",
                                                                   activate_output=True),
                       a(40.0, -40.0).reshape(1, 2), MLP_W, fd=(1,), second=False)],
    # Q = [[2, -1.25], [0, 0]]: row 0's taken Q is delta above its target (Huber's kink), row 1 sits on relu's
    # kink with its target met
    "fused_mlp_q_loss": [edge("huber_at_delta_relu_kink", lambda x, w: F.fused_mlp_q_loss(
        x, [w, const([0.0, 0.0]), const([[1.0, 1.0], [0.5, -1.0]]), const([0.0, 0.0])], np.array([0, 1]),
        a(1.5, 0.0), "relu", "huber", 0.5)[0], a(1.0, 0.5, 0.0, 0.0).reshape(2, 2), MLP_W, fd=(1,), second=False)],
    # PPO: inside the clip range the surrogate is -A·r; exactly on its bound the two terms of the max tie (a kink)
    "ppo_clip_loss": [edge("inside", lambda lr: F.ppo_clip_loss(lr, a(1.0, -1.0), 0.2), a(0.0, 0.0), grad=a(-0.5, 0.5)),
                      edge("on_the_bound", lambda lr: F.ppo_clip_loss(lr, a(1.0, -1.0, 0.0), 0.2),
                           np.log(a(1.2, 0.8, 1.0)), fd=()),
                      edge("zero_advantage", lambda lr: F.ppo_clip_loss(lr, a(0.0, 0.0), 0.2), a(3.0, -3.0),
                           grad=a(0.0, 0.0))],
    "ppo_loss": [edge("inside", lambda lp, v: F.ppo_loss(lp, const([0.0, 0.0]), v, a(0.0, 0.0), a(1.0, -1.0),
                                                        a(0.5, 1.0), 0.2)[0],
                      a(0.0, 0.0), a(0.5, 0.0), grad=[a(-0.5, 0.5), a(0.0, -0.5)]),
                 edge("value_clip_bound", lambda lp, v: F.ppo_loss(lp, const([0.0]), v, a(0.0), a(1.0), a(2.0), 0.2,
                                                                   old_values=a(0.0), clip_range_vf=0.5)[0],
                      a(0.0), a(0.5), fd=())],
    # equal logits (ties everywhere) and a ratio of exactly 1
    "fused_categorical_ppo_loss": [
        edge("equal_logits", lambda z, v: F.fused_categorical_ppo_loss(z, v, np.array([0, 2]), np.log(a(1 / 3, 1 / 3)),
                                                                       a(1.0, -1.0), a(0.0, 1.0), 0.2,
                                                                       ent_coef=0.01)[0],
             np.zeros((2, 3)), a(0.0, 0.0), fd=(1,), second=False)],
    # ----- losses and normalisation (core.functional) -----
    "mse_loss": [edge("zero_difference", lambda x, t: F.mse_loss(x, t), a(0.0, 2.0), a(0.0, 2.0),
                      grad=[np.zeros(2), np.zeros(2)])],
    "l1_loss": [edge("zero_difference", lambda x: F.l1_loss(x, const([0.0, 1.0])), a(0.0, 2.0), grad=a(0.0, 0.5),
                     fd=(1,))],
    # Huber's derivative is continuous at |d| = delta (its second derivative is not)
    "huber_loss": [edge("at_delta", lambda x: F.huber_loss(x, const([0.0, 0.0, 0.0]), "sum", delta=0.5),
                        a(0.5, -0.5, 0.0), grad=a(0.5, -0.5, 0.0), fd=(1,)),
                   edge("large", lambda x: F.huber_loss(x, const(np.zeros(4)), "sum"), BIG, grad=np.sign(BIG),
                        eps=1e-3)],
    "smooth_l1_loss": [edge("at_beta", lambda x: F.smooth_l1_loss(x, const([0.0, 0.0]), "sum", beta=0.5),
                            a(0.5, -0.5), grad=a(1.0, -1.0), fd=(1,)),
                       edge("beta_0", lambda x: F.smooth_l1_loss(x, const([0.0, 0.0]), "sum", beta=0.0), a(0.0, 1.0),
                            grad=a(0.0, 1.0), fd=(1,))],
    # a log floored at -100 (PyTorch) has zero gradient there
    "binary_cross_entropy": [edge("interior", lambda p: F.binary_cross_entropy(p, const([1.0, 0.0]), "sum"),
                                  a(0.5, 0.25), grad=a(-2.0, 4 / 3)),
                             edge("floored", lambda p: F.binary_cross_entropy(p, const([1.0, 0.0, 0.0]), "sum"),
                                  a(0.0, 1.0, 0.0), grad=a(0.0, 0.0, 1.0), fd=()),
                             edge("eps", lambda p: F.binary_cross_entropy(p, const([1.0]), eps=1e-7), a(0.5,))],
    "binary_cross_entropy_with_logits": [
        edge("saturation", lambda z: F.binary_cross_entropy_with_logits(z, const((SAT > 0) * 1.0), "sum"), SAT,
             grad=sigmoid_np(SAT) - (SAT > 0)),
        edge("pos_weight", lambda z: F.binary_cross_entropy_with_logits(z, const(np.ones(7)), "sum",
                                                                        pos_weight=const([2.0])), SAT,
             grad=-2 * sigmoid_np(-SAT))],
    # every target ignored: the mean of nothing is NaN (as in PyTorch) and the gradient zero
    "cross_entropy": [
        edge("all_ignored", lambda z: F.cross_entropy(z, core.tensor(np.array([-100, -100]))), np.zeros((2, 3)),
             grad=np.zeros((2, 3)), fd=(), finite=False),
        edge("zero_weights", lambda z: F.cross_entropy(z, core.tensor(np.array([0, 0])), weight=const([0.0, 1.0, 1.0])),
             np.zeros((2, 3)), grad=np.zeros((2, 3)), fd=(), finite=False),
        edge("large_logits", lambda z: F.cross_entropy(z, core.tensor(np.array([0, 2]))),
             np.array([[1000.0, 0.0, -1000.0], [1000.0, 0.0, -1000.0]]),
             grad=np.array([[0.0, 0.0, 0.0], [0.5, 0.0, -0.5]])),
        edge("smoothing_ties", lambda z: F.cross_entropy(z, core.tensor(np.array([1])), label_smoothing=0.3),
             np.zeros((1, 3)), grad=np.array([[1 / 3 - 0.1, 1 / 3 - 0.8, 1 / 3 - 0.1]]))],
    "nll_loss": [edge("all_ignored", lambda z: F.nll_loss(z, core.tensor(np.array([5, 5])), ignore_index=5),
                      np.zeros((2, 3)), grad=np.zeros((2, 3)), fd=(), finite=False)],
    "gaussian_kl": [edge("standard_normal", lambda mu, lv: F.gaussian_kl(mu, lv), np.zeros((2, 2)), np.zeros((2, 2)),
                         grad=[np.zeros((2, 2)), np.zeros((2, 2))])],
    "dropout": [edge("p_0_and_1", lambda x: F.dropout(x, 0.0) + F.dropout(x, 1.0), a(0.0, 1.0), grad=np.ones(2)),
                edge("seeded", lambda x: F.dropout(x * x, 0.5, generator=core.Generator(3)), a(0.0, 1.0, 2.0, -1.0))],
    # a constant channel or row: zero variance, smooth thanks to eps
    "batch_norm": [edge("constant_channel", lambda x: F.batch_norm(x, training=True) * const([[1.0], [2.0]]),
                        np.full((3, 2, 1), 0.5)),
                   edge("eval", lambda x, m: F.batch_norm(x, m, const([1.0, 0.0]), training=False) ** 2,
                        np.zeros((2, 2)), np.zeros(2))],
    "layer_norm": [edge("constant_row", lambda x, w: F.layer_norm(x, 3, w) * const([1.0, 2.0, 3.0]),
                        np.full((2, 3), 7.0), a(1.0, 0.5, 2.0))],
}

# Exported names that are not differentiable ops (comparisons, indices, flags) or not ops at all.
NOT_DIFFERENTIABLE = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "isfinite",
                      "argmax", "argmin", "any", "all", "one_hot", "unwrap_index"}
COMPOSITIONS = {"log_of_sigmoid"}  # table entries for a composition rather than an exported op


def exported_ops():
    """Name -> function of every public function `core.ops` and `core.functional` export."""
    ops = {}
    for module in (core.ops, F):
        for name, obj in vars(module).items():
            if (not name.startswith("_") and inspect.isfunction(obj)
                    and obj.__module__.startswith(("core.ops", "core.functional"))):
                ops[name] = obj
    return ops


def test_every_differentiable_op_has_edge_cases():
    ops = exported_ops()
    tested = {id(ops[name]) for name in EDGES if name in ops}
    missing = sorted(name for name, fn in ops.items() if id(fn) not in tested and name not in NOT_DIFFERENTIABLE)
    assert not missing, f"differentiable ops without an entry in EDGES: {missing}"
    unknown = sorted(set(EDGES) - set(ops) - set(COMPOSITIONS))
    assert not unknown, f"EDGES entries that name no exported op: {unknown}"
    assert NOT_DIFFERENTIABLE <= set(ops)


@pytest.mark.parametrize("name,label", [(name, e.label) for name in sorted(EDGES) for e in EDGES[name]])
def test_edge_point(name, label):
    case = next(e for e in EDGES[name] if e.label == label)
    leaves = [core.tensor(np.array(x, dtype=np.float64), requires_grad=True) for x in case.inputs]
    with warnings.catch_warnings():
        if not case.finite:  # numpy warns of the mean of nothing
            warnings.simplefilter("ignore", RuntimeWarning)
        out = case.fn(*leaves)
    assert out.dtype == np.float64
    if case.finite:
        assert np.isfinite(out.data).all(), f"value {out.data}"
    grads = core.grad(out.sum(), leaves, create_graph=case.second, allow_unused=True)
    grads = [core.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]
    for g in grads:
        assert np.isfinite(g.data).all(), f"gradient {g.data}"
    if case.grad is not None:
        expected = case.grad if isinstance(case.grad, list) else [case.grad]
        for g, want in zip(grads, expected):
            np.testing.assert_allclose(g.data, want, rtol=1e-9, atol=1e-14)
    # second order: the gradient of <first-order gradient, 1> is finite wherever the gradient is (also at kinks)
    total = sum((g.sum() for g in grads if g.requires_grad), start=core.zeros((), dtype=core.float64))
    if total.requires_grad:
        second = core.grad(total, leaves, allow_unused=True)
        for g in second:
            assert g is None or np.isfinite(g.data).all(), f"second-order gradient {g.data}"
        if case.grad2 is not None:
            got = second[0].data if second[0] is not None else np.zeros(leaves[0].shape)
            np.testing.assert_allclose(got, case.grad2, rtol=1e-9, atol=1e-14)
    elif case.grad2 is not None:
        np.testing.assert_array_equal(case.grad2, 0.0)
    if 1 in case.fd:
        assert core.gradcheck(case.fn, leaves, eps=case.eps)
    if 2 in case.fd and case.second:
        assert core.gradgradcheck(case.fn, leaves, eps=case.eps)


# ----- accuracy in the tails: sigmoid and log-sigmoid to float64 (and float32) rounding -----
def _reference(x, fn):
    """fn(exp(-x)) in 400-digit decimal arithmetic (1 + exp(-800) keeps all its digits), rounded once."""
    with localcontext() as ctx:
        ctx.prec = 400
        return float(fn((-Decimal(float(x))).exp()))


def _sigmoid_ref(x):
    return _reference(x, lambda e: 1 / (1 + e))


def _logsigmoid_ref(x):
    return _reference(x, lambda e: -(1 + e).ln())


def _d_sigmoid_ref(x):
    return _reference(x, lambda e: e / (1 + e) ** 2)


def _ulps(got, want, dtype):
    return abs(float(got) - want) / np.spacing(np.abs(np.asarray(want, dtype=dtype)))


@settings(settings.get_profile("edges"))
@given(x=st.one_of(st.floats(-800, 800), st.floats(-50, 50), st.sampled_from([-745.0, -708.5, -40.0, -37.5, 0.0])))
def test_sigmoid_and_logsigmoid_accurate_to_rounding(x):
    t = core.tensor(np.array([x]), requires_grad=True)
    y = core.sigmoid(t)
    assert _ulps(y.item(), _sigmoid_ref(x), np.float64) <= 4
    ls = core.logsigmoid(t)
    assert _ulps(ls.item(), _logsigmoid_ref(x), np.float64) <= 4
    (g,) = core.grad(y.sum(), [t])
    assert _ulps(g.item(), _d_sigmoid_ref(x), np.float64) <= 8
    (g,) = core.grad(ls.sum(), [t])
    assert _ulps(g.item(), _sigmoid_ref(-x), np.float64) <= 4
    with np.errstate(divide="ignore"):
        assert np.isfinite(core.log(core.sigmoid(t)).item()) or _sigmoid_ref(x) == 0.0


@settings(settings.get_profile("edges"))
@given(x=st.floats(-110, 110, width=32))
def test_sigmoid_float32_accurate_to_rounding(x):
    t = core.tensor(np.array([x], dtype=np.float32))
    y = core.sigmoid(t)
    assert y.dtype == np.float32
    assert _ulps(y.item(), float(np.float32(_sigmoid_ref(x))), np.float32) <= 4


# ----- ties, zero rows and degenerate batches drawn at random -----
@settings(settings.get_profile("edges"))
@given(seed=st.integers(0, 2 ** 16), n=st.integers(2, 5))
def test_ties_split_and_zero_rows_give_zero_gradients(seed, n):
    rng = np.random.default_rng(seed)
    v = rng.integers(-2, 3, (3, n)).astype(np.float64)  # small integers: ties and zero rows are common
    v[rng.integers(3)] = 0.0
    x = core.tensor(v, requires_grad=True)
    for out in (core.norm(x, axis=1), core.std(x, 1), core.maximum(x, x[::-1]), core.max(x, 1), core.abs(x)):
        (g,) = core.grad(out.sum(), [x], create_graph=True)
        (h,) = core.grad(g.sum(), [x], allow_unused=True) if g.requires_grad else (None,)
        assert np.isfinite(g.data).all() and (h is None or np.isfinite(h.data).all())
    (g,) = core.grad(core.norm(x, axis=1).sum(), [x])
    np.testing.assert_array_equal(g.data[np.abs(v).sum(1) == 0], 0.0)
    (g,) = core.grad(core.maximum(x, x[::-1]).sum(), [x])  # each pair of tied operands shares 1 + 1
    np.testing.assert_allclose(g.data[v == v[::-1]], 1.0)


@settings(settings.get_profile("edges"))
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 4))
def test_cross_entropy_ignored_targets_count_for_nothing(seed, n):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    target = rng.integers(0, 3, n)
    ignored = rng.random(n) < 0.5
    x = core.tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, core.tensor(np.where(ignored, -100, target)))
    (g,) = core.grad(loss, [x])
    assert np.isfinite(g.data).all()
    np.testing.assert_array_equal(g.data[ignored], 0.0)
    if ignored.all():
        assert math.isnan(loss.item())
    else:
        kept = core.tensor(z[~ignored], requires_grad=True)
        (g_kept,) = core.grad(F.cross_entropy(kept, core.tensor(target[~ignored])), [kept])
        np.testing.assert_allclose(g.data[~ignored], g_kept.data, rtol=1e-12)


@settings(settings.get_profile("edges"))
@given(seed=st.integers(0, 2 ** 16), x_shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       axis=st.integers(0, 2), k=st.integers(1, 3), data=st.data())
def test_take_along_axis_broadcasts_like_numpy(seed, x_shape, axis, k, data):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=x_shape)
    idx_shape = [data.draw(st.sampled_from([1, n])) for n in x_shape]
    idx_shape[axis] = k
    x_shape_b = [data.draw(st.sampled_from([1, n])) if i != axis else n for i, n in enumerate(x_shape)]
    v = v[tuple(slice(0, n) for n in x_shape_b)]  # x may be the side of size 1 too
    idx = rng.integers(0, v.shape[axis], idx_shape)
    x = core.tensor(v, requires_grad=True)
    out = core.take_along_axis(x, idx, axis)
    np.testing.assert_array_equal(out.data, np.take_along_axis(v, idx, axis))
    assert core.gradcheck(lambda t: core.take_along_axis(t, idx, axis), x)


# ----- fused ops equal their composed forms at the edge points too -----
def _composed_huber(d, delta):
    size = core.abs(d)
    # the boundary |d| = delta in the quadratic branch, as the fused derivative clip(d) has it
    return core.where(size.data <= delta, 0.5 * d * d, delta * (size - 0.5 * delta))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_fused_losses_equal_their_compositions_at_edges(reduction):
    x = a(0.0, 1.0, -1.0, 1e6, -3.0, 2.5)  # d = 0, |d| = delta (Huber's kink), a large d
    t = a(0.0, 0.0, 0.0, 0.0, -2.0, 1.5)
    reduce = {"none": lambda v: v, "mean": core.mean, "sum": core.sum}[reduction]
    pairs = [(lambda p, q: F.mse_loss(p, q, reduction), lambda p, q: reduce((p - q) * (p - q))),
             (lambda p, q: F.huber_loss(p, q, reduction, 1.0), lambda p, q: reduce(_composed_huber(p - q, 1.0)))]
    for fused, composed in pairs:
        results = []
        for fn in (fused, composed):
            p, q = core.tensor(x, requires_grad=True), core.tensor(t, requires_grad=True)
            out = fn(p, q)
            w = const(np.linspace(1, 2, out.size).reshape(out.shape))
            grads = core.grad((out * w).sum(), [p, q], create_graph=True)
            second = core.grad(sum(g.sum() for g in grads), [p, q], allow_unused=True)
            second = [np.zeros(6) if g is None else g.data for g in second]
            results.append([out.data, *(g.data for g in grads), *second])
        for got, want in zip(*results):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_fused_softplus_and_logsigmoid_equal_their_compositions_at_edges():
    x = a(-5.0, -1.0, 0.0, 1.0, 5.0)  # where log(1 + exp(x)) and its derivatives are accurate
    for fused, composed in ((core.softplus, lambda v: core.log1p(core.exp(v))),
                            (core.logsigmoid, lambda v: core.log(core.sigmoid(v)))):
        results = []
        for fn in (fused, composed):
            v = core.tensor(x, requires_grad=True)
            (g,) = core.grad(fn(v).sum(), [v], create_graph=True)
            (h,) = core.grad(g.sum(), [v])
            results.append((fn(v).data, g.data, h.data))
        for got, want in zip(*results):
            np.testing.assert_allclose(got, want, rtol=1e-10)


# ----- errors -----
def test_matmul_with_an_array_names_the_array():
    x = core.ones(2, 2)
    with pytest.raises(TypeError,
                       match=r"^matmul: operand 1 is a numpy\.ndarray, not a Tensor; wrap it with core\.tensor"):
        x @ np.ones((2, 2))
    with pytest.raises(TypeError, match=r"^matmul: operand 0 is a numpy\.ndarray"):
        np.ones((2, 2)) @ x
    with pytest.raises(TypeError, match=r"^concatenate: operand 1 is a builtins\.list"):
        core.concatenate([x, [[1.0, 2.0]]])


def test_take_along_axis_refuses_indices_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"take_along_axis: indices of shape \(2, 1\) do not broadcast against the "
                                         r"tensor's shape \(3, 4\) outside axis 1"):
        core.take_along_axis(core.zeros(3, 4), np.zeros((2, 1), np.int64), 1)
    with pytest.raises(TypeError, match="take_along_axis: indices must be integers, got float64"):
        core.take_along_axis(core.zeros(3, 4), np.zeros((3, 1)), 1)
