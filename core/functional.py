"""`core.functional` (imported as F): stateless activations, normalisations and losses."""
from core.ops import (  # noqa: F401
    elu, gelu, leaky_relu, linear, log_softmax, logsumexp, one_hot, relu, selu, sigmoid, silu, softmax, softplus,
    tanh,
)
from core.ops import abs, log1p, exp, relu as _relu


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """Sigmoid cross-entropy from logits, stable for any logit: max(z,0) - z*t + log1p(exp(-|z|))."""
    loss = _relu(logits) - logits * target + log1p(exp(-abs(logits)))
    return _reduce(loss, reduction)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
