"""Atari support: ids, the optional dependencies, and the DQN-style preprocessing.

The optional `atari` extra brings ale-py (the emulator; it ships the ROMs) and opencv-python-headless
(gymnasium's AtariPreprocessing resizes frames with cv2). gymnasium 1.x only knows the ALE ids after
`gymnasium.register_envs(ale_py)`, which `require_ale` does.
"""

import importlib

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing

from core.runtime.errors import ConfigError

INSTALL_HINT = "pip install 'rlgen-lab[atari]'"
NOOP_MAX = 30  # random no-op steps at reset (Mnih et al. 2015)
SCREEN_SIZE = 84


class MissingExtraError(ConfigError, ImportError):
    """An optional dependency is missing: an ImportError, and a ConfigError so scripts/train.py
    reports it in one line at start-up."""


def is_atari_id(env_id: str) -> bool:
    """ALE ids ("ALE/Breakout-v5") and the classic no-frameskip ids ("BreakoutNoFrameskip-v4")."""
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


def require_ale(env_id: str, preprocessing: bool) -> None:
    """Import ale-py (and cv2 when `preprocessing`) and register the ALE envs; one clear ImportError
    naming what is missing when the extra is not installed (MissingExtraError)."""
    needed = {"ale_py": "ale-py", **({"cv2": "opencv-python-headless"} if preprocessing else {})}
    modules, missing = {}, []
    for module, package in needed.items():
        try:
            modules[module] = importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise MissingExtraError(f"{env_id!r} is an Atari env and needs {' and '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}")
    gym.register_envs(modules["ale_py"])


def preprocess(env: gym.Env, frame_skip: int = 4, terminal_on_life_loss: bool = False) -> gym.Env:
    """Grayscale 84x84 uint8 frames, up to 30 no-ops at reset, `frame_skip` frames per action
    (max-pooled over the last two). The env must be made with frameskip=1.

    gymnasium's terminal_on_life_loss ends the episode at a life loss, and the next reset starts a
    new game (it is not DeepMind's soft "episodic life" reset).
    """
    return AtariPreprocessing(env, noop_max=NOOP_MAX, frame_skip=frame_skip, screen_size=SCREEN_SIZE,
                              terminal_on_life_loss=terminal_on_life_loss, grayscale_obs=True, scale_obs=False)
