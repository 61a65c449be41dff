"""Baselines that learn nothing: a uniformly random policy and Géron's hard-coded CartPole rule.

    python scripts/train.py agent=baselines env=cartpole agent.policy=angle_sign agent.episodes=500
    python scripts/train.py experiment=homl18-scripted-cartpole

Policies (`agent.policy`):
- random: a uniform action from the Discrete action space (BDL ch. 14's gym introduction, TFMLP
  ch. 14's random Ms. Pac-Man);
- angle_sign: push left (0) when the pole angle obs[2] < 0, else right (1) (HOML ch. 18).

The run plays `episodes` episodes (the first reset seeded with `seed`, the next ones continuing
the env's random stream), or stops after `total_timesteps` env steps when that is set (an episode
cut short by it is not counted). The played episodes are the measurement, as in the books: their
return mean / std (population) / min / max go to metrics.json as `eval/...`, each episode to
TensorBoard as `charts/episodic_return`. There is nothing to checkpoint but the step count.
"""
import time
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np

from agents import summarize_returns, wrapper_options
from core.runtime.errors import ConfigError
from envs import factory

POLICIES = ("random", "angle_sign")
POLE_ANGLE = 2  # index of the pole angle in a CartPole observation


@dataclass
class Config:
    policy: str = "random"                  # random | angle_sign
    episodes: int = 100
    total_timesteps: Optional[int] = None   # stop after this many env steps instead (null: play `episodes`)

    def validate(self):
        if self.policy not in POLICIES:
            raise ValueError(f"agent.policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.episodes < 1:
            raise ValueError(f"agent.episodes must be >= 1, got {self.episodes}")
        if self.total_timesteps is not None and self.total_timesteps < 1:
            raise ValueError(f"agent.total_timesteps must be >= 1 or null, got {self.total_timesteps}")


def make_env(env_cfg, render_mode=None):
    env = factory.make_env(env_cfg.id, render_mode=render_mode, **wrapper_options(env_cfg))
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ConfigError(f"the baselines need a Discrete action space; {env_cfg.id} has {env.action_space}")
    return env


def make_policy(cfg, state, env, greedy=True, generator=None):
    """`act(observation) -> action` of `cfg.agent.policy` (random actions drawn with `generator`,
    a core.Generator, else with a fixed numpy stream)."""
    if cfg.agent.policy == "angle_sign":
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and space.shape == (4,) and env.action_space.n == 2):
            raise ConfigError(f"agent.policy=angle_sign reads a CartPole observation (4 floats, 2 actions); "
                              f"{env.spec.id} has {space} and {env.action_space}")
        return lambda obs: 0 if obs[POLE_ANGLE] < 0 else 1
    n = int(env.action_space.n)
    if generator is not None:
        return lambda obs: int(generator.integers(0, n).item())
    rng = np.random.default_rng(0 if state is None else state.get("seed", 0))
    return lambda obs: int(rng.integers(n))


def train(cfg, run):
    args = cfg.agent
    start = time.perf_counter()
    env = make_env(cfg.env)
    act = make_policy(cfg, {"seed": cfg.seed}, env)
    budget = args.total_timesteps
    returns, lengths, steps = [], [], 0
    bar = run.logger.progress(budget or args.episodes, args.policy)
    obs, _ = env.reset(seed=cfg.seed)
    total, length = 0.0, 0
    while (len(returns) < args.episodes if budget is None else steps < budget) and not run.should_stop():
        obs, reward, terminated, truncated, info = env.step(act(obs))
        total, length, steps = total + float(reward), length + 1, steps + 1
        if budget is not None:
            bar.update(1)
        if terminated or truncated:
            episode_return = float(info["episode"]["r"]) if "episode" in info else total
            returns.append(episode_return)
            lengths.append(length)
            run.logger.scalar("charts/episodic_return", episode_return, steps)
            run.logger.scalar("charts/episodic_length", length, steps)
            if budget is None:
                bar.update(1)
            bar.set_postfix(ret=episode_return)
            obs, _ = env.reset()
            total, length = 0.0, 0
    bar.close()
    run.checkpoints.save({"seed": cfg.seed, "env_steps": steps, "episodes": len(returns)}, steps)
    metrics = {"train/env_steps": steps, "train/episodes": len(returns), "time/wall_s": time.perf_counter() - start}
    if returns:
        metrics.update(summarize_returns(returns, lengths))
        metrics.update({"eval/return_min": float(np.min(returns)), "eval/return_max": float(np.max(returns))})
        run.logger.scalars({k: v for k, v in metrics.items() if k.startswith("eval/")}, steps)
    return metrics
