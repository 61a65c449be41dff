"""The update rules: SGD, RMSprop, Adagrad, Adadelta, Adam, AdamW and Nadam.

Each follows PyTorch's formulas and defaults (docstrings give the formula; `g` is the gradient
after coupled weight decay, `t` the parameter's own step count). Every update works on whole flat
buffers with in-place ufuncs (`out=`), so one step costs a handful of array operations.
"""
import inspect

import numpy as np

from core.backend import get_array_module
from core.optim.optimizer import Optimizer


def _check_range(group, name, low=0.0, high=None):
    value = group[name]
    if not (value >= low and (high is None or value < high)):
        allowed = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"invalid {name} {value!r}: must be {allowed}")


def _check_betas(group):
    betas = group["betas"]
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"invalid betas {betas!r}: need two values in [0, 1)")


def _add_weight_decay(xp, grad, param, weight_decay, tmp):
    """g += weight_decay * p (L2 penalty folded into the gradient)."""
    xp.multiply(param, weight_decay, out=tmp)
    grad += tmp


def _ema(xp, avg, value, decay, tmp):
    """avg = decay * avg + (1 - decay) * value."""
    avg *= decay
    xp.multiply(value, 1.0 - decay, out=tmp)
    avg += tmp


def _ema_square(xp, avg, value, decay, tmp):
    """avg = decay * avg + (1 - decay) * value²."""
    avg *= decay
    xp.multiply(value, value, out=tmp)
    tmp *= 1.0 - decay
    avg += tmp


def _step_by_ratio(xp, param, numerator, square, eps, step_size, tmp):
    """param -= step_size * numerator / (sqrt(square) + eps): the adaptive step of Adagrad and Adam."""
    xp.sqrt(square, out=tmp)
    tmp += eps
    xp.divide(numerator, tmp, out=tmp)
    tmp *= -step_size
    param += tmp


def _adam_moments(xp, group, p, g, state, decoupled, tmp):
    """Weight decay (decoupled, p *= 1 − lr·weight_decay, or L2 folded into g), then Adam's moments
    m = β1·m + (1 − β1)·g and v = β2·v + (1 − β2)·g² in place; returns (m, v). Shared by Adam and Nadam."""
    if group["weight_decay"]:
        if decoupled:
            p *= 1 - group["lr"] * group["weight_decay"]
        else:
            _add_weight_decay(xp, g, p, group["weight_decay"], tmp)
    beta1, beta2 = group["betas"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    _ema(xp, m, g, beta1, tmp)
    _ema_square(xp, v, g, beta2, tmp)
    return m, v


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (heavy-ball or Nesterov).

    b = momentum·b + (1 − dampening)·g, with b = g at a parameter's first step;
    p −= lr·(g + momentum·b) with Nesterov, else p −= lr·b (p −= lr·g without momentum).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def _state_names(self, group):
        return {"momentum_buffer": 0.0} if group["momentum"] else {}

    def _check(self, group):
        for name in ("lr", "momentum", "weight_decay"):
            _check_range(group, name)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")

    def _coefficients(self, group, s):
        later = s["step"] > 1  # at a parameter's first step the buffer starts as the gradient itself
        return {"keep": group["momentum"] * later, "add": 1 - group["dampening"] * later}

    def _update(self, group, p, g, state, c, tmp):
        xp = _xp(p)
        if group["weight_decay"]:
            _add_weight_decay(xp, g, p, group["weight_decay"], tmp)
        if group["momentum"]:
            buf = state["momentum_buffer"]
            buf *= c["keep"]
            xp.multiply(g, c["add"], out=tmp)
            buf += tmp
            if group["nesterov"]:
                xp.multiply(buf, group["momentum"], out=tmp)
                g += tmp
            else:
                g = buf
        xp.multiply(g, -group["lr"], out=tmp)
        p += tmp


class RMSprop(Optimizer):
    """RMSprop. v = α·v + (1 − α)·g²; denominator d = sqrt(v) + eps, or with `centered`
    d = sqrt(v − ḡ²) + eps where ḡ = α·ḡ + (1 − α)·g; p −= lr·g/d, or with momentum
    b = momentum·b + g/d and p −= lr·b.

    eps sits outside the square root, as in PyTorch. Keras (TF 2 / Keras 3) adds it inside,
    lr·g/sqrt(v + eps), with default eps 1e-7 and rho 0.9 (PyTorch: alpha 0.99, eps 1e-8); the
    two agree whenever sqrt(v) is much larger than eps (resp. sqrt(eps)).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def _state_names(self, group):
        names = {"square_avg": 0.0}
        if group["centered"]:
            names["grad_avg"] = 0.0
        if group["momentum"]:
            names["momentum_buffer"] = 0.0
        return names

    def _check(self, group):
        for name in ("lr", "eps", "weight_decay", "momentum"):
            _check_range(group, name)
        _check_range(group, "alpha", 0.0, 1.0)

    def _update(self, group, p, g, state, c, tmp):
        xp = _xp(p)
        alpha = group["alpha"]
        if group["weight_decay"]:
            _add_weight_decay(xp, g, p, group["weight_decay"], tmp)
        _ema_square(xp, state["square_avg"], g, alpha, tmp)
        if group["centered"]:
            avg = state["grad_avg"]
            _ema(xp, avg, g, alpha, tmp)
            xp.multiply(avg, avg, out=tmp)
            xp.subtract(state["square_avg"], tmp, out=tmp)
            xp.sqrt(tmp, out=tmp)
        else:
            xp.sqrt(state["square_avg"], out=tmp)
        tmp += group["eps"]
        if group["momentum"]:
            buf = state["momentum_buffer"]
            xp.divide(g, tmp, out=tmp)
            buf *= group["momentum"]
            buf += tmp
            xp.multiply(buf, -group["lr"], out=tmp)
        else:
            xp.divide(g, tmp, out=tmp)
            tmp *= -group["lr"]
        p += tmp


class Adagrad(Optimizer):
    """Adagrad. s += g²; p −= lr_t·g/(sqrt(s) + eps) with lr_t = lr/(1 + (t − 1)·lr_decay);
    s starts at `initial_accumulator_value` (Keras uses 0.1 and eps 1e-7)."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def _state_names(self, group):
        return {"sum": group["initial_accumulator_value"]}

    def _check(self, group):
        for name in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            _check_range(group, name)

    def _coefficients(self, group, s):
        return {"lr": group["lr"] / (1 + (s["step"] - 1) * group["lr_decay"])}

    def _update(self, group, p, g, state, c, tmp):
        xp = _xp(p)
        if group["weight_decay"]:
            _add_weight_decay(xp, g, p, group["weight_decay"], tmp)
        total = state["sum"]
        xp.multiply(g, g, out=tmp)
        total += tmp
        _step_by_ratio(xp, p, g, total, group["eps"], c["lr"], tmp)


class Adadelta(Optimizer):
    """Adadelta. v = ρ·v + (1 − ρ)·g²; Δ = sqrt(u + eps)/sqrt(v + eps)·g; u = ρ·u + (1 − ρ)·Δ²;
    p −= lr·Δ. (Keras 2.1 uses lr 1.0, TF 2 Keras lr 1e-3; both rho 0.95, eps 1e-7.)"""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    state_init = {"square_avg": 0.0, "acc_delta": 0.0}

    def _check(self, group):
        for name in ("lr", "eps", "weight_decay"):
            _check_range(group, name)
        if not 0.0 <= group["rho"] <= 1.0:
            raise ValueError(f"invalid rho {group['rho']!r}: must be in [0, 1]")

    def _update(self, group, p, g, state, c, tmp):
        xp = _xp(p)
        rho, eps = group["rho"], group["eps"]
        if group["weight_decay"]:
            _add_weight_decay(xp, g, p, group["weight_decay"], tmp)
        _ema_square(xp, state["square_avg"], g, rho, tmp)
        xp.add(state["square_avg"], eps, out=tmp)
        xp.sqrt(tmp, out=tmp)
        g /= tmp
        xp.add(state["acc_delta"], eps, out=tmp)
        xp.sqrt(tmp, out=tmp)
        g *= tmp  # g is now the step Δ
        _ema_square(xp, state["acc_delta"], g, rho, tmp)
        xp.multiply(g, -group["lr"], out=tmp)
        p += tmp


class Adam(Optimizer):
    """Adam. m = β1·m + (1 − β1)·g; v = β2·v + (1 − β2)·g² (with `amsgrad`, v̂ = max(v̂, v) is
    used in its place); p −= lr/(1 − β1ᵗ) · m / (sqrt(v)/sqrt(1 − β2ᵗ) + eps).

    β1 = 0 (no first moment) and β1 = 0.5 (GANs) are fine. `weight_decay` adds weight_decay·p to
    the gradient (L2); AdamW decouples it instead. Keras' Adam uses eps 1e-7 (TF 1: 1e-8)."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _state_names(self, group):
        names = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if group["amsgrad"]:
            names["max_exp_avg_sq"] = 0.0
        return names

    def _check(self, group):
        for name in ("lr", "eps", "weight_decay"):
            _check_range(group, name)
        _check_betas(group)

    def _coefficients(self, group, s):
        beta1, beta2 = group["betas"]
        t = s["step"]
        # eps is scaled by sqrt(1 - β2ᵗ) so the denominator needs no division: one op fewer
        root = (1 - beta2 ** t) ** 0.5
        return {"step_size": group["lr"] * root / (1 - beta1 ** t), "eps": group["eps"] * root}

    def _update(self, group, p, g, state, c, tmp):
        xp = _xp(p)
        m, v = _adam_moments(xp, group, p, g, state, self.decoupled, tmp)
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        _step_by_ratio(xp, p, m, v, c["eps"], c["step_size"], tmp)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 − lr·weight_decay before the Adam step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class Nadam(Optimizer):
    """Adam with Nesterov momentum (Dozat), PyTorch's variant with momentum decay:
    μ_t = β1·(1 − 0.5·0.96^(t·momentum_decay)), Π_t = μ_1···μ_t;
    m and v as in Adam; d = sqrt(v/(1 − β2ᵗ)) + eps;
    p −= lr·(1 − μ_t)/(1 − Π_t) · g/d + lr·μ_{t+1}/(1 − Π_t·μ_{t+1}) · m/d.
    `decoupled_weight_decay` applies weight decay as in AdamW."""

    scalar_init = {"mu_product": 1.0}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay))

    state_init = {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _check(self, group):
        for name in ("lr", "eps", "weight_decay", "momentum_decay"):
            _check_range(group, name)
        _check_betas(group)

    def _coefficients(self, group, s):
        beta1, beta2 = group["betas"]
        t, decay, lr = s["step"], group["momentum_decay"], group["lr"]
        mu = beta1 * (1 - 0.5 * 0.96 ** (t * decay))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * decay))
        s["mu_product"] = s["mu_product"] * mu
        return {"grad_coef": lr * (1 - mu) / (1 - s["mu_product"]),
                "avg_coef": lr * mu_next / (1 - s["mu_product"] * mu_next),
                "inv_bias2": 1 / (1 - beta2 ** t)}

    def _update(self, group, p, g, state, c, tmp):
        xp = _xp(p)
        m, v = _adam_moments(xp, group, p, g, state, group["decoupled_weight_decay"], tmp)
        xp.multiply(v, c["inv_bias2"], out=tmp)
        xp.sqrt(tmp, out=tmp)
        tmp += group["eps"]
        g /= tmp
        g *= -c["grad_coef"]
        p += g
        xp.divide(m, tmp, out=g)
        g *= -c["avg_coef"]
        p += g


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad, "adadelta": Adadelta, "adam": Adam, "adamw": AdamW,
              "nadam": Nadam}


def create(params, name, **options):
    """The optimizer a config names: `name` (sgd, rmsprop, adagrad, adadelta, adam, adamw, nadam; any case)
    over `params`, with `options` its constructor's keywords (lr, betas, eps, ...). The one place where
    config names become classes: every trainer's optimizer setting and the `optim=` presets go through it.
    An unknown name or option raises one line listing the allowed ones."""
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    allowed = list(inspect.signature(cls).parameters)[1:]
    unknown = [key for key in options if key not in allowed]
    if unknown:
        raise ValueError(f"optimizer {name} has no option {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return cls(params, **options)


def _xp(array):
    return np if type(array) is np.ndarray else get_array_module(array)
