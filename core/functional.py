"""`core.functional` (imported as F): stateless activations, normalisations and losses."""
import math as _math

from core.ops import (  # noqa: F401  (re-exported: F.relu, F.conv2d, ...)
    adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, conv2d, conv_transpose2d, elu, fused_mlp, gelu,
    global_avg_pool2d, global_max_pool2d, leaky_relu, linear, log_softmax, logsigmoid, logsumexp, max_pool2d, mlp,
    one_hot, relu, selu, sigmoid, silu, softmax, softplus, tanh,
)
from core.ops import abs as _abs, clip as _clip, exp as _exp, log as _log, maximum as _maximum, where as _where
from core.ops._util import pair as _pair
from core.ops.linalg import check_mlp as _check_mlp
from core.ops.loss import (CategoricalPPOLoss as _CategoricalPPOLoss, Huber as _Huber, MLPQLoss as _MLPQLoss,
                           SquaredError as _SquaredError)
from core.ops.reduce import normalize as _normalize
from core.random import default_generator as _default_generator
from core.tensor import Tensor as _Tensor


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


# ----- losses (reduction: 'mean' (default), 'sum' or 'none') -----


def _check_same_shape(name, input, target):
    shape = getattr(target, "shape", None)
    if shape is not None and tuple(shape) != input.shape:
        raise ValueError(f"{name}: input shape {input.shape} and target shape {tuple(shape)} differ; "
                         "broadcasting them is almost always a bug (reshape one of them)")


def _difference_loss(name, loss, input, target, reduction):
    _check_same_shape(name, input, target)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return loss(*_pair(input, target))


def mse_loss(input, target, reduction="mean"):
    """Squared error (input − target)²."""
    return _difference_loss("mse_loss", _SquaredError(reduction), input, target, reduction)


def l1_loss(input, target, reduction="mean"):
    """Absolute error |input − target|."""
    _check_same_shape("l1_loss", input, target)
    return _reduce(_abs(input - target), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5·d² where |d| < delta, else delta·(|d| − 0.5·delta), with d = input − target (Keras' Huber,
    the DQN TD loss)."""
    if delta <= 0:
        raise ValueError(f"huber_loss delta must be > 0, got {delta}")
    return _difference_loss("huber_loss", _Huber(reduction, delta), input, target, reduction)


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """huber_loss / beta: 0.5·d²/beta where |d| < beta, else |d| − 0.5·beta; beta = 0 gives the L1 loss."""
    if beta < 0:
        raise ValueError(f"smooth_l1_loss beta must be >= 0, got {beta}")
    if beta == 0:
        return l1_loss(input, target, reduction)
    return huber_loss(input, target, reduction, beta) * (1.0 / beta)


def _floored_log(p):
    """log(p) floored at −100 as in PyTorch's BCE; the floored entries get zero gradient (never 0·inf)."""
    keep = p.data > _math.exp(-100.0)
    return _where(keep, _log(_where(keep, p, 1.0)), -100.0)


def binary_cross_entropy(input, target, reduction="mean", *, weight=None, eps=None):
    """−(t·log p + (1 − t)·log(1 − p)) on probabilities p = input, each log floored at −100 as in PyTorch.
    `eps` clips p to [eps, 1 − eps] first, as Keras does (eps=1e-7 there); `weight` rescales each element."""
    _check_same_shape("binary_cross_entropy", input, target)
    if eps is not None:
        input = _clip(input, eps, 1.0 - eps)
    loss = -(target * _floored_log(input) + (1 - target) * _floored_log(1 - input))
    return _reduce(loss if weight is None else loss * weight, reduction)


def binary_cross_entropy_with_logits(logits, target, reduction="mean", *, weight=None, pos_weight=None):
    """Sigmoid cross-entropy from logits z, stable for any z: softplus(z) − z·t. `pos_weight` (per class,
    broadcast over the last axis) scales the positive term: (1 − t)·z + (1 + (pos_weight − 1)·t)·softplus(−z).
    `weight` rescales each element."""
    _check_same_shape("binary_cross_entropy_with_logits", logits, target)
    if pos_weight is None:
        loss = softplus(logits) - logits * target
    else:
        loss = (1 - target) * logits + (1 + (pos_weight - 1) * target) * softplus(-logits)
    return _reduce(loss if weight is None else loss * weight, reduction)


def cross_entropy(input, target, reduction="mean", *, weight=None, ignore_index=-100, label_smoothing=0.0):
    """Softmax cross-entropy from logits, classes on axis 1 ((N, C) or (N, C, d1, ...); (C,) unbatched).

    `target` holds class indices (integers, the input's shape without the class axis) or class
    probabilities (floats, the input's shape). As in PyTorch: `label_smoothing` ε mixes the target with the
    uniform distribution, (1 − ε)·target + ε/C; `weight` (C,) rescales each class, and with index targets
    the mean divides by the summed weights of the targets; targets equal to `ignore_index` count for nothing."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    axis = 1 if input.ndim >= 2 else 0
    return _weighted_nll("cross_entropy", log_softmax(input, axis), target, axis, reduction, weight, ignore_index,
                         label_smoothing)


def nll_loss(input, target, reduction="mean", *, weight=None, ignore_index=-100):
    """Negative log-likelihood of class indices `target` under log-probabilities `input` (classes on
    axis 1, or axis 0 unbatched); `weight` and `ignore_index` as in `cross_entropy`."""
    dtype = getattr(target, "dtype", None)
    if dtype is None or dtype.kind not in "iu":
        raise TypeError(f"nll_loss needs integer class indices as target, got {dtype or type(target).__name__}")
    return _weighted_nll("nll_loss", input, target, 1 if input.ndim >= 2 else 0, reduction, weight, ignore_index, 0.0)


def _weighted_nll(name, logp, target, axis, reduction, weight, ignore_index, smoothing):
    """−Σ_c K[c]·logp[c] along `axis`, with every target, weight and smoothing folded into coefficients K."""
    xp = logp.xp
    n_classes = logp.shape[axis]
    class_shape = [1] * logp.ndim
    class_shape[axis] = n_classes
    w = None if weight is None else xp.asarray(weight.data if isinstance(weight, _Tensor) else weight,
                                               dtype=logp.dtype).reshape(class_shape)
    t = target.data if isinstance(target, _Tensor) else xp.asarray(target)
    if t.dtype.kind not in "iuf":
        raise TypeError(f"{name}: target must hold class indices (integers) or probabilities (floats), got {t.dtype}")
    if t.dtype.kind == "f":  # class probabilities
        if t.shape != logp.shape:
            raise ValueError(f"{name}: probability targets must have the input's shape {logp.shape}, got {t.shape}")
        coef = target * (1.0 - smoothing) + smoothing / n_classes if smoothing else target
        if w is not None:
            coef = coef * _Tensor._make(w)
        count = logp.size // n_classes if logp.size else 0
    else:
        expected = logp.shape[:axis] + logp.shape[axis + 1:]
        if t.shape != expected:
            raise ValueError(f"{name}: class-index target must have shape {expected} (the input {logp.shape} without "
                             f"its class axis {axis}), got {t.shape}")
        valid = t != ignore_index
        safe = xp.where(valid, t, 0)
        if safe.size and (int(safe.min()) < 0 or int(safe.max()) >= n_classes):
            raise ValueError(f"{name}: class indices must lie in [0, {n_classes}) (or equal ignore_index "
                             f"{ignore_index}), got values in [{int(safe.min())}, {int(safe.max())}]")
        onehot = xp.moveaxis(safe[..., None] == xp.arange(n_classes), -1, axis)
        coef = onehot * (1.0 - smoothing) + smoothing / n_classes if smoothing else onehot.astype(logp.dtype)
        coef = coef * xp.expand_dims(valid, axis)
        if w is not None:
            coef = coef * w
            count = float((onehot * w * xp.expand_dims(valid, axis)).sum())
        else:
            count = int(valid.sum())
        coef = _Tensor._make(coef.astype(logp.dtype, copy=False))
    if reduction == "none":
        return -(logp * coef).sum(axis)
    total = (logp * coef).sum()
    if reduction == "sum":
        return -total
    if reduction == "mean":
        # nothing counted (every target ignored, or of weight 0): NaN, the mean of nothing, with zero gradient
        return total * (-1.0 / count) if count else total + float("nan")
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def gaussian_kl(mu, logvar, reduction="mean"):
    """KL(N(mu, exp(logvar)) ‖ N(0, 1)) = −0.5·Σ(1 + logvar − mu² − exp(logvar)), summed over every axis
    but the first (the latent dimensions of each sample), then reduced over the batch (VAE style)."""
    _check_same_shape("gaussian_kl", mu, logvar)
    kl = -0.5 * (1 + logvar - mu * mu - _exp(logvar))
    if kl.ndim > 1:
        kl = kl.sum(tuple(range(1, kl.ndim)))
    return _reduce(kl, reduction)


# ----- PPO (Schulman et al. 2017): composed, and fused for categorical policies -----


def _clipped_surrogate(logratio, advantages, clip_range):
    ratio = _exp(logratio)
    negative = -advantages
    return _maximum(ratio * negative, _clip(ratio, 1 - clip_range, 1 + clip_range) * negative), ratio


def ppo_clip_loss(logratio, advantages, clip_range, reduction="mean"):
    """PPO's clipped surrogate objective as a loss, max(−A·r, −A·clip(r, 1 − ε, 1 + ε)) with
    r = exp(logratio) (logratio = log π − log π_old, a Tensor), A = advantages and ε = clip_range."""
    return _reduce(_clipped_surrogate(logratio, advantages, clip_range)[0], reduction)


def _check_value_clipping(old_values, clip_range_vf):
    if clip_range_vf is not None and old_values is None:
        raise ValueError("ppo_loss: clip_range_vf needs old_values (the values recorded with the rollout)")


def ppo_loss(logprobs, entropy, values, old_logprobs, advantages, returns, clip_range, vf_coef=0.5, ent_coef=0.0,
             old_values=None, clip_range_vf=None):
    """PPO's loss for any policy: ppo_clip_loss(logprobs − old_logprobs) + vf_coef·value − ent_coef·mean entropy,
    where value = mean((V − R)²), or with clip_range_vf the pessimistic mean of max((V − R)², (V_c − R)²),
    V_c = V_old + clip(V − V_old, ±clip_range_vf). logprobs, entropy and values are Tensors of the batch
    (entropy without gradient is fine when ent_coef is 0); the rest are arrays. Returns (loss, parts):
    parts holds arrays for the logs, policy_loss, value_loss, entropy (means) and per sample ratio and logratio.
    `fused_categorical_ppo_loss` computes the same for a categorical policy from its logits."""
    _check_value_clipping(old_values, clip_range_vf)
    logratio = logprobs - old_logprobs
    objective, ratio = _clipped_surrogate(logratio, advantages, clip_range)
    policy_loss = objective.mean()
    if clip_range_vf is None:
        value_loss = mse_loss(values, returns)
    else:
        clipped = old_values + _clip(values - old_values, -clip_range_vf, clip_range_vf)
        value_loss = _maximum((values - returns) ** 2, (clipped - returns) ** 2).mean()
    mean_entropy = entropy.mean()
    loss = policy_loss + vf_coef * value_loss
    if ent_coef:
        loss = loss - ent_coef * mean_entropy
    return loss, {"policy_loss": policy_loss.data, "value_loss": value_loss.data, "entropy": mean_entropy.data,
                  "ratio": ratio.data, "logratio": logratio.data}


def fused_categorical_ppo_loss(logits, values, actions, old_logprobs, advantages, returns, clip_range, vf_coef=0.5,
                               ent_coef=0.0, old_values=None, clip_range_vf=None):
    """`ppo_loss` of a categorical policy over `logits` (log π = log_softmax(logits) at `actions`, its
    entropy) as ONE graph node with the same values and gradients (first order only): on CartPole-sized
    minibatches the ~20 nodes of the composed form cost more in bookkeeping than in arithmetic."""
    _check_value_clipping(old_values, clip_range_vf)
    node = _CategoricalPPOLoss(actions, old_logprobs, advantages, returns, clip_range, vf_coef, ent_coef, old_values,
                               clip_range_vf)
    return node(logits, values), node.parts


def fused_mlp_q_loss(x, params, actions, targets, activation="relu", loss="huber", delta=1.0):
    """The DQN loss of an MLP Q-network as ONE graph node: `huber_loss` (or `mse_loss` with loss="mse")
    of Q(x)[i, actions[i]] against targets[i], reduction mean, with Q = fused_mlp(x, params, activation).
    Same value and gradients as that composition (first order only); the hidden layers' matrix
    products are most of the cost, the composed form's extra nodes and indexing add about 2 %.
    `actions` (int) and `targets` are arrays of shape (batch,). Returns (loss, Q(x, actions) array)."""
    _check_mlp(params, activation)
    if loss not in ("huber", "mse"):
        raise ValueError(f"fused_mlp_q_loss: unknown loss {loss!r}; allowed: huber, mse")
    if loss == "huber" and delta <= 0:
        raise ValueError(f"huber_loss delta must be > 0, got {delta}")
    if actions.shape != (len(x),) or targets.shape != (len(x),):
        raise ValueError(f"fused_mlp_q_loss: actions and targets must have shape ({len(x)},) for a batch of "
                         f"{len(x)}, got {actions.shape} and {targets.shape}")
    node = _MLPQLoss(activation, actions, targets, _Huber("mean", delta) if loss == "huber" else _SquaredError("mean"))
    return node(x, *params), node.q_taken


# ----- dropout and normalisation (behind core.nn's Dropout, BatchNorm and LayerNorm) -----


def dropout(x, p=0.5, training=True, generator=None):
    """Inverted dropout: while training, zero each element with probability p and scale the others by
    1/(1 - p), so evaluation is the identity. Draws from `generator` (default: the global generator)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    u = (generator or _default_generator).uniform(x.shape, dtype=x.dtype, device=x.device).data
    mask = (u >= p).astype(x.dtype)
    mask *= 1.0 / (1.0 - p)
    return x * _Tensor._make(mask)


def _update_running(buffer, statistic, momentum):
    buffer.data *= 1.0 - momentum
    buffer.data += momentum * statistic.reshape(buffer.shape)
    buffer._version += 1


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Normalise (N, C, ...) input per channel (axis 1). Training: batch statistics, and running_mean/var (when
    given) are updated in place, r = (1 - momentum) * r + momentum * s, with the unbiased batch variance as in
    PyTorch. Otherwise: the running statistics. Second-order gradients work in both modes."""
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        n = x.size // x.shape[1]
        if n < 2:
            raise ValueError(f"batch_norm in training needs more than one value per channel, got input shape {x.shape}")
        y, stats = _normalize(x, axes, eps)
        if running_mean is not None:
            _update_running(running_mean, stats.mean, momentum)
            _update_running(running_var, stats.var * (n / (n - 1)), momentum)
        if weight is not None:
            y = y * weight.reshape(shape)
        return y if bias is None else y + bias.reshape(shape)
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm outside training needs running_mean and running_var")
    scale = (running_var.reshape(shape) + eps) ** -0.5  # folded into one scale and one shift: two passes over x
    if weight is not None:
        scale = scale * weight.reshape(shape)
    shift = -running_mean.reshape(shape) * scale
    if bias is not None:
        shift = shift + bias.reshape(shape)
    return x * scale + shift


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise each sample over its trailing axes `normalized_shape`, then scale and shift elementwise."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(normalized_shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ValueError(f"layer_norm over {normalized_shape} needs input of shape (..., "
                         f"{', '.join(map(str, normalized_shape))}), got {x.shape}")
    y, _ = _normalize(x, tuple(range(x.ndim - k, x.ndim)), eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias
