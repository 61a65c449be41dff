"""Fused nodes against the composed forms they must equal, in value and gradient (float64), at kinks and
ties too: core.functional.fused_mlp against mlp, fused_categorical_ppo_loss against ppo_loss."""
import numpy as np
import pytest

import core
import core.functional as F


def t64(array):
    return core.tensor(array, dtype=core.float64, requires_grad=True)


def mlp_params(rng, widths):
    """(weight₁, bias₁, ...) of Linear layers of these widths, float64 leaves."""
    return [t for fan_in, fan_out in zip(widths, widths[1:])
            for t in (t64(rng.standard_normal((fan_out, fan_in))), t64(rng.standard_normal(fan_out)))]


def gradients(fn, inputs):
    """fn(*inputs)'s value and the gradients of a sum of its cubes (every path matters) w.r.t. the inputs."""
    for t in inputs:
        t.grad = None
    y = fn(*inputs)
    (y * y * y).sum().backward()
    return [y.data] + [t.grad.data for t in inputs]


@pytest.mark.parametrize("activate_output", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_mlp_equals_the_composed_layers_bitwise(activation, activate_output):
    rng = np.random.default_rng(0)
    x, params = t64(rng.standard_normal((6, 4))), mlp_params(rng, [4, 5, 3, 2])
    x.data[0] = 0.0
    params[1].data[:2] = 0.0  # relu's kink: a zero input row meets zero biases, pre-activations exactly 0
    fused = gradients(lambda x, *ps: F.fused_mlp(x, ps, activation, activate_output), [x, *params])
    composed = gradients(lambda x, *ps: F.mlp(x, ps, activation, activate_output), [x, *params])
    for got, expected in zip(fused, composed):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_mlp_gradcheck(activation):
    rng = np.random.default_rng(1)
    x, params = t64(rng.standard_normal((5, 3))), mlp_params(rng, [3, 4, 2])
    assert core.gradcheck(lambda x, *ps: F.fused_mlp(x, ps, activation, activate_output=True), [x, *params])


def test_mlp_bad_input_and_no_second_order():
    rng = np.random.default_rng(2)
    x, params = t64(rng.standard_normal((5, 3))), mlp_params(rng, [3, 4, 2])
    with pytest.raises(ValueError, match="mlp: unknown activation 'elu'; allowed: tanh, relu"):
        F.fused_mlp(x, params, "elu")
    with pytest.raises(ValueError, match=r"mlp: params must be weight, bias pairs .*, got 3 tensors"):
        F.mlp(x, params[:3])
    with pytest.raises(ValueError, match=r"mlp: layer 1 gets 4 features \(shape \(5, 4\)\) but its weight has shape "
                                         r"\(2, 3\)"):
        F.fused_mlp(x, params[:2] + mlp_params(rng, [3, 2]))
    (g,) = core.grad(F.mlp(x, params).sum(), [x], create_graph=True)  # the composed form has them
    assert g.requires_grad
    with pytest.raises(RuntimeError, match="fused_mlp has no second-order gradients; use core.functional.mlp"):
        core.grad(F.fused_mlp(x, params).sum(), [x], create_graph=True)


def chosen_logprobs(logits, actions):
    """log softmax(logits) at `actions`, as both forms compute it."""
    return F.log_softmax(core.tensor(logits), -1).data[np.arange(len(actions)), actions]


def ppo_batch(rng, n=12, classes=3):
    """Logits, values and a batch's arrays, with ties: row 0's ratio is exactly 1 (the policy has not
    changed), row 1's advantage is 0."""
    logits, values = rng.standard_normal((n, classes)), rng.standard_normal(n)
    actions = rng.integers(0, classes, n)
    logprobs = chosen_logprobs(logits, actions)
    old_logprobs = logprobs - rng.uniform(-0.5, 0.5, n)  # ratios from about 0.6 to 1.6: both regimes
    old_logprobs[0] = logprobs[0]
    advantages, returns, old_values = rng.standard_normal(n), rng.standard_normal(n), values + rng.normal(0, 0.2, n)
    advantages[1] = 0.0
    return logits, values, dict(actions=actions, old_logprobs=old_logprobs, advantages=advantages, returns=returns,
                                old_values=old_values)


def composed_categorical_ppo_loss(logits, values, actions, old_logprobs, advantages, returns, clip_range, **options):
    """F.ppo_loss of the categorical policy over `logits`, built from core ops."""
    log_probs = F.log_softmax(logits, -1)
    logprobs = core.where(actions[:, None] == np.arange(logits.shape[-1]), log_probs, 0.0).sum(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return F.ppo_loss(logprobs, entropy, values, old_logprobs, advantages, returns, clip_range, **options)


@pytest.mark.parametrize("value_clipping", [False, True])
@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
@pytest.mark.parametrize("bound", [1, -1])
def test_fused_categorical_ppo_loss_equals_the_composed_loss(bound, ent_coef, value_clipping):
    rng = np.random.default_rng(3)
    logits, values, batch = ppo_batch(rng)
    logprobs, old = chosen_logprobs(logits, batch["actions"]), batch["old_logprobs"]
    old[2] = logprobs[2] - np.log(1 + 0.2 * bound)  # row 2's ratio near 1 ± 0.2 ...
    clip_range = bound * (np.exp(logprobs[2] - old[2]) - 1)  # ... and exactly on the bound 1 ± clip_range
    clip_range_vf = abs(values[3] - batch["old_values"][3]) if value_clipping else None  # row 3 on its bound
    options = dict(vf_coef=0.7, ent_coef=ent_coef, clip_range_vf=clip_range_vf)
    results = []
    for loss_fn in (F.fused_categorical_ppo_loss, composed_categorical_ppo_loss):
        logits_t, values_t = t64(logits), t64(values)
        loss, parts = loss_fn(logits_t, values_t, clip_range=clip_range, **batch, **options)
        loss.backward()
        results.append((loss.item(), parts, logits_t.grad.data, values_t.grad.data))
    (fused, fused_parts, *fused_grads), (composed, composed_parts, *composed_grads) = results
    r = composed_parts["ratio"]
    assert r[0] == 1.0 and r[2] == 1 + bound * clip_range and np.array_equal(fused_parts["ratio"], r)
    assert ((r < 1 - clip_range) | (r > 1 + clip_range)).any() and (np.abs(r - 1) < clip_range).any()
    assert fused == pytest.approx(composed, rel=1e-12)
    for name in composed_parts:
        np.testing.assert_allclose(fused_parts[name], composed_parts[name], rtol=1e-12)
    for got, expected in zip(fused_grads, composed_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)
    assert composed_grads[0][1].any() == bool(ent_coef)  # advantage 0: only the entropy moves row 1's logits


def test_fused_categorical_ppo_loss_gradcheck_and_no_second_order():
    logits, values, batch = ppo_batch(np.random.default_rng(4))
    logits_t, values_t = t64(logits), t64(values)

    def loss(logits, values):
        return F.fused_categorical_ppo_loss(logits, values, clip_range=0.2, ent_coef=0.01, clip_range_vf=0.1,
                                            **batch)[0]
    assert core.gradcheck(loss, [logits_t, values_t])
    with pytest.raises(RuntimeError, match="fused_categorical_ppo_loss has no second-order gradients"):
        core.grad(loss(logits_t, values_t), [logits_t], create_graph=True)
    with pytest.raises(ValueError, match=r"ppo_loss: clip_range_vf needs old_values"):
        F.fused_categorical_ppo_loss(logits_t, values_t, batch["actions"], batch["old_logprobs"], batch["advantages"],
                                     batch["returns"], 0.2, clip_range_vf=0.1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_against_zeros_is_bitwise_numpys_maximum_with_0(dtype):
    """relu_array compares with a shared array of zeros (4x faster on numpy than a scalar 0): the same bits
    at every special value (signed zeros, NaN payloads, infinities, subnormals), in place, strided,
    larger than the shared buffer ever was, and beyond its cap (the scalar form)."""
    from core.ops import _util
    special = np.array([-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, -1.5, 2.5,
                        np.finfo(dtype).smallest_subnormal, -np.finfo(dtype).smallest_subnormal], dtype)
    rng = np.random.default_rng(0)
    for x in (special, np.tile(special, (7, 3)), rng.standard_normal((300, 301)).astype(dtype)[:, ::2],
              rng.standard_normal(_util._ZEROS_CAP + 1).astype(dtype)):
        expected = np.maximum(x, 0)
        np.testing.assert_array_equal(_util.relu_array(x).view(np.uint8), expected.view(np.uint8))
        inplace = x.copy()
        assert _util.relu_array(inplace, out=inplace) is inplace
        np.testing.assert_array_equal(inplace.view(np.uint8), expected.view(np.uint8))
    assert not _util._ZEROS[np.dtype(dtype)].flags.writeable  # shared: no caller may write into it


@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_mlp_q_loss_equals_the_composed_loss_bitwise(activation, loss):
    """F.fused_mlp_q_loss against mlp, indexing by action and huber_loss / mse_loss, value and gradients,
    at Huber's kinks (|Q − y| = delta exactly, Q = y) and relu's (zero pre-activations)."""
    rng = np.random.default_rng(2)
    x, params = t64(rng.standard_normal((7, 4))), mlp_params(rng, [4, 5, 3])
    x.data[0] = 0.0
    params[1].data[:2] = 0.0
    actions = rng.integers(0, 3, 7)
    delta = 0.75
    q = F.mlp(x, params, activation).data[np.arange(7), actions]
    targets = q + rng.choice([-2.0, -0.3, 0.4, 3.0], 7)
    targets[:3] = q[:3] + np.array([delta, -delta, 0.0])  # exactly on the kinks

    def fused(x, *ps):
        value, q_taken = F.fused_mlp_q_loss(x, ps, actions, targets, activation, loss, delta)
        np.testing.assert_array_equal(q_taken, F.mlp(x, ps, activation).data[np.arange(7), actions])
        return value

    def composed(x, *ps):
        q_taken = F.mlp(x, ps, activation)[np.arange(7), actions]
        goal = core.tensor(targets, dtype=core.float64)
        return F.huber_loss(q_taken, goal, delta=delta) if loss == "huber" else F.mse_loss(q_taken, goal)

    for got, expected in zip(gradients(fused, [x, *params]), gradients(composed, [x, *params])):
        np.testing.assert_array_equal(got, expected)


def test_fused_mlp_q_loss_rejects_bad_input_and_second_order():
    rng = np.random.default_rng(3)
    x, params = t64(rng.standard_normal((4, 3))), mlp_params(rng, [3, 5, 2])
    actions, targets = np.array([0, 1, 1, 0]), np.zeros(4)
    with pytest.raises(ValueError, match="unknown loss 'l1'; allowed: huber, mse"):
        F.fused_mlp_q_loss(x, params, actions, targets, loss="l1")
    with pytest.raises(ValueError, match=r"must have shape \(4,\)"):
        F.fused_mlp_q_loss(x, params, actions[:3], targets)
    with pytest.raises(ValueError, match="delta must be > 0"):
        F.fused_mlp_q_loss(x, params, actions, targets, delta=0.0)
    value, _ = F.fused_mlp_q_loss(x, params, actions, targets)
    with pytest.raises(RuntimeError, match="no second-order gradients"):
        core.grad(value, params[0], create_graph=True)
