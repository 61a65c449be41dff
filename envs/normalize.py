"""Running normalisation of a vector env's observations and rewards (SB3's VecNormalize, gymnasium's
NormalizeObservation / NormalizeReward), on the vector level: one set of statistics per vector env,
updated with each step's batch, for gymnasium's vector envs and the native ones alike.

    envs = NormalizeVector(make_vector_env("CartPole-v1", 8, seed=0), obs=True, reward=True, gamma=0.99)
    eval_envs = envs.frozen(make_vector_env("CartPole-v1", 10, seed=10_000))  # same statistics, never updated
    ckpt["normalization"] = envs.state_dict()

- observations: (obs − mean) / sqrt(var + epsilon), clipped to ±clip_obs, float32. The statistics
  take every observation a step or reset returns (not the true final observations of SAME_STEP's
  info["final_obs"], which are normalised but not counted, as SB3 does with terminal_observation).
- rewards: each env keeps its discounted return R ← γ·R + r (zeroed when its episode ends); the
  reward is divided by sqrt(var(R) + epsilon), clipped to ±clip_reward (not centred). The steps
  that are not transitions (NEXT_STEP's reset steps) do not count.
- Before the first batch the statistics are mean 0, variance 1; after it they are exactly the
  mean and (population) variance of everything counted, combined batch by batch (Chan et al.).
- Finished episodes' returns stay raw: make_vector_env's sub-envs record them before this wrapper,
  and `raw_reward` holds the last step's rewards before normalisation for envs that do not (native).

The statistics (`state_dict`) are the learned part, checkpointed on their own like SB3's
vecnormalize.pkl; the per-env discounted returns are episode state, captured with the env
(envs.state). `frozen` and `NormalizeObservation` use statistics without updating them: evaluation.
"""
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorWrapper
from gymnasium.vector.utils import batch_space

from core.backend import get_array_module, to_device
from core.runtime.errors import ConfigError
from envs._backend import array_module


class RunningMeanStd:
    """Mean and population variance of every sample seen, for samples of `shape`, in float64 arrays of `xp`."""

    def __init__(self, shape=(), xp=np):
        self.xp = xp
        self.mean = xp.zeros(shape, dtype=np.float64)
        self.var = xp.ones(shape, dtype=np.float64)
        self.count = 0

    def update(self, batch):
        """Count the samples of `batch` (n, *shape): the batch's moments combined with the running ones."""
        n = len(batch)
        if n == 0:
            return
        batch = batch.astype(np.float64, copy=False)
        batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
        if self.count == 0:
            self.mean[...], self.var[...] = batch_mean, batch_var
            self.count = n
            return
        total = self.count + n
        delta = batch_mean - self.mean
        squares = self.var * self.count + batch_var * n + delta * delta * (self.count * n / total)
        self.mean += delta * (n / total)
        self.var[...] = squares / total
        self.count = total

    def state_dict(self):
        return {"mean": np.array(to_device(self.mean, "cpu")), "var": np.array(to_device(self.var, "cpu")),
                "count": self.count}

    def load_state_dict(self, state):
        """In place: a frozen copy that shares this object sees the restored values."""
        if np.shape(state["mean"]) != self.mean.shape:
            raise ValueError(f"normalisation statistics of shape {np.shape(state['mean'])} cannot be loaded into "
                             f"shape {self.mean.shape}")
        self.mean[...] = self.xp.asarray(state["mean"])
        self.var[...] = self.xp.asarray(state["var"])
        self.count = int(state["count"])


def check_box(space, env_id):
    """ConfigError unless observations of `space` can be normalised (a Box)."""
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"env.normalize_obs needs Box (array) observations; {env_id} has {space} "
                          "(set env.normalize_obs=false)")


def check_settings(clip_obs, clip_reward, epsilon, gamma):
    for name, value in (("clip_obs", clip_obs), ("clip_reward", clip_reward), ("norm_epsilon", epsilon)):
        if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
            raise ConfigError(f"env.{name} must be a positive finite number, got {value!r}")
    if not (isinstance(gamma, (int, float)) and 0 <= gamma <= 1):
        raise ConfigError(f"the reward normaliser's gamma (env.norm_gamma, else the agent's gamma) must be in "
                          f"[0, 1], got {gamma!r}")


def normalize_obs(obs, stats, clip, epsilon):
    """(obs − mean) / sqrt(var + epsilon) clipped to ±clip, as float32 in obs's array module."""
    xp = get_array_module(obs)
    scaled = (xp.asarray(obs, dtype=np.float64) - stats.mean) / xp.sqrt(stats.var + epsilon)
    return xp.clip(scaled, -clip, clip).astype(np.float32)


class NormalizeVector(VectorWrapper):
    """A vector env with normalised observations (`obs`) and/or rewards (`reward`); see the module docstring.
    `training=False` freezes the statistics (evaluation); `obs_stats` shares another wrapper's;
    `env_id` names the env in errors."""

    def __init__(self, env, obs=True, reward=True, clip_obs=10.0, clip_reward=10.0, epsilon=1e-8, gamma=0.99,
                 training=True, obs_stats=None, env_id=None):
        super().__init__(env)
        env_id = env_id or type(env.unwrapped).__name__
        check_settings(clip_obs, clip_reward, epsilon, gamma)
        self.device = getattr(env, "device", "cpu")
        self.xp = array_module(self.device)
        self.normalizes_obs, self.normalizes_reward = bool(obs), bool(reward)
        self.clip_obs, self.clip_reward = float(clip_obs), float(clip_reward)
        self.epsilon, self.gamma, self.training = float(epsilon), float(gamma), training
        self.same_step = env.metadata.get("autoreset_mode") is AutoresetMode.SAME_STEP
        if self.normalizes_obs:
            check_box(env.single_observation_space, env_id)
            shape = env.single_observation_space.shape
            self.obs_stats = obs_stats if obs_stats is not None else RunningMeanStd(shape, self.xp)
            self.single_observation_space = gym.spaces.Box(-self.clip_obs, self.clip_obs, shape, np.float32)
            self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        else:
            self.obs_stats = None
        self.return_stats = RunningMeanStd((), self.xp) if self.normalizes_reward else None
        self.returns = self.xp.zeros(env.num_envs, dtype=np.float64)  # each env's discounted return so far
        self.prev_done = self.xp.zeros(env.num_envs, dtype=bool)  # NEXT_STEP: the coming step only resets these
        self.raw_reward = None

    def frozen(self, env):
        """`env` (another vector env of the same observations) normalised with these observation
        statistics, never updated, and raw rewards: an evaluation env."""
        return NormalizeVector(env, obs=self.normalizes_obs, reward=False, clip_obs=self.clip_obs,
                               clip_reward=self.clip_reward, epsilon=self.epsilon, gamma=self.gamma, training=False,
                               obs_stats=self.obs_stats)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.returns[...] = 0
        self.prev_done[...] = False
        return self._observe(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        if "final_obs" in info:
            info = {**info, "final_obs": self._final_obs(info["final_obs"], info["_final_obs"])}
        self.raw_reward = reward
        if self.normalizes_reward:
            reward = self._scale_reward(reward, done)
        if not self.same_step:
            self.prev_done = done
        return self._observe(obs), reward, terminated, truncated, info

    def _observe(self, obs):
        if not self.normalizes_obs:
            return obs
        if self.training:
            self.obs_stats.update(obs)
        return normalize_obs(obs, self.obs_stats, self.clip_obs, self.epsilon)

    def _final_obs(self, final, ended):
        if not self.normalizes_obs:
            return final
        if final.dtype != object:  # native: a full array
            return normalize_obs(final, self.obs_stats, self.clip_obs, self.epsilon)
        normalized = final.copy()  # gymnasium: one entry per env, None where nothing ended
        for i in np.flatnonzero(ended):
            normalized[i] = normalize_obs(final[i], self.obs_stats, self.clip_obs, self.epsilon)
        return normalized

    def _scale_reward(self, reward, done):
        xp = self.xp
        self.returns = self.returns * self.gamma + reward
        if self.training:
            counted = self.returns if self.same_step else self.returns[~self.prev_done]
            self.return_stats.update(counted)
        scaled = xp.clip(reward / xp.sqrt(self.return_stats.var + self.epsilon), -self.clip_reward, self.clip_reward)
        self.returns[done] = 0
        return scaled.astype(np.float32)

    # ----- checkpoints -----
    def state_dict(self):
        """The statistics (the learned part; plain data)."""
        return {"obs": self.obs_stats.state_dict() if self.normalizes_obs else None,
                "reward": self.return_stats.state_dict() if self.normalizes_reward else None}

    def load_state_dict(self, state):
        for name, stats in (("obs", self.obs_stats), ("reward", self.return_stats)):
            if (stats is None) != (state[name] is None):
                raise ValueError(f"the checkpoint {'has no' if state[name] is None else 'has'} {name} normalisation "
                                 f"statistics, this run {'does not normalise' if stats is None else 'normalises'} {name}s")
            if stats is not None:
                stats.load_state_dict(state[name])

    def episode_state(self):
        return {"returns": np.array(to_device(self.returns, "cpu")), "prev_done": np.array(to_device(self.prev_done,
                                                                                                     "cpu"))}

    def set_episode_state(self, state):
        self.returns = self.xp.array(state["returns"], dtype=np.float64)
        self.prev_done = self.xp.array(state["prev_done"], dtype=bool)


class NormalizeObservation(gym.ObservationWrapper):
    """One env's observations normalised with fixed statistics (`NormalizeVector.state_dict()["obs"]`):
    what scripts/evaluate.py plays a normalised run's policy on. Rewards stay raw."""

    def __init__(self, env, stats, clip_obs=10.0, epsilon=1e-8):
        super().__init__(env)
        check_box(env.observation_space, env.spec.id if env.spec else type(env.unwrapped).__name__)
        self.stats = RunningMeanStd(env.observation_space.shape)
        self.stats.load_state_dict(stats)
        self.clip_obs, self.epsilon = float(clip_obs), float(epsilon)
        self.observation_space = gym.spaces.Box(-self.clip_obs, self.clip_obs, env.observation_space.shape,
                                                np.float32)

    def observation(self, observation):
        return normalize_obs(observation, self.stats, self.clip_obs, self.epsilon)
