"""Every differentiable op against central finite differences, first and second order, with broadcasting."""
import numpy as np
import pytest

import core

R = np.random.default_rng(42)


def leaf(*shape, low=-2.0, high=2.0, away_from=None):
    """A float64 leaf; `away_from` keeps entries off kinks (|x - k| > 0.1) so finite differences are smooth."""
    v = R.uniform(low, high, shape)
    if away_from is not None:
        v = np.where(np.abs(v - away_from) < 0.1, v + 0.25, v)
    return core.tensor(v, dtype=core.float64, requires_grad=True)


def pos(*shape):
    return leaf(*shape, low=0.5, high=2.0)


UNARY = {
    "neg": (lambda x: -x, leaf),
    "exp": (core.exp, leaf),
    "log": (core.log, pos),
    "log1p": (core.log1p, pos),
    "sqrt": (core.sqrt, pos),
    "abs": (core.abs, lambda *s: leaf(*s, away_from=0.0)),
    "sin": (core.sin, leaf),
    "cos": (core.cos, leaf),
    "tanh": (core.tanh, leaf),
    "sigmoid": (core.sigmoid, leaf),
    "relu": (core.relu, lambda *s: leaf(*s, away_from=0.0)),
    "leaky_relu": (lambda x: core.leaky_relu(x, 0.2), lambda *s: leaf(*s, away_from=0.0)),
    "elu": (core.elu, lambda *s: leaf(*s, away_from=0.0)),
    "selu": (core.selu, lambda *s: leaf(*s, away_from=0.0)),
    "softplus": (core.softplus, leaf),
    "gelu": (core.gelu, leaf),
    "gelu_tanh": (lambda x: core.gelu(x, approximate="tanh"), leaf),
    "silu": (core.silu, leaf),
    "erf": (core.erf, leaf),
    "square": (core.square, leaf),
    "pow_scalar": (lambda x: x ** 3, leaf),
    "pow_fractional": (lambda x: x ** 1.5, pos),
    "rpow": (lambda x: 2.0 ** x, leaf),
    "clip": (lambda x: core.clip(x, -0.5, 0.7), lambda *s: leaf(*s, away_from=0.7)),
    "scalar_ops": (lambda x: (3 - x) / 2 + 1 / (x * x + 1), leaf),
    "sum_axis": (lambda x: x.sum(1), leaf),
    "sum_keepdims": (lambda x: x.sum((0, 2), keepdims=True), leaf),
    "mean": (lambda x: x.mean(-1), leaf),
    "max_axis": (lambda x: x.max(1), leaf),
    "min_all": (lambda x: x.min(), leaf),
    "var": (lambda x: x.var(0), leaf),
    "var_biased": (lambda x: x.var(1, correction=0, keepdims=True), leaf),
    "std": (lambda x: x.std(), leaf),
    "logsumexp": (lambda x: core.logsumexp(x, 2), leaf),
    "norm": (lambda x: x.norm(), leaf),
    "norm_axis": (lambda x: x.norm(axis=1), leaf),
    "norm_l1": (lambda x: x.norm(ord=1, axis=0), lambda *s: leaf(*s, away_from=0.0)),
    "softmax": (lambda x: core.softmax(x, -1), leaf),
    "log_softmax": (lambda x: core.log_softmax(x, 1), leaf),
    "cumsum": (lambda x: core.cumsum(x, 1), leaf),
    "normalize": (lambda x: core.ops.reduce.normalize(x, (0, 2))[0] * core.tensor(np.arange(24.0).reshape(2, 3, 4)),
                  leaf),
    "reshape": (lambda x: x.reshape(4, 6) * core.tensor(np.arange(24.0).reshape(4, 6)), leaf),
    "permute": (lambda x: x.permute(2, 0, 1) * core.tensor(np.arange(24.0).reshape(4, 2, 3)), leaf),
    "transpose": (lambda x: x.transpose(0, 2).exp(), leaf),
    "broadcast_to": (lambda x: x[:, :1].broadcast_to((2, 5, 4)).sin(), leaf),
    "squeeze_unsqueeze": (lambda x: x.unsqueeze(1).squeeze(1).flatten().tanh(), leaf),
    "getitem_basic": (lambda x: x[1, 1:, ::2], leaf),
    "getitem_int_array": (lambda x: x[[0, 1, 0], [2, 2, 2]], leaf),
    "getitem_bool": (lambda x: x[x.data > 0], leaf),
    "getitem_ellipsis": (lambda x: x[..., None, 1], leaf),
    "take_along_axis": (lambda x: core.take_along_axis(x, core.tensor(np.array([[[0, 0, 3, 3]] * 3] * 2)), 2), leaf),
    "gather_repeated": (lambda x: core.gather(x, 1, core.tensor(np.zeros((2, 4, 4), np.int64))), leaf),
    "pad": (lambda x: x.pad(((1, 0), (0, 2), (1, 1)), value=0.5).exp(), leaf),
    "flip": (lambda x: x.flip(1) * core.tensor(np.arange(24.0).reshape(2, 3, 4)), leaf),
    "split": (lambda x: core.split(x, [1, 3], axis=2)[1] * 2, leaf),
    "chunk": (lambda x: core.chunk(x, 2, axis=0)[1].exp(), leaf),
    "cast_same_dtype": (lambda x: core.cast(x, core.float64).exp(), leaf),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_first_and_second_order(name):
    fn, make = UNARY[name]
    x = make(2, 3, 4)
    assert core.gradcheck(fn, x)
    assert core.gradgradcheck(fn, x)


def test_cast_round_trip_through_float32():
    x = core.tensor(R.integers(-64, 64, (2, 3)) / 32.0, dtype=core.float64, requires_grad=True)  # exact in float32

    def round_trip(v):
        return v.to(dtype=core.float32).to(dtype=core.float64).exp()

    low = x.to(dtype=core.float32)
    assert type(low.grad_fn).__name__ == "Cast" and low.dtype == core.float32
    np.testing.assert_allclose(round_trip(x).data, np.exp(x.data), rtol=1e-7)
    # eps 1e-3: steps of 1e-6 would be lost in float32 rounding
    assert core.gradcheck(round_trip, x, eps=1e-3)
    assert core.gradgradcheck(round_trip, x, eps=1e-3)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
    "maximum": core.maximum,
    "minimum": core.minimum,
    "where": lambda a, b: core.where(a.data > 1.2, a, b),
    "concatenate": lambda a, b: core.concatenate([a, b.broadcast_to(a.shape)], axis=1),
    "stack": lambda a, b: core.stack([a, b.broadcast_to(a.shape)], axis=-1),
}
SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1))]


CASES = [(name, shapes) for name in sorted(BINARY) for shapes in SHAPES
         if name not in ("concatenate", "stack") or shapes == SHAPES[1]]


@pytest.mark.parametrize("name,shapes", CASES, ids=str)
def test_binary_with_broadcasting(name, shapes):
    a, b = pos(*shapes[0]), pos(*shapes[1])
    with np.errstate(all="ignore"):
        out = BINARY[name](a, b)
    assert out.shape == np.broadcast_shapes(a.shape, b.shape) or name in ("concatenate", "stack")
    assert core.gradcheck(BINARY[name], (a, b))
    assert core.gradgradcheck(BINARY[name], (a, b))


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 2)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (4, 3)),
                                    ((3, 4), (4,)), ((4,), (4,))], ids=str)
def test_matmul_batched_and_broadcast(shapes):
    a, b = leaf(*shapes[0]), leaf(*shapes[1])
    np.testing.assert_allclose((a @ b).data, a.data @ b.data)
    assert core.gradcheck(core.matmul, (a, b))
    assert core.gradgradcheck(core.matmul, (a, b))


@pytest.mark.parametrize("x_shape", [(5, 3), (2, 5, 3), (3,)], ids=str)
def test_linear(x_shape):
    x, w, b = leaf(*x_shape), leaf(4, 3), leaf(4)
    np.testing.assert_allclose(core.linear(x, w, b).data, x.data @ w.data.T + b.data)
    assert core.gradcheck(core.linear, (x, w, b))
    assert core.gradgradcheck(core.linear, (x, w, b))
    assert core.gradgradcheck(core.linear, (x, w))


def test_max_ties_share_the_gradient():
    x = core.tensor([1.0, 3.0, 3.0], dtype=core.float64, requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.5, 0.5])


def test_repeated_integer_index_accumulates():
    x = core.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0])


def test_stable_log_softmax_and_logsumexp_at_extreme_logits():
    x = core.tensor([[1000.0, 0.0, -1000.0]], requires_grad=True)
    ls = core.log_softmax(x)
    assert np.all(np.isfinite(ls.data)) and ls.data[0, 0] == 0.0
    assert core.logsumexp(x, 1).item() == 1000.0
    ls.sum().backward()
    assert np.all(np.isfinite(x.grad.data))


def test_stable_sigmoid_and_bce_with_logits():
    z = core.tensor([-1000.0, 0.0, 1000.0], requires_grad=True)
    assert np.array_equal(core.sigmoid(z).data, np.array([0.0, 0.5, 1.0], np.float32))
    t = core.tensor([0.0, 1.0, 1.0])
    loss = core.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
    np.testing.assert_allclose(loss.data, [0.0, np.log(2.0), 0.0], atol=1e-7)
    loss.sum().backward()
    np.testing.assert_allclose(z.grad.data, [0.0, -0.5, 0.0], atol=1e-7)
    x = leaf(3, 4)
    tgt = core.tensor(R.uniform(0, 1, (3, 4)), dtype=core.float64)
    assert core.gradgradcheck(lambda v: core.functional.binary_cross_entropy_with_logits(v, tgt), x)


def test_no_gradient_ops_return_plain_tensors():
    x = leaf(3, 4)
    for out in (x.argmax(1), x.argmin(), x > 0, x == x, core.one_hot(core.tensor([0, 2]), 3), x.isfinite()):
        assert not out.requires_grad
    np.testing.assert_array_equal(core.one_hot(core.tensor([0, 2]), 3).numpy(), [[1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"one_hot.*\[0, 3\)"):
        core.one_hot(core.tensor([3]), 3)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_fused_losses_match_composition(reduction):
    x, t = leaf(4, 3), leaf(4, 3)
    d = x.data - t.data
    ref = {"none": lambda v: v, "mean": np.mean, "sum": np.sum}[reduction]
    np.testing.assert_allclose(core.functional.mse_loss(x, t, reduction).data, ref(d * d))
    hub = np.where(np.abs(d) <= 1.0, 0.5 * d * d, np.abs(d) - 0.5)
    np.testing.assert_allclose(core.functional.huber_loss(x, t, reduction, 1.0).data, ref(hub))
    assert core.gradgradcheck(lambda a, b: core.functional.mse_loss(a, b, reduction), (x, t))
    assert core.gradgradcheck(lambda a, b: core.functional.huber_loss(a, b, reduction, 1.0), (x, t))
