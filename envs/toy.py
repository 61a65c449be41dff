"""The books' toy environments as gymnasium envs (registered under `lab/` when `envs` is imported).

| id | book | what |
|---|---|---|
| lab/Bandit-v0 | MTF ch. 8 | 3-armed Gaussian bandit, arm means (1, 2, 3); stateless, never ends |
| lab/GridWorld4x4-v0 | MTF ch. 8 appendix | 4x4 gridworld, terminals 0 and 15, -1 per step, discount 1 |
| lab/ThreeStateMDP-v0 | HOML ch. 18 | Géron's 3-state MDP (Fig 18-8), discount 0.9; never ends |
| lab/Maze3x4-v0 | BDL ch. 14 | 3x4 maze, wall (2,2), terminals (4,3) +10 and (4,2) -10, -1 per move, discount 0.9 |

Every MDP env exposes its full model the way FrozenLake does: P[s][a] = [(prob, next_state, reward,
done), ...], with nS, nA, and `discount` (the book's gamma). An action that a state does not allow
(only in the 3-state MDP) has no transitions, P[s][a] == []; stepping it is an error, and
info["action_mask"] (int8, as in Taxi) marks the allowed actions of the current state.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


class BanditEnv(gym.Env):
    """k-armed bandit: pulling arm j pays N(0, 1) + means[j] (MTF ch. 8 with the RL-01 fix).

    fix_reward=False gives the book's printed reward N(0, 1) * means[j], whose mean is 0 for every arm.
    The observation is always 0 and episodes never end.
    """

    metadata = {"render_modes": []}

    def __init__(self, means=(1.0, 2.0, 3.0), fix_reward: bool = True):
        self.means = np.asarray(means, dtype=np.float64)
        if self.means.ndim != 1 or self.means.size < 1:
            raise ValueError(f"means must be a non-empty 1-D sequence of arm means, got {means!r}")
        self.fix_reward = fix_reward
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(self.means.size)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        noise = self.np_random.standard_normal()
        mean = self.means[action]
        reward = noise + mean if self.fix_reward else noise * mean
        return 0, float(reward), False, False, {}


class TabularMDPEnv(gym.Env):
    """A finite MDP given by its model P[s][a] = [(prob, next_state, reward, done), ...].

    Episodes start uniformly in one of `initial_states`; `discount` is the book's gamma (information
    for the agents: the env itself pays undiscounted rewards).
    """

    metadata = {"render_modes": []}

    def __init__(self, P, initial_states, discount: float):
        self.P = P
        self.nS, self.nA = len(P), len(P[0])
        self.discount = discount
        self.initial_states = list(initial_states)
        self.observation_space = spaces.Discrete(self.nS)
        self.action_space = spaces.Discrete(self.nA)
        self.action_masks = np.array([[len(P[s][a]) > 0 for a in range(self.nA)] for s in range(self.nS)], dtype=np.int8)
        self.state = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.initial_states[self.np_random.integers(len(self.initial_states))]
        return self.state, {"prob": 1.0 / len(self.initial_states), "action_mask": self.action_masks[self.state].copy()}

    def step(self, action):
        transitions = self.P[self.state][action]
        if not transitions:
            allowed = np.flatnonzero(self.action_masks[self.state]).tolist()
            raise ValueError(f"action {action} is not available in state {self.state}; allowed: {allowed}")
        index = 0
        if len(transitions) > 1:
            # inverse-CDF draw over the listed transitions
            u = self.np_random.random()
            while index < len(transitions) - 1 and u >= transitions[index][0]:
                u -= transitions[index][0]
                index += 1
        prob, self.state, reward, done = transitions[index]
        return self.state, float(reward), bool(done), False, {"prob": prob, "action_mask": self.action_masks[self.state].copy()}


class GridWorld4x4Env(TabularMDPEnv):
    """Sutton & Barto's 4x4 gridworld as packaged in dennybritz/reinforcement-learning (MTF ch. 8 appendix).

    States 0..15 row-major; 0 and 15 are terminal and self-loop with reward 0; actions 0 up, 1 right,
    2 down, 3 left; moves are deterministic, a move off the grid leaves the state unchanged, and every
    step from a non-terminal state pays -1. Episodes start uniformly in a non-terminal state.
    """

    SHAPE = (4, 4)
    TERMINALS = (0, 15)

    def __init__(self):
        rows, cols = self.SHAPE
        P = []
        for s in range(rows * cols):
            row, col = divmod(s, cols)
            if s in self.TERMINALS:
                P.append([[(1.0, s, 0.0, True)] for _ in range(4)])
                continue
            moves = {UP: (max(row - 1, 0), col), RIGHT: (row, min(col + 1, cols - 1)),
                     DOWN: (min(row + 1, rows - 1), col), LEFT: (row, max(col - 1, 0))}
            targets = [moves[a][0] * cols + moves[a][1] for a in range(4)]
            P.append([[(1.0, target, -1.0, target in self.TERMINALS)] for target in targets])
        super().__init__(P, [s for s in range(rows * cols) if s not in self.TERMINALS], discount=1.0)


class ThreeStateMDPEnv(TabularMDPEnv):
    """Géron's 3-state MDP (HOML ch. 18, Fig 18-8); start in s0, no terminal state, discount 0.9.

    Allowed actions: s0 {a0, a1, a2}, s1 {a0, a2}, s2 {a1}. Rewards are paid on arrival.
    """

    # TRANSITIONS[s][a] = probabilities to s0, s1, s2 (None: action not allowed); REWARDS the same for rewards
    TRANSITIONS = [[[0.7, 0.3, 0.0], [1.0, 0.0, 0.0], [0.8, 0.2, 0.0]],
                   [[0.0, 1.0, 0.0], None, [0.0, 0.0, 1.0]],
                   [None, [0.8, 0.1, 0.1], None]]
    REWARDS = [[[10, 0, 0], [0, 0, 0], [0, 0, 0]],
               [[0, 0, 0], None, [0, 0, -50]],
               [None, [40, 0, 0], None]]

    def __init__(self):
        P = []
        for s in range(3):
            row = []
            for probs, rewards in zip(self.TRANSITIONS[s], self.REWARDS[s]):
                outcomes = [] if probs is None else zip(range(3), probs, rewards)
                row.append([(p, next_state, float(r), False) for next_state, p, r in outcomes if p > 0])
            P.append(row)
        super().__init__(P, [0], discount=0.9)


class Maze3x4Env(TabularMDPEnv):
    """BDL ch. 14's 3x4 maze (Fig 14-12): cells (x, y), x = column 1..4, y = row 1..3 (row 1 at the bottom).

    (2, 2) is a wall; (4, 3) is a terminal worth +10 and (4, 2) one worth -10. Moves (0 up = y + 1,
    1 right, 2 down, 3 left) are deterministic and cost -1; a move into the wall or off the grid stays.
    The book fixes a terminal's value at its reward, which a standard Bellman backup reproduces with one
    exit step: in a terminal cell every action ends the episode with reward +10 / -10. So
    V*(4,3) = 10, V*(3,3) = -1 + 0.9 * 10 = 8 and V*(2,1) = 3.122, as printed. Start: (1, 1).
    States number the 11 free cells row by row from the top: see `cells`, `state_of`, `as_grid`.
    """

    WIDTH, HEIGHT = 4, 3
    WALL = (2, 2)
    TERMINAL_REWARDS = {(4, 3): 10.0, (4, 2): -10.0}
    START = (1, 1)

    def __init__(self):
        self.cells = [(x, y) for y in range(self.HEIGHT, 0, -1) for x in range(1, self.WIDTH + 1) if (x, y) != self.WALL]
        deltas = {UP: (0, 1), RIGHT: (1, 0), DOWN: (0, -1), LEFT: (-1, 0)}
        P = []
        for s, (x, y) in enumerate(self.cells):
            if (x, y) in self.TERMINAL_REWARDS:
                P.append([[(1.0, s, self.TERMINAL_REWARDS[(x, y)], True)] for _ in range(4)])
                continue
            row = []
            for a in range(4):
                target = (x + deltas[a][0], y + deltas[a][1])
                blocked = target == self.WALL or not (1 <= target[0] <= self.WIDTH and 1 <= target[1] <= self.HEIGHT)
                row.append([(1.0, s if blocked else self.state_of(*target), -1.0, False)])
            P.append(row)
        super().__init__(P, [self.state_of(*self.START)], discount=0.9)

    def state_of(self, x: int, y: int) -> int:
        if (x, y) not in self.cells:
            raise ValueError(f"({x}, {y}) is not a free cell of the maze; x must be 1..4, y 1..3, and (2, 2) is the wall")
        return self.cells.index((x, y))

    def as_grid(self, values):
        """Per-state values as a 3x4 array laid out like the book's figure (top row y = 3), NaN at the wall."""
        grid = np.full((self.HEIGHT, self.WIDTH), np.nan)
        for (x, y), value in zip(self.cells, values):
            grid[self.HEIGHT - y, x - 1] = value
        return grid
