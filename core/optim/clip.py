"""Gradient clipping by value and by (global) norm, in place on the parameters' `.grad`.

Clipped gradients are new arrays assigned to `.grad`: a gradient may be a read-only broadcast
view, or one tensor shared by several parameters, so it is never written into.
"""
import math

import numpy as np

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
    every gradient) is at most `max_norm`; returns the global norm before clipping as a 0-d float64
    tensor on the gradients' device, as PyTorch does: nothing here waits for a GPU (float() of the
    result does). As in PyTorch the scale is min(max_norm / (norm + 1e-6), 1)."""
    params = _grads(parameters)
    if not params:
        return Tensor._make(np.zeros((), np.float64))
    norm_type = float(norm_type)
    xp = get_array_module(params[0].grad.data)
    flat = xp.concatenate([p.grad.data for p in params], axis=None)
    # the norm in float64 (the sum stays in the gradients' dtype)
    if norm_type == math.inf:
        total = xp.asarray(xp.abs(flat).max() if flat.size else 0.0, dtype=np.float64)
    elif norm_type == 2.0:
        total = xp.sqrt(xp.asarray(xp.dot(flat, flat), dtype=np.float64))
    elif norm_type > 0:
        total = xp.asarray((xp.abs(flat) ** norm_type).sum(), dtype=np.float64) ** (1.0 / norm_type)
    else:
        raise ValueError(f"norm_type must be positive (or inf), got {norm_type}")
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"the total gradient norm of order {norm_type} is {float(total)}; "
                           "pass error_if_nonfinite=False to clip anyway")
    # on a GPU applied always: multiplying by 1 leaves a gradient exact, and deciding would wait for it
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    if xp is np and scale == 1.0:
        return Tensor._make(total)
    for p in params:
        g = p.grad.data
        p.grad = Tensor._make(xp.asarray(g * scale.astype(g.dtype)))
    return Tensor._make(xp.asarray(total))
