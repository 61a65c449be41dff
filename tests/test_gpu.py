"""The same core on cupy. Skipped where cupy sees no GPU (see conftest)."""
import numpy as np
import pytest

import core

pytestmark = pytest.mark.gpu


def test_tensor_lives_on_gpu_and_round_trips():
    x = core.tensor([1.0, 2.0], device="cuda")
    assert x.device == "cuda:0" and x.xp.__name__ == "cupy"
    assert x.cpu().numpy().tolist() == [1.0, 2.0]


def test_mixing_devices_is_an_error():
    with pytest.raises(RuntimeError, match="same device"):
        core.ones(2) + core.ones(2, device="cuda")


def test_gradients_on_gpu_match_cpu():
    rng = np.random.default_rng(0)
    x_np, w_np = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    results = []
    for device in ("cpu", "cuda"):
        x = core.tensor(x_np, device=device, requires_grad=True)
        w = core.tensor(w_np, device=device, requires_grad=True)
        loss = (core.log_softmax(core.linear(x, w).tanh(), -1)[:, 1] ** 2).sum() + core.logsumexp(x, 1).mean()
        loss.backward()
        results.append((loss.item(), x.grad.cpu().numpy(), w.grad.cpu().numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-10)
    for a, b in zip(results[0][1:], results[1][1:]):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_second_order_on_gpu():
    w = core.tensor([1.0, 2.0], dtype=core.float64, device="cuda", requires_grad=True)
    x = core.tensor([1.0, 1.0], dtype=core.float64, device="cuda", requires_grad=True)
    (g,) = core.grad((w * x * x).sum(), [x], create_graph=True)
    ((g.norm() - 1) ** 2).backward()
    np.testing.assert_allclose(w.grad.cpu().numpy(), [6.21114562, 12.42229124], rtol=1e-8)


def test_random_on_gpu_is_seeded():
    a = core.randn(5, generator=core.Generator(3), device="cuda").cpu().numpy()
    b = core.randn(5, generator=core.Generator(3), device="cuda").cpu().numpy()
    np.testing.assert_array_equal(a, b)
