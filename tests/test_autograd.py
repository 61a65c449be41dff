"""The autodiff engine: fixtures from the books (FX-AD), graph lifetime, in-place detection, grad modes."""
import numpy as np
import pytest

import core


def t(v, **kw):
    return core.tensor(v, dtype=core.float64, requires_grad=True, **kw)


def test_fx_ad_1_and_2_gradients_match_forward_differences():
    w1, w2 = t(5.0), t(3.0)
    f = 3 * w1 ** 2 + 2 * w1 * w2
    g1, g2 = core.grad(f, [w1, w2])
    assert (g1.item(), g2.item()) == (36.0, 10.0)

    def f_py(a, b):
        return 3 * a ** 2 + 2 * a * b
    eps = 1e-6
    assert (f_py(5 + eps, 3) - f_py(5, 3)) / eps == pytest.approx(36.000003007075065, rel=1e-12)
    assert (f_py(5, 3 + eps) - f_py(5, 3)) / eps == pytest.approx(10.000000003174137, rel=1e-12)


def test_fx_ad_3_stop_gradient_blocks_w2():
    w1, w2 = t(5.0), t(3.0)
    f = 3 * w1 ** 2 + (2 * w1 * w2).detach()
    g1, g2 = core.grad(f, [w1, w2], allow_unused=True)
    assert g1.item() == 30.0 and g2 is None


def test_fx_ad_4_constant_has_no_gradient_unless_watched():
    c = core.tensor(2.0, dtype=core.float64)
    w = t(3.0)
    f = c * w
    with pytest.raises(RuntimeError, match="does not require grad"):
        core.grad(f, [c])
    c.requires_grad_()
    (gc,) = core.grad(c * w, [c])
    assert gc.item() == 3.0


def test_fx_ad_5_second_backward_needs_retain_graph():
    w = t(2.0)
    y = w * w * w
    core.grad(y, [w])
    with pytest.raises(RuntimeError, match="second time"):
        core.grad(y, [w])
    y = w * w * w
    a = core.grad(y, [w], retain_graph=True)[0].item()
    b = core.grad(y, [w])[0].item()
    assert a == b == 12.0


def test_fx_ad_6_vector_target_gradient_equals_gradient_of_sum():
    x = t([1.0, 2.0, 3.0])
    (g,) = core.grad((x * x), [x], grad_outputs=core.ones(3, dtype=core.float64))
    (g_sum,) = core.grad((x * x).sum(), [x])
    np.testing.assert_array_equal(g.numpy(), g_sum.numpy())


def test_fx_ad_7_float32_polynomial():
    w = core.tensor(4.0, requires_grad=True)
    y = 1 * w ** 2 + 2 * w + 3
    y.backward()
    assert w.grad.dtype == np.float32 and w.grad.item() == 10.0


def test_fx_ad_8_gradient_with_respect_to_intermediate():
    x, w1, b1, w2, b2 = (t(v) for v in (1.0, 2.0, 1.0, 2.0, 1.0))
    y1 = x * w1 + b1
    y2 = y1 * w2 + b2
    dy2_dy1, dy2_dw1 = core.grad(y2, [y1, w1], retain_graph=True)
    (dy1_dw1,) = core.grad(y1, [w1])
    assert dy2_dy1.item() * dy1_dw1.item() == 2.0 and dy2_dw1.item() == 2.0


def test_fx_ad_9_and_10():
    x, y = t(3.0), t(4.0)
    f = x * x * y + y + 2
    assert f.item() == 42.0
    gx, gy = core.grad(f, [x, y])
    assert (gx.item(), gy.item()) == (24.0, 10.0)

    def f_py(a, b):
        return a * a * b + b + 2
    eps = 1e-5
    assert (f_py(3 + eps, 4) - f_py(3, 4)) / eps == pytest.approx(24.000039999805264, rel=1e-12)
    assert (f_py(3, 4 + eps) - f_py(3, 4)) / eps == pytest.approx(10.000000000331966, rel=1e-12)


def test_fx_ad_11_naive_softplus_nan_stable_softplus_exact():
    x = core.tensor(100.0, requires_grad=True)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = core.log(core.exp(x) + 1)
        naive.backward()
    assert np.isinf(naive.item()) and np.isnan(x.grad.item())
    x.grad = None
    stable = core.softplus(x)
    stable.backward()
    assert stable.item() == 100.0 and x.grad.item() == 1.0


def test_fx_ad_12_double_backprop_gradient_penalty():
    w = t([1.0, 2.0])
    x_hat = t([1.0, 1.0])
    d = (w * x_hat * x_hat).sum()
    (g,) = core.grad(d, [x_hat], create_graph=True)
    norm = g.norm()
    gp = (norm - 1) ** 2
    assert norm.item() == pytest.approx(4.47213595499958, rel=1e-12)
    assert gp.item() == pytest.approx(12.055728090000843, rel=1e-12)
    gp.backward()
    np.testing.assert_allclose(w.grad.numpy(), [6.21114562, 12.42229124], rtol=1e-8)


def test_backward_accumulates_into_leaf_grad():
    x = t([1.0, 2.0])
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [5.0, 7.0])


def test_broadcast_gradients_sum_back_to_operand_shapes():
    a = t(np.ones((3, 1)))
    b = t(np.arange(4.0))
    ((a + b) * (a * b)).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_allclose(a.grad.numpy(), np.full((3, 1), (2 * 1 * np.arange(4.0) + np.arange(4.0) ** 2).sum()))


def test_chain_of_100k_ops_has_no_recursion_limit():
    x = core.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_no_grad_records_nothing_and_works_as_decorator():
    x = t(2.0)
    with core.no_grad():
        y = x * x
    assert not y.requires_grad and y.grad_fn is None

    @core.no_grad()
    def f(v):
        return v * v
    assert not f(x).requires_grad
    with core.no_grad():
        with core.enable_grad():
            assert (x * x).requires_grad
    assert core.is_grad_enabled()


def test_inplace_change_of_saved_tensor_is_detected_and_names_the_op():
    a = t([1.0, 2.0])
    b = core.tensor([3.0, 4.0], dtype=core.float64)
    y = (a * b).sum()
    b.add_(1.0)
    with pytest.raises(RuntimeError, match="Mul.*modified in place"):
        y.backward()
    assert a.grad is None  # nothing half-accumulated


def test_inplace_on_unsaved_input_is_allowed():
    a = t([1.0, 2.0])
    b = core.tensor([3.0, 4.0], dtype=core.float64)
    y = (a + b).sum()
    b.add_(1.0)
    y.backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 1.0])


def test_inplace_on_leaf_requiring_grad_is_refused():
    a = t([1.0])
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        a.add_(1.0)
    with core.no_grad():
        a.add_(1.0)
    assert a.item() == 2.0


def test_backward_of_non_scalar_needs_grad():
    x = t([1.0, 2.0])
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (x * 2).backward()
    (x * 2).backward(core.tensor([1.0, 1.0], dtype=core.float64))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_grad_of_integer_tensor_and_of_non_requiring_tensor_are_errors():
    with pytest.raises(RuntimeError, match="floating-point"):
        core.tensor([1, 2]).requires_grad_()
    x = core.tensor([1.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        (x * 2).sum().backward()


def test_unused_input_needs_allow_unused():
    x, y = t(1.0), t(2.0)
    with pytest.raises(RuntimeError, match="allow_unused"):
        core.grad(x * 2, [x, y])
    gx, gy = core.grad(x * 2, [x, y], allow_unused=True)
    assert gx.item() == 2.0 and gy is None


def test_grad_does_not_touch_leaf_grad():
    x = t(3.0)
    core.grad(x * x, [x])
    assert x.grad is None


def test_third_order_gradient():
    x = t(2.0)
    y = x ** 4
    (g1,) = core.grad(y, [x], create_graph=True)
    (g2,) = core.grad(g1, [x], create_graph=True)
    (g3,) = core.grad(g2, [x])
    assert (g1.item(), g2.item(), g3.item()) == (32.0, 48.0, 48.0)


def test_graph_is_freed_after_backward():
    x = t(np.ones(3))
    y = (x.exp() * 2).sum()
    fn = y.grad_fn
    y.backward()
    assert fn.inputs is None


def test_error_mid_graph_leaves_graph_usable():
    x = t([1.0, 2.0])
    y = (x * x).sum()
    with pytest.raises(ValueError):
        core.grad(y, [x], grad_outputs=core.ones(5, dtype=core.float64))
    (g,) = core.grad(y, [x])
    np.testing.assert_array_equal(g.numpy(), [2.0, 4.0])


def test_grad_skips_gradients_of_unrequested_leaves():
    calls = []

    class Probe(core.autograd.Function):
        def forward(self, x, w):
            return x * w

        def backward(self, gy):
            x, w = self.args
            calls.append((self.needs_grad(0), self.needs_grad(1)))
            return (gy * w if self.needs_grad(0) else None), (gy * x if self.needs_grad(1) else None)

    x, w = t([1.0, 2.0]), t([3.0, 4.0])
    y = Probe()(x, w).sum()
    (gx,) = core.grad(y, [x], retain_graph=True)
    assert calls == [(True, False)] and gx.tolist() == [3.0, 4.0]
    y.backward()  # the retained graph still computes everything for a plain backward
    assert calls[-1] == (True, True) and w.grad.tolist() == [1.0, 2.0]
