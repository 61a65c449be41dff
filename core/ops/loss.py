"""Fused losses of d = input - target: one graph node instead of five or more (RL value losses sit on
the hot path). Each subclass gives the loss of d on arrays and its derivative as an expression that
works on arrays and on Tensors alike, so the fast no-graph backward and second-order gradients share
one formula."""
from core.autograd import Function
from core.ops._util import xp_of
from core.ops.elementwise import clip


class DifferenceLoss(Function):
    def __init__(self, reduction, param=None):
        self.reduction, self.param = reduction, param

    def forward(self, x, t):
        d = x - t
        loss = self.value(d)
        if self.reduction == "none":
            return loss
        total = loss.sum()
        if self.reduction == "sum":
            return total
        return total * (1.0 / d.size) if d.size else total * float("nan")

    def backward(self, gy):
        x, t = self.args
        if self.reduction == "mean":
            gy = gy * (1.0 / x.size if x.size else float("nan"))
        g = self.derivative(x - t) * gy
        return (g if self.needs_grad(0) else None), (-g if self.needs_grad(1) else None)


class SquaredError(DifferenceLoss):
    def value(self, d):
        return d * d

    def derivative(self, d):
        return d * 2.0


class Huber(DifferenceLoss):
    """param = delta: 0.5 d² where |d| < delta, else delta (|d| - 0.5 delta)."""

    def value(self, d):
        delta = self.param
        size = abs(d)
        return xp_of(d).where(size < delta, 0.5 * d * d, delta * (size - 0.5 * delta))

    def derivative(self, d):
        return clip(d, -self.param, self.param)
