"""Tensor basics: dtypes, devices, factories, conversions and the error messages for common mistakes."""
import operator

import numpy as np
import pytest

import core


def test_default_dtype_and_scalar_promotion():
    x = core.tensor([1.0, 2.0])
    assert x.dtype == np.float32
    for y in (x * 2.0, 2.0 * x, x + 1, x / 3, x ** 2, x - np.float64(1.0), core.exp(x) * 0.5):
        assert y.dtype == np.float32
    assert core.tensor(np.zeros(2)).dtype == np.float64  # float64 arrays keep their precision
    assert core.tensor([1, 2]).dtype == np.int64
    assert (core.tensor([1, 2]) * 0.5).dtype == np.float64  # integer tensors follow numpy's promotion


def test_float64_supported_end_to_end():
    x = core.tensor([1.0, 2.0], dtype=core.float64, requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.dtype == np.float64


def test_factories():
    assert core.zeros(2, 3).shape == (2, 3) and core.ones((4,)).numpy().sum() == 4
    assert core.arange(5).dtype == np.int64 and core.arange(0.0, 1.0, 0.5).dtype == np.float32
    assert core.full((2,), 7.0).tolist() == [7.0, 7.0]
    assert core.eye(3).numpy().trace() == 3
    assert core.zeros_like(core.ones(2, dtype=core.float64)).dtype == np.float64


def test_conversions():
    x = core.tensor([[1.5]], requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    assert x.detach().numpy().tolist() == [[1.5]] and x.item() == 1.5 and float(x) == 1.5
    with pytest.raises(ValueError, match="one element"):
        core.ones(2).item()
    assert x.to(core.float64).dtype == np.float64 and x.to("cpu") is x
    assert np.asarray(core.ones(2)).tolist() == [1.0, 1.0]


def test_device_property_and_unavailable_cuda_is_an_error():
    assert core.ones(1).device == "cpu"
    if core.cupy_available():
        pytest.skip("a GPU is visible")
    for call in (lambda: core.ones(2, device="cuda"), lambda: core.ones(2).to("cuda:0"),
                 lambda: core.tensor([1.0], device="cuda")):
        with pytest.raises(RuntimeError, match="cupy|GPU"):
            call()


def test_bad_device_string():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        core.ones(2, device="gpu")


def test_shape_errors_name_op_and_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        core.ones(2, 3) @ core.ones(4, 5)
    with pytest.raises(ValueError, match=r"reshape.*\(2, 3\).*\(4,\)"):
        core.ones(2, 3).reshape(4)
    with pytest.raises(ValueError, match=r"broadcast_to.*\(3,\).*\(2, 4\)"):
        core.ones(3).expand(2, 4)
    with pytest.raises(ValueError, match="concatenate"):
        core.cat([core.ones(2, 3), core.ones(2, 4)], axis=0)
    with pytest.raises(ValueError, match=r"linear: input has 3 features"):
        core.linear(core.ones(2, 3), core.ones(4, 5))
    with pytest.raises(IndexError, match=r"shape \(2,\)"):
        core.ones(2)[5]


def test_failed_op_leaves_tensors_intact():
    x = core.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError):
        x.reshape(3)
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0] and x.tolist() == [1.0, 2.0]


def test_indexing_and_setitem():
    x = core.arange(12).reshape(3, 4)
    assert x[1].tolist() == [4, 5, 6, 7] and x[:, 1].tolist() == [1, 5, 9]
    assert x[core.tensor([0, 2])].shape == (2, 4) and x[x > 9].tolist() == [10, 11]
    y = core.zeros(3)
    y[1] = 5.0
    assert y.tolist() == [0.0, 5.0, 0.0] and y._version == 1


def test_methods_forward_to_ops_and_unknown_attribute_errors():
    x = core.tensor([[1.0, -2.0]])
    assert x.relu().tolist() == [[1.0, 0.0]] and x.abs().sum().item() == 3.0 and x.T.shape == (2, 1)
    with pytest.raises(AttributeError, match="no attribute 'frobnicate'"):
        x.frobnicate()


def test_operators_in_both_operand_orders_match_numpy():
    a, b = np.array([[1.5, 2.0], [2.0, 3.0]]), np.array([[2.0, 0.25], [-1.0, 4.0]])  # every power defined
    x, y = core.tensor(a), core.tensor(b)
    for op in (operator.add, operator.sub, operator.mul, operator.truediv, operator.pow, operator.matmul,
               operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge):
        operands = [(x, y)] if op is operator.matmul else [(x, y), (x, 2.0), (2.0, x), (b, x), (x, b)]
        for left, right in operands:  # (b, x): numpy defers to the tensor's reflected operator
            got = op(left, right)
            assert isinstance(got, core.Tensor), (op, left, right)
            np.testing.assert_array_equal(got.numpy(), op(_plain(left), _plain(right)))
    assert (-x).tolist() == (-a).tolist() and abs(x).tolist() == abs(a).tolist() and (+x) is x
    assert (~(x > 1)).tolist() == (a <= 1).tolist() and ((x > 0) & (y > 0)).tolist() == ((a > 0) & (b > 0)).tolist()
    assert ((x > 2) | (y > 2)).tolist() == ((a > 2) | (b > 2)).tolist() and x[1, 1].item() == 3.0


def _plain(value):
    return value.numpy() if isinstance(value, core.Tensor) else value


def test_shape_methods_take_sizes_or_one_sequence():
    x = core.arange(6.0)
    assert x.reshape(2, 3).shape == x.reshape((2, 3)).shape == x.view([2, 3]).shape == (2, 3)
    assert x.reshape(2, 3).permute(1, 0).shape == x.reshape(2, 3).permute((1, 0)).shape == (3, 2)
    assert x.expand(4, 6).shape == x.expand((4, 6)).shape == (4, 6)
    assert x.reshape(2, 3).sum(1).tolist() == [3.0, 12.0] and x.reshape(2, 3).mean(axis=0, keepdims=True).shape == (1, 3)


def test_comparisons_are_not_differentiable_and_tensors_stay_hashable():
    x = core.tensor([1.0, 2.0], requires_grad=True)
    assert not (x > 1).requires_grad and (x > 1).dtype == np.bool_
    assert len({x, x}) == 1
