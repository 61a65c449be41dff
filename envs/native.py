"""What the native vector envs share: a whole batch of one classic-control env as arrays (numpy or cupy).

A subclass (envs/cartpole.py, envs/acrobot.py) supplies the physics (`_advance`), the observation,
the rewards, the spaces and the initial-state draws; this base does the rest the same way for all:
argument checks, dtype ("float64": gymnasium's arithmetic, "float32": faster) and device handling,
the time limit, both autoreset modes, reset options, seeding, get_state / set_state.

Autoreset modes (gymnasium 1.x names):
- NEXT_STEP (default, gymnasium's convention): the step after an env is done resets it and
  returns its initial observation with reward 0 and terminated = truncated = False.
- SAME_STEP (faster for on-policy training, no wasted step): an env that is done is reset within
  the same step; the returned observation is already the new episode's first one, while the
  observation that ended the episode is in info["final_obs"] (row i, valid where
  info["_final_obs"][i]; rows of envs that are not done equal the returned observation).

On cupy, resets draw a fixed-size batch from cupy's generator (seeded from the env's numpy
generator at reset) and keep the rows of the envs that are done: no host syncs in a step, but
not the numpy draws.
"""

import numpy as np
from gymnasium.envs.classic_control.utils import maybe_parse_reset_bounds
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs._backend import array_module, device_scope

_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)


def _autoreset_mode(mode) -> AutoresetMode:
    """Accepts the enum, its value ("SameStep") or its name in any case ("same_step")."""
    for known in _MODES:
        if mode is known or (isinstance(mode, str) and mode in (known.value, known.name, known.name.lower())):
            return known
    raise ValueError(f"autoreset_mode must be 'next_step' or 'same_step' (or the AutoresetMode), got {mode!r}")


class NativeVectorEnv(VectorEnv):
    """`num_envs` envs stepped together; the state is (STATE_SIZE, num_envs) of `dtype` on `device`.

    Subclasses set NAME, VERSIONS (version -> (episode cap, reward threshold), as in gymnasium's
    registry), STATE_SIZE, RESET_BOUND (initial states ~ U(-bound, bound) unless reset options say
    otherwise), and implement `_spaces`, `_advance`, `_rewards`, `_observation` and `_draw`.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}
    NAME = VERSIONS = STATE_SIZE = RESET_BOUND = None
    _generators = None  # one generator per env, for a subclass that draws from them (Acrobot)

    def __init__(self, num_envs: int, version: str = "v1", device: str = "cpu",
                 autoreset_mode=AutoresetMode.NEXT_STEP, max_episode_steps: int | None = None, dtype="float64"):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if version not in self.VERSIONS:
            raise ValueError(f"version must be one of {sorted(self.VERSIONS)}, got {version!r}")
        if max_episode_steps is not None and (not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}")
        if str(dtype) not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' (gymnasium's arithmetic) or 'float32', got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.num_envs = num_envs
        self.version = version
        cap, self.reward_threshold = self.VERSIONS[version]
        self.max_episode_steps = max_episode_steps or cap
        self.device = device
        self.xp = array_module(device)
        self._scope = device_scope(device)
        self.metadata = {**type(self).metadata, "autoreset_mode": _autoreset_mode(autoreset_mode)}

        self.single_observation_space, self.single_action_space = self._spaces()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        self._low, self._high = -self.RESET_BOUND, self.RESET_BOUND
        self._state = None  # (STATE_SIZE, num_envs) of self.dtype, one contiguous row per state variable
        self._xp_rng = None  # cupy's generator; numpy draws with the env's own generators
        with self._scope:
            self._elapsed = self.xp.zeros(num_envs, dtype=np.int32)
            self._prev_done = self.xp.zeros(num_envs, dtype=bool)

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]

    def seed_random(self, seed: int | None):
        """Seed the random streams as `reset(seed=seed)` does, without resetting (the factory uses it
        so that a plain `reset()` is already seeded). This base seeds the one generator of the batch."""
        self._np_random, self._np_random_seed = seeding.np_random(seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options may set the initial-state bounds {"low": ..., "high": ...}, as in gymnasium."""
        if seed is not None:
            self.seed_random(seed)
        self._low, self._high = maybe_parse_reset_bounds(options, -self.RESET_BOUND, self.RESET_BOUND)
        with self._scope:
            if self.xp is np:
                self._state = np.asarray(self._draw(np.arange(self.num_envs)), dtype=self.dtype, order="C")
            else:
                if seed is not None or self._xp_rng is None:
                    self._xp_rng = self.xp.random.RandomState(int(self.np_random.integers(2**63)))
                self._state = self._draw_batch().astype(self.dtype)
            self._elapsed[...] = 0
            self._prev_done[...] = False
            return self._observation(), {}

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        with self._scope:
            xp = self.xp
            actions = xp.asarray(actions)
            if actions.shape != (self.num_envs,):
                raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
            terminated = self._advance(actions)
            self._elapsed += 1
            truncated = self._elapsed >= self.max_episode_steps

            if self.autoreset_mode is AutoresetMode.NEXT_STEP:
                was_done = self._prev_done
                self._reset_where(was_done)
                running = ~was_done
                terminated &= running
                truncated &= running
                self._prev_done = terminated | truncated
                rewards = xp.where(running, self._rewards(terminated), np.float32(0.0))
                return self._observation(), rewards, terminated, truncated, {}

            done = terminated | truncated
            final_obs = self._observation()
            self._reset_where(done)
            rewards = self._rewards(terminated)
            return self._observation(), rewards, terminated, truncated, {"final_obs": final_obs, "_final_obs": done}

    def _reset_where(self, mask):
        """Start new episodes in the envs flagged by `mask`."""
        xp = self.xp
        if xp is np:
            # integer indices assign ~3x faster than the boolean mask
            done = np.flatnonzero(mask)
            if done.size:
                self._state[:, done] = self._draw(done)
                self._elapsed[done] = 0
        else:
            # a fixed-size draw keeps the GPU step free of host syncs
            xp.copyto(self._state, self._draw_batch(), where=mask)
            xp.copyto(self._elapsed, 0, where=mask)

    def _draw_batch(self):
        """Initial states for the whole batch from cupy's generator (device envs)."""
        return self._xp_rng.uniform(self._low, self._high, size=self._state_shape)

    @property
    def _state_shape(self):
        return (self.STATE_SIZE, self.num_envs)

    def get_state(self):
        """Raw states (float64, or float32 with that dtype), shape (num_envs, STATE_SIZE), rows laid
        out like gymnasium's `env.unwrapped.state`."""
        if self._state is None:
            raise RuntimeError("call reset() before get_state()")
        return self._state.T.copy()

    def set_state(self, state, elapsed_steps=None):
        """Put every env in `state` (num_envs, STATE_SIZE) with `elapsed_steps` (default 0) already taken.

        Pending next-step resets are cleared, so the next step continues from exactly these states.
        """
        with self._scope:
            state = self.xp.asarray(state, dtype=self.dtype)
            if state.shape != (self.num_envs, self.STATE_SIZE):
                raise ValueError(f"state must have shape ({self.num_envs}, {self.STATE_SIZE}), got {state.shape}")
            self._state = self.xp.ascontiguousarray(state.T)
            self._elapsed[...] = 0 if elapsed_steps is None else self.xp.asarray(elapsed_steps)
            self._prev_done[...] = False

    @property
    def elapsed_steps(self):
        """Steps taken in each env's current episode."""
        return self._elapsed.copy()

    def __repr__(self):
        dtype = "" if self.dtype == np.float64 else f", dtype={self.dtype.name!r}"
        return (f"{type(self).__name__}({self.NAME}-{self.version}, num_envs={self.num_envs}, "
                f"device={self.device!r}, autoreset_mode={self.autoreset_mode.name}{dtype})")

    # ----- what a subclass supplies -----

    def _spaces(self):
        """(single observation space, single action space)."""
        raise NotImplementedError

    def _advance(self, actions):
        """Step every env's state in place under `actions`; returns the terminated flags."""
        raise NotImplementedError

    def _rewards(self, terminated):
        """float32 rewards of a step that ended in `terminated`."""
        raise NotImplementedError

    def _observation(self):
        """float32 observations (num_envs, ...) of the current states."""
        raise NotImplementedError

    def _draw(self, indices):
        """Initial states (STATE_SIZE, len(indices)) for the envs at `indices`, numpy only."""
        raise NotImplementedError
