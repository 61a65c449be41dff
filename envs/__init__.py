"""Environments: the factory over gymnasium, native vectorized CartPole and Acrobot (numpy/cupy), the
books' toy envs, clean vector-env transitions and env state for checkpoints.

Importing `envs` registers the toy envs with gymnasium under the `lab/` namespace.
"""

import gymnasium as gym

from envs.acrobot import NativeAcrobotVectorEnv
from envs.cartpole import NativeCartPoleVectorEnv
from envs.toy import BanditEnv, GridWorld4x4Env, Maze3x4Env, TabularMDPEnv, ThreeStateMDPEnv
from envs.factory import make_env, make_vector_env
from envs.rollout import EpisodeStats, Transition, VectorStepper
from envs.state import get_env_state, set_env_state

# id -> (entry point, episode cap). The bandit and Géron's MDP are continuing tasks, as the books run them;
# the grid mazes get FrozenLake's cap of 100 so a looping policy cannot run forever.
TOY_ENVS = {
    "lab/Bandit-v0": ("envs.toy:BanditEnv", None),
    "lab/GridWorld4x4-v0": ("envs.toy:GridWorld4x4Env", 100),
    "lab/ThreeStateMDP-v0": ("envs.toy:ThreeStateMDPEnv", None),
    "lab/Maze3x4-v0": ("envs.toy:Maze3x4Env", 100),
}

for _env_id, (_entry_point, _cap) in TOY_ENVS.items():
    if _env_id not in gym.registry:  # importing twice (e.g. a reload) must not re-register
        gym.register(id=_env_id, entry_point=_entry_point, max_episode_steps=_cap)

__all__ = ["NativeCartPoleVectorEnv", "NativeAcrobotVectorEnv", "BanditEnv", "GridWorld4x4Env", "Maze3x4Env",
           "TabularMDPEnv", "ThreeStateMDPEnv", "TOY_ENVS", "make_env", "make_vector_env", "VectorStepper", "Transition",
           "EpisodeStats", "get_env_state", "set_env_state"]
