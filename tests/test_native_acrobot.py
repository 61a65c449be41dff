"""Native vectorized Acrobot against gymnasium's Acrobot-v1 (in the factory's sync vector env), bit for bit."""
import gymnasium as gym
import numpy as np
import pytest

from envs import NativeAcrobotVectorEnv, get_env_state, make_vector_env, set_env_state


def swinging_actions(obs, rng, random_share=0.2):
    """Even envs pump energy (torque along the second joint's velocity), so they reach the goal within
    a few hundred steps; odd envs act at random, so they mostly hit the time limit."""
    pump = np.where(obs[:, 5] > 0, 2, 0)
    random = rng.integers(0, 3, len(obs))
    pumping = (np.arange(len(obs)) % 2 == 0) & (rng.random(len(obs)) >= random_share)
    return np.where(pumping, pump, random)


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_equals_the_sync_gymnasium_vector_env_bit_for_bit(mode):
    """Same seed, same actions: observations, rewards, terminations, truncations, final observations
    and the raw states equal gymnasium's over 2,000 steps of 16 envs, autoresets included."""
    num_envs = 16
    ref = make_vector_env("Acrobot-v1", num_envs, seed=5, vectorization="sync", autoreset_mode=mode)
    native = make_vector_env("Acrobot-v1", num_envs, seed=5, vectorization="native", autoreset_mode=mode)
    assert isinstance(native, NativeAcrobotVectorEnv)
    obs, _ = native.reset()
    assert np.array_equal(ref.reset()[0], obs)
    rng = np.random.default_rng(0)
    ends = {"terminated": 0, "truncated": 0}
    for step in range(2000):
        actions = swinging_actions(obs, rng)
        expected, got = ref.step(actions), native.step(actions)
        for a, b in zip(expected[:4], got[:4]):
            assert np.array_equal(a, b), step  # same values; rewards are float32, as the native CartPole's
        obs, _, terminated, truncated, info = got
        if mode == "same_step":
            done = info["_final_obs"]
            assert np.array_equal(done, expected[4].get("_final_obs", np.zeros(num_envs, bool)))
            if done.any():
                assert np.array_equal(np.stack(expected[4]["final_obs"][done]), info["final_obs"][done])
        if step % 50 == 0:
            assert np.array_equal(np.stack([sub.unwrapped.state for sub in ref.envs]), native.get_state())
        ends["terminated"] += int(terminated.sum())
        ends["truncated"] += int(truncated.sum())
    assert ends["terminated"] > 100 and ends["truncated"] > 20  # both kinds of ending, with their resets


def test_reset_with_seed_matches_single_gymnasium_envs():
    """Env i of reset(seed=s) starts as gymnasium's Acrobot-v1 reset with seed s + i."""
    obs, info = NativeAcrobotVectorEnv(3).reset(seed=7)
    assert obs.dtype == np.float32 and obs.shape == (3, 6) and info == {}
    for i in range(3):
        assert np.array_equal(obs[i], gym.make("Acrobot-v1").reset(seed=7 + i)[0])


def test_spaces_caps_and_threshold_match_gymnasium():
    native, spec = NativeAcrobotVectorEnv(5), gym.spec("Acrobot-v1")
    ref = gym.make("Acrobot-v1")
    assert native.single_observation_space == ref.observation_space
    assert native.single_action_space == ref.action_space == gym.spaces.Discrete(3)
    assert (native.max_episode_steps, native.reward_threshold) == (spec.max_episode_steps, spec.reward_threshold)
    assert native.observation_space.shape == (5, 6) and native.action_space.shape == (5,)


def test_float32_steps_like_float64_to_float32_rounding():
    """From the same states, a float32 step lands within float32 rounding of the float64 one, with the
    same rewards and flags (each step starts from the float64 state: the dynamics amplify rounding)."""
    exact = NativeAcrobotVectorEnv(32, autoreset_mode="same_step")
    fast = NativeAcrobotVectorEnv(32, autoreset_mode="same_step", dtype="float32")
    obs, _ = exact.reset(seed=1)
    np.testing.assert_allclose(fast.reset(seed=1)[0], obs, atol=1e-7)
    rng, ends = np.random.default_rng(1), 0
    for _ in range(300):
        fast.set_state(exact.get_state(), exact.elapsed_steps)
        actions = swinging_actions(obs, rng)
        expected, got = exact.step(actions), fast.step(actions)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)
        for a, b in zip(expected[1:4], got[1:4]):
            assert np.array_equal(a, b)
        obs = expected[0]
        ends += int(expected[2].sum())
    assert ends > 5 and fast.get_state().dtype == np.float32 and "dtype='float32'" in repr(fast)


def test_time_limit_truncates_at_500_and_the_goal_terminates_with_reward_0():
    native = NativeAcrobotVectorEnv(2)
    native.reset(seed=0)
    # env 0 hangs down, env 1 holds its tip up (-cos(pi) - cos(pi) = 2 > 1)
    native.set_state([[0.0, 0.0, 0.0, 0.0], [np.pi, 0.0, 0.0, 0.0]], elapsed_steps=[498, 0])
    _, rewards, terminated, truncated, _ = native.step(np.array([1, 1]))
    assert rewards.tolist() == [-1.0, 0.0] and terminated.tolist() == [False, True] and not truncated.any()
    _, rewards, terminated, truncated, _ = native.step(np.array([1, 1]))
    assert rewards.tolist() == [-1.0, 0.0] and truncated.tolist() == [True, False]  # env 1: the reset step
    assert not terminated.any() and native.elapsed_steps.tolist() == [500, 0]
    _, rewards, terminated, truncated, _ = native.step(np.array([1, 1]))
    assert rewards.tolist() == [0.0, -1.0] and not (terminated | truncated).any()
    assert np.abs(native.get_state()[0]).max() <= 0.1 and native.elapsed_steps.tolist() == [0, 1]


def test_checkpointed_state_continues_identically_through_resets():
    """get_env_state / set_env_state carry the per-env generators: the restored env's autoresets draw
    what the original's do."""
    original = make_vector_env("Acrobot-v1", 4, seed=2, vectorization="native", autoreset_mode="same_step")
    original.reset()
    original.set_state(original.get_state(), elapsed_steps=[490, 495, 0, 10])
    state = get_env_state(original)
    assert state["exact"]
    restored = make_vector_env("Acrobot-v1", 4, seed=9, vectorization="native", autoreset_mode="same_step")
    restored.reset()
    assert set_env_state(restored, state)
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = rng.integers(0, 3, 4)
        for a, b in zip(original.step(actions)[:4], restored.step(actions)[:4]):
            assert np.array_equal(a, b)
    assert restored.elapsed_steps.tolist() == [10, 15, 20, 30]  # both time-limited envs were reset


def test_unknown_version_is_rejected():
    with pytest.raises(ValueError, match=r"version must be one of \['v1'\], got 'v0'"):
        NativeAcrobotVectorEnv(2, version="v0")
