"""Seedable random numbers: same seed, same numbers; correct distributions."""
import numpy as np

import core


def test_manual_seed_reproduces_every_sampler():
    def draw():
        core.manual_seed(123)
        return [core.randn(3).numpy(), core.rand(2, 2).numpy(), core.randint(0, 10, (5,)).numpy(),
                core.randperm(6).numpy(), core.bernoulli(core.full((4,), 0.5)).numpy(),
                core.categorical(core.zeros(3, 4)).numpy()]
    for a, b in zip(draw(), draw()):
        np.testing.assert_array_equal(a, b)


def test_generators_are_independent_and_restorable():
    g = core.Generator(7)
    first = g.normal((4,)).numpy()
    state = g.get_state()
    second = g.normal((4,)).numpy()
    g.set_state(state)
    np.testing.assert_array_equal(g.normal((4,)).numpy(), second)
    np.testing.assert_array_equal(core.Generator(7).normal((4,)).numpy(), first)
    assert core.randn(4, generator=core.Generator(7)).dtype == np.float32


def test_distribution_moments():
    g = core.Generator(0)
    x = g.normal((200_000,), mean=1.0, std=2.0).numpy()
    assert abs(x.mean() - 1.0) < 0.02 and abs(x.std() - 2.0) < 0.02
    u = g.uniform((200_000,), -1.0, 3.0).numpy()
    assert u.min() >= -1.0 and u.max() < 3.0 and abs(u.mean() - 1.0) < 0.02
    b = g.bernoulli(0.3, shape=(200_000,)).numpy()
    assert abs(b.mean() - 0.3) < 0.01
    assert sorted(g.permutation(10).tolist()) == list(range(10))


def test_categorical_frequencies_match_softmax():
    logits = core.tensor([[0.0, np.log(2.0), np.log(7.0)]])
    samples = core.Generator(1).categorical(logits.expand(100_000, 3)).numpy()
    freq = np.bincount(samples, minlength=3) / samples.size
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.7], atol=0.01)
    many = core.Generator(1).categorical(logits, num_samples=50_000).numpy()
    assert many.shape == (1, 50_000)
    np.testing.assert_allclose(np.bincount(many[0], minlength=3) / 50_000, [0.1, 0.2, 0.7], atol=0.01)


def test_categorical_never_picks_zero_probability_classes():
    logits = core.tensor([[-np.inf, 0.0, -np.inf]])
    assert set(core.categorical(logits.expand(1000, 3)).numpy().tolist()) == {1}
