"""The tabular methods of agents/tabular.py as a runnable agent (`agent=tabular`).

    python scripts/train.py agent=tabular env=gridworld agent.method=policy_evaluation
    python scripts/train.py agent=tabular env=mdp3 agent.method=q_learning agent.steps=10000
    python scripts/train.py experiment=homl18-qvi-mdp3

Methods (`agent.method`):
- policy_evaluation: V of the uniform random policy (in-place or synchronous sweeps until the
  largest change < theta; MTF ch. 8 appendix);
- policy_iteration: from the uniform policy, evaluate and improve greedily until stable;
- value_iteration: V* by synchronous backups until the largest change < theta;
- q_value_iteration: Géron's `iterations` synchronous Q backups (HOML ch. 18);
- q_learning: tabular Q-learning for `steps` env steps, learning rate lr / (1 + lr_decay·t),
  ε-greedy with `epsilon` (1: purely random, as Géron explores);
- bandit_egreedy: MTF ch. 8's ε-greedy bandit with incremental means, `steps` pulls.
The dynamic-programming methods read the env's model (`env.unwrapped.P`, the toy envs of
envs/toy.py); q_learning and the bandit only interact with the env.

`gamma` null means the env's own discount (`env.unwrapped.discount`, the book's γ).

The session (core/runtime/session.py) counts iterations: the method is one iteration, as the
functions of agents/tabular.py run to their end. The checkpoint (`last.ckpt`, written at the end)
holds the method's tables under "tables" (V, Q, policy, ...), which make_policy and resume read.

Outputs: metrics.json holds the final values under `tabular/...` (V per state, Q per state and
action with -inf for unavailable actions, the greedy policy, method-specific numbers) besides the
`eval/...` of `eval_episodes` greedy episodes (seeded `seed + 10_000 + k`; an env without a time
limit of its own is cut at `eval_horizon` steps); `values.txt` in the run directory lays the
values and the policy out as the book's grid where the env has one. TensorBoard gets the
learning curves: the bandit's running average reward, Q-learning's max |Q − Q*| against
Q-Value Iteration, Q-Value Iteration's change per iteration.
"""
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the lab/ toy envs)
from agents import EVAL_SEED_OFFSET, evaluate_policy, summarize_returns, wrapper_options
from agents import tabular
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError
from envs import factory

METHODS = ("policy_evaluation", "policy_iteration", "value_iteration", "q_value_iteration", "q_learning",
           "bandit_egreedy")
MODEL_METHODS = METHODS[:4]
# the config's types
Method = Choice("Method", METHODS)
Sweep = Choice("Sweep", "in_place synchronous")
ARROWS = "^>v<"  # the toy envs' actions 0 up, 1 right, 2 down, 3 left
CURVE_POINTS = 10  # Q-learning error curve: evaluated at this many budgets


@dataclass
class Config:
    method: Method = Method.value_iteration
    gamma: Optional[float] = None       # null: the env's discount
    theta: float = 1e-5                 # stop sweeping when the largest change is below it
    sweep: Sweep = Sweep.in_place       # in_place (MTF's code, RL-10) | synchronous
    iterations: int = 50                # q_value_iteration backups
    steps: int = 10_000                 # q_learning env steps; bandit pulls
    lr: float = 0.05                    # q_learning: α_t = lr / (1 + lr_decay·t)
    lr_decay: float = 0.005
    epsilon: float = 1.0                # q_learning / bandit exploration probability
    eval_horizon: int = 100             # cap of an evaluation episode on an env that never ends

    def validate(self):
        if self.gamma is not None and not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"agent.gamma must be in [0, 1] or null, got {self.gamma}")
        for name in ("theta", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"agent.{name} must be > 0, got {getattr(self, name)}")
        for name in ("iterations", "steps", "eval_horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_decay < 0:
            raise ValueError(f"agent.lr_decay must be >= 0, got {self.lr_decay}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"agent.epsilon must be in [0, 1], got {self.epsilon}")


def make_env(env_cfg, render_mode=None):
    env = factory.make_env(env_cfg.id, render_mode=render_mode, **wrapper_options(env_cfg))
    if not isinstance(env.action_space, gym.spaces.Discrete) or not isinstance(env.observation_space,
                                                                               gym.spaces.Discrete):
        raise ConfigError(f"tabular methods need Discrete observations and actions; {env_cfg.id} has "
                          f"{env.observation_space} and {env.action_space}")
    return env


def _model(env, method, env_id):
    P = getattr(env.unwrapped, "P", None)
    if P is None:
        raise ConfigError(f"agent.method={method} needs the env's model (env.unwrapped.P), which {env_id} lacks; "
                          "use q_learning, or a toy env (gridworld, maze, mdp3)")
    # gymnasium's toy-text envs (FrozenLake, Taxi, CliffWalking) keep P as {state: {action: [...]}}
    return [[P[s][a] for a in range(env.action_space.n)] for s in range(env.observation_space.n)]


def _gamma(args, env, env_id):
    if args.gamma is not None:
        return args.gamma
    discount = getattr(env.unwrapped, "discount", None)
    if discount is None:
        raise ConfigError(f"{env_id} has no discount of its own; set agent.gamma")
    return discount


def converged_iteration(P, gamma, iterations, tolerance=0.01):
    """The first Q-Value-Iteration count from which every finite entry stays within `tolerance` of
    the result after `iterations` (the book: "fewer than 20"), and the max change per iteration."""
    history = [tabular.q_value_iteration(P, gamma, k) for k in range(iterations + 1)]
    finite = np.isfinite(history[-1])
    errors = [np.abs(Q[finite] - history[-1][finite]).max() for Q in history]
    first = next(k for k in range(iterations + 1) if max(errors[k:]) <= tolerance)
    changes = [np.abs(history[k][finite] - history[k - 1][finite]).max() for k in range(1, iterations + 1)]
    return first, changes


def run_method(args, env, env_id, seed, logger):
    """The method's results: V, Q, greedy policy and method-specific entries (numpy arrays and numbers)."""
    out = {}
    if args.method in MODEL_METHODS:
        P = _model(env, args.method, env_id)
        gamma = _gamma(args, env, env_id)
        in_place = args.sweep == "in_place"
        if args.method == "policy_evaluation":
            V = tabular.policy_evaluation(P, tabular.uniform_policy(P), gamma, theta=args.theta, in_place=in_place)
        elif args.method == "policy_iteration":
            result = tabular.policy_iteration(P, gamma, theta=args.theta, in_place=in_place)
            V, out["evaluations"] = result.V, result.evaluations
        elif args.method == "value_iteration":
            V = tabular.value_iteration(P, gamma, theta=args.theta)[0]
        if args.method == "q_value_iteration":
            Q = tabular.q_value_iteration(P, gamma, args.iterations)
            out["converged_iteration"], changes = converged_iteration(P, gamma, args.iterations)
            for k, change in enumerate(changes, 1):
                logger.scalar("tabular/max_change", change, k)
            V = Q.max(1)
        else:
            Q = tabular.action_values(P, V, gamma)
        out.update(V=V, Q=Q, policy=np.argmax(Q, axis=1))
    elif args.method == "q_learning":
        gamma = _gamma(args, env, env_id)
        learning_rate = tabular.power_decay(args.lr, args.lr_decay)
        Q = tabular.q_learning(env, args.steps, gamma=gamma, learning_rate=learning_rate, epsilon=args.epsilon,
                               seed=seed)
        if hasattr(env.unwrapped, "P"):  # one seed replays the same draws: a shorter budget is a prefix of this run
            reference = tabular.q_value_iteration(_model(env, args.method, env_id), gamma, 1000)
            finite = np.isfinite(reference)
            for k in range(1, CURVE_POINTS + 1):
                budget = args.steps * k // CURVE_POINTS
                partial = tabular.q_learning(env, budget, gamma=gamma, learning_rate=learning_rate,
                                             epsilon=args.epsilon, seed=seed) if k < CURVE_POINTS else Q
                error = float(np.abs(partial[finite] - reference[finite]).max())
                logger.scalar("tabular/max_abs_error_vs_qvi", error, budget)
            out["max_abs_error_vs_qvi"] = error
        out.update(V=Q.max(1), Q=Q, policy=np.argmax(Q, axis=1))
    else:  # bandit_egreedy
        result = tabular.epsilon_greedy_bandit(env, args.steps, epsilon=args.epsilon, seed=seed)
        average = result.average_reward
        for t in np.unique(np.geomspace(1, args.steps, 200).astype(int)):  # the book plots it on a log-x axis
            logger.scalar("charts/average_reward", average[t - 1], int(t))
        out.update(Q=result.values[None], V=result.values.max(keepdims=True), policy=np.argmax(result.values)[None],
                   average_reward=float(average[-1]), counts=result.counts,
                   best_arm_fraction=float(result.counts.max() / args.steps))
    return out


def layout(env, values):
    """Per-state values as the env's grid (4x4 gridworld, 3x4 maze with NaN at the wall), else a row."""
    unwrapped = env.unwrapped
    if hasattr(unwrapped, "as_grid"):
        return unwrapped.as_grid(values)
    shape = getattr(unwrapped, "SHAPE", None)
    return np.asarray(values, dtype=float).reshape(shape) if shape else np.asarray(values, dtype=float)[None]


def format_table(env, out):
    """values.txt: V and the greedy policy as grids, then Q per state."""
    V = layout(env, out["V"])
    arrows = layout(env, out["policy"])
    lines = ["V:"]
    lines += ["  " + " ".join("      wall    " if np.isnan(v) else f"{v:13.8f}" for v in row) for row in V]
    if env.action_space.n == len(ARROWS) and hasattr(env.unwrapped, "P"):
        lines.append("greedy policy (^ up, > right, v down, < left):")
        lines += ["  " + " ".join("#" if np.isnan(a) else ARROWS[int(a)] for a in row) for row in arrows]
    else:
        lines.append(f"greedy action per state: {np.asarray(out['policy']).tolist()}")
    lines.append("Q (state: action values; -inf = not available):")
    lines += [f"  {s}: " + " ".join(f"{q:13.8f}" for q in row) for s, row in enumerate(out["Q"])]
    return "\n".join(lines) + "\n"


def make_policy(cfg, state, env, greedy=True, generator=None):
    """The greedy action of the saved table, per observation (the table has no stochastic policy)."""
    policy = np.asarray(state["tables"]["policy"])
    if len(policy) == 1:  # the bandit: one arm whatever the (constant) observation
        return lambda obs: int(policy[0])
    return lambda obs: int(policy[int(obs)])


def _plain(value):
    return np.asarray(value).tolist() if isinstance(value, np.ndarray) else value


def train(cfg, run):
    args = cfg.agent
    env = make_env(cfg.env)
    tables = {}  # V, Q, the greedy policy and the method's own results, as numpy arrays

    def evaluate():
        eval_env = make_env(cfg.env)
        if eval_env.spec.max_episode_steps is None:
            eval_env = gym.wrappers.TimeLimit(eval_env, args.eval_horizon)
        act = make_policy(cfg, {"tables": tables}, eval_env)
        result = evaluate_policy(eval_env, act, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
        return summarize_returns(result["returns"], result["lengths"])

    session = run.session("tabular", "iterations", 1, checkpoint_every=cfg.get("checkpoint_every"), evaluate=evaluate)
    session.track(tables=tables)
    while session.running():  # one iteration: the method runs to its end
        out = run_method(args, env, cfg.env.id, cfg.seed, run.logger)
        tables.update({key: np.asarray(value) for key, value in out.items()})
        session.advance(1)
    if tables:  # else stopped before the method ran
        (run.dir / "values.txt").write_text(format_table(env, tables))
        run.logger.text("tabular/values", "<pre>" + format_table(env, tables) + "</pre>")
    steps = args.steps if args.method in ("q_learning", "bandit_egreedy") else 0
    return session.finish({**{f"tabular/{key}": _plain(value) for key, value in tables.items()},
                           "tabular/method": args.method, "train/env_steps": steps})
