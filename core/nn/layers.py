"""Basic layers: Linear, Identity, Flatten, Unflatten, Dropout, Embedding."""
import math

from core import functional as F
from core.nn import init as initializers
from core.nn.module import Module, Parameter
from core.ops import flatten, linear, reshape
from core.tensor import Tensor, empty


class _WeightBias(Module):
    """A layer with a `weight` and an optional `bias`, initialised as PyTorch's (init "torch") or Keras'
    (init "keras") Dense/Conv defaults: Linear and the convolutions."""

    def _create_parameters(self, weight_shape, bias_size, init, dtype, device, generator):
        """The parameters, then their initial values; `bias_size` None: no bias."""
        self.weight = Parameter(empty(*weight_shape, dtype=dtype, device=device))
        self.bias = None if bias_size is None else Parameter(empty(bias_size, dtype=dtype, device=device))
        self.reset_parameters(init, generator)

    def reset_parameters(self, init=None, generator=None):
        self.init = initializers.check_init(init or self.init)
        default = initializers.keras_default_ if self.init == "keras" else initializers.torch_default_
        default(self.weight, self.bias, generator)


class Linear(_WeightBias):
    """y = x @ weight.T + bias with weight (out_features, in_features), as PyTorch; one fused op.
    `init="torch"` (default) or `"keras"` (glorot_uniform weight, zero bias): see `core.nn.init`."""

    def __init__(self, in_features, out_features, bias=True, init="torch", dtype=None, device="cpu", generator=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._create_parameters((out_features, in_features), out_features if bias else None, init, dtype, device,
                                generator)

    def forward(self, x):
        try:
            return linear(x, self.weight, self.bias)
        except ValueError:
            if x.shape[-1:] == (self.in_features,):
                raise
            raise ValueError(f"{self!r} expected input of shape (..., {self.in_features}), got {x.shape}") from None

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    def forward(self, x):
        return x


class Flatten(Module):
    """Flatten axes start_dim..end_dim into one (default: everything but the batch axis)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        if x.ndim <= self.start_dim:
            raise ValueError(f"Flatten(start_dim={self.start_dim}) needs input with more than {self.start_dim} "
                             f"dimensions, got shape {x.shape}")
        return flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split axis `dim` into `unflattened_size` (e.g. Unflatten(1, (64, 7, 7)) after a Linear)."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        dim = self.dim % x.ndim
        if x.shape[dim] != math.prod(self.unflattened_size):
            raise ValueError(f"Unflatten({self.dim}, {self.unflattened_size}) needs axis {self.dim} of size "
                             f"{math.prod(self.unflattened_size)}, got shape {x.shape}")
        return reshape(x, x.shape[:dim] + self.unflattened_size + x.shape[dim + 1:])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Dropout(Module):
    """Inverted dropout while training (kept units scaled by 1/(1 - p)); the identity in eval mode.
    Draws from `generator`, or the global generator that `core.manual_seed` seeds."""

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self):
        return f"p={self.p}"


class Embedding(Module):
    """A lookup table: integer indices of any shape -> their rows of weight (num_embeddings, embedding_dim).
    `padding_idx` rows get no gradient and read as zeros. init "torch": N(0, 1); "keras": U(+-0.05)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, init="torch", dtype=None, device="cpu",
                 generator=None):
        super().__init__()
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx must be in [-{num_embeddings}, {num_embeddings}), got {padding_idx}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.weight = Parameter(empty(num_embeddings, embedding_dim, dtype=dtype, device=device))
        self.reset_parameters(init, generator)

    @classmethod
    def from_pretrained(cls, weight, freeze=True, padding_idx=None):
        """An Embedding holding `weight` (e.g. GloVe vectors), frozen unless freeze=False."""
        weight = weight if isinstance(weight, Parameter) else Parameter(weight)
        layer = cls(weight.shape[0], weight.shape[1], padding_idx, dtype=weight.dtype, device=weight.device)
        layer.weight = weight
        return layer.requires_grad_(not freeze)

    def reset_parameters(self, init=None, generator=None):
        self.init = initializers.check_init(init or self.init)
        if self.init == "keras":
            initializers.uniform_(self.weight, -0.05, 0.05, generator)
        else:
            initializers.normal_(self.weight, 0.0, 1.0, generator)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0
            self.weight._version += 1

    def forward(self, indices):
        idx = indices.data if isinstance(indices, Tensor) else self.weight.xp.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding needs integer indices, got dtype {idx.dtype}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings):
            raise IndexError(f"Embedding({self.num_embeddings}, {self.embedding_dim}): indices must lie in "
                             f"[0, {self.num_embeddings}), got range [{int(idx.min())}, {int(idx.max())}]")
        out = self.weight[idx]
        if self.padding_idx is not None:
            keep = (idx != self.padding_idx)[..., None].astype(out.dtype)
            out = out * Tensor._make(keep)
        return out

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
