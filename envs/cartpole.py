"""A whole batch of CartPoles as arrays (numpy or cupy), with gymnasium's CartPole semantics.

Physics, thresholds, rewards, time limits and the initial-state distribution are gymnasium's
CartPole-v0 / v1 (explicit Euler, +1 reward on every step including the terminal one,
state ~ U(-0.05, 0.05)). On numpy the arithmetic follows gymnasium's operation order in float64,
so states match gymnasium's bit for bit; with the same seed, `reset` and the next-step autoresets
also draw the same random numbers as gymnasium's own `CartPoleVectorEnv`. dtype="float32" keeps
the states in float32 instead: the same physics to float32 rounding, about 2.5x faster on CPU
(float64 sin and cos take most of a float64 step).

Autoreset modes, seeding, devices and state access: envs/native.py.
"""

import math

import numpy as np
from gymnasium import spaces

from envs.native import NativeVectorEnv


class NativeCartPoleVectorEnv(NativeVectorEnv):
    """`num_envs` CartPoles stepped together; observations (num_envs, 4) float32 on `device`."""

    NAME = "CartPole"
    VERSIONS = {"v0": (200, 195.0), "v1": (500, 475.0)}  # as in gymnasium's registry
    STATE_SIZE = 4  # x, x_dot, theta, theta_dot
    RESET_BOUND = 0.05

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

    def __init__(self, num_envs: int, version: str = "v1", **kwargs):
        """kwargs: device, autoreset_mode, max_episode_steps, dtype (envs/native.py)."""
        super().__init__(num_envs, version, **kwargs)
        with self._scope:
            self._buffers = self.xp.empty((5, num_envs), dtype=self.dtype)  # scratch for the step
            self._forces = self.xp.asarray([-self.force_mag, self.force_mag], dtype=self.dtype)  # indexed by action

    def _spaces(self):
        high = np.array([self.x_threshold * 2, np.inf, self.theta_threshold_radians * 2, np.inf], dtype=np.float32)
        return spaces.Box(-high, high, dtype=np.float32), spaces.Discrete(2)

    def _advance(self, actions):
        """actions: 0 pushes left and 1 right."""
        self._integrate(actions)
        x, _, theta, _ = self._state
        return (self.xp.abs(x) > self.x_threshold) | (self.xp.abs(theta) > self.theta_threshold_radians)

    def _rewards(self, terminated):
        return self.xp.ones(self.num_envs, dtype=np.float32)  # +1 on every step, the terminal one included

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

    def _draw(self, indices):
        # the batch's one generator, column by column as gymnasium's CartPoleVectorEnv draws (same stream)
        return self.np_random.uniform(self._low, self._high, size=(self.STATE_SIZE, len(indices)))

    def _observation(self):
        # a column-major (num_envs, 4) copy, as gymnasium's CartPoleVectorEnv returns; a row-major
        # copy of the transpose is ~10x slower
        return self._state.T.astype(np.float32)
