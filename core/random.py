"""Seedable random numbers. A `Generator` owns a numpy PCG64 stream (and, lazily, a cupy one for
GPU tensors); `manual_seed` reseeds the global default generator. Same seed, same numbers on CPU."""
import numpy as np

from core import backend
from core.tensor import Tensor, get_default_dtype


class Generator:
    def __init__(self, seed=None):
        self.manual_seed(seed)

    def manual_seed(self, seed):
        self.seed = seed
        self.np = np.random.Generator(np.random.PCG64(seed))
        self._gpu = None
        return self

    def get_state(self):
        return {"bit_generator": self.np.bit_generator.state, "seed": self.seed}

    def set_state(self, state):
        self.np.bit_generator.state = state["bit_generator"]
        self.seed = state.get("seed")
        self._gpu = None

    def _rng(self, device):
        if backend.parse_device(device)[0] == "cpu":
            return self.np
        if self._gpu is None:  # seeded from the CPU stream so one seed fixes both
            self._gpu = backend.array_module(device).random.default_rng(int(self.np.integers(2 ** 63)))
        return self._gpu

    def _out(self, array, device, dtype):
        if backend.parse_device(device)[0] == "cpu":
            return Tensor._make(np.asarray(array, dtype=dtype))
        return Tensor._make(array.astype(dtype, copy=False))

    def normal(self, shape, mean=0.0, std=1.0, dtype=None, device="cpu"):
        dtype = dtype or get_default_dtype()
        return self._out(self._rng(device).standard_normal(shape, dtype=np.float64 if dtype == np.float16 else dtype)
                         * std + mean, device, dtype)

    def uniform(self, shape, low=0.0, high=1.0, dtype=None, device="cpu"):
        dtype = dtype or get_default_dtype()
        u = self._rng(device).random(shape, dtype=np.float64 if dtype == np.float16 else dtype)
        if (low, high) != (0.0, 1.0):  # U(0, 1) (dropout masks) skips two passes that would not change it
            u = u * (high - low) + low
        return self._out(u, device, dtype)

    def integers(self, low, high=None, shape=(), dtype=np.int64, device="cpu"):
        return self._out(self._rng(device).integers(low, high, size=shape), device, dtype)

    def permutation(self, n, device="cpu"):
        if backend.parse_device(device)[0] == "cpu":
            return self._out(self.np.permutation(n), device, np.int64)
        return self._out(self._rng(device).random(n).argsort(), device, np.int64)  # cupy's Generator has no permutation

    def bernoulli(self, p, shape=None, device="cpu"):
        """1.0 with probability p (a float or a tensor of probabilities), else 0.0."""
        if isinstance(p, Tensor):
            return Tensor._make((self._rng(p.device).random(p.shape) < p.data).astype(p.dtype))
        return self._out(self._rng(device).random(shape) < p, device, get_default_dtype())

    def categorical(self, logits, num_samples=None):
        """Sample class indices from unnormalised log-probabilities along the last axis
        (inverse CDF: one uniform draw per sample)."""
        data = logits.data if isinstance(logits, Tensor) else logits
        xp = backend.get_array_module(data)
        data = data if xp is not np else np.asarray(data)  # a device array stays on its device
        z = data - data.max(axis=-1, keepdims=True)
        p = xp.exp(z)
        cdf = xp.cumsum(p, axis=-1)
        total = cdf[..., -1:]
        if num_samples is None:
            u = self._rng(backend.device_of(data)).random(data.shape[:-1]) * total[..., 0]
            idx = (cdf < u[..., None]).sum(axis=-1)
        else:
            u = self._rng(backend.device_of(data)).random(data.shape[:-1] + (num_samples,)) * total
            idx = (cdf[..., None, :] < u[..., None]).sum(axis=-1)
        return Tensor._make(xp.minimum(idx, data.shape[-1] - 1).astype(np.int64))


default_generator = Generator(None)


def manual_seed(seed):
    """Reseed the global generator (and numpy's legacy global state, which some libraries use)."""
    default_generator.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    return default_generator


def _gen(generator):
    return generator if generator is not None else default_generator


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def randn(*shape, generator=None, dtype=None, device="cpu", requires_grad=False):
    t = _gen(generator).normal(_shape(shape), dtype=dtype, device=device)
    return t.requires_grad_(True) if requires_grad else t


def rand(*shape, generator=None, dtype=None, device="cpu", requires_grad=False):
    t = _gen(generator).uniform(_shape(shape), dtype=dtype, device=device)
    return t.requires_grad_(True) if requires_grad else t


def normal(mean, std, shape, generator=None, dtype=None, device="cpu"):
    return _gen(generator).normal(tuple(shape), mean, std, dtype, device)


def uniform(low, high, shape, generator=None, dtype=None, device="cpu"):
    return _gen(generator).uniform(tuple(shape), low, high, dtype, device)


def randint(low, high, shape, generator=None, dtype=np.int64, device="cpu"):
    return _gen(generator).integers(low, high, tuple(shape), dtype, device)


def randperm(n, generator=None, device="cpu"):
    return _gen(generator).permutation(n, device)


def bernoulli(p, generator=None):
    return _gen(generator).bernoulli(p)


def categorical(logits, num_samples=None, generator=None):
    return _gen(generator).categorical(logits, num_samples)
