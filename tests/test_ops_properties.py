"""Property tests over random shapes: forward equals numpy, gradients have operand shapes and match
finite differences for broadcasting binary ops and reductions."""
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import core

settings.register_profile("lab", max_examples=40, deadline=None)
settings.load_profile("lab")

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
OPS = {"add": (np.add, lambda a, b: a + b), "sub": (np.subtract, lambda a, b: a - b),
       "mul": (np.multiply, lambda a, b: a * b), "div": (np.divide, lambda a, b: a / b),
       "maximum": (np.maximum, core.maximum)}


@given(pair=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4),
       op=st.sampled_from(sorted(OPS)), seed=st.integers(0, 2 ** 16))
def test_broadcasting_binary_ops(pair, op, seed):
    rng = np.random.default_rng(seed)
    sa, sb = pair.input_shapes
    a_np, b_np = rng.uniform(0.5, 2, sa), rng.uniform(0.5, 2, sb)
    a = core.tensor(a_np, requires_grad=True)
    b = core.tensor(b_np, requires_grad=True)
    ref, fn = OPS[op]
    out = fn(a, b)
    np.testing.assert_allclose(out.data, ref(a_np, b_np), rtol=1e-12)
    out.sum().backward()
    assert a.grad.shape == sa and b.grad.shape == sb
    core.gradcheck(fn, (core.tensor(a_np, requires_grad=True), core.tensor(b_np, requires_grad=True)))


@given(shape=shapes, seed=st.integers(0, 2 ** 16), data=st.data())
def test_reductions_match_numpy(shape, seed, data):
    x_np = np.random.default_rng(seed).normal(size=shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1))) if shape else None
    keepdims = data.draw(st.booleans())
    x = core.tensor(x_np, requires_grad=True)
    np.testing.assert_allclose(x.sum(axis, keepdims).data, x_np.sum(axis=axis, keepdims=keepdims), atol=1e-12)
    np.testing.assert_allclose(x.mean(axis, keepdims).data, x_np.mean(axis=axis, keepdims=keepdims), atol=1e-12)
    np.testing.assert_allclose(x.max(axis, keepdims).data, x_np.max(axis=axis, keepdims=keepdims))
    lse = np.log(np.exp(x_np).sum(axis=axis, keepdims=keepdims))
    np.testing.assert_allclose(core.logsumexp(x, axis, keepdims).data, lse, rtol=1e-12)
    core.gradcheck(lambda v: core.logsumexp(v, axis, keepdims), core.tensor(x_np, requires_grad=True))


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), seed=st.integers(0, 2 ** 16))
def test_softmax_rows_sum_to_one_and_log_softmax_consistent(shape, seed):
    x = core.tensor(np.random.default_rng(seed).normal(scale=10, size=shape))
    p = core.softmax(x, -1).data
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(core.log_softmax(x, -1).data), p, rtol=1e-10)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), seed=st.integers(0, 2 ** 16))
def test_permute_and_reshape_roundtrip_gradients(shape, seed):
    rng = np.random.default_rng(seed)
    axes = tuple(rng.permutation(len(shape)))
    x = core.tensor(rng.normal(size=shape), requires_grad=True)
    w = rng.normal(size=np.transpose(np.zeros(shape), axes).shape)
    (x.permute(axes).reshape(-1) * core.tensor(w.reshape(-1))).sum().backward()
    np.testing.assert_allclose(x.grad.data, np.transpose(w, np.argsort(axes)), rtol=1e-12)
