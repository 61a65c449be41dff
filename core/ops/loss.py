"""Fused losses: one graph node instead of four or five (the RL value losses are on the hot path)."""
from core.autograd import Function
from core.ops._util import check_device, xp_of
from core.ops.elementwise import clip


class SquaredError(Function):
    """sum or mean of (input - target)**2; reduction 'none' returns the elementwise squares."""

    def __init__(self, reduction):
        self.reduction = reduction

    def forward(self, x, t):
        d = x - t
        sq = d * d
        if self.reduction == "mean":
            return sq.mean()
        return sq.sum() if self.reduction == "sum" else sq

    def backward(self, gy):
        x, t = self.args
        d = x - t
        scale = 2.0 / d.size if self.reduction == "mean" else 2.0
        g = (gy * scale) * d
        return (g if self.needs_grad(0) else None), (-g if self.needs_grad(1) else None)


class Huber(Function):
    """Huber loss: 0.5 d² where |d| <= delta, else delta (|d| - 0.5 delta); d = input - target."""

    def __init__(self, delta, reduction):
        self.delta, self.reduction = delta, reduction

    def forward(self, x, t):
        xp = xp_of(x)
        d = x - t
        a = xp.abs(d)
        loss = xp.where(a <= self.delta, 0.5 * d * d, self.delta * (a - 0.5 * self.delta))
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def backward(self, gy):
        x, t = self.args
        d = x - t
        g = clip(d, -self.delta, self.delta)  # d in the quadratic zone, delta * sign(d) outside
        scale = 1.0 / d.size if self.reduction == "mean" else 1.0
        g = (gy * scale) * g
        return (g if self.needs_grad(0) else None), (-g if self.needs_grad(1) else None)


def _check(name, x, t, reduction):
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if x.shape != t.shape:
        raise ValueError(f"{name}: input shape {x.shape} and target shape {t.shape} differ")
    check_device(x, t)


def squared_error(x, t, reduction="mean"):
    _check("mse_loss", x, t, reduction)
    return SquaredError(reduction)(x, t)


def huber(x, t, delta=1.0, reduction="mean"):
    _check("huber_loss", x, t, reduction)
    return Huber(delta, reduction)(x, t)
