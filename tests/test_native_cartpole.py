"""Native vectorized CartPole against gymnasium's CartPole, step by step and bit for bit (checks of what the
native envs share, envs/native.py, run on the native Acrobot too)."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from core.backend import array_module, cupy_available, to_numpy
from envs import NativeAcrobotVectorEnv, NativeCartPoleVectorEnv

CAPS = {"v0": 200, "v1": 500}
pytestmark = pytest.mark.filterwarnings("ignore:.*CartPole-v0 is out of date")


def balancing_actions(state, rng, noise=0.1):
    """A linear controller that keeps the pole up for hundreds of steps, with some random actions."""
    x, x_dot, theta, theta_dot = state.T
    actions = (theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0).astype(np.int64)
    flip = rng.random(len(actions)) < noise
    actions[flip] = rng.integers(0, 2, flip.sum())
    return actions


@pytest.mark.parametrize("version", ["v1", "v0"])
@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_matches_gymnasium_cartpole_step_by_step(version, mode):
    """Random episodes on 24 envs (half balanced so they hit the time limit, half random) against 24
    gymnasium CartPoles: states, observations, rewards, terminations and truncations are identical."""
    num_envs, steps = 24, 3 * CAPS[version] + 50
    rng = np.random.default_rng(7)
    native = NativeCartPoleVectorEnv(num_envs, version=version, autoreset_mode=mode)
    native.reset(seed=1)
    refs = [gym.make(f"CartPole-{version}") for _ in range(num_envs)]
    for i, ref in enumerate(refs):
        ref.reset(seed=100 + i)
    native.set_state(np.stack([ref.unwrapped.state for ref in refs]))
    balanced = np.arange(num_envs) % 2 == 0
    restarting = np.zeros(num_envs, dtype=bool)  # next-step mode: envs whose next step is the autoreset
    totals = {"terminated": 0, "truncated": 0}

    for _ in range(steps):
        state = native.get_state()
        actions = np.where(balanced, balancing_actions(state, rng), rng.integers(0, 2, num_envs))
        obs, rewards, terminated, truncated, info = native.step(actions)
        after = native.get_state()
        ended_obs = info["final_obs"] if mode == "same_step" else obs
        for i, ref in enumerate(refs):
            if restarting[i]:
                assert rewards[i] == 0.0 and not terminated[i] and not truncated[i]
            else:
                ref_obs, ref_reward, ref_terminated, ref_truncated, _ = ref.step(int(actions[i]))
                assert np.array_equal(ended_obs[i], ref_obs)
                assert (rewards[i], terminated[i], truncated[i]) == (ref_reward, ref_terminated, ref_truncated)
                if mode == "next_step" or not (terminated[i] or truncated[i]):
                    assert np.array_equal(after[i], ref.unwrapped.state)
            if restarting[i] or (mode == "same_step" and (terminated[i] or truncated[i])):
                # the native env has started a new episode: its initial state follows gymnasium's distribution
                assert np.all(np.abs(after[i]) <= 0.05) and native.elapsed_steps[i] == 0
                assert np.array_equal(obs[i], after[i].astype(np.float32))
                ref.reset()
                ref.unwrapped.state = after[i].copy()
        totals["terminated"] += int(terminated.sum())
        totals["truncated"] += int(truncated.sum())
        restarting = (terminated | truncated) if mode == "next_step" else restarting
    assert totals["terminated"] > 20 and totals["truncated"] >= 6  # both kinds of episode end were compared


@pytest.mark.parametrize("version", ["v1", "v0"])
def test_next_step_mode_equals_gymnasium_vector_env_including_resets(version):
    """Same seed: even the autoreset random draws match gymnasium's own CartPoleVectorEnv."""
    num_envs = 16
    ref = gym.make_vec(f"CartPole-{version}", num_envs=num_envs, vectorization_mode="vector_entry_point")
    native = NativeCartPoleVectorEnv(num_envs, version=version)
    assert np.array_equal(ref.reset(seed=3)[0], native.reset(seed=3)[0])
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(2 * CAPS[version]):
        actions = balancing_actions(native.get_state(), rng, noise=0.3)
        expected, got = ref.step(actions), native.step(actions)
        for a, b in zip(expected[:4], got[:4]):
            assert np.array_equal(a, b)
        assert np.array_equal(ref.unwrapped.state.T, native.get_state())
        ends += int((got[2] | got[3]).sum())
    assert ends > 10


def test_float32_steps_like_float64_to_float32_rounding():
    """From the same states, a float32 step lands within float32 rounding of the float64 (gymnasium)
    one, with the same rewards, terminations and truncations (the dynamics amplify rounding over many
    steps, so each step starts from the float64 state)."""
    exact = NativeCartPoleVectorEnv(64, version="v0", autoreset_mode="same_step")
    fast = NativeCartPoleVectorEnv(64, version="v0", autoreset_mode="same_step", dtype="float32")
    exact.reset(seed=5)
    fast.reset(seed=5)
    assert fast.get_state().dtype == np.float32 and np.allclose(exact.get_state(), fast.get_state(), atol=1e-7)
    rng, ends = np.random.default_rng(1), 0
    for _ in range(250):
        fast.set_state(exact.get_state(), exact.elapsed_steps)
        actions = balancing_actions(exact.get_state(), rng, noise=0.3)
        expected, got = exact.step(actions), fast.step(actions)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(expected[1:4], got[1:4]):
            assert np.array_equal(a, b)
        ends += int((got[2] | got[3]).sum())
    assert ends > 20  # terminations and the 200-step time limit were both compared
    assert "dtype='float32'" in repr(fast)


def test_reset_with_seed_matches_single_gymnasium_env():
    native = NativeCartPoleVectorEnv(1)
    for seed in (0, 1, 123):
        obs, info = native.reset(seed=seed)
        ref_obs, _ = gym.make("CartPole-v1").reset(seed=seed)
        assert np.array_equal(obs[0], ref_obs) and info == {}
        assert obs.dtype == np.float32 and obs.shape == (1, 4)


def test_reset_options_set_initial_state_bounds():
    native = NativeCartPoleVectorEnv(1000)
    native.reset(seed=0, options={"low": -0.2, "high": 0.2})
    state = native.get_state()
    assert state.min() >= -0.2 and state.max() <= 0.2 and np.abs(state).max() > 0.15
    # the bounds stay in force for autoresets, as in gymnasium
    native.set_state(np.full((1000, 4), 0.3))
    native.step(np.zeros(1000, dtype=np.int64))
    native.step(np.zeros(1000, dtype=np.int64))
    assert np.abs(native.get_state()).max() <= 0.2


def test_spaces_match_gymnasium_and_book_spec():
    """FX-RL-9: action int in [0, 1]; observation (4,), bounds ±4.8 and ±0.41887903, velocities unbounded."""
    native = NativeCartPoleVectorEnv(5)
    ref = gym.make("CartPole-v1")
    assert native.single_observation_space == ref.observation_space
    assert native.single_action_space == ref.action_space == gym.spaces.Discrete(2)
    high = native.single_observation_space.high
    assert high[0] == np.float32(4.8) and np.isclose(high[2], 0.41887903) and np.isinf(high[[1, 3]]).all()
    assert native.observation_space.shape == (5, 4) and native.action_space.shape == (5,)
    obs, _ = native.reset(seed=0)
    assert native.observation_space.contains(obs)
    assert native.action_space.contains(native.action_space.sample())


@pytest.mark.parametrize("version, cap, threshold", [("v0", 200, 195.0), ("v1", 500, 475.0)])
def test_version_caps_and_thresholds(version, cap, threshold):
    """FX-RL-9: v0 ends at 200 steps (threshold 195), v1 at 500 (475); reward 1 per step."""
    native = NativeCartPoleVectorEnv(3, version=version)
    assert (native.max_episode_steps, native.reward_threshold) == (cap, threshold)
    assert (native.max_episode_steps, native.reward_threshold) == (
        gym.spec(f"CartPole-{version}").max_episode_steps, gym.spec(f"CartPole-{version}").reward_threshold)
    native.reset(seed=0)
    native.set_state(np.zeros((3, 4)), elapsed_steps=cap - 2)
    actions = np.array([0, 1, 0])
    _, rewards, terminated, truncated, _ = native.step(actions)
    assert not truncated.any() and rewards.tolist() == [1.0, 1.0, 1.0]
    _, rewards, terminated, truncated, _ = native.step(actions)
    assert truncated.all() and not terminated.any() and rewards.tolist() == [1.0, 1.0, 1.0]
    assert NativeCartPoleVectorEnv(1, version=version, max_episode_steps=7).max_episode_steps == 7


def test_next_step_autoreset_returns_reset_obs_with_zero_reward():
    native = NativeCartPoleVectorEnv(2)
    native.reset(seed=0)
    native.set_state([[2.39, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # env 0 leaves the track next step
    _, rewards, terminated, truncated, info = native.step(np.array([1, 1]))
    assert terminated.tolist() == [True, False] and rewards.tolist() == [1.0, 1.0] and info == {}
    obs, rewards, terminated, truncated, _ = native.step(np.array([1, 1]))
    assert rewards.tolist() == [0.0, 1.0] and not terminated.any() and not truncated.any()
    assert np.abs(obs[0]).max() <= 0.05 and native.elapsed_steps.tolist() == [0, 2]


def test_same_step_autoreset_puts_final_obs_in_info():
    native = NativeCartPoleVectorEnv(3, autoreset_mode="same_step")
    reference = NativeCartPoleVectorEnv(3)  # next-step mode shows the observation that ends the episode
    start = [[2.39, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.01, 0.0, 0.0, 0.0]]
    for env in (native, reference):
        env.reset(seed=0)
        env.set_state(start, elapsed_steps=[0, 499, 0])  # env 0 terminates, env 1 is truncated
    actions = np.array([1, 0, 1])
    obs, rewards, terminated, truncated, info = native.step(actions)
    ref_obs, _, ref_terminated, ref_truncated, _ = reference.step(actions)
    assert terminated.tolist() == [True, False, False] and truncated.tolist() == [False, True, False]
    assert np.array_equal(terminated, ref_terminated) and np.array_equal(truncated, ref_truncated)
    assert rewards.tolist() == [1.0, 1.0, 1.0]
    assert np.array_equal(info["final_obs"], ref_obs) and info["_final_obs"].tolist() == [True, True, False]
    assert np.abs(obs[:2]).max() <= 0.05 and np.array_equal(obs[2], ref_obs[2])
    assert native.elapsed_steps.tolist() == [0, 0, 1]
    _, rewards, terminated, truncated, _ = native.step(actions)
    assert rewards.tolist() == [1.0, 1.0, 1.0] and not (terminated | truncated).any()
    assert native.elapsed_steps.tolist() == [1, 1, 2]


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_works_under_gymnasium_episode_statistics_wrapper(mode):
    """The wrapper reads metadata["autoreset_mode"]; each episode's return equals its length."""
    env = RecordEpisodeStatistics(NativeCartPoleVectorEnv(8, autoreset_mode=mode))
    assert env.metadata["autoreset_mode"] is AutoresetMode(mode.title().replace("_", ""))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(300):
        *_, info = env.step(rng.integers(0, 2, 8))
        if "episode" in info:
            done = info["_episode"]
            assert np.array_equal(info["episode"]["r"][done], info["episode"]["l"][done])
            lengths += info["episode"]["l"][done].tolist()
    assert len(lengths) > 50 and 8 <= np.mean(lengths) <= 40  # random play lasts about 22 steps


def test_autoreset_mode_spellings():
    for spelling in ("same_step", "SAME_STEP", "SameStep", AutoresetMode.SAME_STEP):
        assert NativeCartPoleVectorEnv(1, autoreset_mode=spelling).autoreset_mode is AutoresetMode.SAME_STEP
    assert NativeCartPoleVectorEnv(1).metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP


def test_set_and_get_state_round_trip():
    native = NativeCartPoleVectorEnv(4)
    native.reset(seed=0)
    state = np.random.default_rng(0).uniform(-1, 1, (4, 4))
    native.set_state(state, elapsed_steps=[1, 2, 3, 4])
    assert np.array_equal(native.get_state(), state) and native.elapsed_steps.tolist() == [1, 2, 3, 4]
    native.get_state()[0, 0] = 99.0  # a copy: the env's state is untouched
    assert native.get_state()[0, 0] == state[0, 0]


@pytest.mark.parametrize("kwargs, match", [
    ({"num_envs": 0}, "num_envs must be a positive int"),
    ({"num_envs": 2, "version": "v2"}, "version must be one of"),
    ({"num_envs": 2, "autoreset_mode": "disabled"}, "autoreset_mode must be"),
    ({"num_envs": 2, "max_episode_steps": 0}, "max_episode_steps must be"),
    ({"num_envs": 2, "device": "tpu"}, "'cpu', 'cuda' or 'cuda:N'"),
    ({"num_envs": 2, "dtype": "float16"}, "dtype must be 'float64'"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NativeCartPoleVectorEnv(**kwargs)


@pytest.mark.parametrize("native_class", [NativeCartPoleVectorEnv, NativeAcrobotVectorEnv])
def test_bad_step_calls_are_rejected(native_class):
    native = native_class(3)
    with pytest.raises(RuntimeError, match="call reset"):
        native.step(np.zeros(3, dtype=np.int64))
    native.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must have shape \(3,\)"):
        native.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"state must have shape \(3, 4\)"):
        native.set_state(np.zeros((3, 3)))


def test_cuda_without_a_usable_gpu_is_an_error():
    if cupy_available():
        pytest.skip("cupy sees a GPU here")
    with pytest.raises(RuntimeError, match="cupy"):  # cupy missing, or cupy without a GPU: never a CPU fallback
        NativeCartPoleVectorEnv(2, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("native_class, long_steps", [(NativeCartPoleVectorEnv, 200), (NativeAcrobotVectorEnv, 600)])
def test_cupy_matches_numpy(gpu_device, native_class, long_steps):
    xp = array_module(gpu_device)
    cpu = native_class(256, autoreset_mode="same_step")
    gpu = native_class(256, device=gpu_device, autoreset_mode="same_step")
    cpu.reset(seed=0)
    gpu.reset(seed=0)
    gpu.set_state(cpu.get_state())
    rng = np.random.default_rng(0)
    actions_n = cpu.single_action_space.n
    for _ in range(6):  # too short for any episode to end, so no random draws are involved
        actions = rng.integers(0, actions_n, 256)
        expected, got = cpu.step(actions), gpu.step(xp.asarray(actions))
        assert not (expected[2] | expected[3]).any()
        assert isinstance(got[0], xp.ndarray)
        np.testing.assert_allclose(to_numpy(got[0]), expected[0], rtol=1e-6, atol=1e-7)
        for a, b in zip(expected[1:4], got[1:4]):
            assert np.array_equal(a, to_numpy(b))
        # the GPU's sin and cos may differ in the last bit, which the Acrobot's dynamics amplify a little
        np.testing.assert_allclose(to_numpy(gpu.get_state()), cpu.get_state(), rtol=1e-10, atol=1e-12)
    # long enough for resets (the Acrobot's time limit): they happen, and start inside the initial-state bounds
    resets = 0
    for _ in range(long_steps):
        _, _, terminated, truncated, _ = gpu.step(xp.asarray(rng.integers(0, actions_n, 256)))
        done = to_numpy(terminated | truncated)
        assert np.abs(to_numpy(gpu.get_state())[done]).max(initial=0) <= native_class.RESET_BOUND
        resets += int(done.sum())
    assert resets > 0
