"""envs.wrappers, envs.rollout.VectorStepper (clean transitions under both autoreset modes) and
envs.state (bitwise resume of env state through a real checkpoint file)."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import NormalizeReward

import core
from core.backend import array_module
from envs import VectorStepper, get_env_state, make_env, make_vector_env, set_env_state
from envs.wrappers import ActionRepeat, RecordEpisodeGif, ScaleReward, SeedFirstReset, capped_cubic_schedule

# ---- wrappers -------------------------------------------------------------------------------------


def test_seed_first_reset_seeds_only_an_unseeded_first_reset():
    expected = [gym.make("CartPole-v1").reset(seed=5)[0]]
    plain = gym.make("CartPole-v1")
    plain.reset(seed=5)
    expected.append(plain.reset()[0])
    env = SeedFirstReset(gym.make("CartPole-v1"), seed=5)
    np.testing.assert_array_equal(env.reset()[0], expected[0])
    np.testing.assert_array_equal(env.reset()[0], expected[1])  # continues the stream, no reseeding
    np.testing.assert_array_equal(SeedFirstReset(gym.make("CartPole-v1"), seed=5).reset(seed=9)[0],
                                  gym.make("CartPole-v1").reset(seed=9)[0])


def test_capped_cubic_schedule():
    assert [k for k in range(1500) if capped_cubic_schedule(k)] == [k ** 3 for k in range(10)] + [1000]
    assert capped_cubic_schedule(7000) and not capped_cubic_schedule(7001)


@pytest.mark.parametrize("make, match", [
    (lambda env: ActionRepeat(env, 0), "frame_skip \\(action repeat\\) must be a positive int, got 0"),
    (lambda env: ScaleReward(env, -1.0), "reward_scale must be a finite number > 0, got -1.0"),
    (lambda env: RecordEpisodeGif(env, "videos"), "video recording needs render_mode='rgb_array', the env has None"),
])
def test_bad_wrapper_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(gym.make("CartPole-v1"))


# ---- VectorStepper --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_stepper_transitions_are_exactly_the_true_ones(mode):
    """Replays each sub-env as a single env: every valid transition must be a real step of it, and the
    only invalid ones are NEXT_STEP's reset steps."""
    num_envs, cap = 4, 20
    envs = make_vector_env("CartPole-v1", num_envs, seed=0, max_episode_steps=cap, reward_scale=0.5,
                           autoreset_mode=mode)
    stepper = VectorStepper(envs)
    stepper.reset()
    references = [make_env("CartPole-v1", seed=i, max_episode_steps=cap, reward_scale=0.5) for i in range(num_envs)]
    expected_obs = [ref.reset()[0] for ref in references]
    pending_reset = [False] * num_envs
    expected_episodes, counts = [], {"terminated": 0, "truncated": 0, "invalid": 0}
    rng = np.random.default_rng(0)
    for _ in range(300):
        actions = rng.integers(0, 2, num_envs)
        t = stepper.step(actions)
        for i, ref in enumerate(references):
            if pending_reset[i]:  # NEXT_STEP: this step only resets env i
                assert not t.valid[i] and t.reward[i] == 0 and not t.terminated[i] and not t.truncated[i]
                expected_obs[i], pending_reset[i] = ref.reset()[0], False
                counts["invalid"] += 1
                continue
            assert t.valid[i]
            np.testing.assert_array_equal(t.obs[i], expected_obs[i])
            obs, reward, terminated, truncated, info = ref.step(actions[i])
            np.testing.assert_array_equal(t.next_obs[i], obs)  # at a truncation: the true final observation
            assert (t.reward[i], t.terminated[i], t.truncated[i]) == (reward, terminated, truncated)
            expected_obs[i] = obs
            if terminated or truncated:
                counts["terminated" if terminated else "truncated"] += 1
                expected_episodes.append((info["episode"]["r"], info["episode"]["l"]))
                if mode == "same_step":
                    expected_obs[i] = ref.reset()[0]
                else:
                    pending_reset[i] = True
    assert counts["terminated"] > 10 and counts["truncated"] > 10
    assert counts["invalid"] > 20 if mode == "next_step" else counts["invalid"] == 0
    episodes = stepper.pop_finished_episodes()
    assert [(e.episodic_return, e.length) for e in episodes] == expected_episodes
    assert all(e.episodic_return == e.length for e in episodes)  # raw returns, not the scaled rewards
    assert stepper.pop_finished_episodes() == []


def initial_states(envs):
    """float64 physics states right after reset, one row per env."""
    if isinstance(envs, SyncVectorEnv):
        return np.stack([sub.unwrapped.state for sub in envs.envs])
    return envs.get_state()


@pytest.mark.parametrize("vectorization", ["sync", "native"])
@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_truncation_is_valid_and_bootstraps_from_the_true_final_obs(vectorization, mode):
    envs = make_vector_env("CartPole-v1", 3, seed=2, vectorization=vectorization, autoreset_mode=mode,
                           max_episode_steps=10)
    stepper = VectorStepper(envs)
    stepper.reset()
    starts = initial_states(envs)
    actions = [np.full(3, k % 2) for k in range(10)]  # balancing: only the time limit ends the episodes
    for k, action in enumerate(actions):
        t = stepper.step(action)
        assert t.valid.all() and not t.terminated.any()
        assert t.truncated.all() == (k == 9) and t.truncated.any() == (k == 9)
    # replay the same pushes in gymnasium's CartPole from the same start states
    for i in range(3):
        reference = gym.make("CartPole-v1").unwrapped
        reference.reset()
        reference.state = starts[i].copy()
        for action in actions:
            final_obs = reference.step(int(action[i]))[0]
        np.testing.assert_array_equal(t.next_obs[i], final_obs)
    # SAME_STEP already holds the new episodes' first obs; NEXT_STEP gets it on the coming step
    assert np.array_equal(stepper.obs, t.next_obs) == (mode == "next_step")
    after = stepper.step(np.zeros(3, dtype=np.int64))
    assert after.valid.all() == (mode == "same_step") and after.valid.any() == (mode == "same_step")
    first_obs = after.next_obs if mode == "next_step" else after.obs  # of the new episodes
    assert not np.isin(first_obs, t.next_obs).any()
    assert [(e.episodic_return, e.length) for e in stepper.pop_finished_episodes()] == [(10.0, 10)] * 3


def test_stepper_rejects_disabled_autoreset_and_step_before_reset():
    envs = SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2, autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="VectorStepper needs autoreset_mode NEXT_STEP or SAME_STEP"):
        VectorStepper(envs)
    with pytest.raises(RuntimeError, match=r"call VectorStepper.reset\(\) before step\(\)"):
        VectorStepper(make_vector_env("CartPole-v1", 2, seed=0)).step(np.zeros(2, dtype=np.int64))


@pytest.mark.gpu
def test_stepper_on_a_cupy_native_env(gpu_device):
    xp = array_module(gpu_device)
    envs = make_vector_env("CartPole-v1", 64, seed=0, vectorization="native", device=gpu_device, max_episode_steps=20)
    stepper = VectorStepper(envs)
    stepper.reset()
    rng = np.random.default_rng(0)
    for _ in range(60):
        t = stepper.step(xp.asarray(rng.integers(0, 2, 64)))
    assert isinstance(t.valid, xp.ndarray) and isinstance(t.next_obs, xp.ndarray)
    episodes = stepper.pop_finished_episodes()
    assert len(episodes) >= 64 and all(e.episodic_return == e.length <= 20 for e in episodes)
    state = stepper.state_dict()
    assert not state["env"]["exact"] and stepper.load_state_dict(state) is False


# ---- env state ------------------------------------------------------------------------------------


def roll(stepper, rng, steps):
    """Step with random actions; returns every array the stepper produced, the finished episodes and a
    few samples of the action space (its generator is part of the state too)."""
    arrays = []
    for _ in range(steps):
        t = stepper.step(rng.integers(0, 2, stepper.envs.num_envs))
        arrays.extend(np.asarray(field) for field in t)
    samples = [stepper.envs.action_space.sample() for _ in range(3)]
    return arrays, stepper.pop_finished_episodes(), samples


def assert_same_rollout(a, b):
    assert len(a[0]) == len(b[0]) and all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    assert a[1] == b[1] and len(a[1]) > 0
    assert all(np.array_equal(x, y) for x, y in zip(a[2], b[2]))


@pytest.mark.parametrize("vectorization", ["sync", "native"])
@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_vector_env_state_round_trip_is_bitwise(vectorization, mode, tmp_path):
    def build():
        return make_vector_env("CartPole-v1", 4, seed=0, vectorization=vectorization, autoreset_mode=mode,
                               max_episode_steps=25)

    stepper = VectorStepper(build())
    stepper.reset()
    rng = np.random.default_rng(0)
    roll(stepper, rng, 47)
    stepper.step(np.ones(4, dtype=np.int64))  # leave some episodes unlogged at the checkpoint
    core.save({"stepper": stepper.state_dict(), "rng": rng.bit_generator.state}, tmp_path / "env.ckpt")
    expected = roll(stepper, rng, 50)
    assert any(not np.all(valid) for valid in expected[0][5::6]) == (mode == "next_step")

    checkpoint = core.load(tmp_path / "env.ckpt")
    for target in (stepper, VectorStepper(build())):  # the same envs, and fresh ones as in a resumed process
        assert checkpoint["stepper"]["env"]["exact"]
        assert target.load_state_dict(checkpoint["stepper"])
        rng = np.random.default_rng()
        rng.bit_generator.state = checkpoint["rng"]
        assert_same_rollout(roll(target, rng, 50), expected)


def test_single_env_state_round_trip_through_every_wrapper(tmp_path):
    def build():
        return make_env("CartPole-v1", seed=3, max_episode_steps=30, reward_scale=0.1, frame_skip=2, frame_stack=3)

    def run(env, steps):
        out = []
        for k in range(steps):
            obs, reward, terminated, truncated, info = env.step(k % 3 % 2)
            out.append((obs, reward, terminated, truncated, info.get("episode", {}).get("l")))
            if terminated or truncated:
                out.append(env.reset())
        return out

    env = build()
    env.reset()
    run(env, 23)
    core.save(get_env_state(env), tmp_path / "env.ckpt")
    expected = run(env, 50)
    for target in (env, build()):
        assert set_env_state(target, core.load(tmp_path / "env.ckpt"))
        got = run(target, 50)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            for x, y in zip(a, b):
                assert x == y if isinstance(x, dict) else np.array_equal(x, y)


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "Taxi-v4", "Blackjack-v1", "MountainCar-v0", "Pendulum-v1",
                                    "lab/GridWorld4x4-v0"])
def test_other_envs_round_trip_exactly(env_id, tmp_path):
    """Their episode state is in tuples (MountainCar), lists (Blackjack's hands), ints, arrays."""
    def run(env, steps):
        out = []
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            out.append((np.asarray(obs).tolist(), reward, terminated, truncated))
            if terminated or truncated:
                out.append(np.asarray(env.reset()[0]).tolist())
        return out

    env = make_env(env_id, seed=1, max_episode_steps=15)
    env.reset()
    run(env, 20)
    core.save(get_env_state(env), tmp_path / "env.ckpt")
    expected = run(env, 40)
    fresh = make_env(env_id, seed=1, max_episode_steps=15)
    assert set_env_state(fresh, core.load(tmp_path / "env.ckpt"))
    assert run(fresh, 40) == expected


def test_atari_state_is_marked_inexact():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    state = get_env_state(make_env("ALE/Pong-v5", seed=0))
    assert not state["exact"] and "AtariEnv.ale (ALEInterface) is not plain data" in state["reasons"]


def test_uncapturable_env_says_so_and_stepper_restarts_episodes():
    envs = make_vector_env("CartPole-v1", 2, seed=0, vectorization="async")
    try:
        stepper = VectorStepper(envs)
        first_obs = stepper.reset()
        stepper.step(np.zeros(2, dtype=np.int64))
        state = stepper.state_dict()
        assert state["env"] == {"kind": "AsyncVectorEnv", "exact": False, "reasons": [
            "AsyncVectorEnv cannot be captured (its envs may live in other processes); only SyncVectorEnv "
            "and the native vector envs can"]}
        assert set_env_state(envs, state["env"]) is False
        assert stepper.load_state_dict(state) is False
        assert not np.array_equal(stepper.obs, first_obs)  # reset: new episodes, not a rerun of the first
    finally:
        envs.close()


def test_unknown_wrapper_makes_the_state_inexact():
    state = get_env_state(NormalizeReward(make_env("CartPole-v1", seed=0)))
    assert not state["exact"] and state["reasons"] == ["wrapper NormalizeReward is not known to this module"]


def test_mismatched_state_is_refused():
    native_state = get_env_state(make_vector_env("CartPole-v1", 2, seed=0, vectorization="native"))
    with pytest.raises(ValueError, match="saved from a 'NativeCartPoleVectorEnv', cannot restore it into a 'SyncVec"):
        set_env_state(make_vector_env("CartPole-v1", 2, seed=0), native_state)
    with pytest.raises(ValueError, match="env state holds 2 envs, the env has 3"):
        set_env_state(make_vector_env("CartPole-v1", 3, seed=0, vectorization="native"), native_state)
    single_state = get_env_state(make_env("CartPole-v1", seed=0))
    with pytest.raises(ValueError, match="env state was saved from SeedFirstReset < RecordEpisodeStatistics < "
                                         "TimeLimit < .* CartPoleEnv, the env is SeedFirstReset < ScaleReward"):
        set_env_state(make_env("CartPole-v1", seed=0, reward_scale=2.0), single_state)
