"""Replay buffers for the DQN family: uniform and prioritized, n-step returns, Atari frames stored once.

    buffer = ReplayBuffer(100_000, obs_shape=(4,), num_envs=8, n_step=3, gamma=0.99)
    buffer.add(t.obs, actions, t.reward, t.next_obs, t.terminated, t.truncated, t.valid)  # one vector step
    batch = buffer.sample(64, rng)       # rng: a numpy Generator
    target = batch.rewards + batch.discounts * max_a Q_target(batch.next_obs, a)
    buffer = make_replay_buffer(dqn_config, obs_space, num_envs)   # what an agents.dqn config asks for

How it is stored. The buffer is one ring of *entries*, one per observation an env was in: its
newest frame, and, once the env has acted from it, the action, reward and how the step ended.
Entries of one env's episode are linked (`next`, and `prev` for frame stacks), so:
- a transition's next observation is the next entry, not a second copy;
- with `frame_stack` k (Atari: observations of shape (k, 84, 84) whose last frame is new at each
  step), an entry keeps only the newest frame and a sampled observation is rebuilt from the entry
  and its k-1 predecessors, padded with the episode's first frame as gymnasium's
  FrameStackObservation does. Every frame is stored once: 84x84 uint8 frames cost 7,056 bytes per
  entry plus 31 bytes of bookkeeping (`storage_bytes`), so 1,000,000 entries (1,000,000 transitions,
  less one per truncated episode) take 7.09 GB, and 33.6 MB more for the priority trees;
- n-step returns are summed along the links when a batch is sampled.

Episode ends. A terminated step is never bootstrapped (discount 0). A truncated step (time limit)
ends the episode but is bootstrapped: its final observation gets an entry of its own, which is
never sampled as a start. An n-step return stops at either. It also stops early at an entry whose
step has not happened yet (the newest state of each env): those returns use fewer steps, bootstrapped
from that state with the matching power of γ. Pass `terminated | truncated` as `terminated` to treat
time limits as terminal (the books' old-gym `done`).

Rows where `valid` is False (the reset steps of gymnasium's next-step autoreset) are ignored.
The env whose row has no entry yet (at the start, or after an episode ended) starts a new episode
from that row's `obs`.
"""
from typing import NamedTuple, Optional

import numpy as np

from core.runtime.errors import ConfigError


class Batch(NamedTuple):
    obs: np.ndarray        # (B, *obs_shape): the observation the action was taken in
    actions: np.ndarray    # (B,) int64
    rewards: np.ndarray    # (B,) float32: the n-step discounted reward sum r_t + γ r_t+1 + ...
    next_obs: np.ndarray   # (B, *obs_shape): the observation to bootstrap from
    discounts: np.ndarray  # (B,) float32: γ^m for an m-step return, 0 when it ended in a termination
    indices: np.ndarray    # (B,) ring slots, for `update_priorities`
    weights: np.ndarray    # (B,) float32 importance-sampling weights (all ones for uniform sampling)
    next_entries: Optional[np.ndarray] = None  # (B,) the absolute entries next_obs was built from (an entry's
    # observation never changes while the ring holds it: a key for values computed from it)


def _fields(capacity, obs_shape, obs_dtype, frame_stack):
    """name -> (shape, dtype) of every array the buffer allocates."""
    frame_shape = tuple(obs_shape[1:]) if frame_stack > 1 else tuple(obs_shape)
    fields = {
        "frames": ((capacity, *frame_shape), np.dtype(obs_dtype)),
        "actions": ((capacity,), np.dtype(np.int64)),
        "rewards": ((capacity,), np.dtype(np.float32)),
        "terminated": ((capacity,), np.dtype(bool)),
        "truncated": ((capacity,), np.dtype(bool)),
        "ready": ((capacity,), np.dtype(bool)),          # the env acted from this entry: a sampleable start
        "next": ((capacity,), np.dtype(np.int64)),       # absolute index of the next entry, -1: none
    }
    if frame_stack > 1:
        fields["prev"] = ((capacity,), np.dtype(np.int64))  # previous entry of the episode; itself at the start
    return fields


def _tree_leaves(capacity):
    return 1 << max(0, int(capacity - 1).bit_length())


class ReplayBuffer:
    """Uniform replay over the last `capacity` entries (see the module docstring).

    obs_shape: one env's observation shape; with frame_stack k > 1 it must be (k, *frame_shape).
    num_envs: rows per `add` (a vector env's batch).
    """

    def __init__(self, capacity: int, obs_shape, obs_dtype=np.float32, num_envs: int = 1, n_step: int = 1,
                 gamma: float = 0.99, frame_stack: int = 1):
        obs_shape = tuple(int(d) for d in obs_shape)
        for name, value in (("num_envs", num_envs), ("n_step", n_step), ("frame_stack", frame_stack)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"replay buffer {name} must be a positive int, got {value!r}")
        if capacity < 4 * num_envs:
            raise ValueError(f"replay buffer capacity must be at least 4 entries per env ({4 * num_envs} for "
                             f"{num_envs} envs), got {capacity}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"replay buffer gamma must be in [0, 1], got {gamma}")
        if frame_stack > 1 and (not obs_shape or obs_shape[0] != frame_stack):
            raise ValueError(f"frame_stack={frame_stack} needs observations of shape ({frame_stack}, ...) (the stack "
                             f"first, as FrameStackObservation makes them), got {obs_shape}")
        self.capacity, self.obs_shape, self.num_envs = int(capacity), obs_shape, int(num_envs)
        self.n_step, self.gamma, self.frame_stack = int(n_step), float(gamma), int(frame_stack)
        for name, (shape, dtype) in _fields(self.capacity, obs_shape, obs_dtype, frame_stack).items():
            setattr(self, name, np.zeros(shape, dtype))
        self._all_envs = np.arange(self.num_envs)
        self.count = 0                                        # entries ever written
        self.current = np.full(self.num_envs, -1, np.int64)   # each env's entry to act from next; -1: none

    @staticmethod
    def storage_bytes(capacity, obs_shape, obs_dtype=np.float32, frame_stack=1, prioritized=False):
        """Bytes a buffer with these settings allocates, computed without allocating it."""
        total = sum(int(np.prod(shape)) * dtype.itemsize
                    for shape, dtype in _fields(capacity, obs_shape, obs_dtype, frame_stack).values())
        if prioritized:
            total += 2 * 2 * _tree_leaves(capacity) * 8  # sum and min trees, float64
        return total

    @property
    def nbytes(self):
        """Bytes actually allocated (the arrays, and the priority trees when prioritized)."""
        arrays = _fields(1, self.obs_shape, np.float32, self.frame_stack)
        return sum(getattr(self, name).nbytes for name in arrays)

    def __len__(self):
        """Entries held (transitions, plus the final observations of truncated episodes)."""
        return min(self.count, self.capacity)

    # ----- adding -----
    def _newest_frame(self, obs):
        return obs[:, -1] if self.frame_stack > 1 else obs

    def _write(self, obs, prev):
        """Append one entry per row of `obs` (not yet ready); returns their absolute indices."""
        index = self.count + np.arange(len(obs))
        slots = index % self.capacity
        self.frames[slots] = self._newest_frame(obs)
        self.ready[slots] = False
        self.next[slots] = -1
        if self.frame_stack > 1:
            self.prev[slots] = index if prev is None else prev
        self.count += len(obs)
        self._on_write(slots)
        return index

    def _on_write(self, slots):
        """Hook: new, not yet sampleable entries."""

    def _on_ready(self, slots):
        """Hook: entries that just became sampleable."""

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, valid=None):
        """Store one vector step: row i is env i's transition (obs, action, reward, next_obs, terminated,
        truncated). next_obs must be the observation the action led to (the final one at an episode end)."""
        obs, next_obs = np.asarray(obs), np.asarray(next_obs)
        if obs.shape != (self.num_envs, *self.obs_shape) or next_obs.shape != obs.shape:
            raise ValueError(f"replay buffer add: obs and next_obs must have shape {(self.num_envs, *self.obs_shape)}, "
                             f"got {obs.shape} and {next_obs.shape}")
        actions, rewards = np.asarray(actions), np.asarray(rewards)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        envs = self._all_envs
        if valid is not None and np.count_nonzero(valid) < len(valid):  # count_nonzero: 3x faster than all() here
            envs = np.flatnonzero(valid)
            if envs.size == 0:
                return
            obs, actions, rewards, next_obs = obs[envs], actions[envs], rewards[envs], next_obs[envs]
            terminated, truncated = terminated[envs], truncated[envs]

        entries = self.current[envs]
        starting = entries < 0
        if np.count_nonzero(starting):
            entries[starting] = self._write(obs[starting], prev=None)
        slots = entries % self.capacity
        self.actions[slots] = actions
        self.rewards[slots] = rewards
        self.terminated[slots] = terminated
        self.truncated[slots] = truncated

        # the next entry: the state the episode goes on from, or a truncated episode's final observation
        if np.count_nonzero(terminated):
            successors = np.full(len(entries), -1, np.int64)
            going_on = ~terminated
            successors[going_on] = self._write(next_obs[going_on], prev=entries[going_on])
        else:
            successors = self._write(next_obs, prev=entries)
        self.next[slots] = successors
        self.ready[slots] = True
        self._on_ready(slots)
        self.current[envs] = np.where(terminated | truncated, -1, successors)

    # ----- sampling -----
    def _frame_indices(self, index):
        """(stack, B) absolute indices of the frames of the entries `index`, oldest first: each entry and
        its predecessors, the episode's first entry standing in for those before it."""
        chain = [index]
        for _ in range(self.frame_stack - 1):
            chain.append(self.prev[chain[-1] % self.capacity])
        return np.stack(chain[::-1])

    def _sampleable(self, index):
        """Entries the env has acted from whose frames are all still held (a frame stack reaches back into
        older entries; once the ring overwrote one, its slot holds a newer entry)."""
        ready = self.ready[index % self.capacity]
        if self.frame_stack == 1:
            return ready
        return ready & (self._frame_indices(index).min(axis=0) >= self.count - self.capacity)

    def _observations(self, index):
        if self.frame_stack == 1:
            return self.frames.take(index % self.capacity, axis=0)  # take: 3-4x faster than fancy indexing
        return np.moveaxis(self.frames.take(self._frame_indices(index) % self.capacity, axis=0), 0, 1)

    def _draw(self, batch_size, rng):
        """Absolute indices of `batch_size` entries and their weights (uniform: ones)."""
        low = max(0, self.count - self.capacity)
        return rng.integers(low, self.count, batch_size), np.ones(batch_size, np.float32)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """`batch_size` transitions drawn with replacement, with their n-step returns."""
        if not self.ready.any():
            raise RuntimeError("cannot sample from a replay buffer that holds no complete transition yet")
        index, weights = self._draw(batch_size, rng)
        bad = ~self._sampleable(index)
        while bad.any():  # the newest state of each env, final observations, entries that lost frames
            index[bad], weights[bad] = self._draw(int(bad.sum()), rng)
            bad[bad] = ~self._sampleable(index[bad])
        rewards, discounts, bootstrap = self._n_step_returns(index)
        slots = index % self.capacity
        return Batch(self._observations(index), self.actions[slots], rewards, self._observations(bootstrap), discounts,
                     slots, weights, bootstrap)

    def _n_step_returns(self, index):
        """Rewards summed along the links for up to n steps: (returns, discounts, bootstrap entries)."""
        slots = index % self.capacity
        returns = self.rewards[slots].astype(np.float64)
        terminated = self.terminated[slots]
        bootstrap = self.next[slots]
        discounts = np.where(terminated, 0.0, self.gamma)
        if self.n_step > 1:  # rows whose return takes one more step: not ended, the env has acted from the next entry
            going = np.flatnonzero(~terminated & ~self.truncated[slots] & self.ready[bootstrap % self.capacity])
        power = self.gamma
        for _ in range(self.n_step - 1):
            if going.size == 0:
                break
            node = bootstrap[going] % self.capacity
            returns[going] += power * self.rewards[node]
            power *= self.gamma
            terminated = self.terminated[node]
            bootstrap[going] = self.next[node]
            discounts[going] = np.where(terminated, 0.0, power)
            going = going[~terminated & ~self.truncated[node] & self.ready[bootstrap[going] % self.capacity]]
        bootstrap = np.where(bootstrap >= 0, bootstrap, index)  # terminated: any entry, its discount is 0
        return returns.astype(np.float32), discounts.astype(np.float32), bootstrap

    def update_priorities(self, indices, td_errors):
        """Uniform replay has no priorities: nothing to do."""

    # ----- checkpoints -----
    def state_dict(self):
        """The held entries and the links (views, not copies: save it before the next `add`)."""
        held = len(self)
        arrays = {name: getattr(self, name)[:held] for name in _fields(1, self.obs_shape, np.float32, self.frame_stack)}
        return {"count": self.count, "current": self.current.copy(), **arrays}

    def load_state_dict(self, state):
        held = min(int(state["count"]), self.capacity)
        if state["frames"].shape[1:] != self.frames.shape[1:] or len(state["current"]) != self.num_envs:
            raise ValueError(f"replay buffer state holds frames of shape {state['frames'].shape[1:]} for "
                             f"{len(state['current'])} envs; this buffer has {self.frames.shape[1:]} for "
                             f"{self.num_envs}")
        for name in _fields(1, self.obs_shape, np.float32, self.frame_stack):
            getattr(self, name)[:held] = state[name]
        self.count = int(state["count"])
        self.current[:] = state["current"]


class SumTree:
    """Sums (and minima of the positive values) over `capacity` leaves, updated and searched in
    batches: O(log n) numpy operations per call, whatever the batch size."""

    def __init__(self, capacity: int):
        self.leaves = _tree_leaves(capacity)
        self.depth = self.leaves.bit_length() - 1
        self.sums = np.zeros(2 * self.leaves)
        self.mins = np.full(2 * self.leaves, np.inf)  # zero leaves count as +inf: never sampled

    @property
    def total(self):
        return float(self.sums[1])

    @property
    def min(self):
        return float(self.mins[1])

    def __getitem__(self, leaves):
        return self.sums[np.asarray(leaves) + self.leaves]

    def set(self, leaves, values):
        node = np.asarray(leaves) + self.leaves
        values = np.asarray(values, dtype=np.float64)
        self.sums[node] = values
        self.mins[node] = np.where(values > 0, values, np.inf)
        for _ in range(self.depth):  # duplicates in `node` recompute the same parent: harmless
            node = node // 2
            self.sums[node] = self.sums[2 * node] + self.sums[2 * node + 1]
            self.mins[node] = np.minimum(self.mins[2 * node], self.mins[2 * node + 1])

    def find(self, mass):
        """For each value in [0, total): the leaf whose cumulative-sum interval contains it."""
        mass = np.minimum(np.asarray(mass, dtype=np.float64), self.total)
        node = np.ones(len(mass), np.int64)
        for _ in range(self.depth):
            left = 2 * node
            left_sum = self.sums[left]
            go_right = mass > left_sum
            mass = np.where(go_right, mass - left_sum, mass)
            node = left + go_right
        return node - self.leaves


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016): P(i) = p_i^α / Σ_k p_k^α with
    p_i = |δ_i| + eps; a new transition gets the largest priority seen so far. Importance weights
    w_i = (N·P(i))^-β / max_k w_k, N the entries held; β is passed to each `sample` (anneal it to 1
    with `agents.schedules.linear_schedule`). A batch is stratified: one draw from each of
    `batch_size` equal slices of the priority mass."""

    def __init__(self, capacity: int, obs_shape, obs_dtype=np.float32, num_envs: int = 1, n_step: int = 1,
                 gamma: float = 0.99, frame_stack: int = 1, alpha: float = 0.6, eps: float = 1e-6):
        if alpha < 0:
            raise ValueError(f"prioritized replay alpha must be >= 0, got {alpha}")
        if eps <= 0:
            raise ValueError(f"prioritized replay eps must be > 0, got {eps}")
        self.tree = SumTree(capacity)
        self.alpha, self.eps = float(alpha), float(eps)
        self.max_priority = 1.0
        self.beta = 0.4
        super().__init__(capacity, obs_shape, obs_dtype, num_envs, n_step, gamma, frame_stack)

    @property
    def nbytes(self):
        return super().nbytes + self.tree.sums.nbytes + self.tree.mins.nbytes

    def _on_write(self, slots):
        self.tree.set(slots, 0.0)

    def _on_ready(self, slots):
        self.tree.set(slots, self.max_priority ** self.alpha)

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 0.4) -> Batch:
        if beta < 0:
            raise ValueError(f"prioritized replay beta must be >= 0, got {beta}")
        self.beta = beta
        return super().sample(batch_size, rng)

    def _draw(self, batch_size, rng):
        total = self.tree.total
        mass = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        slots = self.tree.find(mass)
        # slot -> absolute index: the ring holds absolute indices count - capacity .. count - 1
        index = self.count - 1 - (self.count - 1 - slots) % self.capacity
        probabilities = self.tree[slots] / total
        held = len(self)
        weights = (held * probabilities) ** -self.beta
        max_weight = (held * self.tree.min / total) ** -self.beta
        return index, (weights / max_weight).astype(np.float32)

    def update_priorities(self, indices, td_errors):
        """New priorities |δ| + eps for the slots a batch came from (`batch.indices`)."""
        priorities = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.eps
        self.tree.set(indices, priorities ** self.alpha)
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def state_dict(self):
        return {**super().state_dict(), "priorities": self.tree[np.arange(len(self))].copy(),
                "max_priority": self.max_priority}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.tree.set(np.arange(len(state["priorities"])), state["priorities"])
        self.max_priority = float(state["max_priority"])


def make_replay_buffer(args, obs_space, num_envs):
    """The replay buffer an agents.dqn Config asks for (uniform or prioritized, n-step); the Nature
    CNN's stacked frames (k, 84, 84) keep each frame once."""
    frames = args.network == "nature_cnn"
    kwargs = dict(obs_dtype=obs_space.dtype if frames else np.float32, num_envs=num_envs, n_step=args.n_step,
                  gamma=args.gamma, frame_stack=obs_space.shape[0] if frames else 1)
    try:
        if args.prioritized:
            return PrioritizedReplayBuffer(args.buffer_size, obs_space.shape, alpha=args.per_alpha, eps=args.per_eps,
                                           **kwargs)
        return ReplayBuffer(args.buffer_size, obs_space.shape, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
