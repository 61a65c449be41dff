"""Losses in core.functional: values against hand computations and book fixtures, reductions,
first- and second-order gradient checks, numerical stability, bad input."""
import math

import numpy as np
import pytest

import core
import core.functional as F


def t64(a, requires_grad=False):
    return core.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def log_softmax_np(z, axis):
    z = z - z.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


# ----- regression losses -----
def test_mse_fixture():  # FX-LS-2
    y_true = t64([[1, 9, 2], [-5, -2, 6]])
    y_pred = t64([[4, 8, 12], [8, 1, 3]])
    assert F.mse_loss(y_pred, y_true).item() == pytest.approx(49.5)
    np.testing.assert_allclose(F.mse_loss(y_pred, y_true, "none").numpy().mean(1), [36.6666667, 62.3333333])
    assert F.mse_loss(y_pred, y_true, "sum").item() == 297.0


def test_huber_fixture():  # FX-LS-4 / FX-RL-1: TD errors 6.8 and 13.8
    q = t64([5.0, 8.0])
    target = t64([11.8, 21.8])
    np.testing.assert_allclose(F.huber_loss(q, target, "none").numpy(), [6.3, 13.3], rtol=1e-12)
    assert F.huber_loss(q, target).item() == pytest.approx(9.8, rel=1e-12)


def test_huber_and_smooth_l1_both_branches():
    x = t64([0.0, 0.5, -1.5, 3.0])
    y = t64([0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(F.huber_loss(x, y, "none", delta=2.0).numpy(), [0, 0.125, 1.125, 2 * (3 - 1)])
    np.testing.assert_allclose(F.smooth_l1_loss(x, y, "none", beta=2.0).numpy(), [0, 0.0625, 0.5625, 2.0])
    np.testing.assert_allclose(F.smooth_l1_loss(x, y, "none", beta=0.0).numpy(), [0, 0.5, 1.5, 3.0])
    assert F.l1_loss(x, y, "sum").item() == 5.0 and F.l1_loss(x, y).item() == 1.25


def test_reduction_is_checked():
    with pytest.raises(ValueError, match="'none', 'mean' or 'sum'"):
        F.mse_loss(t64([1.0]), t64([2.0]), "avg")


def test_shape_mismatch_is_an_error_not_a_broadcast():
    with pytest.raises(ValueError, match=r"input shape \(4,\) and target shape \(4, 1\) differ"):
        F.mse_loss(t64(np.zeros(4)), t64(np.zeros((4, 1))))


# ----- binary cross-entropy -----
def test_bce_on_probabilities():
    p = np.array([0.9, 0.2, 0.6])
    t = np.array([1.0, 0.0, 1.0])
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(F.binary_cross_entropy(t64(p), t64(t), "none").numpy(), expected, rtol=1e-12)
    w = np.array([1.0, 2.0, 0.5])
    assert F.binary_cross_entropy(t64(p), t64(t), weight=t64(w)).item() == pytest.approx((expected * w).mean())


def test_bce_log_is_floored_at_minus_100_with_finite_gradient():
    p = t64([0.0, 1.0, 0.0, 1.0], requires_grad=True)
    t = t64([1.0, 0.0, 0.0, 1.0])
    loss = F.binary_cross_entropy(p, t, "none")
    np.testing.assert_array_equal(loss.detach().numpy(), [100.0, 100.0, 0.0, 0.0])
    loss.sum().backward()
    assert np.isfinite(p.grad.data).all()


def test_bce_keras_clipping():  # FX-LS-8: predictions clipped to [1e-7, 1 - 1e-7]
    p = t64([0.0, 1.0, 0.5])
    t = t64([1.0, 0.0, 1.0])
    got = F.binary_cross_entropy(p, t, "none", eps=1e-7).numpy()
    np.testing.assert_allclose(got, [-math.log(1e-7), -math.log(1e-7), math.log(2)], rtol=1e-9)


def test_bce_with_logits_matches_sigmoid_bce_and_pos_weight():
    z = np.array([[-2.0, 0.5, 3.0], [1.0, -0.3, 0.0]])
    t = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5]])
    s = 1 / (1 + np.exp(-z))
    plain = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(t64(z), t64(t), "none").numpy(), plain, rtol=1e-12)
    pw = np.array([0.5, 2.0, 3.0])
    w = np.array([1.0, 0.5, 2.0])
    weighted = -w * (pw * t * np.log(s) + (1 - t) * np.log(1 - s))
    got = F.binary_cross_entropy_with_logits(t64(z), t64(t), "sum", weight=t64(w), pos_weight=t64(pw)).item()
    assert got == pytest.approx(weighted.sum(), rel=1e-12)


def test_bce_with_logits_stable_for_huge_logits():
    z = core.tensor([100.0, -100.0, 1e4, -1e4], requires_grad=True)
    t = core.tensor([1.0, 0.0, 0.0, 1.0])
    loss = F.binary_cross_entropy_with_logits(z, t, "none")
    np.testing.assert_allclose(loss.detach().numpy(), [0.0, 0.0, 1e4, 1e4], atol=1e-30)
    loss.sum().backward()
    np.testing.assert_allclose(z.grad.data, [0.0, 0.0, 1.0, -1.0], atol=1e-30)


# ----- cross-entropy and nll -----
def test_categorical_cross_entropy_fixture():  # FX-LS-3, on probabilities (the book computes in float32)
    p = np.array([[0.9, 0.05, 0.05], [0.05, 0.89, 0.06], [0.05, 0.01, 0.94]])
    labels = core.tensor([0, 1, 2])
    assert F.nll_loss(t64(np.log(p)), labels).item() == pytest.approx(0.09458993, rel=1e-6)
    # probability (one-hot) targets through cross_entropy: log_softmax(log p) = log p for normalised p
    assert F.cross_entropy(t64(np.log(p)), t64(np.eye(3))).item() == pytest.approx(0.09458993, rel=1e-6)


def test_cross_entropy_integer_targets_and_reductions():
    z = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]])
    y = np.array([2, 0])
    per = -log_softmax_np(z, 1)[[0, 1], y]
    logits, target = t64(z), core.tensor(y)
    np.testing.assert_allclose(F.cross_entropy(logits, target, "none").numpy(), per, rtol=1e-12)
    assert F.cross_entropy(logits, target).item() == pytest.approx(per.mean(), rel=1e-12)
    assert F.cross_entropy(logits, target, "sum").item() == pytest.approx(per.sum(), rel=1e-12)
    assert F.cross_entropy(t64(z[0]), core.tensor(2)).item() == pytest.approx(per[0], rel=1e-12)  # unbatched


def test_cross_entropy_label_smoothing_by_hand():
    z = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    y = [2, 0]
    eps = 0.1
    logp = log_softmax_np(z, 1)
    # smoothed target: 1 - eps + eps/3 on the label, eps/3 elsewhere
    q = np.full((2, 3), eps / 3)
    q[0, 2] += 1 - eps
    q[1, 0] += 1 - eps
    expected = -(q * logp).sum(1)
    got = F.cross_entropy(t64(z), core.tensor(y), "none", label_smoothing=eps).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # probability targets are smoothed the same way
    onehot = np.eye(3)[y]
    got_p = F.cross_entropy(t64(z), t64(onehot), label_smoothing=eps).item()
    assert got_p == pytest.approx(expected.mean(), rel=1e-12)


def test_cross_entropy_class_weights_and_ignore_index_by_hand():
    # (N, C, d) layout: classes on axis 1
    z = np.random.default_rng(0).standard_normal((2, 3, 2))
    y = np.array([[0, 2], [-100, 1]])
    w = np.array([0.5, 1.0, 2.0])
    logp = log_softmax_np(z, 1)
    terms, weights = [], []
    for n, d in [(0, 0), (0, 1), (1, 1)]:
        terms.append(-w[y[n, d]] * logp[n, y[n, d], d])
        weights.append(w[y[n, d]])
    got = F.cross_entropy(t64(z), core.tensor(y), weight=t64(w))
    assert got.item() == pytest.approx(sum(terms) / sum(weights), rel=1e-12)
    none = F.cross_entropy(t64(z), core.tensor(y), "none", weight=t64(w)).numpy()
    assert none.shape == (2, 2) and none[1, 0] == 0.0
    # with smoothing and weights (PyTorch): (1-eps)·nll + eps/C·Σ_c w_c·(−logp_c), both over Σ w[y]
    eps = 0.2
    smooth = sum(-(w * logp[n, :, d]).sum() for n, d in [(0, 0), (0, 1), (1, 1)])
    expected = (1 - eps) * sum(terms) / sum(weights) + eps / 3 * smooth / sum(weights)
    got = F.cross_entropy(t64(z), core.tensor(y), weight=t64(w), label_smoothing=eps).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_stable_for_huge_logits():
    z = core.tensor([[1e4, 0.0, -1e4]], requires_grad=True)
    loss = F.cross_entropy(z, core.tensor([1]))
    assert loss.item() == pytest.approx(1e4)
    loss.backward()
    np.testing.assert_allclose(z.grad.data, [[1.0, -1.0, 0.0]], atol=1e-6)


def test_nll_loss_weighted():
    logp = np.log(np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]))
    y = np.array([1, 0, 1])
    w = np.array([2.0, 1.0])
    expected = -(w[y] * logp[np.arange(3), y]).sum() / w[y].sum()
    assert F.nll_loss(t64(logp), core.tensor(y), weight=t64(w)).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda z: F.cross_entropy(z, core.tensor([0, 3])), r"class indices must lie in \[0, 3\)"),
    (lambda z: F.cross_entropy(z, core.tensor([0, 1, 2])), r"target must have shape \(2,\)"),
    (lambda z: F.cross_entropy(z, t64(np.ones((2, 2)))), r"must have the input's shape \(2, 3\)"),
    (lambda z: F.cross_entropy(z, core.tensor([0, 1]), label_smoothing=1.5), "label_smoothing"),
    (lambda z: F.nll_loss(z, t64([0.0, 1.0])), "integer class indices"),
])
def test_cross_entropy_bad_input(call, message):
    z = t64(np.zeros((2, 3)))
    with pytest.raises((ValueError, TypeError), match=message):
        call(z)


# ----- Gaussian KL -----
def test_gaussian_kl_fixture():  # FX-LS-6
    mu = t64([[0.0], [1.0], [0.0]])
    logvar = t64([[0.0], [0.0], [math.log(2.0)]])
    np.testing.assert_allclose(F.gaussian_kl(mu, logvar, "none").numpy(), [0.0, 0.5, 0.1534264097], rtol=1e-9)


def test_gaussian_kl_sums_latent_dims_then_averages_batch():
    rng = np.random.default_rng(0)
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    per = (-0.5 * (1 + logvar - mu ** 2 - np.exp(logvar))).sum(1)
    assert F.gaussian_kl(t64(mu), t64(logvar)).item() == pytest.approx(per.mean(), rel=1e-12)
    assert F.gaussian_kl(t64(mu), t64(logvar), "sum").item() == pytest.approx(per.sum(), rel=1e-12)


# ----- gradients, first and second order -----
def _rand(shape, seed, low=-2.0, high=2.0):
    return t64(np.random.default_rng(seed).uniform(low, high, shape), requires_grad=True)


LOSSES = {
    "mse": lambda: (lambda x, y: F.mse_loss(x, y), [_rand((3, 2), 0), _rand((3, 2), 1)]),
    "l1": lambda: (lambda x: F.l1_loss(x, t64(np.zeros((3, 2))), "sum"), [_rand((3, 2), 2)]),
    "huber": lambda: (lambda x: F.huber_loss(x, t64(np.zeros(6)), "none", delta=1.0),
                      [t64([-2.5, -0.7, -0.2, 0.3, 0.9, 1.8], requires_grad=True)]),
    "smooth_l1": lambda: (lambda x: F.smooth_l1_loss(x, t64(np.zeros(4)), beta=0.5),
                          [t64([-1.0, -0.2, 0.1, 0.8], requires_grad=True)]),
    "bce": lambda: (lambda p, t: F.binary_cross_entropy(p, t), [_rand((4,), 3, 0.1, 0.9), _rand((4,), 4, 0, 1)]),
    "bce_logits": lambda: (lambda z, t: F.binary_cross_entropy_with_logits(z, t, pos_weight=t64([2.0, 0.5])),
                           [_rand((3, 2), 5), _rand((3, 2), 6, 0, 1)]),
    "cross_entropy": lambda: (lambda z: F.cross_entropy(z, core.tensor([2, 0, 1]), weight=t64([1.0, 2.0, 0.5]),
                                                        label_smoothing=0.1), [_rand((3, 3), 7)]),
    "cross_entropy_probs": lambda: (lambda z, q: F.cross_entropy(z, q, "sum"),
                                    [_rand((2, 3), 8), _rand((2, 3), 9, 0, 1)]),
    "nll": lambda: (lambda lp: F.nll_loss(lp, core.tensor([1, 0])), [_rand((2, 2), 10)]),
    "gaussian_kl": lambda: (lambda m, lv: F.gaussian_kl(m, lv), [_rand((2, 3), 11), _rand((2, 3), 12)]),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck(name):
    fn, inputs = LOSSES[name]()
    assert core.gradcheck(fn, inputs)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradgradcheck(name):
    fn, inputs = LOSSES[name]()
    assert core.gradgradcheck(fn, inputs)


def test_float32_stays_float32():
    x = core.tensor(np.ones((2, 3), np.float32))
    for loss in (F.mse_loss(x, x * 0), F.cross_entropy(x, core.tensor([0, 1])), F.gaussian_kl(x, x),
                 F.binary_cross_entropy(x * 0.5, x), F.huber_loss(x, x * 2)):
        assert loss.dtype == np.float32


@pytest.mark.gpu
def test_cuda_losses_match_cpu(gpu_device):
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((5, 3)).astype(np.float32), rng.integers(0, 3, 5)
    t = rng.standard_normal((5, 3)).astype(np.float32)
    for loss in (lambda a, b, c: F.cross_entropy(a, c, label_smoothing=0.1), lambda a, b, c: F.huber_loss(a, b),
                 lambda a, b, c: F.mse_loss(a, b)):
        cpu = core.tensor(z, requires_grad=True)
        gpu = core.tensor(z, device=gpu_device, requires_grad=True)
        a = loss(cpu, core.tensor(t), core.tensor(y))
        b = loss(gpu, core.tensor(t, device=gpu_device), core.tensor(y, device=gpu_device))
        a.backward()
        b.backward()
        assert b.item() == pytest.approx(a.item(), rel=1e-5)
        np.testing.assert_allclose(gpu.grad.data.get(), cpu.grad.data, rtol=1e-5, atol=1e-6)
