"""Finite-difference checks of gradients (first order) and of gradients of gradients (second order).

Both compare a random projection of the analytic Jacobian with central differences in float64;
a random projection makes every entry of the Jacobian count, with one backward per check.
"""
import numpy as np

from core import autograd
from core.tensor import Tensor


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _projected(fn, inputs, weights):
    """sum_k <fn(inputs)_k, weights_k>: a scalar whose gradient is a vector-Jacobian product."""
    outs = _as_tuple(fn(*inputs))
    total = None
    for out, w in zip(outs, weights):
        if out is None:
            continue
        term = (out * Tensor._make(w)).sum()
        total = term if total is None else total + term
    return total


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True):
    """Check autodiff gradients of `fn` w.r.t. every input that requires grad (use float64 inputs)."""
    inputs = _as_tuple(inputs)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype != np.float64:
            raise TypeError(f"gradcheck input {i} is {x.dtype}; finite differences need float64")
    rng = np.random.default_rng(seed)
    outs = _as_tuple(fn(*inputs))
    weights = [None if o is None else rng.standard_normal(o.shape) for o in outs]
    wrt = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    total = _projected(fn, inputs, weights)
    if total is None or not total.requires_grad:  # output independent of the inputs: zero gradient
        analytic = [None] * len(wrt)
    else:
        analytic = autograd.grad(total, wrt, allow_unused=True)
    for k, x in enumerate(wrt):
        numeric = np.zeros(x.shape)
        flat = x.data.reshape(-1)
        with autograd.no_grad():
            for j in range(flat.size):
                orig = flat[j]
                flat[j] = orig + eps
                plus = _projected(fn, inputs, weights).item()
                flat[j] = orig - eps
                minus = _projected(fn, inputs, weights).item()
                flat[j] = orig
                numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        got = np.zeros(x.shape) if analytic[k] is None else np.asarray(analytic[k].data, dtype=np.float64)
        if not np.allclose(got, numeric, atol=atol, rtol=rtol):
            if raise_exception:
                err = np.abs(got - numeric).max()
                raise AssertionError(f"gradcheck failed for input {k} (shape {x.shape}): max abs error {err:.3g}\n"
                                     f"analytic={got.ravel()[:8]}\nnumeric={numeric.ravel()[:8]}")
            return False
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=1, raise_exception=True):
    """Check second-order gradients: gradcheck of x -> d<fn(x), v>/dx built with create_graph=True."""
    inputs = _as_tuple(inputs)
    rng = np.random.default_rng(seed)
    outs = _as_tuple(fn(*inputs))
    weights = [None if o is None else rng.standard_normal(o.shape) for o in outs]
    positions = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]

    def first_grads(*xs):
        with autograd.enable_grad():  # gradcheck evaluates its finite differences under no_grad
            total = _projected(fn, xs, weights)
            return autograd.grad(total, [xs[i] for i in positions], create_graph=True, allow_unused=True)

    return gradcheck(first_grads, inputs, eps, atol, rtol, seed + 1, raise_exception)
