"""The same core on cupy, or on the strict cupy stand-in "emu" where no GPU is visible (see conftest)."""
import numpy as np
import pytest

import core
from core import backend

pytestmark = pytest.mark.gpu


def test_tensor_lives_on_gpu_and_round_trips(gpu_device):
    x = core.tensor([1.0, 2.0], device=gpu_device)
    assert backend.parse_device(x.device) == backend.parse_device(gpu_device) and x.xp is not np
    assert x.cpu().numpy().tolist() == [1.0, 2.0]


def test_mixing_devices_is_an_error(gpu_device):
    with pytest.raises(RuntimeError, match="same device"):
        core.ones(2) + core.ones(2, device=gpu_device)


def test_gradients_on_gpu_match_cpu(gpu_device):
    rng = np.random.default_rng(0)
    x_np, w_np = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    results = []
    for device in ("cpu", gpu_device):
        x = core.tensor(x_np, device=device, requires_grad=True)
        w = core.tensor(w_np, device=device, requires_grad=True)
        loss = (core.log_softmax(core.linear(x, w).tanh(), -1)[:, 1] ** 2).sum() + core.logsumexp(x, 1).mean()
        loss.backward()
        results.append((loss.item(), x.grad.cpu().numpy(), w.grad.cpu().numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-10)
    for a, b in zip(results[0][1:], results[1][1:]):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_second_order_on_gpu(gpu_device):
    w = core.tensor([1.0, 2.0], dtype=core.float64, device=gpu_device, requires_grad=True)
    x = core.tensor([1.0, 1.0], dtype=core.float64, device=gpu_device, requires_grad=True)
    (g,) = core.grad((w * x * x).sum(), [x], create_graph=True)
    ((g.norm() - 1) ** 2).backward()
    np.testing.assert_allclose(w.grad.cpu().numpy(), [6.21114562, 12.42229124], rtol=1e-8)


def test_random_on_gpu_is_seeded(gpu_device):
    for draw in (lambda g: core.randn(5, generator=g, device=gpu_device),
                 lambda g: core.randperm(7, generator=g, device=gpu_device)):
        a, b = (draw(core.Generator(3)).cpu().numpy() for _ in range(2))
        np.testing.assert_array_equal(a, b)
    assert sorted(core.randperm(7, device=gpu_device).cpu().numpy().tolist()) == list(range(7))


def test_a_device_tensor_is_not_converted_to_numpy_implicitly(gpu_device):
    x = core.ones(3, device=gpu_device)
    with pytest.raises(TypeError, match="tensor.cpu"):
        np.asarray(x)
    assert x.numpy().tolist() == [1.0, 1.0, 1.0]  # the explicit transfer
