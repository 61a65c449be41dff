"""A whole batch of Acrobots as arrays (numpy or cupy), with gymnasium's Acrobot-v1 semantics.

Dynamics, integration, rewards, time limit and initial states are gymnasium's Acrobot-v1: the
book's equations of motion, one fourth-order Runge-Kutta step over dt = 0.2 s with the torque
(-1, 0, +1 for actions 0, 1, 2) held constant, angles wrapped into [-pi, pi], velocities bounded
at 4 pi and 9 pi, termination when the tip rises above the line (-cos t1 - cos(t1 + t2) > 1),
reward -1 per step and 0 on the terminal one, episodes cut at 500 steps, initial states
U(-0.1, 0.1)^4 rounded to float32, observations [cos t1, sin t1, cos t2, sin t2, dt1, dt2] float32.

On numpy in float64 the arithmetic is gymnasium's, operation for operation, so states,
observations, rewards and flags equal gymnasium's bit for bit. Squares use `float_power`, the libm
`pow` that gymnasium's scalar `x**2` calls: numpy's array `square` (x * x) differs from it in the
last bit about once in a thousand values, and the dynamics are chaotic enough to amplify that.
Random draws: each env has its own generator, seeded like gymnasium's single env (env i of
`reset(seed=s)` with s + i, as the factory's sync vector env seeds its sub-envs), drawn from only
at that env's resets: the same seed gives the same episodes as `make_vector_env(..., "sync")`.
dtype="float32" keeps the states in float32: the same dynamics to float32 rounding, faster.

Autoreset modes, devices and state access: envs/native.py.
"""

import math

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from envs.native import NativeVectorEnv


class NativeAcrobotVectorEnv(NativeVectorEnv):
    """`num_envs` Acrobots stepped together; observations (num_envs, 6) float32 on `device`."""

    NAME = "Acrobot"
    VERSIONS = {"v1": (500, -100.0)}  # as in gymnasium's registry
    STATE_SIZE = 4  # theta1, theta2 (relative to link 1), dtheta1, dtheta2
    RESET_BOUND = 0.1

    # gymnasium's constants, same names
    dt = 0.2
    LINK_LENGTH_1 = 1.0
    LINK_MASS_1 = 1.0
    LINK_MASS_2 = 1.0
    LINK_COM_POS_1 = 0.5
    LINK_COM_POS_2 = 0.5
    LINK_MOI = 1.0
    MAX_VEL_1 = 4 * math.pi
    MAX_VEL_2 = 9 * math.pi
    AVAIL_TORQUE = (-1.0, 0.0, 1.0)
    g = 9.8

    def __init__(self, num_envs: int, version: str = "v1", **kwargs):
        """kwargs: device, autoreset_mode, max_episode_steps, dtype (envs/native.py)."""
        super().__init__(num_envs, version, **kwargs)
        self._fresh = None  # numpy: indices of envs just reset, whose observation gymnasium takes in float32
        with self._scope:
            self._torques = self.xp.asarray(self.AVAIL_TORQUE, dtype=self.dtype)  # indexed by action

    def _spaces(self):
        high = np.array([1.0, 1.0, 1.0, 1.0, self.MAX_VEL_1, self.MAX_VEL_2], dtype=np.float32)
        return spaces.Box(-high, high, dtype=np.float32), spaces.Discrete(3)

    def seed_random(self, seed: int | None):
        """Env i's generator is seeded with seed + i (all unseeded with None); the batch's own generator,
        which seeds cupy's, with seed."""
        super().seed_random(seed)
        self._generators = [seeding.np_random(None if seed is None else seed + i)[0] for i in range(self.num_envs)]

    def _draw(self, indices):
        if self._generators is None:
            self.seed_random(None)
        self._fresh = indices
        return np.stack([self._generators[i].uniform(self._low, self._high, size=4).astype(np.float32)
                         for i in indices], axis=1)

    def _draw_batch(self):
        return super()._draw_batch().astype(np.float32)

    def _square(self, x):
        # gymnasium's x**2 on float64 scalars is libm's pow; float_power computes in float64
        return self.xp.float_power(x, 2.0) if self.dtype == np.float64 else self.xp.square(x)

    def _derivatives(self, theta1, theta2, dtheta1, dtheta2, torque):
        """gymnasium's AcrobotEnv._dsdt (book dynamics), term for term in its evaluation order."""
        xp, square = self.xp, self._square
        m1, m2 = self.LINK_MASS_1, self.LINK_MASS_2
        l1, lc1, lc2 = self.LINK_LENGTH_1, self.LINK_COM_POS_1, self.LINK_COM_POS_2
        I1 = I2 = self.LINK_MOI
        g, pi = self.g, math.pi
        cos_theta2, sin_theta2 = xp.cos(theta2), xp.sin(theta2)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos_theta2) + I1 + I2
        d2 = m2 * (lc2**2 + l1 * lc2 * cos_theta2) + I2
        phi2 = m2 * lc2 * g * xp.cos(theta1 + theta2 - pi / 2.0)
        phi1 = (-m2 * l1 * lc2 * square(dtheta2) * sin_theta2
                - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin_theta2
                + (m1 * lc1 + m2 * l1) * g * xp.cos(theta1 - pi / 2)
                + phi2)
        ddtheta2 = ((torque + d2 / d1 * phi1 - m2 * l1 * lc2 * square(dtheta1) * sin_theta2 - phi2)
                    / (m2 * lc2**2 + I2 - square(d2) / d1))
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return xp.stack([dtheta1, dtheta2, ddtheta1, ddtheta2])

    def _advance(self, actions):
        """actions: 0, 1, 2 apply torque -1, 0, +1 to the joint between the links."""
        xp = self.xp
        torque = self._torques.take(actions)
        # gymnasium's rk4 over t = [0, dt]; the torque is the constant fifth state variable
        y0 = self._state
        dt = self.dt
        dt2 = dt / 2.0
        k1 = self._derivatives(*y0, torque)
        k2 = self._derivatives(*(y0 + dt2 * k1), torque)
        k3 = self._derivatives(*(y0 + dt2 * k2), torque)
        k4 = self._derivatives(*(y0 + dt * k3), torque)
        state = y0 + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        turn = math.pi - -math.pi
        for angle in state[:2]:  # gymnasium's wrap: whole turns off, one at a time, while out of [-pi, pi]
            while (above := angle > math.pi).any():
                angle[...] = xp.where(above, angle - turn, angle)
            while (below := angle < -math.pi).any():
                angle[...] = xp.where(below, angle + turn, angle)
        xp.clip(state[2], -self.MAX_VEL_1, self.MAX_VEL_1, out=state[2])
        xp.clip(state[3], -self.MAX_VEL_2, self.MAX_VEL_2, out=state[3])
        self._state = state
        theta1, theta2 = state[0], state[1]
        return -xp.cos(theta1) - xp.cos(theta2 + theta1) > 1.0

    def _rewards(self, terminated):
        return self.xp.where(terminated, np.float32(0.0), np.float32(-1.0))

    def _observation(self):
        xp = self.xp
        theta1, theta2, dtheta1, dtheta2 = self._state
        obs = xp.stack([xp.cos(theta1), xp.sin(theta1), xp.cos(theta2), xp.sin(theta2), dtheta1, dtheta2],
                       axis=1).astype(np.float32)
        if self._fresh is not None:
            # gymnasium's reset state is float32, so its first observation takes cos and sin in float32
            angles = self._state[:2, self._fresh].astype(np.float32)
            obs[self._fresh, 0:4:2] = np.cos(angles).T
            obs[self._fresh, 1:4:2] = np.sin(angles).T
            self._fresh = None
        return obs
