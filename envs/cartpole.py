"""A whole batch of CartPoles as arrays (numpy or cupy), with gymnasium's CartPole semantics.

Physics, thresholds, rewards, time limits and the initial-state distribution are gymnasium's
CartPole-v0 / v1 (explicit Euler, +1 reward on every step including the terminal one,
state ~ U(-0.05, 0.05)). On numpy the arithmetic follows gymnasium's operation order in float64,
so states match gymnasium's bit for bit; with the same seed, `reset` and the next-step autoresets
also draw the same random numbers as gymnasium's own `CartPoleVectorEnv`. dtype="float32" keeps
the states in float32 instead: the same physics to float32 rounding, about 2.5x faster on CPU
(float64 sin and cos take most of a float64 step).

Autoreset modes (gymnasium 1.x names):
- NEXT_STEP (default, gymnasium's convention): the step after an env is done resets it and
  returns its initial observation with reward 0 and terminated = truncated = False.
- SAME_STEP (faster for on-policy training, no wasted step): an env that is done is reset within
  the same step; the returned observation is already the new episode's first one, while the
  observation that ended the episode is in info["final_obs"] (row i, valid where
  info["_final_obs"][i]; rows of envs that are not done equal the returned observation).
"""

import math

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.utils import maybe_parse_reset_bounds
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs._backend import array_module, device_scope

# version -> (episode cap, reward threshold), as in gymnasium's registry
VERSIONS = {"v0": (200, 195.0), "v1": (500, 475.0)}
_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)


def _autoreset_mode(mode) -> AutoresetMode:
    """Accepts the enum, its value ("SameStep") or its name in any case ("same_step")."""
    for known in _MODES:
        if mode is known or (isinstance(mode, str) and mode in (known.value, known.name, known.name.lower())):
            return known
    raise ValueError(f"autoreset_mode must be 'next_step' or 'same_step' (or the AutoresetMode), got {mode!r}")


class NativeCartPoleVectorEnv(VectorEnv):
    """`num_envs` CartPoles stepped together; observations (num_envs, 4) float32 on `device`."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    # gymnasium's constants, same names
    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masspole + masscart
    length = 0.5  # half the pole's length
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02  # seconds per step
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(self, num_envs: int, version: str = "v1", device: str = "cpu",
                 autoreset_mode=AutoresetMode.NEXT_STEP, max_episode_steps: int | None = None, dtype="float64"):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {sorted(VERSIONS)}, got {version!r}")
        if max_episode_steps is not None and (not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}")
        if str(dtype) not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' (gymnasium's arithmetic) or 'float32', got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.num_envs = num_envs
        self.version = version
        cap, self.reward_threshold = VERSIONS[version]
        self.max_episode_steps = max_episode_steps or cap
        self.device = device
        self.xp = array_module(device)
        self._scope = device_scope(device)
        self.metadata = {**type(self).metadata, "autoreset_mode": _autoreset_mode(autoreset_mode)}

        high = np.array([self.x_threshold * 2, np.inf, self.theta_threshold_radians * 2, np.inf], dtype=np.float32)
        self.single_observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        self._low, self._high = -0.05, 0.05
        self._state = None  # (4, num_envs) of self.dtype: x, x_dot, theta, theta_dot as contiguous rows
        self._xp_rng = None  # cupy's generator; numpy uses self.np_random, as gymnasium does
        with self._scope:
            self._elapsed = self.xp.zeros(num_envs, dtype=np.int32)
            self._prev_done = self.xp.zeros(num_envs, dtype=bool)
            self._buffers = self.xp.empty((5, num_envs), dtype=self.dtype)  # scratch for the step
            self._forces = self.xp.asarray([-self.force_mag, self.force_mag], dtype=self.dtype)  # indexed by action

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options may set the initial-state bounds {"low": ..., "high": ...}, as in gymnasium."""
        super().reset(seed=seed)
        self._low, self._high = maybe_parse_reset_bounds(options, -0.05, 0.05)
        with self._scope:
            if self.xp is not np and (seed is not None or self._xp_rng is None):
                self._xp_rng = self.xp.random.RandomState(int(self.np_random.integers(2**63)))
            self._state = self._uniform((4, self.num_envs)).astype(self.dtype, copy=False)
            self._elapsed[...] = 0
            self._prev_done[...] = False
            return self._observation(), {}

    def step(self, actions):
        """actions: (num_envs,) ints, 0 pushes left and 1 right."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        with self._scope:
            xp = self.xp
            actions = xp.asarray(actions)
            if actions.shape != (self.num_envs,):
                raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
            self._integrate(actions)
            x, _, theta, _ = self._state
            terminated = (xp.abs(x) > self.x_threshold) | (xp.abs(theta) > self.theta_threshold_radians)
            self._elapsed += 1
            truncated = self._elapsed >= self.max_episode_steps

            if self.autoreset_mode is AutoresetMode.NEXT_STEP:
                was_done = self._prev_done
                self._reset_where(was_done)
                running = ~was_done
                terminated &= running
                truncated &= running
                self._prev_done = terminated | truncated
                return self._observation(), running.astype(np.float32), terminated, truncated, {}

            done = terminated | truncated
            final_obs = self._observation()
            self._reset_where(done)
            rewards = xp.ones(self.num_envs, dtype=np.float32)
            return self._observation(), rewards, terminated, truncated, {"final_obs": final_obs, "_final_obs": done}

    def _integrate(self, actions):
        """One Euler step of every cart in place, in gymnasium's operation order (bit-identical)."""
        xp = self.xp
        x, x_dot, theta, theta_dot = self._state
        cos, sin, temp, thetaacc, work = self._buffers
        xp.cos(theta, out=cos)
        xp.sin(theta, out=sin)
        # temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
        xp.square(theta_dot, out=temp)
        temp *= self.polemass_length
        temp *= sin
        temp += self._forces.take(actions)
        temp /= self.total_mass
        # thetaacc = (gravity * sin - cos * temp) / (length * (4/3 - masspole * cos**2 / total_mass))
        xp.square(cos, out=thetaacc)
        thetaacc *= self.masspole
        thetaacc /= self.total_mass
        xp.subtract(4.0 / 3.0, thetaacc, out=thetaacc)
        thetaacc *= self.length
        sin *= self.gravity
        xp.multiply(cos, temp, out=work)
        sin -= work
        xp.divide(sin, thetaacc, out=thetaacc)
        # xacc = temp - polemass_length * thetaacc * cos / total_mass
        xp.multiply(thetaacc, self.polemass_length, out=work)
        work *= cos
        work /= self.total_mass
        xp.subtract(temp, work, out=work)
        # positions first: Euler advances them with the old velocities
        for value, rate in ((x, x_dot), (theta, theta_dot), (x_dot, work), (theta_dot, thetaacc)):
            xp.multiply(rate, self.tau, out=cos)
            value += cos

    def _uniform(self, shape):
        if self.xp is np:
            return self.np_random.uniform(self._low, self._high, size=shape)
        return self._xp_rng.uniform(self._low, self._high, size=shape)

    def _reset_where(self, mask):
        """Start new episodes in the envs flagged by `mask`."""
        xp = self.xp
        if xp is np:
            # draw only for the done envs, column by column as gymnasium does (same random stream);
            # integer indices assign ~3x faster than the boolean mask
            done = np.flatnonzero(mask)
            if done.size:
                self._state[:, done] = self._uniform((4, done.size))
                self._elapsed[done] = 0
        else:
            # a fixed-size draw keeps the GPU step free of host syncs
            xp.copyto(self._state, self._uniform(self._state.shape), where=mask)
            xp.copyto(self._elapsed, 0, where=mask)

    def _observation(self):
        # a column-major (num_envs, 4) copy, as gymnasium's CartPoleVectorEnv returns; a row-major
        # copy of the transpose is ~10x slower
        return self._state.T.astype(np.float32)

    def get_state(self):
        """Raw states (float64, or float32 with that dtype), shape (num_envs, 4), rows laid out like
        gymnasium's `env.unwrapped.state`."""
        if self._state is None:
            raise RuntimeError("call reset() before get_state()")
        return self._state.T.copy()

    def set_state(self, state, elapsed_steps=None):
        """Put every env in `state` (num_envs, 4) with `elapsed_steps` (default 0) already taken.

        Pending next-step resets are cleared, so the next step continues from exactly these states.
        """
        with self._scope:
            state = self.xp.asarray(state, dtype=self.dtype)
            if state.shape != (self.num_envs, 4):
                raise ValueError(f"state must have shape ({self.num_envs}, 4), got {state.shape}")
            self._state = self.xp.ascontiguousarray(state.T)
            self._elapsed[...] = 0 if elapsed_steps is None else self.xp.asarray(elapsed_steps)
            self._prev_done[...] = False

    @property
    def elapsed_steps(self):
        """Steps taken in each env's current episode."""
        return self._elapsed.copy()

    def __repr__(self):
        dtype = "" if self.dtype == np.float64 else f", dtype={self.dtype.name!r}"
        return (f"NativeCartPoleVectorEnv(CartPole-{self.version}, num_envs={self.num_envs}, "
                f"device={self.device!r}, autoreset_mode={self.autoreset_mode.name}{dtype})")
