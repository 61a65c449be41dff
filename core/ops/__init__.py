"""All tensor ops, grouped by kind in the modules of this package."""
from core.ops.elementwise import (  # noqa: F401
    abs, add, cast, clip, cos, div, elu, eq, erf, exp, ge, gelu, gt, isfinite, le, leaky_relu, log, log1p,
    logical_and, logical_not, logical_or, logsigmoid, lt, maximum, minimum, mul, ne, neg, pow, relu, selu, sigmoid,
    silu, sin, softplus, sqrt, square, sub, tanh, to_device, where,
)
from core.ops.conv import (  # noqa: F401
    adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, conv2d, conv_transpose2d, global_avg_pool2d,
    global_max_pool2d, max_pool2d,
)
from core.ops._util import sum_rows  # noqa: F401  (bias gradients: BLAS column sums on raw arrays)
from core.ops.linalg import fused_mlp, linear, matmul, mlp  # noqa: F401
from core.ops.reduce import (  # noqa: F401
    all, any, argmax, argmin, cumsum, log_softmax, logsumexp, max, mean, min, norm, softmax, std, sum, var,
)
from core.ops.shape import (  # noqa: F401
    broadcast_to, cat, chunk, concat, concatenate, expand_as, flatten, flip, gather, getitem, one_hot, pad, permute,
    reshape, reshape_as, split, squeeze, stack, sum_to, swapaxes, take_along_axis, transpose, unsqueeze, unwrap_index,
)
