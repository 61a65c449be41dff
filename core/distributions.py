"""Probability distributions for policies and latent variables: `Categorical` and diagonal `Normal`.

Parameters may be Tensors that require grad; `log_prob`, `entropy` and `Normal.rsample` are
differentiable with respect to them. `Normal` is elementwise (batch shape = the parameters'
broadcast shape). For a diagonal multivariate Gaussian over the last axis, sum in the caller:
`dist.log_prob(x).sum(-1)` and `dist.entropy().sum(-1)` (what PyTorch's `Independent(Normal, 1)` does).
"""
import math

import numpy as np

from core.ops import broadcast_to, clip, log, logsumexp, one_hot, softmax, where
from core.random import default_generator
from core.tensor import Tensor, get_default_dtype


def _as_tensor(value, like=None):
    if isinstance(value, Tensor):
        return value
    dtype = like.dtype if like is not None else get_default_dtype()
    xp = like.xp if like is not None else np
    return Tensor._make(xp.asarray(value, dtype=dtype))


def _shape(sample_shape):
    return (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)


class Categorical:
    """A categorical distribution over the last axis, from unnormalised `logits` or from `probs`
    (normalised along the last axis). Samples are int64 class indices."""

    def __init__(self, logits=None, probs=None):
        if (logits is None) == (probs is None):
            raise ValueError("Categorical needs exactly one of logits and probs")
        if logits is not None:
            logits = _as_tensor(logits)
            if logits.ndim == 0:
                raise ValueError("Categorical logits need at least one axis (the classes)")
            self.logits = logits - logsumexp(logits, -1, keepdims=True)
            self._probs = None
        else:
            probs = _as_tensor(probs)
            if probs.ndim == 0:
                raise ValueError("Categorical probs need at least one axis (the classes)")
            self._probs = probs / probs.sum(-1, keepdims=True)
            tiny = float(np.finfo(probs.dtype).tiny)
            self.logits = log(clip(self._probs, tiny, None))  # zero probabilities get a finite log
        self.batch_shape = self.logits.shape[:-1]
        self.num_classes = self.logits.shape[-1]

    @property
    def probs(self):
        if self._probs is None:
            self._probs = softmax(self.logits, -1)
        return self._probs

    def sample(self, sample_shape=(), generator=None):
        """Class indices of shape sample_shape + batch_shape (no gradient)."""
        sample_shape = _shape(sample_shape)
        gen = generator if generator is not None else default_generator
        n = math.prod(sample_shape)
        if not sample_shape:
            return gen.categorical(self.logits.data)
        draws = gen.categorical(self.logits.data, num_samples=n).data  # batch_shape + (n,)
        xp = self.logits.xp
        return Tensor._make(xp.moveaxis(draws, -1, 0).reshape(sample_shape + self.batch_shape))

    def log_prob(self, value):
        """log p(value) for class indices `value` (broadcast against batch_shape)."""
        idx = value.data if isinstance(value, Tensor) else self.logits.xp.asarray(value)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Categorical.log_prob needs integer class indices, got dtype {idx.dtype}")
        chosen = one_hot(Tensor._make(idx), self.num_classes, dtype=np.bool_).data
        # where, not a product with the one-hot: masked-out classes (logit -inf) would give 0·(-inf) = nan
        return where(chosen, self.logits, 0.0).sum(-1)

    def entropy(self):
        """−Σ p·log p over the classes; zero-probability classes (logits −inf) contribute 0."""
        floor = float(np.finfo(self.logits.dtype).min)
        return -(self.probs * clip(self.logits, floor, None)).sum(-1)

    @property
    def mode(self):
        """The most probable class (int64, no gradient)."""
        return self.logits.argmax(-1)

    def __repr__(self):
        return f"Categorical(batch_shape={self.batch_shape}, num_classes={self.num_classes})"


class Normal:
    """Elementwise Gaussian N(loc, scale²); loc and scale broadcast together."""

    def __init__(self, loc, scale):
        like = loc if isinstance(loc, Tensor) else scale if isinstance(scale, Tensor) else None
        self.loc = _as_tensor(loc, like)
        self.scale = _as_tensor(scale, like)
        self.batch_shape = np.broadcast_shapes(self.loc.shape, self.scale.shape)

    @property
    def mean(self):
        return self.loc

    @property
    def stddev(self):
        return self.scale

    @property
    def variance(self):
        return self.scale * self.scale

    @property
    def mode(self):
        return self.loc

    def _noise(self, sample_shape, generator):
        gen = generator if generator is not None else default_generator
        return gen.normal(_shape(sample_shape) + self.batch_shape, dtype=self.loc.dtype, device=self.loc.device)

    def rsample(self, sample_shape=(), generator=None):
        """loc + scale·ε with ε ~ N(0, 1): differentiable in loc and scale (reparameterisation)."""
        return self.loc + self.scale * self._noise(sample_shape, generator)

    def sample(self, sample_shape=(), generator=None):
        """A sample of shape sample_shape + batch_shape, without gradient."""
        eps = self._noise(sample_shape, generator).data
        return Tensor._make(self.loc.xp.asarray(self.loc.data + self.scale.data * eps))

    def log_prob(self, value):
        """−(value − loc)²/(2·scale²) − log scale − log(2π)/2, elementwise."""
        value = _as_tensor(value, self.loc)
        z = (value - self.loc) / self.scale
        return -0.5 * (z * z) - log(self.scale) - 0.5 * math.log(2 * math.pi)

    def entropy(self):
        """1/2 + log(2π)/2 + log scale, elementwise."""
        h = log(self.scale) + 0.5 * (1 + math.log(2 * math.pi))
        return h if h.shape == self.batch_shape else broadcast_to(h, self.batch_shape)

    def __repr__(self):
        return f"Normal(batch_shape={self.batch_shape})"
