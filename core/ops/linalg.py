"""Matrix products: batched/broadcast matmul and the fused linear layer op."""
from core.autograd import Function
from core.ops._util import check_device, sum_rows, unbroadcast
from core.ops.shape import reshape, swapaxes, squeeze, unsqueeze


class MatMul(Function):
    def forward(self, a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                             f"({a.shape[-1]} != {b.shape[-2]})")
        return a @ b

    def backward(self, gy):
        a, b = self.args
        ga = unbroadcast(gy @ swapaxes(b, -1, -2), a.shape) if self.needs_grad(0) else None
        gb = unbroadcast(swapaxes(a, -1, -2) @ gy, b.shape) if self.needs_grad(1) else None
        return ga, gb


def matmul(a, b):
    check_device("matmul", a, b)
    if a.ndim == 1 and b.ndim == 1:
        return squeeze(MatMul()(unsqueeze(a, 0), unsqueeze(b, 1)))
    if a.ndim == 1:
        return squeeze(MatMul()(unsqueeze(a, 0), b), -2)
    if b.ndim == 1:
        return squeeze(MatMul()(a, unsqueeze(b, 1)), -1)
    return MatMul()(a, b)


class Linear(Function):
    """y = x @ W.T + b with W of shape (out, in), as in PyTorch; one node instead of three."""

    def forward(self, x, w, b=None):
        try:
            y = x.dot(w.T)  # = x @ w.T for a 2-D w, with less call overhead than matmul at small sizes
        except ValueError:  # checked only on failure: this runs once per layer call
            raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) "
                             f"but the weight expects {w.shape[1]} (weight shape {w.shape})") from None
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        x, w = self.args[:2]
        g2 = reshape(gy, (-1, gy.shape[-1])) if gy.ndim != 2 else gy
        gx = gy @ w if self.needs_grad(0) else None
        gw = g2.T @ (reshape(x, (-1, x.shape[-1])) if x.ndim != 2 else x) if self.needs_grad(1) else None
        if len(self.inputs) == 2:
            return gx, gw
        return gx, gw, (sum_rows(g2) if self.needs_grad(2) else None)


def linear(x, weight, bias=None):
    return Linear()(x, weight) if bias is None else Linear()(x, weight, bias)
