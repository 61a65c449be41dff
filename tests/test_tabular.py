"""Tabular agents against the catalogue's fixtures (fixtures.md FX-RL-3 to FX-RL-6, FX-RL-8)."""
import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the lab/ envs)
from agents import tabular

INF = np.inf


@pytest.fixture
def gridworld():
    return gym.make("lab/GridWorld4x4-v0").unwrapped


@pytest.fixture
def mdp3():
    return gym.make("lab/ThreeStateMDP-v0").unwrapped


@pytest.fixture
def maze():
    return gym.make("lab/Maze3x4-v0").unwrapped


def finite_gap(Q, expected):
    """Largest difference over the available actions, after checking both agree on which those are."""
    assert np.array_equal(np.isinf(Q), np.isinf(expected))
    finite = np.isfinite(expected)
    return np.abs(Q[finite] - expected[finite]).max()


# ---- FX-RL-3: gridworld policy evaluation (book digits; printed to 8 decimals) -----------------

def test_policy_evaluation_in_place_reproduces_the_book_digits(gridworld):
    V = tabular.policy_evaluation(gridworld.P, tabular.uniform_policy(gridworld.P), gamma=1.0, theta=1e-5)
    expected = [[0, -13.99993529, -19.99990698, -21.99989761],
                [-13.99993529, -17.9999206, -19.99991379, -19.99991477],
                [-19.99990698, -19.99991379, -17.99992725, -13.99994569],
                [-21.99989761, -19.99991477, -13.99994569, 0]]
    np.testing.assert_allclose(V.reshape(4, 4), expected, rtol=0, atol=1e-8)


def test_policy_evaluation_synchronous_sweep(gridworld):
    """RL-10: the Jacobi sweep gives symmetric values, row 0 = 0, -13.99989315, -19.99984167, -21.99982282."""
    V = tabular.policy_evaluation(gridworld.P, tabular.uniform_policy(gridworld.P), gamma=1.0, in_place=False)
    np.testing.assert_allclose(V[:4], [0, -13.99989315, -19.99984167, -21.99982282], rtol=0, atol=1e-8)
    np.testing.assert_allclose(V, V[::-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("in_place", [True, False])
def test_policy_evaluation_limit_values(gridworld, in_place):
    V = tabular.policy_evaluation(gridworld.P, tabular.uniform_policy(gridworld.P), gamma=1.0, theta=1e-10, in_place=in_place)
    limit = [[0, -14, -20, -22], [-14, -18, -20, -20], [-20, -20, -18, -14], [-22, -20, -14, 0]]
    np.testing.assert_allclose(V.reshape(4, 4), limit, rtol=0, atol=1e-7)


# ---- FX-RL-4: gridworld policy iteration ----------------------------------------------------------

@pytest.mark.parametrize("in_place", [True, False])
def test_policy_iteration_reproduces_the_book(gridworld, in_place):
    result = tabular.policy_iteration(gridworld.P, gamma=1.0, in_place=in_place)
    assert result.policy.reshape(4, 4).tolist() == [[0, 3, 3, 2], [0, 0, 0, 2], [0, 0, 1, 2], [0, 1, 1, 0]]
    np.testing.assert_allclose(result.V, [0, -1, -2, -3, -1, -2, -3, -2, -2, -3, -2, -1, -3, -2, -1, 0], atol=1e-9)
    assert result.evaluations == 3


def test_value_iteration_agrees_with_policy_iteration_on_the_gridworld(gridworld):
    V, policy = tabular.value_iteration(gridworld.P, gamma=1.0)
    result = tabular.policy_iteration(gridworld.P, gamma=1.0)
    np.testing.assert_allclose(V, result.V, atol=1e-9)
    assert np.array_equal(policy, result.policy)


def test_policy_evaluation_of_a_deterministic_policy(gridworld):
    optimal = tabular.policy_iteration(gridworld.P, gamma=1.0).policy
    V = tabular.policy_evaluation(gridworld.P, optimal, gamma=1.0)  # (nS,) actions are accepted
    np.testing.assert_array_equal(V, [0, -1, -2, -3, -1, -2, -3, -2, -2, -3, -2, -1, -3, -2, -1, 0])


# ---- FX-RL-5: Géron's 3-state MDP --------------------------------------------------------------

def test_q_value_iteration_gamma_090_book_values(mdp3):
    Q = tabular.q_value_iteration(mdp3.P, gamma=0.90, iterations=50)
    expected = np.array([[18.91891892, 17.02702702, 13.62162162], [0, -INF, -4.87971488], [-INF, 50.13365013, -INF]])
    assert finite_gap(Q, expected) < 1e-8
    assert Q.argmax(1).tolist() == [0, 0, 1]


def test_q_value_iteration_gamma_095_flips_the_s1_action(mdp3):
    Q = tabular.q_value_iteration(mdp3.P, gamma=0.95, iterations=50)
    expected = np.array([[21.73304188, 20.63807938, 16.70138772], [0.95462106, -INF, 1.01361207], [-INF, 53.70728682, -INF]])
    assert finite_gap(Q, expected) < 1e-8
    assert Q.argmax(1).tolist() == [0, 2, 1]


def test_q_value_iteration_is_within_001_from_iteration_18(mdp3):
    final = tabular.q_value_iteration(mdp3.P, gamma=0.9, iterations=50)
    assert finite_gap(tabular.q_value_iteration(mdp3.P, gamma=0.9, iterations=18), final) < 0.01
    assert finite_gap(tabular.q_value_iteration(mdp3.P, gamma=0.9, iterations=17), final) > 0.01


def test_learning_rate_schedule_values():
    alpha = tabular.power_decay(0.05, 0.005)
    assert alpha(0) == 0.05 and alpha(200) == pytest.approx(0.025, rel=1e-12)
    assert alpha(9999) == pytest.approx(0.000980488, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_q_learning_geron_setup_finds_the_optimal_policy(mdp3, seed):
    """Book setup: purely random exploration, α = 0.05/(1 + 0.005·t), γ 0.9, 10,000 steps, never reset."""
    env = gym.make("lab/ThreeStateMDP-v0")
    Q = tabular.q_learning(env, 10_000, gamma=0.9, learning_rate=tabular.power_decay(0.05, 0.005), epsilon=1.0, seed=seed)
    assert Q.argmax(1).tolist() == [0, 0, 1]
    # values are seed-dependent and this schedule decays too fast to settle them: only a loose check
    assert finite_gap(Q, tabular.q_value_iteration(mdp3.P, gamma=0.9)) < 7.0


def test_q_learning_converges_on_the_stochastic_mdp(mdp3):
    env = gym.make("lab/ThreeStateMDP-v0")
    Q = tabular.q_learning(env, 100_000, gamma=0.9, learning_rate=tabular.power_decay(1.0, 0.01), epsilon=1.0, seed=0)
    assert finite_gap(Q, tabular.q_value_iteration(mdp3.P, gamma=0.9, iterations=500)) < 0.75


def test_q_learning_is_seedable():
    def run(seed):
        return tabular.q_learning(gym.make("lab/ThreeStateMDP-v0"), 2000, gamma=0.9, epsilon=1.0, seed=seed)
    assert np.array_equal(run(3), run(3)) and not np.array_equal(run(3), run(4))


# ---- FX-RL-6: BDL's 3x4 maze -----------------------------------------------------------------

def test_maze_value_iteration_book_values(maze):
    V, _ = tabular.value_iteration(maze.P, gamma=0.9)
    s = maze.state_of
    assert V[s(2, 1)] == pytest.approx(-1 - 0.9 - 0.9**2 - 0.9**3 + 0.9**4 * 10, abs=1e-9)
    assert V[s(2, 1)] == pytest.approx(3.122, abs=1e-9)
    assert V[s(3, 3)] == pytest.approx(8.0, abs=1e-9) and V[s(4, 3)] == pytest.approx(10.0, abs=1e-9)
    expected_grid = [[4.58, 6.2, 8.0, 10.0], [3.122, np.nan, 6.2, -10.0], [1.8098, 3.122, 4.58, 3.122]]
    np.testing.assert_allclose(maze.as_grid(V), expected_grid, rtol=0, atol=1e-9)


def test_maze_action_values_at_2_1(maze):
    V, _ = tabular.value_iteration(maze.P, gamma=0.9)
    up, right, down, left = tabular.action_values(maze.P, V, gamma=0.9)[maze.state_of(2, 1)]
    assert right == pytest.approx(3.122, abs=1e-9)
    assert left == pytest.approx(-1 - 0.9 - 0.9**2 - 0.9**3 - 0.9**4 - 0.9**5 + 0.9**6 * 10, abs=1e-9)
    assert left == pytest.approx(0.62882, abs=1e-9) and round(left, 3) == 0.629
    assert up == pytest.approx(1.8098, abs=1e-9) and down == pytest.approx(1.8098, abs=1e-9)


# ---- Q-learning reaches the value-iteration solution on the deterministic MDPs --------------------

@pytest.mark.parametrize("env_id, epsilon", [("lab/GridWorld4x4-v0", 0.3), ("lab/Maze3x4-v0", 1.0)])
def test_q_learning_converges_to_value_iteration(env_id, epsilon):
    env = gym.make(env_id)
    model = env.unwrapped
    V, _ = tabular.value_iteration(model.P, gamma=model.discount)
    optimal_Q = tabular.action_values(model.P, V, model.discount)
    Q = tabular.q_learning(env, 20_000, gamma=model.discount, learning_rate=0.5, epsilon=epsilon, seed=0)
    np.testing.assert_allclose(Q, optimal_Q, rtol=0, atol=1e-6)
    # its greedy actions are optimal (ties between equally good actions may break either way)
    np.testing.assert_allclose(optimal_Q[np.arange(model.nS), Q.argmax(1)], V, rtol=0, atol=1e-6)


# ---- FX-RL-8: ε-greedy bandit (MTF ch. 8) --------------------------------------------------------

def test_epsilon_greedy_bandit_expectation():
    """ε 0.1, arms N(1,1), N(2,1), N(3,1), 100,000 pulls: average → 0.9·3 + 0.1·2 = 2.9; arm 3 ≈ 93 %."""
    result = tabular.epsilon_greedy_bandit(gym.make("lab/Bandit-v0"), 100_000, epsilon=0.1, seed=0)
    assert 2.88 < result.average_reward[-1] < 2.92
    np.testing.assert_allclose(result.values, [1.0, 2.0, 3.0], atol=0.06)
    assert result.counts.sum() == 100_000 and abs(result.counts[2] / 100_000 - 0.933) < 0.01
    assert result.average_reward[0] == result.rewards[0]


def test_epsilon_greedy_bandit_incremental_mean_is_the_sample_mean():
    result = tabular.epsilon_greedy_bandit(gym.make("lab/Bandit-v0"), 500, epsilon=0.5, seed=1)
    again = tabular.epsilon_greedy_bandit(gym.make("lab/Bandit-v0"), 500, epsilon=0.5, seed=1)
    assert np.array_equal(result.rewards, again.rewards)
    # replaying the run: each arm's estimate is the plain mean of the rewards it paid
    rng = np.random.default_rng(1)
    estimates, arms = np.zeros(3), []
    for t in range(500):
        arm = int(rng.integers(3)) if rng.random() < 0.5 else int(np.argmax(estimates))
        arms.append(arm)
        estimates[arm] = np.mean(result.rewards[: t + 1][np.array(arms) == arm])
    np.testing.assert_allclose(result.values, estimates, rtol=1e-12)
    assert result.counts.tolist() == np.bincount(arms, minlength=3).tolist()


# ---- bad input ---------------------------------------------------------------------------------

def test_bad_models_and_policies_are_rejected(gridworld, mdp3):
    with pytest.raises(ValueError, match="policy must have shape"):
        tabular.policy_evaluation(gridworld.P, np.ones((16, 3)) / 3, gamma=1.0)
    with pytest.raises(ValueError, match="not available"):
        tabular.policy_evaluation(mdp3.P, np.ones((3, 3)) / 3, gamma=0.9)
    with pytest.raises(ValueError, match="state 1 has no available action"):
        tabular.value_iteration([[[(1.0, 1, 0.0, False)]], [[]]], gamma=0.9)
    with pytest.raises(ValueError, match="P\\[1\\] lists 1 actions"):
        tabular.value_iteration([[[(1.0, 1, 0.0, False)], []], [[(1.0, 0, 0.0, False)]]], gamma=0.9)


def test_policy_evaluation_that_never_ends_is_an_error(gridworld):
    always_up = np.zeros(16, dtype=int)  # state 1 bumps into the top wall forever: V diverges with γ = 1
    with pytest.raises(RuntimeError, match="did not converge within 50 sweeps"):
        tabular.policy_evaluation(gridworld.P, always_up, gamma=1.0, max_sweeps=50)
