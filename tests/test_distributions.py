"""Categorical and Normal: log_prob and entropy against their formulas, sampling frequencies with a
seed, reparameterised gradients."""
import math

import numpy as np
import pytest

import core
from core.distributions import Categorical, Normal


def t64(a, requires_grad=False):
    return core.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


LOGITS = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])


def softmax_np(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ----- Categorical -----
def test_categorical_normalises_logits_and_probs():
    d = Categorical(logits=t64(LOGITS))
    p = softmax_np(LOGITS)
    np.testing.assert_allclose(d.probs.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(d.logits.numpy(), np.log(p), rtol=1e-12)
    from_probs = Categorical(probs=t64(p * 3.0))  # unnormalised probabilities are normalised
    np.testing.assert_allclose(from_probs.probs.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(from_probs.logits.numpy(), np.log(p), rtol=1e-12)
    assert d.batch_shape == (2,) and d.num_classes == 3


def test_categorical_log_prob_entropy_mode():
    d = Categorical(logits=t64(LOGITS))
    p = softmax_np(LOGITS)
    np.testing.assert_allclose(d.log_prob(core.tensor([1, 2])).numpy(), np.log([p[0, 1], p[1, 2]]), rtol=1e-12)
    # values broadcast against the batch: (sample, batch)
    np.testing.assert_allclose(d.log_prob(core.tensor([[0, 0], [2, 1]])).numpy(),
                               np.log([[p[0, 0], p[1, 0]], [p[0, 2], p[1, 1]]]), rtol=1e-12)
    np.testing.assert_allclose(d.entropy().numpy(), -(p * np.log(p)).sum(-1), rtol=1e-12)
    assert d.mode.tolist() == [1, 2]


def test_categorical_masked_logits_have_finite_entropy():
    d = Categorical(logits=t64([[0.0, -np.inf, 0.0]]))
    assert d.entropy().item() == pytest.approx(math.log(2))
    assert d.log_prob(core.tensor([1])).item() == -np.inf
    z = t64([[0.0, -np.inf, 0.0]], requires_grad=True)
    masked = Categorical(logits=z)
    assert masked.log_prob(core.tensor([0])).item() == pytest.approx(-math.log(2))
    (masked.log_prob(core.tensor([2])) + masked.entropy()).sum().backward()
    np.testing.assert_allclose(z.grad.data, [[-0.5, 0.0, 0.5]], atol=1e-12)
    from_probs = Categorical(probs=t64([0.5, 0.0, 0.5]))
    assert from_probs.entropy().item() == pytest.approx(math.log(2))


def test_categorical_sample_frequencies_and_shapes():
    probs = np.array([0.2, 0.5, 0.3])
    d = Categorical(probs=t64(probs))
    draws = d.sample((20_000,), generator=core.Generator(0))
    assert draws.shape == (20_000,) and draws.dtype == np.int64
    freq = np.bincount(draws.numpy(), minlength=3) / 20_000
    np.testing.assert_allclose(freq, probs, atol=0.012)  # > 3 standard errors
    batched = Categorical(logits=t64(LOGITS))
    assert batched.sample(generator=core.Generator(0)).shape == (2,)
    assert batched.sample((4, 5), generator=core.Generator(0)).shape == (4, 5, 2)
    many = batched.sample((10_000,), generator=core.Generator(1)).numpy()
    np.testing.assert_allclose(np.bincount(many[:, 1], minlength=3) / 10_000, softmax_np(LOGITS)[1], atol=0.015)


def test_categorical_sampling_is_reproducible_with_a_seed():
    d = Categorical(logits=t64(LOGITS))
    a = d.sample((50,), generator=core.Generator(42)).numpy()
    b = d.sample((50,), generator=core.Generator(42)).numpy()
    np.testing.assert_array_equal(a, b)
    core.manual_seed(3)
    c = d.sample((50,)).numpy()
    core.manual_seed(3)
    np.testing.assert_array_equal(c, d.sample((50,)).numpy())


def test_categorical_gradients():
    actions = core.tensor([2, 0])
    assert core.gradcheck(lambda z: Categorical(logits=z).log_prob(actions), [t64(LOGITS, requires_grad=True)])
    assert core.gradcheck(lambda z: Categorical(logits=z).entropy(), [t64(LOGITS, requires_grad=True)])
    assert core.gradgradcheck(lambda z: Categorical(logits=z).entropy(), [t64(LOGITS, requires_grad=True)])
    # the policy-gradient identity: d log p(a) / d logits = onehot(a) - p
    z = t64(LOGITS, requires_grad=True)
    Categorical(logits=z).log_prob(actions).sum().backward()
    np.testing.assert_allclose(z.grad.data, np.eye(3)[[2, 0]] - softmax_np(LOGITS), rtol=1e-12)


def test_categorical_bad_input():
    with pytest.raises(ValueError, match="exactly one of logits and probs"):
        Categorical()
    with pytest.raises(TypeError, match="integer class indices"):
        Categorical(logits=t64(LOGITS)).log_prob(t64([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        Categorical(logits=t64(LOGITS)).log_prob(core.tensor([0, 3]))


# ----- Normal -----
def test_normal_log_prob_entropy_moments():
    loc, scale = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.5, 2.0])
    d = Normal(t64(loc), t64(scale))
    x = np.array([0.3, 1.2, 1.0])
    expected = -((x - loc) ** 2) / (2 * scale ** 2) - np.log(scale) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(d.log_prob(t64(x)).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(d.entropy().numpy(), 0.5 + 0.5 * np.log(2 * np.pi) + np.log(scale), rtol=1e-12)
    np.testing.assert_array_equal(d.mean.numpy(), loc)
    np.testing.assert_array_equal(d.stddev.numpy(), scale)
    np.testing.assert_array_equal(d.variance.numpy(), scale ** 2)


def test_normal_diagonal_log_prob_is_summed_by_the_caller():
    loc, scale = np.zeros((2, 3)), np.full(3, 2.0)  # a state-independent scale, broadcast over the batch
    d = Normal(t64(loc), t64(scale))
    x = np.ones((2, 3))
    joint = d.log_prob(t64(x)).sum(-1).numpy()
    expected = -0.5 * (x / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(joint, expected.sum(-1), rtol=1e-12)
    assert d.entropy().shape == (2, 3)


def test_normal_sample_statistics_with_a_seed():
    d = Normal(t64([1.0, -3.0]), t64([0.5, 2.0]))
    x = d.sample((20_000,), generator=core.Generator(0)).numpy()
    assert x.shape == (20_000, 2)
    np.testing.assert_allclose(x.mean(0), [1.0, -3.0], atol=0.05)
    np.testing.assert_allclose(x.std(0), [0.5, 2.0], rtol=0.03)
    assert not d.sample().requires_grad


def test_normal_rsample_is_differentiable():
    loc = t64([0.5, -1.0], requires_grad=True)
    scale = t64([2.0, 0.1], requires_grad=True)
    x = Normal(loc, scale).rsample(generator=core.Generator(5))
    eps = (x.detach().numpy() - loc.data) / scale.data  # the noise that was drawn
    x.sum().backward()
    np.testing.assert_allclose(loc.grad.data, [1.0, 1.0])
    np.testing.assert_allclose(scale.grad.data, eps, rtol=1e-12)
    again = Normal(loc, scale).rsample(generator=core.Generator(5))  # same seed, same draw
    np.testing.assert_array_equal(again.detach().numpy(), x.detach().numpy())


def test_normal_log_prob_gradients():
    x = t64([0.3, -0.4])
    inputs = [t64([0.1, 0.2], requires_grad=True), t64([0.7, 1.3], requires_grad=True)]
    assert core.gradcheck(lambda m, s: Normal(m, s).log_prob(x), inputs)
    assert core.gradgradcheck(lambda m, s: Normal(m, s).log_prob(x), inputs)


def test_normal_float32_and_python_scalars():
    d = Normal(core.zeros(3), 1.0)
    assert d.log_prob(core.zeros(3)).dtype == np.float32
    assert d.rsample((2,)).shape == (2, 3)
