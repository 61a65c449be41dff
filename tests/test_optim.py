"""Optimizers against their update formulas written out in numpy, step by step; parameter groups,
missing gradients, state dicts, parameter ownership, optimizers from config names, one optimizer shared
by processes; learning-rate schedules; gradient clipping."""
import math
import multiprocessing
import pickle

import numpy as np
import pytest

import core
from core import nn, optim
from core.optim import lr_scheduler

SHAPES = [(3, 2), (4,), (), (2, 1, 3)]


# ----- reference updates: one parameter, numpy, PyTorch's formulas as documented -----
def ref_sgd(p, g, s, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    g = g + weight_decay * p
    if momentum:
        s["buf"] = g.copy() if s["t"] == 1 else momentum * s["buf"] + (1 - dampening) * g
        g = g + momentum * s["buf"] if nesterov else s["buf"]
    return p - lr * g


def ref_rmsprop(p, g, s, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    g = g + weight_decay * p
    s["v"] = alpha * s.get("v", 0) + (1 - alpha) * g * g
    if centered:
        s["gbar"] = alpha * s.get("gbar", 0) + (1 - alpha) * g
        denom = np.sqrt(s["v"] - s["gbar"] ** 2) + eps
    else:
        denom = np.sqrt(s["v"]) + eps
    if momentum:
        s["buf"] = momentum * s.get("buf", 0) + g / denom
        return p - lr * s["buf"]
    return p - lr * g / denom


def ref_adagrad(p, g, s, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    g = g + weight_decay * p
    s["sum"] = s.get("sum", initial_accumulator_value) + g * g
    return p - lr / (1 + (s["t"] - 1) * lr_decay) * g / (np.sqrt(s["sum"]) + eps)


def ref_adadelta(p, g, s, lr, rho=0.9, eps=1e-6, weight_decay=0.0):
    g = g + weight_decay * p
    s["v"] = rho * s.get("v", 0) + (1 - rho) * g * g
    delta = np.sqrt(s.get("u", 0) + eps) / np.sqrt(s["v"] + eps) * g
    s["u"] = rho * s.get("u", 0) + (1 - rho) * delta * delta
    return p - lr * delta


def ref_adam_moments(p, g, s, lr, betas, weight_decay, decoupled):
    """Weight decay (decoupled from the gradient, or L2 added to it), then Adam's moments m and v into s;
    returns the decayed (p, g)."""
    b1, b2 = betas
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    return p, g


def ref_adam(p, g, s, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    t = s["t"]
    p, g = ref_adam_moments(p, g, s, lr, betas, weight_decay, decoupled)
    v = s["v"]
    if amsgrad:
        v = s["vmax"] = np.maximum(s.get("vmax", 0), s["v"])
    m_hat = s["m"] / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(p, g, s, lr, weight_decay=1e-2, **kw):
    return ref_adam(p, g, s, lr, weight_decay=weight_decay, decoupled=True, **kw)


def ref_nadam(p, g, s, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
              decoupled_weight_decay=False):
    b1, b2 = betas
    t = s["t"]
    p, g = ref_adam_moments(p, g, s, lr, betas, weight_decay, decoupled_weight_decay)
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    s["prod"] = s.get("prod", 1.0) * mu
    denom = np.sqrt(s["v"] / (1 - b2 ** t)) + eps
    return p - lr * (1 - mu) / (1 - s["prod"]) * g / denom - lr * mu_next / (1 - s["prod"] * mu_next) * s["m"] / denom


CASES = [
    (optim.SGD, ref_sgd, dict(lr=0.1)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, alpha=0.9, centered=True)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.1, eps=1e-7,
                                      weight_decay=0.05)),
    (optim.Adadelta, ref_adadelta, dict(lr=1.0, rho=0.95, eps=1e-7, weight_decay=0.01)),
    (optim.Adam, ref_adam, dict(lr=0.01)),
    (optim.Adam, ref_adam, dict(lr=0.01, betas=(0.5, 0.999), eps=1e-7)),
    (optim.Adam, ref_adam, dict(lr=0.01, betas=(0.0, 0.99), weight_decay=0.1)),
    (optim.Adam, ref_adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, ref_adamw, dict(lr=0.01)),
    (optim.AdamW, ref_adamw, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    (optim.Nadam, ref_nadam, dict(lr=0.01)),
    (optim.Nadam, ref_nadam, dict(lr=0.01, weight_decay=0.1)),
    (optim.Nadam, ref_nadam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for cls, _, kw in CASES]


def run_both(cls, ref, kw, steps, missing=lambda step, i: False, seed=0):
    """Run our optimizer and the reference side by side; returns (ours, reference) parameter values."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    params = [core.tensor(a, requires_grad=True) for a in init]
    opt = cls(params, **kw)
    expected = [a.copy() for a in init]
    states = [{"t": 0} for _ in SHAPES]
    for step in range(steps):
        for i, p in enumerate(params):
            if missing(step, i):
                p.grad = None
                continue
            g = rng.standard_normal(SHAPES[i])
            p.grad = core.tensor(g)
            states[i]["t"] += 1
            expected[i] = ref(expected[i], g, states[i], **kw)
        opt.step()
    return [p.data for p in params], expected


@pytest.mark.parametrize("cls, ref, kw", CASES, ids=IDS)
def test_matches_update_formula_step_by_step(cls, ref, kw):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in SHAPES]
    params = [core.tensor(a, requires_grad=True) for a in init]
    opt = cls(params, **kw)
    expected, states = [a.copy() for a in init], [{"t": 0} for _ in SHAPES]
    for _ in range(6):
        for i, p in enumerate(params):
            g = rng.standard_normal(SHAPES[i])
            p.grad = core.tensor(g)
            states[i]["t"] += 1
            expected[i] = ref(expected[i], g, states[i], **kw)
        opt.step()
        for p, e in zip(params, expected):  # every step, not only the last
            np.testing.assert_allclose(p.data, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls, ref, kw", CASES, ids=IDS)
def test_missing_grads_neither_update_nor_advance_state(cls, ref, kw):
    # PyTorch semantics: a parameter whose grad is None keeps its value and its state (step count,
    # moments) for that step; the others update normally. Patterns: one gap, two gaps, all missing.
    def missing(step, i):
        return (step in (1, 2) and i == 1) or (step == 4 and i in (0, 3)) or step == 5

    ours, expected = run_both(cls, ref, kw, 8, missing)
    for a, e in zip(ours, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14)


def test_first_adam_step_keras_defaults():  # FX-OPT-3
    p = core.tensor([1.0], dtype=np.float64, requires_grad=True)
    opt = optim.Adam([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    p.grad = core.tensor([0.5], dtype=np.float64)
    opt.step()
    assert p.data[0] - 1.0 == pytest.approx(-0.0009999998, rel=1e-9)


def himmelblau_descent(start):
    """(x, y) after plain gradient descent on Himmelblau's function from `start`: lr 0.01, 200 steps, float32."""
    xy = core.tensor(start, dtype=np.float32, requires_grad=True)
    opt = optim.SGD([xy], lr=0.01)
    for _ in range(200):
        x, y = xy[0], xy[1]
        f = (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2
        opt.zero_grad()
        f.backward()
        opt.step()
    return xy.data


def test_himmelblau_plain_gradient_descent_float32():  # FX-OPT-1
    xy = himmelblau_descent([4.0, 0.0])
    np.testing.assert_allclose(xy, [3.5844283, -1.8481264], atol=2e-6)
    x, y = xy.astype(np.float64)
    assert (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2 < 1e-10


@pytest.mark.parametrize("start, float32_result, book", [
    ((1.0, 0.0), (3.0, 1.9999999), (3.0, 1.99)),
    ((-4.0, 0.0), (-3.7793102, -3.283186), (-3.77, -3.28)),
    ((-2.0, 2.0), (-2.805118, 3.1313124), (-2.80, 3.13)),
])
def test_fx_opt_2_himmelblau_from_other_starts(start, float32_result, book):
    """FX-OPT-2: plain GD (lr 0.01, 200 steps, float32) reaches the other three minima (book: 2 decimals)."""
    xy = himmelblau_descent(start)
    np.testing.assert_allclose(xy, float32_result, atol=2e-5)
    np.testing.assert_allclose(xy, book, atol=0.01)


def test_float32_adam_matches_float64_reference():
    rng = np.random.default_rng(3)
    init = rng.standard_normal((5, 7)).astype(np.float32)
    p = core.tensor(init, requires_grad=True)
    opt = optim.Adam([p], lr=0.01)
    expected, state = init.astype(np.float64), {"t": 0}
    for _ in range(5):
        g = rng.standard_normal((5, 7)).astype(np.float32)
        p.grad = core.tensor(g)
        state["t"] += 1
        expected = ref_adam(expected, g.astype(np.float64), state, lr=0.01)
        opt.step()
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.data, expected, rtol=1e-5, atol=1e-6)


def test_param_groups_have_their_own_hyperparameters():
    a = core.tensor([1.0, 2.0], requires_grad=True)
    b = core.tensor([3.0], requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[0]["momentum"] == 0.0 and opt.param_groups[1]["momentum"] == 0.9
    for _ in range(2):
        a.grad = core.tensor([1.0, 1.0])
        b.grad = core.tensor([1.0])
        opt.step()
    np.testing.assert_allclose(a.data, [0.8, 1.8], rtol=1e-6)
    # momentum group: b -= 0.5 * 1, then b -= 0.5 * (0.9 * 1 + 1)
    np.testing.assert_allclose(b.data, [3.0 - 0.5 - 0.95], rtol=1e-6)


def test_add_param_group_later():
    a = core.tensor([1.0], requires_grad=True)
    opt = optim.Adam([a], lr=0.1)
    b = core.tensor([1.0], requires_grad=True)
    opt.add_param_group({"params": [b], "lr": 0.2})
    a.grad, b.grad = core.tensor([1.0]), core.tensor([1.0])
    opt.step()  # first Adam step moves each parameter by its lr
    np.testing.assert_allclose([a.item(), b.item()], [0.9, 0.8], rtol=1e-5)
    with pytest.raises(ValueError, match="more than once"):
        opt.add_param_group({"params": [a]})


def test_module_parameters_stay_live_views():
    layer = nn.Linear(3, 2)
    opt = optim.SGD(layer.parameters(), lr=0.1)
    x = core.tensor(np.ones((4, 3), dtype=np.float32))
    layer(x).sum().backward()
    w_grad = layer.weight.grad.data.copy()
    w_before = layer.weight.data.copy()
    opt.step()
    np.testing.assert_allclose(layer.weight.data, w_before - 0.1 * w_grad, rtol=1e-6)
    with core.no_grad():  # the module computes with the updated values
        np.testing.assert_allclose(layer(x).data, x.data @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    assert layer.weight.data.flags.writeable and layer.weight.shape == (2, 3)


def test_step_bumps_versions_of_updated_parameters_only():
    a = core.tensor([1.0], requires_grad=True)
    b = core.tensor([1.0], requires_grad=True)
    opt = optim.SGD([a, b], lr=0.1)
    a.grad = core.tensor([1.0])
    opt.step()
    assert (a._version, b._version) == (1, 0)


def test_step_after_graph_use_makes_old_graph_stale():
    w = core.tensor([2.0], requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    loss = (w * w).sum()
    (w * w).sum().backward()
    opt.step()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_zero_grad():
    a = core.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([a], lr=0.1)
    (a * a).sum().backward()
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad.data, [0.0, 0.0])
    opt.zero_grad()
    assert a.grad is None


def test_replaced_parameter_data_is_adopted():
    a = core.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([a], lr=0.1)
    a.data = np.array([5.0, 6.0], dtype=np.float32)
    a.grad = core.tensor([1.0, 1.0])
    opt.step()
    np.testing.assert_allclose(a.data, [4.9, 5.9], rtol=1e-6)
    a.data = np.array([5.0, 6.0], dtype=np.float64)
    with pytest.raises(RuntimeError, match="Build the optimizer after model.to"):
        opt.step()


def test_momentum_turned_on_later_gets_a_buffer():
    a = core.tensor([1.0], dtype=np.float64, requires_grad=True)
    opt = optim.SGD([a], lr=0.1)
    a.grad = core.tensor([1.0], dtype=np.float64)
    opt.step()
    opt.param_groups[0]["momentum"] = 0.5
    opt.step()  # step 2: buffer starts at zero -> b = 0.5*0 + 1
    opt.step()  # b = 0.5*1 + 1
    np.testing.assert_allclose(a.data, [1.0 - 0.1 - 0.1 - 0.15])


def test_a_model_moved_after_the_optimizer_was_built_stops_the_step_in_one_line():
    model = nn.Linear(3, 2)
    opt = optim.Adam(model.parameters())
    model.double()
    model(core.zeros(1, 3, dtype=core.float64)).sum().backward()
    with pytest.raises(RuntimeError, match=r"^parameter 0 of group 0 was replaced by an array of shape \(2, 3\), "
                                           r"dtype float64 on cpu; the optimizer holds shape \(2, 3\), dtype float32 "
                                           r"on cpu\. Build the optimizer after model.to\(...\)$"):
        opt.step()


def test_create_builds_the_optimizer_a_config_names():
    for name, cls in optim.OPTIMIZERS.items():
        opt = optim.create([core.tensor([1.0], requires_grad=True)], name.upper(), lr=0.5)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.5
    adam = optim.create([core.tensor([1.0], requires_grad=True)], "adam", betas=[0.8, 0.9])  # a config's list
    assert adam.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match=r"^unknown optimizer 'adamax'; allowed: sgd, rmsprop, adagrad, adadelta, "
                                         r"adam, adamw, nadam$"):
        optim.create([core.tensor([1.0], requires_grad=True)], "adamax")
    with pytest.raises(ValueError, match=r"^optimizer rmsprop has no option rho; allowed: lr, alpha, eps, "
                                         r"weight_decay, momentum, centered$"):
        optim.create([core.tensor([1.0], requires_grad=True)], "rmsprop", rho=0.9)


def _step_shared(optimizer, steps, gradient):
    """What a process does with a shared optimizer in the test below: `steps` steps of a constant gradient."""
    for _ in range(steps):
        for p in optimizer.param_groups[0]["params"]:
            p.grad = core.tensor(np.full(p.shape, gradient, p.dtype))
        optimizer.step()


def test_a_shared_optimizer_is_one_optimizer_in_every_process():
    ctx = multiprocessing.get_context("spawn")  # the children get the optimizer pickled, as A3C's workers do

    def make():
        model = nn.Linear(3, 2, generator=core.Generator(0))
        return model, optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9), amsgrad=True)

    model, opt = make()
    opt.share_memory_(ctx)
    reference_model, reference = make()
    child = ctx.Process(target=_step_shared, args=(opt, 3, 1.0))
    child.start()
    child.join()
    assert child.exitcode == 0
    _step_shared(opt, 2, -0.5)  # the trainer's process continues the child's weights, moments and counts
    _step_shared(reference, 3, 1.0)
    _step_shared(reference, 2, -0.5)
    for got, expected in zip(model.parameters(), reference_model.parameters()):
        np.testing.assert_array_equal(got.data, expected.data)
    for name, expected in reference.state_dict()["state"][0].items():
        np.testing.assert_array_equal(opt.state_dict()["state"][0][name], expected)
    # two processes at once (Hogwild!): the values race, the step counts lose nothing
    children = [ctx.Process(target=_step_shared, args=(opt, 100, 0.1)) for _ in range(2)]
    for c in children:
        c.start()
    for c in children:
        c.join()
    assert [c.exitcode for c in children] == [0, 0]
    assert opt.state_dict()["state"][0]["step"].tolist() == [205, 205]


def test_a_shared_optimizer_cannot_grow_after_sharing():
    a = core.tensor([1.0], requires_grad=True)
    opt = optim.SGD([a], lr=0.1).share_memory_()
    with pytest.raises(RuntimeError, match=r"add parameter groups before share_memory_\(\)"):
        opt.add_param_group({"params": [core.tensor([2.0], requires_grad=True)]})
    opt.param_groups[0]["momentum"] = 0.9
    a.grad = core.tensor([1.0])
    with pytest.raises(RuntimeError, match=r"parameter group 0 needs optimizer state \['momentum_buffer'\] but was "
                                           r"shared with \[\]; set its options before share_memory_\(\)"):
        opt.step()


def test_a_pickled_model_and_optimizer_are_a_working_copy():
    model = nn.Linear(3, 2, generator=core.Generator(1))
    opt = optim.Adam(model.parameters(), lr=0.1)
    _step_shared(opt, 1, 1.0)
    copy_model, copy_opt = pickle.loads(pickle.dumps((model, opt)))
    _step_shared(copy_opt, 2, 1.0)
    _step_shared(opt, 2, 1.0)
    for got, expected in zip(copy_model.parameters(), model.parameters()):
        assert got is not expected
        np.testing.assert_array_equal(got.data, expected.data)


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD([p], lr=-1.0), "invalid lr"),
    (lambda p: optim.Adam([p], betas=(0.9, 1.0)), "invalid betas"),
    (lambda p: optim.Adam([p], eps=-1e-8), "invalid eps"),
    (lambda p: optim.SGD([p], nesterov=True), "Nesterov"),
    (lambda p: optim.RMSprop([p], alpha=1.5), "invalid alpha"),
    (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
    (lambda p: optim.SGD([p, p], lr=0.1), "more than once"),
    (lambda p: optim.SGD([p * 2], lr=0.1), "not a leaf"),
    (lambda p: optim.SGD([core.tensor([1, 2])], lr=0.1), "floating-point"),
    (lambda p: optim.SGD([p, core.tensor([1.0], dtype=np.float64, requires_grad=True)]), "separate groups"),
])
def test_bad_input_errors(make, message):
    p = core.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match=message):
        make(p)


def test_single_tensor_instead_of_iterable_is_refused():
    with pytest.raises(TypeError, match="single Tensor"):
        optim.Adam(core.tensor([1.0], requires_grad=True))


def _trained(seed, steps, cls=optim.Adam, **kw):
    rng = np.random.default_rng(seed)
    params = [core.tensor(rng.standard_normal(s), requires_grad=True) for s in SHAPES]
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.05}], lr=0.01, **kw)
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = None if (step == 1 and i == 0) else core.tensor(rng.standard_normal(p.shape))
        opt.step()
    return params, opt


@pytest.mark.parametrize("cls, kw", [(optim.Adam, dict(amsgrad=True)), (optim.Nadam, {}),
                                     (optim.SGD, dict(momentum=0.9, nesterov=True)),
                                     (optim.RMSprop, dict(centered=True, momentum=0.3))])
def test_state_dict_round_trip_through_a_file_resumes_bitwise(tmp_path, cls, kw):
    params, opt = _trained(0, 4, cls, **kw)
    core.save({"params": [p.detach() for p in params], "optim": opt.state_dict()}, tmp_path / "ckpt")
    fresh_params, fresh = _trained(1, 2, cls, **kw)  # other values, other state
    state = core.load(tmp_path / "ckpt")
    for p, saved in zip(fresh_params, state["params"]):
        p.data[...] = saved.data
    fresh.load_state_dict(state["optim"])
    rng = np.random.default_rng(7)
    for _ in range(3):
        for p, q in zip(params, fresh_params):
            g = rng.standard_normal(p.shape)
            p.grad, q.grad = core.tensor(g), core.tensor(g)
        opt.step()
        fresh.step()
    for p, q in zip(params, fresh_params):
        assert p.data.tobytes() == q.data.tobytes()


def test_state_dict_is_a_snapshot():
    params, opt = _trained(0, 2)
    saved = opt.state_dict()
    before = saved["state"][0]["exp_avg"].copy()
    params[0].grad = core.tensor(np.ones(SHAPES[0]))
    opt.step()
    np.testing.assert_array_equal(saved["state"][0]["exp_avg"], before)
    assert saved["param_groups"][1]["params"] == [2, 3] and saved["param_groups"][1]["lr"] == 0.05


def test_load_state_dict_mismatch_raises_and_changes_nothing():
    params, opt = _trained(0, 3)
    good = opt.state_dict()
    other_params = [core.tensor(np.zeros((3, 3)), requires_grad=True), core.tensor(np.zeros(4), requires_grad=True)]
    other = optim.Adam(other_params)
    before = other.state_dict()
    with pytest.raises(ValueError, match="2 parameter groups, this optimizer has 1"):
        other.load_state_dict(good)
    one_group = optim.Adam([core.tensor(np.zeros((3, 3)), requires_grad=True),
                            core.tensor(np.zeros(4), requires_grad=True)]).state_dict()
    with pytest.raises(ValueError, match=r"shapes \[\(3, 3\), \(4,\)\], this optimizer has \[\(3, 2\), \(4,\)\]"):
        optim.Adam([core.tensor(np.zeros((3, 2)), requires_grad=True),
                    core.tensor(np.zeros(4), requires_grad=True)]).load_state_dict(one_group)
    with pytest.raises(ValueError, match="from a Adam optimizer, this one is SGD"):
        optim.SGD(other_params, lr=0.1).load_state_dict(before)
    with pytest.raises(ValueError, match="not an optimizer state dict"):
        other.load_state_dict({"state": []})
    broken = opt.state_dict()
    broken["state"][1]["exp_avg_sq"] = broken["state"][1]["exp_avg_sq"][:-1]
    snapshot = opt.state_dict()
    with pytest.raises(ValueError, match="exp_avg_sq"):
        opt.load_state_dict(broken)
    after = opt.state_dict()
    for s, t in zip(snapshot["state"], after["state"]):
        for name in s:
            np.testing.assert_array_equal(s[name], t[name])
    after_other = other.state_dict()
    for name in before["state"][0]:
        np.testing.assert_array_equal(before["state"][0][name], after_other["state"][0][name])


# ----- learning-rate schedules -----
def _lrs(make, n, base=1.0, metric=None):
    opt = optim.SGD([core.tensor([0.0], requires_grad=True)], lr=base)
    sched = make(opt)
    lrs = [opt.param_groups[0]["lr"]]
    assert sched.get_last_lr() == lrs
    for _ in range(n - 1):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_linear_lr():
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.LinearLR(o, 0.5, 1.0, total_iters=4), 7, base=0.1),
                               [0.05, 0.0625, 0.075, 0.0875, 0.1, 0.1, 0.1])


def test_linear_decay_fixture():  # FX-RL-7: 1.0 -> 0.01 over 62,500 steps
    opt = optim.SGD([core.tensor([0.0], requires_grad=True)], lr=1.0)
    sched = lr_scheduler.LinearLR(opt, 1.0, 0.01, total_iters=62_500)
    for _ in range(31_250):
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.505, rel=1e-12)
    for _ in range(31_250 + 10):
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.01, rel=1e-12)


def test_exponential_step_and_multistep():
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.ExponentialLR(o, 0.5), 4), [1, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.StepLR(o, 2, gamma=0.1), 5), [1, 1, 0.1, 0.1, 0.01])
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.MultiStepLR(o, [5, 2], gamma=0.1), 7),
                               [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_annealing():
    got = _lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.1), 5)
    np.testing.assert_allclose(got, [1.0, 0.1 + 0.45 * (1 + math.sqrt(0.5)), 0.55, 0.1 + 0.45 * (1 - math.sqrt(0.5)),
                                     0.1], rtol=1e-12)


def test_lambda_lr_per_group():
    a, b = core.tensor([0.0], requires_grad=True), core.tensor([0.0], requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 2.0}], lr=1.0)
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 0.5 ** e, lambda e: 1.0 / (e + 1)])
    sched.step()
    sched.step()
    assert sched.get_last_lr() == [0.25, 2.0 / 3]
    assert "lr_lambdas" not in sched.state_dict()


def test_one_cycle_cosine_with_momentum():
    opt = optim.Adam([core.tensor([0.0], requires_grad=True)], lr=1.0)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)  # pct_start 0.3: peak at step 2
    lrs, beta1 = [opt.param_groups[0]["lr"]], [opt.param_groups[0]["betas"][0]]
    for _ in range(9):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        beta1.append(opt.param_groups[0]["betas"][0])
    final = 0.04 / 1e4
    down = [final + (1 - final) / 2 * (math.cos(math.pi * (s - 2) / 7) + 1) for s in range(2, 10)]
    np.testing.assert_allclose(lrs, [0.04, 0.52] + down, rtol=1e-12)
    assert lrs[2] == 1.0 and lrs[-1] == pytest.approx(4e-6)
    np.testing.assert_allclose(beta1[:3], [0.95, 0.90, 0.85])
    assert beta1[-1] == pytest.approx(0.95) and opt.param_groups[0]["betas"][1] == 0.999
    sched.step()  # step 10 = total_steps is still allowed, as in PyTorch
    with pytest.raises(ValueError, match="total_steps is 10"):
        sched.step()


def test_one_cycle_three_phase_linear_on_sgd_momentum():
    opt = optim.SGD([core.tensor([0.0], requires_grad=True)], lr=1.0)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="linear", three_phase=True)
    lrs, mom = [opt.param_groups[0]["lr"]], [opt.param_groups[0]["momentum"]]
    for _ in range(9):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        mom.append(opt.param_groups[0]["momentum"])
    final = 4e-6
    tail = [0.04 + (final - 0.04) * k / 5 for k in range(1, 6)]
    np.testing.assert_allclose(lrs, [0.04, 0.52, 1.0, 0.52, 0.04] + tail, rtol=1e-12)
    np.testing.assert_allclose(mom, [0.95, 0.9, 0.85, 0.9, 0.95] + [0.95] * 5)


def test_reduce_lr_on_plateau():
    opt = optim.SGD([core.tensor([0.0], requires_grad=True)], lr=1.0)
    sched = lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.3)
    metrics = [1, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]
    lrs = []
    for m in metrics:
        sched.step(m)
        lrs.append(sched.get_last_lr()[0])
    # 3 non-improving steps after 0.9 -> halve; cooldown 1 eats one; 0.8 improves; 3 more -> floor 0.3
    assert lrs == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3]
    mx = lr_scheduler.ReduceLROnPlateau(optim.SGD([core.tensor([0.0], requires_grad=True)], lr=1.0), mode="max",
                                        patience=0, threshold=0.1, threshold_mode="abs")
    for m in [1.0, 1.05]:  # 1.05 is not better than 1.0 + 0.1
        mx.step(m)
    assert mx.get_last_lr() == [0.1]


def test_scheduler_state_dict_resumes_the_sequence():
    def make():
        opt = optim.SGD([core.tensor([0.0], requires_grad=True)], lr=1.0)
        return opt, lr_scheduler.CosineAnnealingLR(opt, T_max=10)

    opt, sched = make()
    for _ in range(4):
        sched.step()
    saved_opt, saved = opt.state_dict(), sched.state_dict()
    expected = []
    for _ in range(3):
        sched.step()
        expected.append(sched.get_last_lr()[0])
    opt2, sched2 = make()
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved)
    got = []
    for _ in range(3):
        sched2.step()
        got.append(opt2.param_groups[0]["lr"])
    assert got == expected


def test_scheduler_steps_to_an_epoch():
    opt = optim.SGD([core.tensor([0.0], requires_grad=True)], lr=0.1)
    sched = lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=1000)
    sched.step(250)  # e.g. env steps counted elsewhere
    assert opt.param_groups[0]["lr"] == pytest.approx(0.075) and sched.last_epoch == 250
    sched.step()
    assert sched.last_epoch == 251
    sched.step(5000)
    assert sched.get_last_lr() == [0.0]


def test_scheduler_resume_needs_initial_lr():
    opt = optim.SGD([core.tensor([0.0], requires_grad=True)], lr=1.0)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, 2, last_epoch=3)


# ----- gradient clipping -----
def _with_grads(*grads):
    params = []
    for g in grads:
        p = core.tensor(np.zeros(np.shape(g)), requires_grad=True)
        p.grad = core.tensor(np.asarray(g, dtype=np.float64))
        params.append(p)
    return params


def test_clip_by_value():  # FX-CL-1
    (p,) = _with_grads([0.9, 100.0])
    optim.clip_grad_value_([p], 1.0)
    np.testing.assert_array_equal(p.grad.data, [0.9, 1.0])
    (q,) = _with_grads([-3.0, 0.5])
    optim.clip_grad_value_(q, 1.0)
    np.testing.assert_array_equal(q.grad.data, [-1.0, 0.5])


def test_clip_by_norm_fixture():  # FX-CL-2
    (p,) = _with_grads([0.9, 100.0])
    total = optim.clip_grad_norm_([p], 1.0)
    assert isinstance(total, core.Tensor) and total.dtype == np.float64 and float(total) == pytest.approx(100.00405,
                                                                                                          rel=1e-7)
    np.testing.assert_allclose(p.grad.data, [0.00899964, 0.9999595], atol=1e-7)


def test_clip_by_norm_unchanged_below_max():  # FX-CL-3
    g = np.random.default_rng(0).standard_normal((2, 2))
    (p,) = _with_grads(g * 5.380655 / np.linalg.norm(g))
    assert float(optim.clip_grad_norm_([p], 5.0)) == pytest.approx(5.380655)
    assert np.linalg.norm(p.grad.data) == pytest.approx(5.0, rel=1e-6)
    (q,) = _with_grads(g)
    optim.clip_grad_norm_([q], 5.0)
    np.testing.assert_array_equal(q.grad.data, g)


def test_clip_by_global_norm():  # FX-CL-4
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    scale = 4.1547523 / math.sqrt((a * a).sum() + (b * b).sum())
    params = _with_grads(a * scale, b * scale, np.zeros(0))  # an empty gradient counts for nothing
    params.append(core.tensor([1.0], requires_grad=True))  # no grad at all: skipped
    total = float(optim.clip_grad_norm_(params, 2.0))
    assert total == pytest.approx(4.1547523, rel=1e-7)
    factor = 2.0 / (4.1547523 + 1e-6)
    np.testing.assert_allclose(params[0].grad.data, a * scale * factor, rtol=1e-12)
    np.testing.assert_allclose(params[1].grad.data, b * scale * factor, rtol=1e-12)
    new = math.sqrt(sum((p.grad.data ** 2).sum() for p in params[:3]))
    assert new == pytest.approx(2.0, rel=1e-6)


def test_clip_norm_types():
    p, q = _with_grads([3.0, -4.0], [[-12.0]])
    assert float(optim.clip_grad_norm_([p, q], 100.0, norm_type=math.inf)) == 12.0
    assert float(optim.clip_grad_norm_([p, q], 100.0, norm_type=1)) == 19.0
    assert float(optim.clip_grad_norm_([p, q], 100.0, norm_type=3)) == pytest.approx((27 + 64 + 1728) ** (1 / 3))
    assert float(optim.clip_grad_norm_([], 1.0)) == 0.0
    with pytest.raises(ValueError, match="norm_type"):
        optim.clip_grad_norm_([p], 1.0, norm_type=0)
    (r,) = _with_grads([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="inf"):
        optim.clip_grad_norm_([r], 1.0, error_if_nonfinite=True)


def test_clip_handles_shared_and_read_only_gradients():
    a = core.tensor([3.0, 4.0], requires_grad=True)
    b = core.tensor([3.0, 4.0], requires_grad=True)
    a.grad = b.grad = core.Tensor._make(np.broadcast_to(np.ones(1, np.float32), (2,)))  # as a backward may leave it
    assert not a.grad.data.flags.writeable
    total = float(optim.clip_grad_norm_([a, b], 1.0))
    assert total == pytest.approx(2.0)
    np.testing.assert_allclose(a.grad.data, [0.5, 0.5], rtol=1e-6)  # scaled once, not twice
    np.testing.assert_allclose(b.grad.data, [0.5, 0.5], rtol=1e-6)
    s = core.tensor(2.0, requires_grad=True)  # 0-d parameter
    (s * 10).backward()
    optim.clip_grad_norm_(s, 1.0)
    assert s.grad.shape == () and s.grad.item() == pytest.approx(1.0, rel=1e-6)
    optim.clip_grad_value_(s, 0.5)
    assert s.grad.shape == () and s.grad.item() == 0.5


def test_step_with_closure_returns_the_loss():
    w = core.tensor([3.0], requires_grad=True)
    opt = optim.SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with core.no_grad():  # the closure still records its graph
        loss = opt.step(closure)
    assert loss.item() == 9.0 and w.item() == 3.0 - 0.25 * 6.0


@pytest.mark.gpu
def test_cuda_optimizer_and_clipping_match_cpu(gpu_device):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    cpu = [core.tensor(a, requires_grad=True) for a in init]
    gpu = [core.tensor(a, device=gpu_device, requires_grad=True) for a in init]
    opts = optim.Adam(cpu, lr=0.01, amsgrad=True), optim.Adam(gpu, lr=0.01, amsgrad=True)
    for step in range(4):
        for i, (a, b) in enumerate(zip(cpu, gpu)):
            if step == 1 and i == 1:  # a missing gradient: the per-element coefficient path
                a.grad = b.grad = None
                continue
            g = rng.standard_normal(a.shape).astype(np.float32)
            a.grad, b.grad = core.tensor(g), core.tensor(g, device=gpu_device)
        norms = [optim.clip_grad_norm_(params, 1.0) for params in (gpu, cpu)]
        assert norms[0].device != "cpu" and float(norms[0]) == pytest.approx(float(norms[1]), rel=1e-5)
        for opt in opts:
            opt.step()
    for a, b in zip(cpu, gpu):
        assert b.device != "cpu"
        np.testing.assert_allclose(b.data.get(), a.data, rtol=1e-5, atol=1e-6)
    fresh = [core.tensor(a, device=gpu_device, requires_grad=True) for a in init]
    restored = optim.Adam(fresh, lr=0.01, amsgrad=True)
    restored.load_state_dict(opts[0].state_dict())  # a CPU state dict into a GPU optimizer
    for name, buf in restored._flats[0].state.items():
        np.testing.assert_array_equal(buf.get(), opts[0]._flats[0].state[name])
