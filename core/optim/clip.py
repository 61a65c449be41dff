"""Gradient clipping by value and by (global) norm, in place on the parameters' `.grad`.

Clipped gradients are new arrays assigned to `.grad`: a gradient may be a read-only broadcast
view, or one tensor shared by several parameters, so it is never written into.
"""
import math

from core.backend import get_array_module
from core.tensor import Tensor


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value]."""
    if clip_value < 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value}")
    for p in _grads(parameters):
        g = p.grad.data
        xp = get_array_module(g)
        # asarray: ufuncs return 0-d results as scalars
        p.grad = Tensor._make(xp.asarray(xp.clip(g, -clip_value, clip_value)))


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their global norm (the norm of the concatenation of
    every gradient) is at most `max_norm`; returns the global norm before clipping as a float.
    As in PyTorch the scale is max_norm / (norm + 1e-6), applied only when it is below 1."""
    params = _grads(parameters)
    if not params:
        return 0.0
    norm_type = float(norm_type)
    xp = get_array_module(params[0].grad.data)
    flat = xp.concatenate([p.grad.data for p in params], axis=None)
    if norm_type == math.inf:
        total = float(xp.abs(flat).max()) if flat.size else 0.0
    elif norm_type == 2.0:
        total = math.sqrt(float(xp.dot(flat, flat)))
    elif norm_type > 0:
        total = float((xp.abs(flat) ** norm_type).sum()) ** (1.0 / norm_type)
    else:
        raise ValueError(f"norm_type must be positive (or inf), got {norm_type}")
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total gradient norm of order {norm_type} is {total}; "
                           "pass error_if_nonfinite=False to clip anyway")
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for p in params:
            p.grad = Tensor._make(xp.asarray(p.grad.data * scale))
    return total
