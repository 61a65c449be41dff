"""Recurrent layers against a hand-written numpy step (PyTorch's equations), gradcheck, shapes, Keras
parameter counts and initialisation, and the errors bad input gets."""
import math

import numpy as np
import pytest

import core
from core import nn

R = np.random.default_rng(3)
KINDS = {"rnn": nn.SimpleRNN, "lstm": nn.LSTM, "gru": nn.GRU}


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference(kind, layer, x, h, c=None):
    """Time-major numpy unroll: (outputs (T, N, H), final h, final c)."""
    w_ih, w_hh = layer.weight_ih.detach().numpy(), layer.weight_hh.detach().numpy()
    b_ih = 0 if layer.bias_ih is None else layer.bias_ih.detach().numpy()
    b_hh = 0 if layer.bias_hh is None else layer.bias_hh.detach().numpy()
    n = layer.hidden_size
    outputs = []
    for x_t in x:
        gi, gh = x_t @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if kind == "rnn":
            h = np.tanh(gi + gh)
        elif kind == "lstm":
            i, f, g, o = np.split(gi + gh, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        else:
            r = sigmoid(gi[:, :n] + gh[:, :n])
            z = sigmoid(gi[:, n:2 * n] + gh[:, n:2 * n])
            candidate = np.tanh(gi[:, 2 * n:] + r * gh[:, 2 * n:])
            h = (1 - z) * candidate + z * h
        outputs.append(h)
    return np.stack(outputs), h, c


def randomize_biases(layer):
    """Non-zero biases everywhere, so a bias in the wrong place cannot go unnoticed."""
    with core.no_grad():
        for p in (layer.bias_ih, layer.bias_hh):
            if p is not None:
                p.copy_(R.uniform(-0.5, 0.5, p.shape))


def state_of(kind, h, c):
    return (core.tensor(h), core.tensor(c)) if kind == "lstm" else core.tensor(h)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("initial_state", [False, True])
@pytest.mark.parametrize("init", ["torch", "keras"])
def test_matches_numpy_reference(kind, batch_first, initial_state, init):
    layer = KINDS[kind](3, 5, batch_first=batch_first, return_state=True, init=init, dtype=core.float64)
    randomize_biases(layer)
    x = R.normal(size=(6, 4, 3))  # time-major
    h0 = R.normal(size=(4, 5)) if initial_state else np.zeros((4, 5))
    c0 = R.normal(size=(4, 5)) if initial_state else np.zeros((4, 5))
    inp = core.tensor(x.transpose(1, 0, 2) if batch_first else x)
    out, state = layer(inp, state_of(kind, h0, c0) if initial_state else None)
    expected, h, c = reference(kind, layer, x, h0, c0)
    got = out.detach().numpy()
    np.testing.assert_allclose(got.transpose(1, 0, 2) if batch_first else got, expected, rtol=1e-10, atol=1e-12)
    if kind == "lstm":
        np.testing.assert_allclose(state[0].detach().numpy(), h, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state[1].detach().numpy(), c, rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(state.detach().numpy(), h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_through_time(kind):
    layer = KINDS[kind](2, 3, batch_first=True, dtype=core.float64)
    randomize_biases(layer)
    x = core.tensor(R.normal(size=(2, 9, 2)), requires_grad=True)  # 9 steps: the unbind tree splits 9 -> 4 + 5
    h0 = core.tensor(R.normal(size=(2, 3)), requires_grad=True)
    params = list(layer.parameters())
    if kind == "lstm":
        c0 = core.tensor(R.normal(size=(2, 3)), requires_grad=True)
        assert core.gradcheck(lambda x, h, c, *ps: layer(x, (h, c)), [x, h0, c0, *params])
    else:
        assert core.gradcheck(lambda x, h, *ps: layer(x, h), [x, h0, *params])


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_final_output_and_state(kind):
    layer = KINDS[kind](2, 2, return_sequences=False, return_state=True, dtype=core.float64)
    x = core.tensor(R.normal(size=(5, 2, 2)), requires_grad=True)
    assert core.gradcheck(lambda x, *ps: core.cat([layer(x)[0], layer(x)[1][-1] if kind == "lstm" else layer(x)[1]]),
                          [x, *layer.parameters()])


@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes(kind):
    cls = KINDS[kind]
    x = core.randn(7, 4, 3)
    assert cls(3, 5)(x).shape == (7, 4, 5)
    assert cls(3, 5, return_sequences=False)(x).shape == (4, 5)
    assert cls(3, 5, batch_first=True)(x).shape == (7, 4, 5)  # (N=7, T=4)
    out, state = cls(3, 5, return_sequences=False, return_state=True)(x)
    if kind == "lstm":
        assert out.shape == state[0].shape == state[1].shape == (4, 5)
        np.testing.assert_array_equal(out.detach().numpy(), state[0].detach().numpy())
    else:
        assert out.shape == state.shape == (4, 5)
        np.testing.assert_array_equal(out.detach().numpy(), state.detach().numpy())


def test_no_grad_unroll_matches_and_records_nothing():
    layer = nn.LSTM(3, 4)
    x = core.randn(5, 2, 3)
    with core.no_grad():
        out = layer(x)
    assert not out.requires_grad and out._ctx is None
    np.testing.assert_allclose(out.detach().numpy(), layer(x).detach().numpy(), rtol=1e-6)


def test_bidirectional_runs_a_second_layer_on_the_reversed_sequence():
    bi = nn.Bidirectional(nn.GRU(3, 4, batch_first=True, dtype=core.float64))
    x = core.tensor(R.normal(size=(2, 6, 3)))
    out = bi(x).detach().numpy()
    assert out.shape == (2, 6, 8)
    forward = bi.forward_layer(x).detach().numpy()
    backward = bi.backward_layer(core.tensor(x.numpy()[:, ::-1].copy())).detach().numpy()[:, ::-1]
    np.testing.assert_allclose(out, np.concatenate([forward, backward], -1), rtol=1e-12)
    assert not np.allclose(bi.forward_layer.weight_ih.detach().numpy(), bi.backward_layer.weight_ih.detach().numpy())
    assert bi.num_parameters() == 2 * nn.GRU(3, 4).num_parameters()
    last = nn.Bidirectional(nn.LSTM(3, 4, return_sequences=False, return_state=True), merge_mode="sum")
    out, (state_f, state_b) = last(core.randn(6, 2, 3))
    assert out.shape == (2, 4) and state_f[1].shape == state_b[0].shape == (2, 4)
    small = nn.Bidirectional(nn.SimpleRNN(2, 2, dtype=core.float64), merge_mode="ave")
    xg = core.tensor(R.normal(size=(3, 2, 2)), requires_grad=True)
    assert core.gradcheck(lambda x, *ps: small(x), [xg, *small.parameters()])


def test_parameter_counts_follow_torch_and_keras():
    assert nn.LSTM(28, 100).num_parameters() == 4 * (100 * 128 + 2 * 100)  # PyTorch: two bias vectors
    assert nn.LSTM(28, 100, init="keras").num_parameters() == 51_600  # Keras: one (FX-PC-23's encoder LSTM)
    assert nn.SimpleRNN(100, 64, init="keras").num_parameters() == 64 * 164 + 64
    assert nn.GRU(10, 8).num_parameters() == nn.GRU(10, 8, init="keras").num_parameters() == 480  # FX-PC-9
    assert nn.LSTM(4, 3, bias=False).num_parameters() == 4 * 3 * 7
    assert [n for n, _ in nn.LSTM(4, 3, recurrent_bias=False).named_parameters()] == ["weight_ih", "weight_hh",
                                                                                      "bias_ih"]


def test_initialisation():
    torch_lstm = nn.LSTM(10, 16)
    for p in torch_lstm.parameters():
        assert np.abs(p.detach().numpy()).max() <= 1 / math.sqrt(16)
    keras = nn.LSTM(10, 16, init="keras")
    w_hh = keras.weight_hh.detach().numpy().astype(np.float64)  # (64, 16): orthonormal columns
    np.testing.assert_allclose(w_hh.T @ w_hh, np.eye(16), atol=1e-5)
    assert np.abs(keras.weight_ih.detach().numpy()).max() <= math.sqrt(6 / (10 + 64))
    assert keras.bias_ih.detach().numpy().tolist() == [0] * 16 + [1] * 16 + [0] * 32 and keras.bias_hh is None
    gru = nn.GRU(10, 16, init="keras")
    assert not gru.bias_ih.detach().numpy().any() and not gru.bias_hh.detach().numpy().any()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_learns_to_add_up_a_sequence(kind):
    """Regress the (scaled) sum of 8 inputs from the last state: predicting 0 scores 1.0; memory gets near 0."""
    core.manual_seed(0)
    layer, head = KINDS[kind](1, 8, return_sequences=False), nn.Linear(8, 1)
    params = list(layer.parameters()) + list(head.parameters())
    rng = np.random.default_rng(0)

    def batch(n):
        x = rng.normal(size=(8, n, 1)).astype(np.float32)
        return core.tensor(x), core.tensor(x.sum(0) / np.sqrt(8), dtype=core.float32)

    for _ in range(200):
        x, target = batch(32)
        ((head(layer(x)) - target) ** 2).mean().backward()
        with core.no_grad():
            for p in params:
                p.sub_(p.grad * 0.1)
                p.grad = None
    x, target = batch(256)
    with core.no_grad():
        assert ((head(layer(x)) - target) ** 2).mean().item() < 0.2


def test_bad_input_says_what_was_expected():
    with pytest.raises(ValueError, match=r"LSTM\(3, 5\) expected input of shape \(N, T, 3\), got \(4, 3\)"):
        nn.LSTM(3, 5, batch_first=True)(core.randn(4, 3))
    with pytest.raises(ValueError, match=r"GRU\(3, 5\) expected input of shape \(T, N, 3\), got \(2, 4, 6\)"):
        nn.GRU(3, 5)(core.randn(2, 4, 6))
    with pytest.raises(ValueError, match=r"initial state h must have shape \(N, hidden_size\) = \(4, 5\), got "
                                         r"\(1, 4, 5\)"):
        nn.SimpleRNN(3, 5)(core.randn(2, 4, 3), core.zeros(1, 4, 5))
    with pytest.raises(ValueError, match=r"LSTM initial state must be a pair \(h, c\)"):
        nn.LSTM(3, 5)(core.randn(2, 4, 3), core.zeros(4, 5))
    with pytest.raises(ValueError, match="initial state c must have shape"):
        nn.LSTM(3, 5)(core.randn(2, 4, 3), (core.zeros(4, 5), core.zeros(4, 6)))
    with pytest.raises(ValueError, match="empty sequence"):
        nn.GRU(3, 5)(core.randn(0, 4, 3))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        nn.SimpleRNN(3, 5, nonlinearity="sigmoid")
