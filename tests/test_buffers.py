"""Replay buffers (agents/buffers.py): n-step returns across episode ends, vector-env autoreset,
frame stacks stored once, the Atari byte budget, prioritized sampling and importance weights."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation, TimeLimit
from scipy import stats

from agents.buffers import PrioritizedReplayBuffer, ReplayBuffer, SumTree
from envs.rollout import VectorStepper


def add(buffer, obs, reward, next_obs, terminated=False, truncated=False, action=0):
    """One single-env transition; observations are one number."""
    buffer.add(np.array([[obs]], np.float32), [action], [reward], np.array([[next_obs]], np.float32), [terminated],
               [truncated])


def sampled_transitions(buffer, draws=4000, seed=0, **kwargs):
    """{first observation (as a tuple): (reward, discount, next observation)} over many sampled batches;
    fails if one observation ever came back with two different transitions."""
    rng = np.random.default_rng(seed)
    seen = {}
    for _ in range(draws // 64):
        batch = buffer.sample(64, rng, **kwargs)
        for i in range(64):
            key = tuple(batch.obs[i].ravel().tolist())
            value = (float(batch.rewards[i]), float(batch.discounts[i]), tuple(batch.next_obs[i].ravel().tolist()),
                     int(batch.actions[i]))
            if batch.discounts[i] == 0:  # the next observation is irrelevant when nothing is bootstrapped
                value = value[:2] + (None,) + value[3:]
            assert seen.setdefault(key, value) == value, f"{key}: {value} != {seen[key]}"
    return seen


def test_n_step_returns_stop_at_termination_bootstrap_at_truncation_and_shorten_at_the_newest_state():
    buffer = ReplayBuffer(100, (1,), n_step=3, gamma=0.5)
    for t, reward in enumerate([1.0, 2.0, 3.0, 4.0]):  # states 0..3; the step from 3 terminates
        add(buffer, t, reward, t + 1, terminated=t == 3)
    for t in range(3):  # states 10..12; the step from 12 is cut by a time limit (its final observation is 13)
        add(buffer, 10 + t, 1.0, 11 + t, truncated=t == 2)
    add(buffer, 20, 5.0, 21)  # the env now stands in 21 and has not acted from it yet
    seen = sampled_transitions(buffer)
    expected = {
        (0.0,): (1 + 0.5 * 2 + 0.25 * 3, 0.125, (3.0,)),
        (1.0,): (2 + 0.5 * 3 + 0.25 * 4, 0.0, None),   # the termination inside the 3 steps: no bootstrap
        (2.0,): (3 + 0.5 * 4, 0.0, None),
        (3.0,): (4.0, 0.0, None),
        (10.0,): (1 + 0.5 + 0.25, 0.125, (13.0,)),      # truncation: bootstrapped from the final observation
        (11.0,): (1 + 0.5, 0.25, (13.0,)),
        (12.0,): (1.0, 0.5, (13.0,)),
        (20.0,): (5.0, 0.5, (21.0,)),                   # only one step happened so far: a 1-step return
    }
    assert {k: v[:3] for k, v in seen.items()} == expected
    # the final observation of the truncated episode and the newest state are stored, never sampled as starts
    assert len(buffer) == 4 + 4 + 2


def test_one_step_transitions_and_their_actions():
    buffer = ReplayBuffer(10, (1,), gamma=0.9)
    add(buffer, 0, 1.0, 1, action=1)
    add(buffer, 1, 2.0, 2, terminated=True, action=0)
    seen = sampled_transitions(buffer, draws=640)
    assert seen == {(0.0,): (1.0, pytest.approx(0.9), (1.0,), 1), (1.0,): (2.0, 0.0, None, 0)}


class CountingEnv(gym.Env):
    """Deterministic episodes whose observations name themselves: (env id, episode, t). Episode e lasts
    (2, 5, 1, 7)[e % 4] steps and terminates, unless a time limit cuts it first; reward = 10·t + env id."""

    def __init__(self, env_id, lengths=(2, 5, 1, 7)):
        self.env_id, self.lengths = env_id, lengths
        self.observation_space = gym.spaces.Box(0, 1e6, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.episode = -1

    def _obs(self):
        return np.array([self.env_id, self.episode, self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 10.0 * self.t + self.env_id
        self.t += 1
        return self._obs(), reward, self.t >= self.lengths[self.episode % len(self.lengths)], False, {}


def make_counting_envs(num_envs, autoreset_mode, frame_stack=1, time_limit=4):
    def make(i):
        def thunk():
            env = TimeLimit(CountingEnv(i), max_episode_steps=time_limit)
            return FrameStackObservation(env, frame_stack) if frame_stack > 1 else env
        return thunk
    mode = AutoresetMode.NEXT_STEP if autoreset_mode == "next_step" else AutoresetMode.SAME_STEP
    return SyncVectorEnv([make(i) for i in range(num_envs)], autoreset_mode=mode)


def reference_transitions(log, n_step, gamma):
    """The n-step transitions of each env's list of (obs, action, reward, next_obs, terminated, truncated),
    computed one by one: what the buffer must return for every start."""
    expected = {}
    for steps in log.values():
        for i, (obs, action, *_) in enumerate(steps):
            total, discount, bootstrap = 0.0, 1.0, None
            for k in range(n_step):
                if i + k == len(steps):  # the env has not acted from this state yet: bootstrap from it
                    break
                _, _, reward, next_obs, terminated, truncated = steps[i + k]
                total += discount * reward
                discount *= gamma
                bootstrap = next_obs
                if terminated:
                    discount, bootstrap = 0.0, None
                    break
                if truncated:
                    break
            expected[tuple(obs.ravel().tolist())] = (total, discount,
                                                     None if bootstrap is None else tuple(bootstrap.ravel().tolist()),
                                                     action)
    return expected


@pytest.mark.parametrize("autoreset_mode", ["next_step", "same_step"])
@pytest.mark.parametrize("frame_stack", [1, 4])
def test_vector_env_transitions_match_a_step_by_step_reference(autoreset_mode, frame_stack):
    """Two envs with different episode lengths through gymnasium's autoreset and VectorStepper: the
    reset steps of NEXT_STEP never enter, and every sampled transition (frame stacks rebuilt from
    frames stored once) equals the reference n-step transition."""
    envs = make_counting_envs(2, autoreset_mode, frame_stack)
    shape = (frame_stack, 3) if frame_stack > 1 else (3,)
    buffer = ReplayBuffer(1000, shape, num_envs=2, n_step=3, gamma=0.9, frame_stack=frame_stack)
    stepper = VectorStepper(envs)
    stepper.reset(seed=0)
    rng = np.random.default_rng(1)
    log = {0: [], 1: []}
    for _ in range(40):
        actions = rng.integers(3, size=2)
        t = stepper.step(actions)
        buffer.add(t.obs, actions, t.reward, t.next_obs, t.terminated, t.truncated, t.valid)
        for i in np.flatnonzero(t.valid):
            log[i].append((t.obs[i], int(actions[i]), float(t.reward[i]), t.next_obs[i], bool(t.terminated[i]),
                           bool(t.truncated[i])))
    if autoreset_mode == "next_step":
        assert sum(map(len, log.values())) < 80  # some steps only reset an env
    expected = reference_transitions(log, 3, 0.9)
    seen = sampled_transitions(buffer, draws=20000)
    assert seen.keys() == expected.keys()
    for key, value in seen.items():
        reward, discount, next_obs, action = expected[key]
        assert value[0] == pytest.approx(reward, rel=1e-6) and value[1] == pytest.approx(discount, rel=1e-6)
        assert value[2:] == (next_obs, action)
    if frame_stack > 1:  # one frame per stored entry, not four per observation (let alone eight per transition)
        assert buffer.frames.shape == (1000, 3)


def test_a_full_ring_never_returns_a_frame_stack_whose_frames_were_overwritten():
    envs = make_counting_envs(2, "same_step", frame_stack=4, time_limit=6)
    buffer = ReplayBuffer(24, (4, 3), num_envs=2, n_step=2, gamma=0.5, frame_stack=4)
    stepper = VectorStepper(envs)
    stepper.reset(seed=0)
    log = {0: [], 1: []}
    for step in range(300):
        actions = np.array([step % 3, (step + 1) % 3])
        t = stepper.step(actions)
        buffer.add(t.obs, actions, t.reward, t.next_obs, t.terminated, t.truncated, t.valid)
        for i in range(2):
            log[i].append((t.obs[i], int(actions[i]), float(t.reward[i]), t.next_obs[i], bool(t.terminated[i]),
                           bool(t.truncated[i])))
    expected = reference_transitions(log, 2, 0.5)
    seen = sampled_transitions(buffer, draws=6400)
    assert 0 < len(seen) <= 24
    newest = {tuple(obs.ravel().tolist()) for steps in log.values() for obs, *_ in steps[-30:]}
    for key, value in seen.items():
        assert key in newest  # only recent entries survive the ring
        assert value[:2] == pytest.approx(expected[key][:2]) and value[2:] == expected[key][2:]


def test_bootstrap_on_truncation_false_is_expressed_by_passing_done_as_terminated():
    buffer = ReplayBuffer(10, (1,), n_step=2, gamma=0.5)
    add(buffer, 0, 1.0, 1)
    add(buffer, 1, 1.0, 2, terminated=True)  # a time limit treated as terminal (the books' `done`)
    assert sampled_transitions(buffer, draws=640)[(0.0,)][:2] == (1.5, 0.0)


def test_atari_buffer_stores_each_frame_once_and_a_million_transitions_fit_in_8_gb():
    atari = dict(obs_shape=(4, 84, 84), obs_dtype=np.uint8, frame_stack=4)
    small = ReplayBuffer(1000, num_envs=8, **atari)
    assert small.frames.shape == (1000, 84, 84)
    assert small.nbytes == ReplayBuffer.storage_bytes(1000, **atari)
    prioritized = PrioritizedReplayBuffer(1000, num_envs=8, **atari)
    assert prioritized.nbytes == ReplayBuffer.storage_bytes(1000, prioritized=True, **atari)

    frame = 84 * 84
    for kwargs in ({}, {"prioritized": True}):
        total = ReplayBuffer.storage_bytes(1_000_000, **atari, **kwargs)
        assert 1_000_000 * frame < total <= 8e9
    # every entry with an outgoing transition holds one transition; only truncated episodes add one
    # more entry (their final observation), so the 1,000,000 entries hold 1,000,000 transitions less
    # the truncations; storing obs and next_obs stacks would take 8 frames per transition, 56 GB
    assert ReplayBuffer.storage_bytes(1_000_000, **atari) < 8 * frame * 1_000_000 / 7


def test_buffer_checks_its_arguments():
    with pytest.raises(ValueError, match="capacity must be at least 4 entries per env"):
        ReplayBuffer(7, (4,), num_envs=2)
    with pytest.raises(ValueError, match=r"frame_stack=4 needs observations of shape \(4, \.\.\.\)"):
        ReplayBuffer(100, (84, 84), frame_stack=4)
    with pytest.raises(ValueError, match="n_step must be a positive int"):
        ReplayBuffer(100, (4,), n_step=0)
    buffer = ReplayBuffer(100, (4,))
    with pytest.raises(ValueError, match=r"obs and next_obs must have shape \(1, 4\)"):
        buffer.add(np.zeros((1, 3)), [0], [0.0], np.zeros((1, 3)), [False], [False])
    with pytest.raises(RuntimeError, match="holds no complete transition"):
        buffer.sample(8, np.random.default_rng(0))


@pytest.mark.parametrize("prioritized", [False, True])
def test_state_dict_round_trip_samples_the_same_batches(prioritized):
    kind = PrioritizedReplayBuffer if prioritized else ReplayBuffer
    envs = make_counting_envs(2, "next_step", frame_stack=4)
    buffer = kind(64, (4, 3), num_envs=2, n_step=2, frame_stack=4)
    stepper = VectorStepper(envs)
    stepper.reset(seed=0)
    for step in range(50):
        t = stepper.step(np.array([0, 1]))
        buffer.add(t.obs, np.array([0, 1]), t.reward, t.next_obs, t.terminated, t.truncated, t.valid)
        if prioritized and step % 5 == 4:
            batch = buffer.sample(8, np.random.default_rng(step))
            buffer.update_priorities(batch.indices, np.arange(8.0))
    restored = kind(64, (4, 3), num_envs=2, n_step=2, frame_stack=4)
    restored.load_state_dict({k: np.array(v) if isinstance(v, np.ndarray) else v
                              for k, v in buffer.state_dict().items()})
    a, b = buffer.sample(32, np.random.default_rng(7)), restored.sample(32, np.random.default_rng(7))
    for name in a._fields:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    t = stepper.step(np.array([1, 1]))  # both go on the same way
    for target in (buffer, restored):
        target.add(t.obs, np.array([1, 1]), t.reward, t.next_obs, t.terminated, t.truncated, t.valid)
    np.testing.assert_array_equal(buffer.sample(16, np.random.default_rng(3)).obs,
                                  restored.sample(16, np.random.default_rng(3)).obs)


# ----- prioritized replay -----
def test_sum_tree_sums_minima_and_prefix_search():
    rng = np.random.default_rng(0)
    tree = SumTree(37)
    values = rng.random(37) * (rng.random(37) > 0.3)  # some zeros: never found
    tree.set(np.arange(37), values)
    assert tree.total == pytest.approx(values.sum())
    assert tree.min == pytest.approx(values[values > 0].min())
    cumulative = np.cumsum(values)
    mass = rng.random(1000) * values.sum()
    np.testing.assert_array_equal(tree.find(mass), np.searchsorted(cumulative, mass, side="left"))
    assert (values[tree.find(mass)] > 0).all()
    tree.set([3, 3, 5], [2.0, 4.0, 1.0])  # the last of repeated leaves wins, sums stay exact
    values[3], values[5] = 4.0, 1.0
    assert tree.total == pytest.approx(values.sum())
    np.testing.assert_allclose(tree[np.arange(37)], values)


def filled_prioritized_buffer(size=20, alpha=0.6):
    buffer = PrioritizedReplayBuffer(64, (1,), alpha=alpha, eps=1e-6)
    for t in range(size):
        add(buffer, t, 0.0, t + 1)
    return buffer


def test_sampling_frequencies_follow_priorities_to_the_alpha():
    buffer = filled_prioritized_buffer()
    slots = np.arange(20)
    td_errors = np.linspace(0.05, 3.0, 20)
    buffer.update_priorities(slots, td_errors)
    rng = np.random.default_rng(0)
    counts = np.zeros(21)
    for _ in range(1000):
        counts += np.bincount(buffer.sample(32, rng, beta=0.4).indices, minlength=21)
    assert counts[20] == 0  # state 20 (the newest, not acted from) is never a start
    probabilities = (td_errors + 1e-6) ** 0.6 / ((td_errors + 1e-6) ** 0.6).sum()
    chi2 = ((counts[:20] - 32_000 * probabilities) ** 2 / (32_000 * probabilities)).sum()
    assert stats.chi2.sf(chi2, df=19) > 1e-3
    # and far from uniform: the largest priority is drawn about 7.7 times as often as the smallest
    assert counts[19] / counts[0] == pytest.approx((3.0 / 0.05) ** 0.6, rel=0.15)


def test_importance_weights_with_beta():
    buffer = filled_prioritized_buffer(size=4, alpha=1.0)
    buffer.update_priorities(np.arange(4), [1.0, 2.0, 3.0, 4.0])
    p = (np.array([1.0, 2.0, 3.0, 4.0]) + 1e-6) / (10.0 + 4e-6)
    held = 5  # four transitions and the newest state
    for beta in (0.0, 0.5, 1.0):
        batch = buffer.sample(64, np.random.default_rng(1), beta=beta)
        expected = (held * p[batch.indices]) ** -beta / (held * p.min()) ** -beta
        np.testing.assert_allclose(batch.weights, expected, rtol=1e-5)
    assert batch.weights.max() <= 1.0 and batch.weights[batch.indices == 0].tolist()[:1] == [1.0]


def test_new_transitions_get_the_largest_priority_seen():
    buffer = filled_prioritized_buffer(size=3, alpha=0.5)
    assert buffer.tree[np.arange(3)].tolist() == [1.0, 1.0, 1.0]  # max priority starts at 1
    buffer.update_priorities([0, 1, 2], [0.5, 9.0, 0.1])
    add(buffer, 3, 0.0, 4)
    assert buffer.tree[3] == pytest.approx((9.0 + 1e-6) ** 0.5)
    assert buffer.tree[4] == 0.0  # the newest state: not sampleable
