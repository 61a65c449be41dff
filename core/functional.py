"""`core.functional` (imported as F): stateless activations, normalisations and losses."""
from core.ops import (  # noqa: F401
    elu, gelu, leaky_relu, linear, log_softmax, logsumexp, one_hot, relu, selu, sigmoid, silu, softmax, softplus,
    tanh,
)


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """Sigmoid cross-entropy from logits, stable for any logit: softplus(z) - z*t."""
    loss = softplus(logits) - logits * target
    return _reduce(loss, reduction)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
