"""One factory for every environment the lab trains on.

    env = make_env("CartPole-v1", seed=0, max_episode_steps=200, reward_scale=0.01)
    envs = make_vector_env("CartPole-v1", num_envs=8, seed=0)                       # gymnasium SyncVectorEnv
    envs = make_vector_env("CartPole-v1", 4096, seed=0, vectorization="native")     # NativeCartPoleVectorEnv
    envs = make_vector_env("Acrobot-v1", 16, seed=0, vectorization="native")        # NativeAcrobotVectorEnv
    envs = make_vector_env("ALE/Breakout-v5", 8, seed=0, vectorization="async")     # needs rlgen-lab[atari]

Wrapper order, innermost first (each line sees what the ones above it produce):
1. gymnasium.make: the env, its TimeLimit (`max_episode_steps` overrides the registered cap and
   counts the base env's steps, i.e. frames under frame skip), OrderEnforcing, PassiveEnvChecker.
2. RecordEpisodeGif when `record_video_dir` is given: every frame of the episodes it picks.
3. Atari preprocessing (grayscale 84x84 uint8, up to 30 no-ops at reset, frame skip 4 by default,
   optional terminal_on_life_loss) for Atari ids, or ActionRepeat(frame_skip) for any other env.
4. RecordEpisodeStatistics: info["episode"] = {"r", "l", "t"} at the end of each episode, with the
   raw return (before reward scaling) and the length in agent steps. With terminal_on_life_loss
   an episode is one life (gymnasium then starts a new game at the next reset).
5. ScaleReward(reward_scale).
6. FrameStackObservation(frame_stack): default 4 for preprocessed Atari, none otherwise; the first
   stack of an episode repeats the reset observation.
7. SeedFirstReset(seed): the first `reset()` without a seed uses `seed`; the action and
   observation spaces are seeded with it too.
8. make_vector_env only, around the whole vector env: NormalizeVector (envs/normalize.py) when
   `normalize_obs` or `normalize_reward` is set: running-statistics normalisation, one set of
   statistics for the batch (the episode returns recorded in step 4 stay raw).

Seeds: sub-env i of a vector env gets seed + i, so `envs.reset()` and `envs.reset(seed=seed)` give the
same start. The native CartPole has one random stream for the batch, seeded with `seed`, as gymnasium's
CartPoleVectorEnv; the native Acrobot one per env, seeded seed + i, so it gives the sync env's numbers.

Autoreset (gymnasium 1.x): both vector kinds default to NEXT_STEP. The step that ends an episode
returns the episode's true last observation; the *next* step ignores that env's action, resets it
and returns the new first observation with reward 0 and terminated = truncated = False. That step
is not a transition and must never reach a learning update. With autoreset_mode="same_step" the
reset happens inside the ending step: the returned observation is already the new episode's, and
the true last one is in info["final_obs"]. `envs.rollout.VectorStepper` hides both behind clean
transitions with a validity mask.

Bad input (unknown id, bad option values, an Atari id without the `atari` extra) raises
core.runtime.errors.ConfigError, a ValueError that scripts/train.py reports in one line; the missing extra's
error (envs.atari.MissingExtraError) is an ImportError too.
"""

import difflib
import functools
import importlib
import inspect
import numbers

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation, RecordEpisodeStatistics

from core.backend import parse_device
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError
from envs.atari import is_atari_id, preprocess, require_ale
from envs.acrobot import NativeAcrobotVectorEnv
from envs.cartpole import NativeCartPoleVectorEnv
from envs.native import _autoreset_mode
from envs.normalize import NormalizeVector
from envs.wrappers import ActionRepeat, RecordEpisodeGif, ScaleReward, SeedFirstReset

VECTORIZATIONS = ("sync", "async", "native")
Vectorization = Choice("Vectorization", VECTORIZATIONS)  # the config schemas' type
# id -> (native vector env, version): what vectorization="native" can make
NATIVE_ENVS = {"CartPole-v0": (NativeCartPoleVectorEnv, "v0"), "CartPole-v1": (NativeCartPoleVectorEnv, "v1"),
               "Acrobot-v1": (NativeAcrobotVectorEnv, "v1")}
ATARI_FRAME_STACK = 4
ATARI_FRAME_SKIP = 4


def _config_errors(function):
    """Re-raise ValueErrors from argument checks (ours, gymnasium's wrappers', the native env's) as ConfigError."""
    @functools.wraps(function)
    def checked(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ConfigError:
            raise
        except ValueError as error:
            raise ConfigError(str(error)) from error
    return checked


@_config_errors
def make_env(env_id: str, seed: int | None = None, max_episode_steps: int | None = None,
             reward_scale: float | None = None, frame_skip: int | None = None, atari="auto",
             frame_stack: int | None = None, record_video_dir=None, render_mode: str | None = None,
             terminal_on_life_loss: bool = False, **kwargs) -> gym.Env:
    """A single gymnasium env with the lab's wrappers (see the module docstring for their order).

    atari: "auto" preprocesses Atari ids (ALE/... and ...NoFrameskip-v4) and nothing else; True
    insists on it (the id must be Atari); False gives the raw ALE env (its own frameskip applies).
    record_video_dir: write GIFs of episodes 0, 1, 8, 27, ... there (renders "rgb_array", headless).
    kwargs go to gymnasium.make (e.g. repeat_action_probability for ALE, sutton_barto_reward for CartPole).
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env id must be a non-empty string, got {env_id!r}")
    _check_optional_int("seed", seed, minimum=0)
    for name, value in (("max_episode_steps", max_episode_steps), ("frame_skip", frame_skip),
                        ("frame_stack", frame_stack)):
        _check_optional_int(name, value, minimum=1)
    if atari not in (True, False, "auto"):
        raise ValueError(f"atari must be True, False or 'auto', got {atari!r}")

    atari_id = is_atari_id(env_id)
    if atari is True and not atari_id:
        raise ValueError(f"atari=True needs an Atari id (ALE/<Game>-v5 or <Game>NoFrameskip-v4), got {env_id!r}")
    preprocess_atari = atari_id and atari is not False
    if atari_id:
        require_ale(env_id, preprocessing=preprocess_atari)
    _check_registered(env_id)
    if terminal_on_life_loss and not preprocess_atari:
        raise ValueError(f"terminal_on_life_loss applies only to Atari preprocessing, which {env_id!r} does not get")
    if record_video_dir is not None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"record_video_dir needs render_mode='rgb_array' (or None), got {render_mode!r}")
        render_mode = "rgb_array"

    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if preprocess_atari:
        kwargs["frameskip"] = 1  # AtariPreprocessing does the skipping (and max-pools the last two frames)
    env = gym.make(env_id, **kwargs)

    if record_video_dir is not None:
        env = RecordEpisodeGif(env, record_video_dir)
    if preprocess_atari:
        env = preprocess(env, int(frame_skip or ATARI_FRAME_SKIP), terminal_on_life_loss)
    elif frame_skip is not None and frame_skip > 1:
        env = ActionRepeat(env, int(frame_skip))
    env = RecordEpisodeStatistics(env)
    if reward_scale is not None:
        env = ScaleReward(env, reward_scale)
    stack = int(frame_stack or (ATARI_FRAME_STACK if preprocess_atari else 1))
    if stack > 1:
        env = FrameStackObservation(env, stack)
    if seed is not None:
        env = SeedFirstReset(env, seed)
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env


@_config_errors
def make_vector_env(env_id: str, num_envs: int, seed: int | None = None, vectorization: str = "sync",
                    device: str = "cpu", autoreset_mode="next_step", native_dtype="float64",
                    normalize_obs: bool = False, normalize_reward: bool = False, clip_obs: float = 10.0,
                    clip_reward: float = 10.0, norm_epsilon: float = 1e-8, norm_gamma: float = 0.99,
                    **wrapper_kwargs):
    """`num_envs` copies of `make_env(env_id, **wrapper_kwargs)` as a gymnasium vector env.

    vectorization: "sync" (one process; best for cheap envs), "async" (one worker process per env;
    for slow envs such as Atari), or "native" (the whole batch as arrays: CartPole-v0/v1, Acrobot-v1; on
    numpy or, with device="cuda", cupy; of the wrapper options it takes max_episode_steps).
    Sub-env i gets seed + i; only sub-env 0 records video. `device` is where the env's arrays live:
    gymnasium's envs always step on the CPU, so anything but "cpu" needs vectorization="native".
    autoreset_mode: "next_step" (gymnasium's default) or "same_step"; see the module docstring.
    native_dtype: the native env's state precision, "float64" (gymnasium's numbers) or "float32" (faster).
    normalize_obs / normalize_reward: wrap the vector env in envs.normalize.NormalizeVector with
    clip_obs, clip_reward, norm_epsilon and norm_gamma (the discount of the returns whose std scales
    the rewards); observations must then be a Box.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    _check_optional_int("seed", seed, minimum=0)
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"vectorization must be one of {', '.join(VECTORIZATIONS)}, got {vectorization!r}")
    mode = _autoreset_mode(autoreset_mode)
    envs = _make_vector(env_id, num_envs, seed, vectorization, device, mode, native_dtype, wrapper_kwargs)
    if not (normalize_obs or normalize_reward):
        return envs
    try:
        return NormalizeVector(envs, obs=normalize_obs, reward=normalize_reward, clip_obs=clip_obs,
                               clip_reward=clip_reward, epsilon=norm_epsilon, gamma=norm_gamma, env_id=env_id)
    except ConfigError:
        envs.close()  # async workers would outlive the refusal
        raise


def _make_vector(env_id, num_envs, seed, vectorization, device, mode, native_dtype, wrapper_kwargs):
    if vectorization == "native":
        return _make_native(env_id, num_envs, seed, device, mode, native_dtype, wrapper_kwargs)
    if native_dtype != "float64":
        raise ValueError(f"native_dtype={native_dtype!r} applies to vectorization='native' only; "
                         f"gymnasium's {vectorization} vector envs keep their own precision")
    if parse_device(device)[0] != "cpu":
        raise ValueError(f"device={device!r} needs vectorization='native' ({', '.join(NATIVE_ENVS)} only); "
                         f"gymnasium's {vectorization} vector envs step on the CPU")

    video_dir = wrapper_kwargs.pop("record_video_dir", None)
    env_fns = [functools.partial(make_env, env_id, seed=None if seed is None else seed + i,
                                 record_video_dir=video_dir if i == 0 else None, **wrapper_kwargs)
               for i in range(num_envs)]
    vector_class = SyncVectorEnv if vectorization == "sync" else AsyncVectorEnv
    envs = vector_class(env_fns, autoreset_mode=mode)  # both build an env in this process: bad input fails here
    if seed is not None:
        envs.action_space.seed(seed)
        envs.observation_space.seed(seed)
    return envs


def _make_native(env_id, num_envs, seed, device, mode, dtype, wrapper_kwargs):
    if env_id not in NATIVE_ENVS:
        raise ValueError(f"vectorization='native' supports only {', '.join(NATIVE_ENVS)}, got {env_id!r}; "
                         "use 'sync' or 'async' for other envs")
    # configs may list every wrapper option at its default (null, "auto", false); only options set are refused
    defaults = {name: parameter.default for name, parameter in inspect.signature(make_env).parameters.items()}
    unsupported = sorted(name for name, value in wrapper_kwargs.items()
                         if name != "max_episode_steps" and (name not in defaults or value != defaults[name]))
    if unsupported:
        raise ValueError("vectorization='native' takes no wrapper options but max_episode_steps; "
                         f"got {', '.join(unsupported)}")
    native_class, version = NATIVE_ENVS[env_id]
    envs = native_class(num_envs, version, device=device, autoreset_mode=mode,
                        max_episode_steps=wrapper_kwargs.get("max_episode_steps"), dtype=dtype)
    if seed is not None:
        envs.seed_random(seed)  # the generators reset(seed=seed) would make, so a plain reset() is already seeded
        envs.action_space.seed(seed)
        envs.single_action_space.seed(seed)
    return envs


def _check_registered(env_id: str) -> None:
    """One-line ValueError with the closest registered ids when gymnasium does not know `env_id`."""
    module, _, name = env_id.rpartition(":")
    if module:  # gymnasium's "package.module:EnvName-v0" form registers by importing the module
        importlib.import_module(module)
    if name in gym.registry:
        return
    by_lower = {registered.lower(): registered for registered in gym.registry}
    close = [by_lower[match] for match in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]
    hint = f"did you mean {', '.join(close)}?" if close else "gymnasium.pprint_registry() lists the registered ids"
    raise ValueError(f"unknown environment id {env_id!r}: {hint}")


def _check_optional_int(name, value, minimum):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} or None, got {value!r}")
