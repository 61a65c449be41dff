"""The lab's tensor/autodiff core on numpy (CPU) and cupy (GPU)."""
from core.tensor import (  # noqa: F401
    Tensor, arange, as_tensor, bool_, empty, eye, float16, float32, float64, full, full_like, get_default_dtype,
    int8, int16, int32, int64, linspace, ones, ones_like, tensor, uint8, zeros, zeros_like,
)
from core.autograd import backward, enable_grad, grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from core.ops import *  # noqa: F401,F403
from core.ops import abs, all, any, max, min, pow, sum  # noqa: F401  (names `import *` skips as builtins)
from core.random import (  # noqa: F401
    Generator, bernoulli, categorical, default_generator, manual_seed, normal, rand, randint, randn, randperm,
    uniform,
)
from core.backend import cupy_available  # noqa: F401
from core.gradcheck import gradcheck, gradgradcheck  # noqa: F401
from core import functional  # noqa: F401
from core.serialization import CheckpointError, load, save  # noqa: F401
from core import distributions, optim  # noqa: F401
from core import nn  # noqa: F401
from core.memory import keep_freed_memory

keep_freed_memory()  # big temporaries reuse the heap's pages (see core/memory.py)
