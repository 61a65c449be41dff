"""Matrix products: batched/broadcast matmul, the fused linear layer op, and a stack of linear layers
(an MLP) composed from them and fused into one node."""
from core.autograd import Function
from core.ops._util import check_device, relu_array, sum_rows, unbroadcast, xp_of
from core.ops.elementwise import relu, tanh
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


# ----- a stack of linear layers: composed, and fused into one node -----
MLP_ACTIVATIONS = {"tanh": tanh, "relu": relu}


def check_mlp(params, activation):
    if activation not in MLP_ACTIVATIONS:
        raise ValueError(f"mlp: unknown activation {activation!r}; allowed: {', '.join(MLP_ACTIVATIONS)}")
    if not params or len(params) % 2:
        raise ValueError(f"mlp: params must be weight, bias pairs (weight₁, bias₁, weight₂, bias₂, ...), got "
                         f"{len(params)} tensors")


def mlp(x, params, activation="tanh", activate_output=False):
    """Linear layers with `activation` ("tanh" or "relu") between them, and after the last one with
    `activate_output`: params = (weight₁, bias₁, weight₂, bias₂, ...), weights (out, in) as in nn.Linear.
    The composed form, differentiable to any order; `fused_mlp` is the same as one graph node."""
    check_mlp(params, activation)
    act = MLP_ACTIVATIONS[activation]
    last = len(params) // 2 - 1
    for i in range(last + 1):
        x = linear(x, params[2 * i], params[2 * i + 1])
        if i < last or activate_output:
            x = act(x)
    return x


def fused_mlp(x, params, activation="tanh", activate_output=False):
    """`mlp` as ONE graph node, with bitwise the same values and gradients (tested against it). The
    agents' networks are 64 wide and run on batches of a few hundred, where the bookkeeping of a node
    per layer costs as much as the arithmetic. First-order gradients only: use `mlp` under
    create_graph."""
    check_mlp(params, activation)
    return FusedMLP(activation, activate_output)(x, *params)


class FusedMLP(Function):
    """The node of `fused_mlp`: forward saves each layer's input; backward runs the layers' Linear and
    activation gradients in reverse on raw arrays. The activation's derivative comes from its output h:
    1 − h² for tanh, h > 0 for relu (= input > 0, relu's own rule at the kink)."""

    def __init__(self, activation, activate_output):
        self.activation, self.activate_output = activation, activate_output

    def forward(self, x, *params):
        xp = xp_of(x)
        self.layer_inputs = []
        h = x
        last = len(params) // 2 - 1
        for i in range(last + 1):
            self.layer_inputs.append(h)
            try:
                h = h @ params[2 * i].T
            except ValueError:  # checked only on failure
                raise ValueError(f"mlp: layer {i} gets {h.shape[-1]} features (shape {h.shape}) but its weight "
                                 f"has shape {params[2 * i].shape}") from None
            h += params[2 * i + 1]
            if i < last or self.activate_output:
                xp.tanh(h, out=h) if self.activation == "tanh" else relu_array(h, out=h)
        self.out = h
        return h

    def _activation_grad(self, g, h):
        return g * (1 - h * h) if self.activation == "tanh" else g * (h > 0)

    def backward(self, gy):
        if not self._raw:
            raise RuntimeError("fused_mlp has no second-order gradients; use core.functional.mlp under create_graph")
        x, *params = self.args
        grads = [None] * len(params)
        g = self._activation_grad(gy, self.out) if self.activate_output else gy
        for i in reversed(range(len(params) // 2)):
            grads[2 * i] = g.T @ self.layer_inputs[i]
            grads[2 * i + 1] = sum_rows(g)
            if i == 0:
                break
            g = self._activation_grad(g @ params[2 * i], self.layer_inputs[i])
        gx = g @ params[0] if self.needs_grad(0) else None
        return (gx, *grads)
