"""The books' toy environments: registration, gymnasium's env checker, and their exact models."""
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.toy import DOWN, LEFT, RIGHT, UP


@pytest.mark.parametrize("env_id", sorted(envs.TOY_ENVS))
def test_registered_and_passes_env_checker(env_id):
    assert env_id in gym.registry
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)


def test_episode_caps():
    caps = {env_id: gym.spec(env_id).max_episode_steps for env_id in envs.TOY_ENVS}
    assert caps == {"lab/Bandit-v0": None, "lab/GridWorld4x4-v0": 100, "lab/ThreeStateMDP-v0": None, "lab/Maze3x4-v0": 100}


# ---- bandit (MTF ch. 8) -------------------------------------------------------------------------

def pull_many(env, arm, pulls=20_000):
    return np.array([env.step(arm)[1] for _ in range(pulls)])


def test_bandit_pays_gaussian_around_each_arm_mean():
    env = gym.make("lab/Bandit-v0")
    assert env.reset(seed=0) == (0, {})
    assert env.action_space == gym.spaces.Discrete(3) and env.unwrapped.means.tolist() == [1.0, 2.0, 3.0]
    for arm, mean in enumerate((1.0, 2.0, 3.0)):
        rewards = pull_many(env, arm)
        assert abs(rewards.mean() - mean) < 0.03 and abs(rewards.std() - 1.0) < 0.03
    obs, _, terminated, truncated, _ = env.step(0)
    assert obs == 0 and not terminated and not truncated


def test_bandit_printed_reward_has_zero_mean():
    """RL-01: the printed N(0,1)·m pays mean 0 with standard deviation m."""
    env = gym.make("lab/Bandit-v0", fix_reward=False)
    env.reset(seed=0)
    rewards = pull_many(env, 2)
    assert abs(rewards.mean()) < 0.06 and abs(rewards.std() - 3.0) < 0.06


def test_bandit_is_reproducible_and_checks_means():
    first, second = gym.make("lab/Bandit-v0"), gym.make("lab/Bandit-v0")
    first.reset(seed=5)
    second.reset(seed=5)
    assert [first.step(1)[1] for _ in range(5)] == [second.step(1)[1] for _ in range(5)]
    assert gym.make("lab/Bandit-v0", means=[0.5, 1.5]).action_space.n == 2
    with pytest.raises(ValueError, match="means must be a non-empty 1-D"):
        gym.make("lab/Bandit-v0", means=[])


# ---- 4x4 gridworld (MTF ch. 8 appendix) ---------------------------------------------------------

def test_gridworld_model():
    env = gym.make("lab/GridWorld4x4-v0").unwrapped
    assert (env.nS, env.nA, env.discount) == (16, 4, 1.0)
    for terminal in (0, 15):
        assert env.P[terminal] == [[(1.0, terminal, 0.0, True)]] * 4
    assert env.P[1][LEFT] == [(1.0, 0, -1.0, True)]
    assert env.P[1][UP] == [(1.0, 1, -1.0, False)]  # off the grid: stays
    assert env.P[3][UP] == env.P[3][RIGHT] == [(1.0, 3, -1.0, False)]
    assert env.P[5] == [[(1.0, 1, -1.0, False)], [(1.0, 6, -1.0, False)], [(1.0, 9, -1.0, False)], [(1.0, 4, -1.0, False)]]
    assert env.P[14][RIGHT] == [(1.0, 15, -1.0, True)] and env.P[11][DOWN] == [(1.0, 15, -1.0, True)]
    transitions = [t for s in range(16) for a in range(4) for t in env.P[s][a]]
    assert len(transitions) == 64 and all(t[0] == 1.0 for t in transitions)


def test_gridworld_episodes_follow_the_model():
    env = gym.make("lab/GridWorld4x4-v0")
    starts = {env.reset(seed=seed)[0] for seed in range(200)}
    assert starts == set(range(1, 15))  # uniform over the non-terminal states
    env.reset(seed=0)
    env.unwrapped.state = 6
    steps = [env.step(a)[:3] for a in (UP, LEFT, LEFT, UP)]
    assert steps[:3] == [(2, -1.0, False), (1, -1.0, False), (0, -1.0, True)]
    assert steps[3] == (0, 0.0, True)  # the terminal self-loop pays 0


def test_gridworld_time_limit():
    env = gym.make("lab/GridWorld4x4-v0")
    env.reset(seed=0)
    env.unwrapped.state = 3
    outcomes = [env.step(UP) for _ in range(100)]  # bumps into the top wall forever
    assert [o[3] for o in outcomes] == [False] * 99 + [True]


# ---- Géron's 3-state MDP (HOML ch. 18) ----------------------------------------------------------

def test_three_state_mdp_model_matches_the_book_table():
    env = gym.make("lab/ThreeStateMDP-v0").unwrapped
    assert (env.nS, env.nA, env.discount) == (3, 3, 0.9)
    assert env.P == [
        [[(0.7, 0, 10.0, False), (0.3, 1, 0.0, False)], [(1.0, 0, 0.0, False)], [(0.8, 0, 0.0, False), (0.2, 1, 0.0, False)]],
        [[(1.0, 1, 0.0, False)], [], [(1.0, 2, -50.0, False)]],
        [[], [(0.8, 0, 40.0, False), (0.1, 1, 0.0, False), (0.1, 2, 0.0, False)], []],
    ]
    assert env.action_masks.tolist() == [[1, 1, 1], [1, 0, 1], [0, 1, 0]]


def empirical_outcomes(env, state, action, samples=20_000):
    counts = {}
    for _ in range(samples):
        env.unwrapped.state = state
        next_state, reward, terminated, truncated, info = env.step(action)
        assert not terminated and not truncated
        counts[(next_state, reward)] = counts.get((next_state, reward), 0) + 1
    return {key: count / samples for key, count in counts.items()}


def test_three_state_mdp_samples_its_transitions():
    env = gym.make("lab/ThreeStateMDP-v0")
    env.reset(seed=0)
    for (state, action), expected in {(0, 0): {(0, 10.0): 0.7, (1, 0.0): 0.3},
                                      (2, 1): {(0, 40.0): 0.8, (1, 0.0): 0.1, (2, 0.0): 0.1},
                                      (1, 2): {(2, -50.0): 1.0}}.items():
        frequencies = empirical_outcomes(env, state, action)
        assert frequencies.keys() == expected.keys()
        for key, prob in expected.items():
            assert abs(frequencies[key] - prob) < 0.015


def test_three_state_mdp_masks_and_rejects_unavailable_actions():
    env = gym.make("lab/ThreeStateMDP-v0")
    obs, info = env.reset(seed=0)
    assert obs == 0 and info["action_mask"].tolist() == [1, 1, 1] and info["action_mask"].dtype == np.int8
    env.unwrapped.state = 2
    with pytest.raises(ValueError, match=r"action 0 is not available in state 2; allowed: \[1\]"):
        env.step(0)
    env.unwrapped.state = 1
    assert env.step(2)[4]["action_mask"].tolist() == [0, 1, 0]  # now in s2


# ---- BDL's 3x4 maze (BDL ch. 14) ----------------------------------------------------------------

def test_maze_layout_and_model():
    env = gym.make("lab/Maze3x4-v0").unwrapped
    assert (env.nS, env.nA, env.discount) == (11, 4, 0.9)
    s = env.state_of
    assert env.P[s(2, 1)] == [[(1.0, s(2, 1), -1.0, False)],  # up: the wall at (2, 2)
                              [(1.0, s(3, 1), -1.0, False)],
                              [(1.0, s(2, 1), -1.0, False)],  # down: the bottom edge
                              [(1.0, s(1, 1), -1.0, False)]]
    assert env.P[s(3, 3)][RIGHT] == [(1.0, s(4, 3), -1.0, False)]
    assert env.P[s(4, 1)][UP] == [(1.0, s(4, 2), -1.0, False)]
    assert env.P[s(4, 3)] == [[(1.0, s(4, 3), 10.0, True)]] * 4  # a terminal pays its value on exit
    assert env.P[s(4, 2)] == [[(1.0, s(4, 2), -10.0, True)]] * 4
    with pytest.raises(ValueError, match=r"\(2, 2\) is not a free cell"):
        s(2, 2)
    grid = env.as_grid(np.arange(11))
    assert np.isnan(grid[1, 1]) and grid[0].tolist() == [0, 1, 2, 3] and grid[2].tolist() == [7, 8, 9, 10]
    assert env.cells[7] == (1, 1)


def test_maze_episode_along_the_shortest_path():
    env = gym.make("lab/Maze3x4-v0")
    state, _ = env.reset(seed=0)
    assert state == env.unwrapped.state_of(1, 1)
    rewards = []
    for action in (RIGHT, RIGHT, UP, UP, RIGHT, UP):
        state, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
    assert rewards == [-1.0] * 5 + [10.0] and terminated and not truncated
