"""Environment state for checkpoints: resume a run and the envs continue bitwise identically.

    ckpt["env"] = get_env_state(envs)          # plain dicts / lists / numpy arrays / Python scalars
    ...
    if not set_env_state(envs, ckpt["env"]):   # False: this env's state could not be captured
        envs.reset()                           # so the resumed run starts fresh episodes

What is captured:
- the native vector envs (envs/native.py: CartPole, Acrobot) on numpy: physics arrays, elapsed steps,
  pending next-step resets, reset bounds, the random generators, the action spaces' generators.
- gymnasium envs (single, or a SyncVectorEnv of them): per env the unwrapped env's random
  generator (`np_random.bit_generator.state`) and its plain-data attributes (None, bools, numbers,
  strings, numpy arrays, and lists/tuples/dicts of those: CartPole's `state` and
  `steps_beyond_terminated`, MountainCar's `state` tuple, Blackjack's hands, the toy envs' `state`,
  FrozenLake's `s`, ...), the state of the wrappers listed in `_WRAPPERS` (TimeLimit's elapsed
  steps, RecordEpisodeStatistics' counters, the frame stack, the pending first-reset seed, ...),
  the outermost action/observation spaces' generators; for SyncVectorEnv also its autoreset flags.

- NormalizeVector (envs/normalize.py): the wrapped vector env's state as above, with the per-env
  discounted returns of the reward normaliser; its statistics are checkpointed on their own
  (`NormalizeVector.state_dict`).

What is not (the state says {"exact": False, "reasons": [...]}, and set_env_state restores nothing):
AsyncVectorEnv (the envs live in worker processes), cupy native envs (cupy's generator state cannot
be read), any wrapper not known here, and any env with an attribute that is neither plain data nor a
space, spec or generator: Atari (the emulator object), MuJoCo and Box2D (simulator objects), or a
classic-control env whose pygame window is open (it is exact again in a fresh process). Resuming
such a run restarts episodes; everything else (networks, optimizers, buffers) still resumes exactly.
"""

import copy
import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import SyncVectorEnv, VectorEnv
from gymnasium.wrappers import (FrameStackObservation, OrderEnforcing, PassiveEnvChecker, RecordEpisodeStatistics,
                                TimeLimit)

from envs.native import NativeVectorEnv
from envs.normalize import NormalizeVector
from envs.wrappers import ActionRepeat, RecordEpisodeGif, ScaleReward, SeedFirstReset

_SCALAR_TYPES = (type(None), bool, int, float, str)
# attributes that configure an env rather than hold its episode (the generator is captured on its own)
_CONFIGURATION_TYPES = (gym.spaces.Space, EnvSpec, np.random.Generator)
_BIT_GENERATORS = {name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")}


def get_env_state(env) -> dict:
    """A plain-data snapshot of `env` (see the module docstring); always has "kind" and "exact"."""
    if isinstance(env, NativeVectorEnv):
        return _native_state(env)
    if isinstance(env, NormalizeVector):
        inner = get_env_state(env.env)
        return {"kind": type(env).__name__, "exact": inner["exact"], "reasons": inner["reasons"], "env": inner,
                "normalizer": env.episode_state()}
    if isinstance(env, SyncVectorEnv):
        return _sync_state(env)
    if isinstance(env, VectorEnv):  # AsyncVectorEnv, vector wrappers, other vector envs
        return _inexact(type(env).__name__, f"{type(env).__name__} cannot be captured (its envs may live in "
                                            "other processes); only SyncVectorEnv and the native vector envs can")
    if isinstance(env, gym.Env):
        return _single_state(env)
    raise TypeError(f"get_env_state needs a gymnasium Env or VectorEnv, got {type(env).__name__}")


def set_env_state(env, state: dict) -> bool:
    """Restore what `get_env_state` captured. True when `env` now continues exactly as the saved env
    would have; False (and `env` untouched) when the state was not exact: reset the env then."""
    kind = type(env).__name__ if isinstance(env, VectorEnv) else "Env"
    if state.get("kind") != kind:
        raise ValueError(f"env state was saved from a {state.get('kind')!r}, cannot restore it into a {kind!r}")
    if not state["exact"]:
        return False
    if isinstance(env, NormalizeVector):
        set_env_state(env.env, state["env"])
        env.set_episode_state(state["normalizer"])
    elif isinstance(env, NativeVectorEnv):
        _set_native_state(env, state)
    elif isinstance(env, SyncVectorEnv):
        _set_sync_state(env, state)
    else:
        _set_single_state(env, state)
    return True


def _inexact(kind, reason):
    return {"kind": kind, "exact": False, "reasons": [reason]}


# ----- random generators -----

def _rng_state(generator):
    return None if generator is None else generator.bit_generator.state


def _generator(state):
    if state is None:
        return None
    bit_generator = _BIT_GENERATORS[state["bit_generator"]]()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _spaces_state(env):
    return {"action": _rng_state(env.action_space._np_random),
            "observation": _rng_state(env.observation_space._np_random)}


def _set_spaces_state(env, state):
    env.action_space._np_random = _generator(state["action"])
    env.observation_space._np_random = _generator(state["observation"])


# ----- native vector envs -----

def _native_state(env):
    if env.xp is not np:
        return _inexact(type(env).__name__, "cupy's random generator state cannot be saved, so resets after a "
                                            "resume would differ")
    return {"kind": type(env).__name__, "exact": True, "reasons": [], "num_envs": env.num_envs,
            "state": None if env._state is None else env._state.copy(),
            "elapsed": env._elapsed.copy(), "prev_done": env._prev_done.copy(),
            "reset_bounds": [env._low, env._high], "rng": _rng_state(env._np_random),
            "env_rngs": [_rng_state(generator) for generator in env._generators or ()],
            "spaces": _spaces_state(env), "single_action_rng": _rng_state(env.single_action_space._np_random)}


def _set_native_state(env, state):
    _check_num_envs(env, state)
    env._state = None if state["state"] is None else np.array(state["state"], dtype=env.dtype, order="C")
    env._elapsed[...] = state["elapsed"]
    env._prev_done[...] = state["prev_done"]
    env._low, env._high = state["reset_bounds"]
    env._np_random = _generator(state["rng"])
    if state["env_rngs"]:  # the per-env generators of the native Acrobot
        env._generators = [_generator(generator) for generator in state["env_rngs"]]
    _set_spaces_state(env, state["spaces"])
    env.single_action_space._np_random = _generator(state["single_action_rng"])


def _check_num_envs(env, state):
    if state["num_envs"] != env.num_envs:
        raise ValueError(f"env state holds {state['num_envs']} envs, the env has {env.num_envs}")


# ----- gymnasium SyncVectorEnv -----

def _sync_state(env):
    subs = [_single_state(sub) for sub in env.envs]
    return {"kind": type(env).__name__, "exact": all(sub["exact"] for sub in subs),
            "reasons": [reason for sub in subs for reason in sub["reasons"]], "num_envs": env.num_envs,
            "autoreset_envs": np.array(env._autoreset_envs, dtype=bool), "envs": subs,
            "rng": _rng_state(env._np_random), "spaces": _spaces_state(env)}


def _set_sync_state(env, state):
    _check_num_envs(env, state)
    for sub, sub_state in zip(env.envs, state["envs"]):
        _set_single_state(sub, sub_state)
    env._autoreset_envs = np.array(state["autoreset_envs"], dtype=bool)
    env._np_random = _generator(state["rng"])
    _set_spaces_state(env, state["spaces"])


# ----- single gymnasium env -----

def _attributes(**keys):
    """(get, set) of a wrapper whose episode state is plain attributes: saved key -> attribute name."""
    def get(w):
        return {key: getattr(w, name) for key, name in keys.items()}

    def set_(w, s):
        for key, name in keys.items():
            setattr(w, name, s[key])
    return get, set_


def _get_checker(w):
    return {}


def _set_checker(w, s):
    # the one-time API checks ran when the saved env first stepped; a fresh env would run them against
    # data it never saw (and crash stepping without a reset), so they count as done
    w.checked_reset = w.checked_step = w.checked_data_reuse = True
    w._previous_data = None


def _get_statistics(w):
    return {"episode_count": w.episode_count, "episode_returns": w.episode_returns,
            "episode_lengths": w.episode_lengths, "episode_seconds": time.perf_counter() - w.episode_start_time,
            "return_queue": list(w.return_queue), "length_queue": list(w.length_queue),
            "time_queue": list(w.time_queue)}


def _set_statistics(w, s):
    w.episode_count, w.episode_returns = s["episode_count"], s["episode_returns"]
    w.episode_lengths = s["episode_lengths"]
    w.episode_start_time = time.perf_counter() - s["episode_seconds"]  # wall time is the one inexact part
    for name in ("return_queue", "length_queue", "time_queue"):
        queue = getattr(w, name)
        queue.clear()
        queue.extend(s[name])


def _get_frame_stack(w):
    return {"obs_queue": [np.array(obs) for obs in w.obs_queue]}


def _set_frame_stack(w, s):
    w.obs_queue.clear()
    w.obs_queue.extend(np.array(obs) for obs in s["obs_queue"])


def _get_gif(w):
    return {"episode_id": w.episode_id}


def _set_gif(w, s):
    w.episode_id = s["episode_id"]  # the frames of an episode in progress are not kept: that GIF is skipped
    w.frames = None


# wrapper class -> (get, set); None for wrappers without episode state
_WRAPPERS = {
    TimeLimit: _attributes(elapsed_steps="_elapsed_steps"),
    OrderEnforcing: _attributes(has_reset="_has_reset"),
    RecordEpisodeStatistics: (_get_statistics, _set_statistics),
    FrameStackObservation: (_get_frame_stack, _set_frame_stack),
    SeedFirstReset: _attributes(pending_seed="pending_seed"),
    RecordEpisodeGif: (_get_gif, _set_gif),
    PassiveEnvChecker: (_get_checker, _set_checker),
    ActionRepeat: None,
    ScaleReward: None,
}


def _layers(env):
    """The wrappers from the outside in, then the unwrapped env."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers[:-1], layers[-1]


def _is_plain(value):
    """Data a checkpoint can hold as it is (exact types: a namedtuple or an IntEnum is not plain)."""
    kind = type(value)
    if kind in _SCALAR_TYPES or isinstance(value, np.generic):
        return True
    if kind is np.ndarray:
        return not value.dtype.hasobject
    if kind in (list, tuple):
        return all(_is_plain(item) for item in value)
    if kind is dict:
        return all(type(key) in (str, int) and _is_plain(item) for key, item in value.items())
    return False


def _single_state(env):
    wrappers, base = _layers(env)
    reasons = [f"wrapper {type(w).__name__} is not known to this module" for w in wrappers if type(w) not in _WRAPPERS]
    attributes = {}
    for name, value in vars(base).items():
        if _is_plain(value):
            attributes[name] = copy.deepcopy(value)
        elif not isinstance(value, _CONFIGURATION_TYPES):
            reasons.append(f"{type(base).__name__}.{name} ({type(value).__name__}) is not plain data")
    return {"kind": "Env", "exact": not reasons, "reasons": reasons,
            "classes": [type(layer).__name__ for layer in (*wrappers, base)],
            "wrappers": [_WRAPPERS[type(w)][0](w) if _WRAPPERS.get(type(w)) else {} for w in wrappers],
            "attributes": attributes, "rng": _rng_state(base._np_random), "spaces": _spaces_state(env)}


def _set_single_state(env, state):
    wrappers, base = _layers(env)
    classes = [type(layer).__name__ for layer in (*wrappers, base)]
    if classes != state["classes"]:
        raise ValueError(f"env state was saved from {' < '.join(state['classes'])}, the env is {' < '.join(classes)}")
    for wrapper, wrapper_state in zip(wrappers, state["wrappers"]):
        if _WRAPPERS[type(wrapper)]:
            _WRAPPERS[type(wrapper)][1](wrapper, wrapper_state)
    for name, value in state["attributes"].items():
        # a live object (e.g. a render window) where a None was saved stays as it is
        if _is_plain(getattr(base, name, None)):
            setattr(base, name, copy.deepcopy(value))
    base._np_random = _generator(state["rng"])
    _set_spaces_state(env, state["spaces"])
