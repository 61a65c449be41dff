"""envs.factory: wrappers applied by make_env, vector envs and their seeds, bad input messages."""
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from PIL import Image

import envs._backend as env_backend
from core.runtime.errors import ConfigError
from envs import NativeCartPoleVectorEnv, make_env, make_vector_env


def run_episode(env, actions, seed=None):
    """Step until the episode ends, cycling through `actions`; returns the step results."""
    env.reset(seed=seed)
    results = []
    while not results or not (results[-1][2] or results[-1][3]):
        results.append(env.step(actions[len(results) % len(actions)]))
    return results


# alternating pushes keep CartPole upright for well over 20 steps, so only the time limit ends it
BALANCE = (0, 1)


def test_time_limit_override_truncates_exactly():
    results = run_episode(make_env("CartPole-v1", seed=0, max_episode_steps=7), BALANCE)
    assert len(results) == 7
    assert results[-1][3] and not results[-1][2]
    assert results[-1][4]["episode"]["l"] == 7 and results[-1][4]["episode"]["r"] == 7.0


def test_reward_scale_scales_rewards_but_not_logged_return():
    results = run_episode(make_env("CartPole-v1", seed=0, max_episode_steps=6, reward_scale=0.25), BALANCE)
    assert [r[1] for r in results] == [0.25] * 6
    assert results[-1][4]["episode"]["r"] == 6.0  # episode statistics see the raw rewards


def test_frame_skip_repeats_the_action_and_sums_rewards():
    env = make_env("CartPole-v1", seed=3, max_episode_steps=10, frame_skip=3)
    plain = gym.make("CartPole-v1")
    plain.reset(seed=3)
    env.reset()
    results = []
    for action in (0, 1, 1, 0):
        results.append(env.step(action))
        for _ in range(3 if len(results) < 4 else 1):  # the last agent step hits the 10-step limit after 1 frame
            expected_obs = plain.step(action)[0]
        np.testing.assert_array_equal(results[-1][0], expected_obs)
    assert [r[1] for r in results] == [3.0, 3.0, 3.0, 1.0]
    assert [r[3] for r in results] == [False, False, False, True]
    assert results[-1][4]["episode"] == {"r": 10.0, "l": 4, "t": results[-1][4]["episode"]["t"]}


def test_frame_skip_stops_at_termination():
    plain_length = len(run_episode(gym.make("CartPole-v1"), (1,), seed=5))  # pushing right falls in ~10 steps
    results = run_episode(make_env("CartPole-v1", frame_skip=4), (1,), seed=5)
    assert sum(r[1] for r in results) == plain_length
    assert len(results) == -(-plain_length // 4) and results[-1][2]


def test_episode_statistics_match_the_episode():
    env = make_env("CartPole-v1", seed=1)
    for _ in range(3):
        results = run_episode(env, (1,))
        assert all("episode" not in r[4] for r in results[:-1])
        assert results[-1][4]["episode"]["r"] == len(results) and results[-1][4]["episode"]["l"] == len(results)


def test_seed_makes_plain_reset_reproducible():
    expected, _ = gym.make("CartPole-v1").reset(seed=11)
    first, second = make_env("CartPole-v1", seed=11), make_env("CartPole-v1", seed=11)
    np.testing.assert_array_equal(first.reset()[0], expected)
    np.testing.assert_array_equal(second.reset(seed=11)[0], expected)  # an explicit seed gives the same
    np.testing.assert_array_equal(first.reset()[0], second.reset()[0])  # and the stream continues alike
    assert [first.action_space.sample() for _ in range(20)] == [second.action_space.sample() for _ in range(20)]


def test_frame_stack_for_any_env():
    env = make_env("CartPole-v1", seed=0, frame_stack=3)
    obs, _ = env.reset()
    assert obs.shape == (3, 4)
    np.testing.assert_array_equal(obs, np.stack([obs[2]] * 3))  # the first stack repeats the reset frame
    next_obs = env.step(0)[0]
    np.testing.assert_array_equal(next_obs[1], obs[2])


def test_toy_env_gets_the_time_limit_it_lacked():
    assert gym.spec("lab/Bandit-v0").max_episode_steps is None
    results = run_episode(make_env("lab/Bandit-v0", seed=0, max_episode_steps=5), (2,))
    assert len(results) == 5 and results[-1][3]


class BlinkEnv(gym.Env):
    """Three steps; frame k is a 4x6 image of gray level 40 * k, so a GIF's frames can be checked."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Discrete(4)
        self.action_space = gym.spaces.Discrete(1)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.t, {}

    def step(self, action):
        self.t += 1
        return self.t, 1.0, self.t == 3, False, {}

    def render(self):
        return np.full((4, 6, 3), 40 * self.t, dtype=np.uint8)


gym.register("test/Blink-v0", entry_point=BlinkEnv)


def gif_levels(path):
    with Image.open(path) as image:
        levels = []
        for index in range(image.n_frames):
            image.seek(index)
            levels.append(int(np.asarray(image.convert("L"))[0, 0]))
    return levels


def test_video_recording_writes_gifs_of_chosen_episodes(tmp_path):
    env = make_env("test/Blink-v0", seed=0, record_video_dir=tmp_path / "videos")
    assert env.unwrapped.render_mode == "rgb_array"
    for _ in range(3):  # episodes 0 and 1 are recorded (capped cubic schedule), 2 is not
        run_episode(env, (0,))
    env.close()
    written = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert written == ["rl-video-episode-0.gif", "rl-video-episode-1.gif"]
    assert gif_levels(tmp_path / "videos" / "rl-video-episode-1.gif") == [0, 40, 80, 120]


def test_vector_env_records_video_of_env_zero_only(tmp_path):
    envs = make_vector_env("test/Blink-v0", 3, seed=0, record_video_dir=tmp_path)
    assert envs.envs[0].unwrapped.render_mode == "rgb_array" and envs.envs[1].unwrapped.render_mode is None
    envs.reset()
    for _ in range(4):
        envs.step(np.zeros(3, dtype=np.int64))
    assert [p.name for p in tmp_path.iterdir()] == ["rl-video-episode-0.gif"]


# ---- vector envs ----------------------------------------------------------------------------------

def test_sync_vector_env_seeds_env_i_with_seed_plus_i():
    envs = make_vector_env("CartPole-v1", 3, seed=7, max_episode_steps=50)
    assert isinstance(envs, SyncVectorEnv) and envs.num_envs == 3
    assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    expected = np.stack([gym.make("CartPole-v1").reset(seed=7 + i)[0] for i in range(3)])
    np.testing.assert_array_equal(envs.reset()[0], expected)
    np.testing.assert_array_equal(make_vector_env("CartPole-v1", 3, seed=7).reset(seed=7)[0], expected)
    assert all(sub.spec.max_episode_steps == 50 for sub in envs.envs)


def test_async_vector_env_matches_sync():
    async_envs = make_vector_env("CartPole-v1", 2, seed=4, vectorization="async", autoreset_mode="same_step")
    sync_envs = make_vector_env("CartPole-v1", 2, seed=4, autoreset_mode="same_step")
    try:
        assert isinstance(async_envs, AsyncVectorEnv)
        assert async_envs.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
        np.testing.assert_array_equal(async_envs.reset()[0], sync_envs.reset()[0])
        for _ in range(30):
            actions = sync_envs.action_space.sample()
            for a, b in zip(async_envs.step(actions)[:4], sync_envs.step(actions)[:4]):
                np.testing.assert_array_equal(a, b)
    finally:
        async_envs.close()


def test_native_vector_env_is_seeded_like_reset_with_seed():
    envs = make_vector_env("CartPole-v0", 5, seed=3, vectorization="native", max_episode_steps=30)
    assert isinstance(envs, NativeCartPoleVectorEnv) and envs.version == "v0" and envs.max_episode_steps == 30
    np.testing.assert_array_equal(envs.reset()[0], NativeCartPoleVectorEnv(5, "v0").reset(seed=3)[0])
    # configs may list every wrapper option as null
    make_vector_env("CartPole-v1", 2, seed=0, vectorization="native", reward_scale=None, atari="auto",
                    terminal_on_life_loss=False)
    assert make_vector_env("CartPole-v1", 2, vectorization="native", native_dtype="float32").dtype == np.float32


# ---- bad input ------------------------------------------------------------------------------------

def test_unknown_id_suggests_close_ids_in_one_line():
    with pytest.raises(ConfigError, match="unknown environment id 'CartPol-v1': did you mean CartPole-v1") as error:
        make_env("CartPol-v1")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="did you mean lab/Maze3x4-v0"):
        make_env("lab/maze3x4")
    with pytest.raises(ValueError, match=r"'NoSuchThing-v3': gymnasium.pprint_registry\(\) lists"):
        make_vector_env("NoSuchThing-v3", 2, seed=0)


@pytest.mark.parametrize("env_id", ["ALE/Breakout-v5", "MsPacmanNoFrameskip-v4"])
def test_atari_without_the_extra_says_what_to_install(env_id, monkeypatch):
    for module in ("ale_py", "cv2"):  # makes the imports fail even where the extra is installed
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=r"^'.+' is an Atari env and needs ale-py and opencv-python-headless, "
                                          r"which are not installed: pip install 'rlgen-lab\[atari\]'$"):
        make_env(env_id)
    with pytest.raises(ImportError, match=r"needs ale-py, which is not installed: pip install 'rlgen-lab\[atari\]'"):
        make_env(env_id, atari=False)  # the raw env needs no cv2
    with pytest.raises(ImportError, match=r"rlgen-lab\[atari\]"):
        make_vector_env(env_id, 2, seed=0, vectorization="async")


def test_atari_preprocessing_frame_skip_and_stack():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    env = make_env("ALE/Breakout-v5", seed=0)
    obs, info = env.reset()
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.unwrapped._frameskip == 1  # AtariPreprocessing does the skipping
    next_obs, _, _, _, next_info = env.step(0)
    assert next_info["episode_frame_number"] - info["episode_frame_number"] == 4
    np.testing.assert_array_equal(next_obs[:3], obs[1:])
    raw = make_env("ALE/Breakout-v5", seed=0, atari=False)
    assert raw.reset()[0].shape == (210, 160, 3)


def test_atari_terminal_on_life_loss():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    env = make_env("ALE/Breakout-v5", seed=0, terminal_on_life_loss=True, frame_skip=2)
    _, info = env.reset()
    while True:
        _, _, terminated, truncated, step_info = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert terminated and step_info["lives"] == info["lives"] - 1


@pytest.mark.parametrize("kwargs, match", [
    ({"max_episode_steps": 0}, "max_episode_steps must be an int >= 1 or None, got 0"),
    ({"frame_skip": 2.5}, "frame_skip must be an int >= 1 or None, got 2.5"),
    ({"frame_stack": -1}, "frame_stack must be an int >= 1"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"env_id": None}, "env id must be a non-empty string, got None"),
    ({"reward_scale": 0.0}, "reward_scale must be a finite number > 0, got 0.0"),
    ({"reward_scale": float("nan")}, "reward_scale must be a finite number > 0"),
    ({"atari": "yes"}, "atari must be True, False or 'auto', got 'yes'"),
    ({"atari": True}, r"atari=True needs an Atari id \(ALE/<Game>-v5 or <Game>NoFrameskip-v4\), got 'CartPole-v1'"),
    ({"terminal_on_life_loss": True}, "terminal_on_life_loss applies only to Atari preprocessing"),
    ({"record_video_dir": "v", "render_mode": "human"}, "record_video_dir needs render_mode='rgb_array'"),
])
def test_bad_make_env_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_env(**{"env_id": "CartPole-v1", **kwargs})


@pytest.mark.parametrize("args, kwargs, match", [
    (("CartPole-v1", 0), {}, "num_envs must be a positive int, got 0"),
    (("CartPole-v1", 2), {"vectorization": "threads"},
     "vectorization must be one of sync, async, native, got 'threads'"),
    (("CartPole-v1", 2), {"autoreset_mode": "disabled"}, "autoreset_mode must be 'next_step' or 'same_step'"),
    (("CartPole-v1", 2), {"device": "cuda"},
     r"device='cuda' needs vectorization='native' \(CartPole-v0, CartPole-v1, Acrobot-v1 only\)"),
    (("MountainCar-v0", 2), {"vectorization": "native"},
     "vectorization='native' supports only CartPole-v0, CartPole-v1, Acrobot-v1, got 'MountainCar-v0'; "
     "use 'sync' or 'async'"),
    (("CartPole-v1", 2), {"vectorization": "native", "reward_scale": 0.1, "frame_skip": 2},
     "vectorization='native' takes no wrapper options but max_episode_steps; got frame_skip, reward_scale"),
    (("CartPole-v1", 2), {"vectorization": "native", "sutton_barto_reward": True},
     "takes no wrapper options but max_episode_steps; got sutton_barto_reward"),
    (("CartPole-v1", 2), {"device": "tpu", "vectorization": "native"}, "unknown device 'tpu'"),
    (("CartPole-v1", 2), {"native_dtype": "float32"}, "native_dtype='float32' applies to vectorization='native' only"),
    (("CartPole-v1", 2), {"vectorization": "native", "native_dtype": "half"}, "dtype must be 'float64'"),
])
def test_bad_make_vector_env_arguments(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_vector_env(*args, seed=0, **kwargs)


def test_backend_delegates_to_core():
    assert env_backend.array_module("cpu") is np and env_backend.array_module() is np
    with env_backend.device_scope("cpu"):
        pass
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        env_backend.device_scope("gpu")
