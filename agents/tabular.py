"""Tabular RL in plain numpy: dynamic programming on a known model, Q-learning, and the ε-greedy bandit.

A model is FrozenLake's layout, P[s][a] = [(prob, next_state, reward, done), ...], as the toy envs in
`envs.toy` expose it; an empty list means that action is not available in that state. A transition
with done = True ends the episode, so nothing is bootstrapped from its next state.
"""

from typing import NamedTuple

import numpy as np


def model_arrays(P):
    """Dense form of a model: (rewards, continuation, available).

    rewards[s, a] is the expected immediate reward, continuation[s, a, s'] the probability of going
    on to s' without the episode ending, and available[s, a] whether the action exists.
    """
    nS, nA = len(P), len(P[0])
    rewards = np.zeros((nS, nA))
    continuation = np.zeros((nS, nA, nS))
    available = np.zeros((nS, nA), dtype=bool)
    for s in range(nS):
        if len(P[s]) != nA:
            raise ValueError(f"P[{s}] lists {len(P[s])} actions but P[0] lists {nA}; every state needs one entry per action")
        for a, transitions in enumerate(P[s]):
            available[s, a] = bool(transitions)
            for prob, next_state, reward, done in transitions:
                rewards[s, a] += prob * reward
                if not done:
                    continuation[s, a, next_state] += prob
        if not available[s].any():
            raise ValueError(f"state {s} has no available action (every P[{s}][a] is empty)")
    return rewards, continuation, available


def action_values(P, V, gamma: float):
    """One-step lookahead Q(s, a) = Σ p·(r + γ·V(s')); -inf for actions that are not available."""
    rewards, continuation, available = model_arrays(P)
    return np.where(available, rewards + gamma * continuation @ np.asarray(V, dtype=np.float64), -np.inf)


def uniform_policy(P):
    """(nS, nA) probabilities spread evenly over each state's available actions."""
    available = model_arrays(P)[2]
    return available / available.sum(1, keepdims=True)


def policy_evaluation(P, policy, gamma: float, theta: float = 1e-5, in_place: bool = True, max_sweeps: int = 100_000):
    """V of `policy` ((nS, nA) probabilities, or (nS,) actions) by iterative sweeps until the largest change < theta.

    in_place=True updates V(s) during the sweep over s = 0..nS-1, each new value used at once, as the
    MTF ch. 8 code does (its printed digits need it, RL-10); False is the synchronous (Jacobi) sweep.
    """
    rewards, continuation, available = model_arrays(P)
    policy = np.asarray(policy)
    if policy.ndim == 1:
        policy = np.eye(available.shape[1])[policy]
    if policy.shape != available.shape:
        raise ValueError(f"policy must have shape {available.shape} (probabilities) or ({available.shape[0]},) (actions), got {policy.shape}")
    if np.any(policy[~available] > 0):
        raise ValueError("policy gives probability to actions that are not available (empty P[s][a])")
    V = np.zeros(len(P))
    for _ in range(max_sweeps):
        if in_place:
            delta = 0.0
            for s in range(len(P)):
                value = policy[s] @ (rewards[s] + gamma * continuation[s] @ V)
                delta = max(delta, abs(value - V[s]))
                V[s] = value
        else:
            new = (policy * (rewards + gamma * continuation @ V)).sum(1)
            delta = np.abs(new - V).max()
            V = new
        if delta < theta:
            return V
    raise RuntimeError(f"policy evaluation did not converge within {max_sweeps} sweeps; "
                       "with gamma = 1 the policy must reach a terminal state from everywhere")


def greedy_actions(P, V, gamma: float):
    """argmax_a of the one-step lookahead, ties going to the lowest action index."""
    return np.argmax(action_values(P, V, gamma), axis=1)


class PolicyIterationResult(NamedTuple):
    policy: np.ndarray  # (nS,) greedy action per state
    V: np.ndarray
    evaluations: int  # policy evaluations run, the last one confirming stability


def policy_iteration(P, gamma: float, theta: float = 1e-5, in_place: bool = True) -> PolicyIterationResult:
    """Policy iteration from the uniform random policy; stops when no state's greedy action changes.

    A state's current action is the argmax of its policy row, so the uniform start counts as action 0.
    """
    policy = uniform_policy(P)
    evaluations = 0
    while True:
        V = policy_evaluation(P, policy, gamma, theta=theta, in_place=in_place)
        evaluations += 1
        greedy = greedy_actions(P, V, gamma)
        stable = np.array_equal(greedy, policy.argmax(1))
        policy = np.eye(policy.shape[1])[greedy]
        if stable:
            return PolicyIterationResult(greedy, V, evaluations)


def value_iteration(P, gamma: float, theta: float = 1e-12, max_iterations: int = 100_000):
    """Synchronous value iteration until the largest change < theta. Returns (V*, greedy policy)."""
    rewards, continuation, available = model_arrays(P)
    V = np.zeros(len(P))
    for _ in range(max_iterations):
        new = np.where(available, rewards + gamma * continuation @ V, -np.inf).max(1)
        converged = np.abs(new - V).max() < theta
        V = new
        if converged:
            return V, greedy_actions(P, V, gamma)
    raise RuntimeError(f"value iteration did not converge within {max_iterations} iterations")


def q_value_iteration(P, gamma: float, iterations: int = 50):
    """Géron's Q-Value Iteration (HOML ch. 18): Q = 0 for available actions and -inf otherwise, then
    `iterations` synchronous backups Q(s, a) = Σ p·(r + γ·max_a' Q_prev(s', a'))."""
    rewards, continuation, available = model_arrays(P)
    Q = np.where(available, 0.0, -np.inf)
    for _ in range(iterations):
        Q = np.where(available, rewards + gamma * continuation @ Q.max(1), -np.inf)
    return Q


def power_decay(initial: float, decay: float):
    """Schedule t -> initial / (1 + decay·t), e.g. Géron's learning rate 0.05 / (1 + 0.005·t)."""
    return lambda t: initial / (1 + decay * t)


def q_learning(env, steps: int, *, gamma: float, learning_rate=0.1, epsilon=0.1, seed: int | None = None):
    """Tabular Q-learning for `steps` env steps on an env with Discrete observations and actions.

    learning_rate and epsilon are constants or schedules t -> value (t = 0, 1, ... counts env steps);
    epsilon = 1 explores purely at random, as Géron does. Random and greedy choices range over the
    allowed actions (info["action_mask"] where the env gives one, else all); the greedy choice breaks
    ties toward the lowest index. Q starts at 0, ends at -inf for actions seen to be unavailable.
    A terminated step bootstraps nothing; a truncated one bootstraps from its last state; both reset.
    """
    nS, nA = env.observation_space.n, env.action_space.n
    Q = np.zeros((nS, nA))
    available = np.ones((nS, nA), dtype=bool)
    all_actions = np.arange(nA)
    rng = np.random.default_rng(seed)

    def allowed(state, info):
        mask = info.get("action_mask")
        if mask is None:
            return all_actions
        available[state] = mask.astype(bool)
        return np.flatnonzero(mask)

    state, info = env.reset(seed=seed)
    actions = allowed(state, info)
    for t in range(steps):
        explore = epsilon(t) if callable(epsilon) else epsilon
        if rng.random() < explore:
            action = int(rng.choice(actions))
        else:
            action = int(actions[np.argmax(Q[state, actions])])
        next_state, reward, terminated, truncated, info = env.step(action)
        next_actions = allowed(next_state, info)
        target = reward if terminated else reward + gamma * Q[next_state, next_actions].max()
        alpha = learning_rate(t) if callable(learning_rate) else learning_rate
        Q[state, action] += alpha * (target - Q[state, action])
        if terminated or truncated:
            next_state, info = env.reset()
            next_actions = allowed(next_state, info)
        state, actions = next_state, next_actions
    Q[~available] = -np.inf
    return Q


class BanditResult(NamedTuple):
    values: np.ndarray  # final estimate Q_j per arm
    counts: np.ndarray  # pulls per arm
    rewards: np.ndarray  # reward of every pull, in order

    @property
    def average_reward(self):
        """Running average reward after each pull (the curve MTF ch. 8 plots)."""
        return np.cumsum(self.rewards) / np.arange(1, len(self.rewards) + 1)


def epsilon_greedy_bandit(env, pulls: int, epsilon: float = 0.1, seed: int | None = None) -> BanditResult:
    """MTF ch. 8's ε-greedy bandit with incremental means.

    Each pull: with probability ε an arm uniformly from all arms (the greedy one included), else the
    argmax of the estimates (ties to the lowest index); then n_j += 1 and Q_j ← (1 − 1/n_j)·Q_j + x/n_j.
    """
    nA = env.action_space.n
    values = np.zeros(nA)
    counts = np.zeros(nA, dtype=np.int64)
    rewards = np.empty(pulls)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for t in range(pulls):
        arm = int(rng.integers(nA)) if rng.random() < epsilon else int(np.argmax(values))
        reward = env.step(arm)[1]
        counts[arm] += 1
        values[arm] = (1 - 1 / counts[arm]) * values[arm] + reward / counts[arm]
        rewards[t] = reward
    return BanditResult(values, counts, rewards)
