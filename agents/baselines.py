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
return mean / std (population) / min / max are the session's evaluation (`eval/...` in
metrics.json), each episode goes to TensorBoard as `charts/episodic_return`.

The session (core/runtime/session.py) counts env steps, one iteration per episode; its progress bar
counts episodes when there is no step budget. A checkpoint (at the end, on Ctrl-C, and every
`checkpoint_every` env steps when that is set) falls between two episodes and holds the returns so
far and the action and env random streams: a resumed run plays on as an uninterrupted one (exactly
so on gymnasium's own envs; an Atari emulator keeps a random state of its own).
"""
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np

from agents import summarize_returns, wrapper_options
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError
from envs import factory

Policy = Choice("Policy", "random angle_sign")  # the config's type
POLE_ANGLE = 2  # index of the pole angle in a CartPole observation


@dataclass
class Config:
    policy: Policy = Policy.random
    episodes: int = 100                     # episodes to play (their returns are the result)
    total_timesteps: Optional[int] = None   # stop after this many env steps instead (null: play `episodes`)

    def validate(self):
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
    """`act(observation) -> action` of `cfg.agent.policy` (random actions drawn with `generator`, a
    core.Generator or a numpy Generator, else with a fixed numpy stream)."""
    if cfg.agent.policy == "angle_sign":
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and space.shape == (4,) and env.action_space.n == 2):
            raise ConfigError(f"agent.policy=angle_sign reads a CartPole observation (4 floats, 2 actions); "
                              f"{env.spec.id} has {space} and {env.action_space}")
        return lambda obs: 0 if obs[POLE_ANGLE] < 0 else 1
    n = int(env.action_space.n)
    generator = np.random.default_rng(0) if generator is None else generator
    return lambda obs: int(generator.integers(0, n).item())


def train(cfg, run):
    args = cfg.agent
    env = make_env(cfg.env)
    actions = np.random.default_rng(cfg.seed)  # the random policy's draws
    act = make_policy(cfg, None, env, generator=actions)
    played = {"returns": [], "lengths": []}
    obs, _ = env.reset(seed=cfg.seed)  # seeds the env's random stream; the next episodes continue it

    def measurement():
        returns = played["returns"]
        if not returns:
            return {}
        return {**summarize_returns(returns, played["lengths"]), "eval/return_min": float(np.min(returns)),
                "eval/return_max": float(np.max(returns))}

    session = run.session("baselines", "env_steps", args.total_timesteps, checkpoint_every=cfg.get("checkpoint_every"),
                          episodes=None if args.total_timesteps else args.episodes, evaluate=measurement)
    session.track(played=played, actions=actions, env_random=env.unwrapped.np_random)
    first = session.progress == 0  # its reset is the seeded one above
    while session.running():
        if not first:
            obs, _ = env.reset()
        first, total, length, done = False, 0.0, 0, False
        while not done and session.progress + length < session.total:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total, length, done = total + float(reward), length + 1, terminated or truncated
        if done:
            episode_return = float(info["episode"]["r"]) if "episode" in info else total
            played["returns"].append(episode_return)
            played["lengths"].append(length)
            session.log({"charts/episodic_return": episode_return, "charts/episodic_length": length},
                        session.progress + length)
            session.show(ret=episode_return)
        session.advance(length, episodes=int(done))
    return session.finish()
