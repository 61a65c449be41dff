"""Schedules for ε (exploration) and β (prioritized-replay importance sampling): t -> value.

    epsilon = linear_schedule(1.0, 0.04, duration=8_000)      # SB3 / zoo: 16 % of 50,000 steps
    epsilon = exponential_schedule(1.0, 0.01, decay=0.995)    # MTF ch. 8: ε ← max(0.01, 0.995·ε)
    beta = linear_schedule(0.4, 1.0, duration=total_steps)    # PER β annealed to 1 (HOML ch. 18)

`t` is whatever the caller counts (env steps, episodes, gradient updates); the functions work on
Python numbers and on numpy arrays of t alike. `epsilon_schedule(args)` builds the ε schedule an
agent config describes (agents/dqn.py's fields).
"""
import numpy as np

from core.runtime.choices import Choice


def linear_schedule(start: float, end: float, duration: float):
    """start + (end - start)·min(t / duration, 1): reaches `end` at t = duration and stays there.
    duration 0 means `end` from the start."""
    if duration < 0:
        raise ValueError(f"linear schedule duration must be >= 0, got {duration}")

    def value(t):
        if np.ndim(t):
            t = np.asarray(t, dtype=float)
            return start + (end - start) * np.where(t >= duration, 1.0, t / max(duration, 1e-300))
        return float(end) if t >= duration else start + (end - start) * (t / duration)  # duration 0: `end` at once
    return value


def exponential_schedule(start: float, end: float, decay: float):
    """max(end, start·decay^t): multiply by `decay` at every tick, floored at `end`
    (for a rising schedule, end > start and decay > 1, capped at `end`)."""
    if not decay > 0:
        raise ValueError(f"exponential schedule decay must be > 0, got {decay}")
    bound = np.maximum if end <= start else np.minimum

    def value(t):
        return bound(end, start * np.power(decay, np.asarray(t, dtype=float))) if np.ndim(t) else \
            float(bound(end, start * decay ** t))
    return value


Schedule = Choice("Schedule", "linear exponential")  # the agent configs' type


def epsilon_schedule(args):
    """ε as a function of env steps or finished episodes (`args.epsilon_unit`): `args.epsilon_schedule`
    exponential (start, end, decay) or linear (start, end, over `epsilon_decay_duration`, else over
    `exploration_fraction` of `total_timesteps`)."""
    if args.epsilon_schedule == "exponential":
        return exponential_schedule(args.epsilon_start, args.epsilon_end, args.epsilon_decay)
    duration = args.epsilon_decay_duration or args.exploration_fraction * args.total_timesteps
    return linear_schedule(args.epsilon_start, args.epsilon_end, duration)
