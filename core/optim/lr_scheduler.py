"""Learning-rate schedules that set each parameter group's "lr", as in PyTorch.

Call `scheduler.step()` once per epoch (or per update, for per-step schedules) after
`optimizer.step()`. Construction already applies the schedule's value for step 0.
`scheduler.step(epoch)` jumps to step `epoch` (for a schedule over a count kept elsewhere, e.g. the
env steps of all of A3C's workers).

Every schedule here is a closed form of the step counter `last_epoch` and the group's initial lr
(stored in the group as "initial_lr"), so resuming from `state_dict()` gives exactly the same
sequence. The flip side: two schedulers on one optimizer do not compose, the last one wins
(PyTorch's chainable forms multiply); wrap the product in a `LambdaLR` instead.
"""
import bisect
import math

from core.optim.optimizer import Optimizer


class LRScheduler:
    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"a scheduler needs a core.optim optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param_groups[{i}] has no 'initial_lr' while resuming at last_epoch={last_epoch}; "
                               "load the optimizer's state dict first")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def _lr(self, base_lr, epoch):
        """The lr of a group with initial lr `base_lr` at step `epoch`."""
        raise NotImplementedError

    def get_lr(self):
        return [self._lr(base, self.last_epoch) for base in self.base_lrs]

    def step(self, epoch=None):
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs

    def get_last_lr(self):
        """The lr of every group as last set by this scheduler."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer and functions (a LambdaLR's lambdas are code, not state)."""
        return {k: v for k, v in vars(self).items()
                if k != "optimizer" and not callable(v) and not (isinstance(v, list) and v and callable(v[0]))}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


class LambdaLR(LRScheduler):
    """lr = initial_lr · lr_lambda(epoch); one function, or one per parameter group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(lambdas) != n:
            raise ValueError(f"got {len(lambdas)} lr_lambdas for {n} parameter groups")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]


class LinearLR(LRScheduler):
    """The factor of the initial lr moves linearly from start_factor to end_factor over
    total_iters steps, then stays. Linear decay to zero: start_factor=1, end_factor=0."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if start_factor <= 0 or end_factor < 0:
            raise ValueError(f"start_factor must be > 0 and end_factor >= 0, got {start_factor} and {end_factor}")
        if total_iters < 1:
            raise ValueError(f"total_iters must be >= 1, got {total_iters}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, epoch):
        frac = min(epoch, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class ExponentialLR(LRScheduler):
    """lr = initial_lr · gamma^epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, epoch):
        return base_lr * self.gamma ** epoch


class StepLR(LRScheduler):
    """lr = initial_lr · gamma^(epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """Piecewise constant: lr = initial_lr · gamma^(number of milestones <= epoch)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, epoch):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr − eta_min)·(1 + cos(π·epoch/T_max))/2 (SGDR without restarts;
    past T_max the cosine continues, rising again)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if T_max <= 0:
            raise ValueError(f"T_max must be > 0, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, epoch):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith), stepped once per batch: lr rises from max_lr/div_factor to max_lr
    over the first pct_start of total_steps, then anneals to initial_lr/final_div_factor
    (three_phase: back to the initial lr first, then down). With cycle_momentum the momentum (SGD)
    or β1 (Adam family) moves the opposite way between max_momentum and base_momentum."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR needs total_steps, or epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        if total_steps < 2:
            raise ValueError(f"total_steps must be >= 2, got {total_steps}")
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"got {len(max_lrs)} max_lr values for {len(groups)} parameter groups")
        self.total_steps, self.anneal_strategy, self.cycle_momentum = total_steps, anneal_strategy, cycle_momentum
        self.max_lrs = max_lrs
        self.min_lrs = [m / div_factor / final_div_factor for m in max_lrs]
        self.momenta = (max_momentum, base_momentum)
        first = pct_start * total_steps - 1
        if three_phase:  # (end step, index pair into (initial, peak, final) for lr and (max, base) for momentum)
            self.phases = [(first, "initial", "peak", 0, 1), (2 * pct_start * total_steps - 2, "peak", "initial", 1, 0),
                           (total_steps - 1, "initial", "final", 0, 0)]
        else:
            self.phases = [(first, "initial", "peak", 0, 1), (total_steps - 1, "peak", "final", 1, 0)]
        if cycle_momentum and not all("momentum" in g or "betas" in g for g in groups):
            raise ValueError("cycle_momentum needs an optimizer with 'momentum' or 'betas' (or pass "
                             "cycle_momentum=False)")
        if last_epoch == -1:
            for group, peak in zip(groups, max_lrs):
                group["initial_lr"] = peak / div_factor
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)
        return start + (end - start) * pct

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR stepped {step} times but total_steps is {self.total_steps}")
        start_step = 0
        for i, (end_step, lr_from, lr_to, mom_from, mom_to) in enumerate(self.phases):
            if step <= end_step or i == len(self.phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                break
            start_step = end_step
        momentum = self._anneal(self.momenta[mom_from], self.momenta[mom_to], pct)
        lrs = []
        for group, initial, peak, final in zip(self.optimizer.param_groups, self.base_lrs, self.max_lrs,
                                               self.min_lrs):
            levels = {"initial": initial, "peak": peak, "final": final}
            lrs.append(self._anneal(levels[lr_from], levels[lr_to], pct))
            if self.cycle_momentum:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                else:
                    group["momentum"] = momentum
        return lrs


class ReduceLROnPlateau:
    """Multiply the lr by `factor` when a metric passed to `step(metric)` has not improved for
    more than `patience` steps; then wait `cooldown` steps before counting again. An improvement
    beats the best value by `threshold` (relative in 'rel' mode, absolute in 'abs' mode)."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"a scheduler needs a core.optim optimizer, got {type(optimizer).__name__}")
        if factor >= 1.0:
            raise ValueError(f"factor must be < 1, got {factor}")
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"mode must be 'min' or 'max' and threshold_mode 'rel' or 'abs', got {mode!r} and "
                             f"{threshold_mode!r}")
        n = len(optimizer.param_groups)
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * n
        if len(min_lrs) != n:
            raise ValueError(f"got {len(min_lrs)} min_lr values for {n} parameter groups")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience, self.threshold = mode, factor, patience, threshold
        self.threshold_mode, self.cooldown, self.min_lrs, self.eps = threshold_mode, cooldown, min_lrs, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def _is_better(self, value):
        if self.mode == "min":
            bar = self.best * (1 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
            return value < bar
        bar = self.best * (1 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
        return value > bar

    def step(self, metric):
        value = float(metric)
        self.last_epoch += 1
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
                new_lr = max(group["lr"] * self.factor, floor)
                if group["lr"] - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {k: v for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
