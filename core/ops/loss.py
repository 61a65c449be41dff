"""Fused losses: one graph node instead of five or more (RL losses sit on the hot path).

Losses of d = input - target: each subclass gives the loss of d on arrays and its derivative as an
expression that works on arrays and on Tensors alike, so the fast no-graph backward and second-order
gradients share one formula. `CategoricalPPOLoss`: PPO's whole loss from the logits, first order
only; its composed form is core.functional.ppo_loss (tests/test_fused.py holds them equal)."""
from core.autograd import Function
from core.ops._util import xp_of
from core.ops.elementwise import clip
from core.ops.linalg import FusedMLP


class DifferenceLoss(Function):
    def __init__(self, reduction, param=None):
        self.reduction, self.param = reduction, param

    def forward(self, x, t):
        d = x - t
        loss = self.value(d)
        if self.reduction == "none":
            return loss
        total = loss.sum()
        if self.reduction == "sum":
            return total
        return total * (1.0 / d.size) if d.size else total * float("nan")

    def backward(self, gy):
        x, t = self.args
        g = self.input_grad(x, t, gy)
        return (g if self.needs_grad(0) else None), (-g if self.needs_grad(1) else None)

    def input_grad(self, x, t, gy):
        """d loss / d input, from the output's gradient gy (arrays, or Tensors for higher orders)."""
        if self.reduction == "mean":
            gy = gy * (1.0 / x.size if x.size else float("nan"))
        return self.derivative(x - t) * gy


class SquaredError(DifferenceLoss):
    def value(self, d):
        return d * d

    def derivative(self, d):
        return d * 2.0


class Huber(DifferenceLoss):
    """param = delta: 0.5 d² where |d| < delta, else delta (|d| - 0.5 delta)."""

    def value(self, d):
        delta = self.param
        size = abs(d)
        return xp_of(d).where(size < delta, 0.5 * d * d, delta * (size - 0.5 * delta))

    def derivative(self, d):
        return clip(d, -self.param, self.param)


class MLPQLoss(FusedMLP):
    """The node of core.functional.fused_mlp_q_loss: an MLP's outputs Q(x, ·), the entry of each row's
    action, and a difference loss (Huber or squared error, reduction mean) of those entries against the
    targets, in one node. Forward and backward are those of FusedMLP, indexing and `loss` in turn, on raw
    arrays: the same values and gradients as their composition. After the call `q_taken` holds Q(x, a)."""

    def __init__(self, activation, actions, targets, loss):
        super().__init__(activation, activate_output=False)
        self.actions, self.targets, self.loss = actions, targets, loss

    def forward(self, x, *params):
        q = super().forward(x, *params)
        self.rows = xp_of(q).arange(len(q))
        self.q_taken = q[self.rows, self.actions]
        return self.loss.forward(self.q_taken, self.targets)

    def backward(self, gy):
        if not self._raw:
            raise RuntimeError("fused_mlp_q_loss has no second-order gradients; compose mlp and huber_loss under "
                               "create_graph")
        gq = xp_of(self.out).zeros_like(self.out)
        gq[self.rows, self.actions] += self.loss.input_grad(self.q_taken, self.targets, gy)  # as indexing's backward
        return super().backward(gq)


def _share(a, b, xp):
    """1 where a > b, 0.5 at ties, 0 where a < b: the gradient share of `a` in max(a, b), as core.maximum."""
    return xp.where(a > b, 1.0, xp.where(a == b, 0.5, 0.0)).astype(a.dtype)


class CategoricalPPOLoss(Function):
    """The node of core.functional.fused_categorical_ppo_loss: PPO's loss from the logits of a
    categorical policy and the values, with its analytic gradient. After the call, `parts` holds the
    arrays that core.functional.ppo_loss returns as parts.

    With p = softmax(logits), r = exp(log p_a − log π_old(a)) and n the batch size:
      d loss / d log p_a = (1/n)·r·(d/dr of max(−A·r, −A·clip(r))), chained through log-softmax
      (d log p_a / d logits = onehot(a) − p); d entropy / d logits = −p·(log p + H);
      d value loss / d V = (2/n)·(V − R) (with value clipping, the winning term's slope).
    At kinks it follows the composed ops: clip passes the gradient at its bounds, max splits ties evenly."""

    def __init__(self, actions, old_logprobs, advantages, returns, clip_range, vf_coef, ent_coef, old_values,
                 clip_range_vf):
        self.actions, self.old_logprobs, self.advantages, self.returns = actions, old_logprobs, advantages, returns
        self.clip_range, self.vf_coef, self.ent_coef = clip_range, vf_coef, ent_coef
        self.old_values, self.clip_range_vf = old_values, clip_range_vf

    def forward(self, logits, values):
        xp, eps = xp_of(logits), self.clip_range
        n = len(values)
        z = logits - logits.max(-1, keepdims=True)
        log_probs = z - xp.log(xp.exp(z).sum(-1, keepdims=True))
        probs = xp.exp(log_probs)
        chosen = (self.actions[:, None] == xp.arange(logits.shape[-1])).astype(logits.dtype)
        logratio = (log_probs * chosen).sum(-1) - self.old_logprobs
        ratio = xp.exp(logratio)
        clipped = xp.clip(ratio, 1 - eps, 1 + eps)
        negative = -self.advantages
        objective = xp.maximum(negative * ratio, negative * clipped)
        # which term the max takes and whether clip passes r
        unclipped = _share(negative * ratio, negative * clipped, xp)
        slope = negative * (unclipped + (1 - unclipped) * (clipped == ratio))
        entropy = -(probs * log_probs).sum(-1)
        error = values - self.returns
        if self.clip_range_vf is None:
            value_losses, value_slope = error * error, 2 * error
        else:
            change = values - self.old_values
            delta = xp.clip(change, -self.clip_range_vf, self.clip_range_vf)
            clipped_error = self.old_values + delta - self.returns
            plain = _share(error * error, clipped_error * clipped_error, xp)
            value_losses = xp.maximum(error * error, clipped_error * clipped_error)
            value_slope = 2 * (plain * error + (1 - plain) * clipped_error * (delta == change))
        policy_loss, value_loss, mean_entropy = objective.mean(), value_losses.mean(), entropy.mean()
        self.parts = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": mean_entropy,
                      "ratio": ratio, "logratio": logratio}
        self.saved = probs, log_probs, chosen, entropy, slope * ratio / n, value_slope / n
        return xp.asarray(policy_loss + self.vf_coef * value_loss - self.ent_coef * mean_entropy, dtype=logits.dtype)

    def backward(self, gy):
        if not self._raw:
            raise RuntimeError("fused_categorical_ppo_loss has no second-order gradients; use core.functional."
                               "ppo_loss under create_graph")
        probs, log_probs, chosen, entropy, d_logprob, d_value = self.saved
        grad_logits = (chosen - probs) * (gy * d_logprob)[:, None]
        if self.ent_coef:
            grad_logits += (gy * self.ent_coef / len(entropy)) * probs * (log_probs + entropy[:, None])
        return grad_logits.astype(probs.dtype, copy=False), (gy * self.vf_coef * d_value).astype(probs.dtype)
