"""DQN and its family (Mnih et al. 2015), CleanRL-style in one file.

    python scripts/train.py agent=dqn env=cartpole        # rl-baselines3-zoo's tuned CartPole-v1 settings
    python scripts/train.py agent=dqn_fast env=cartpole   # the lab's fastest preset (native vectorized CartPole)

What it does, step by step:
1. Collect: every env of the vector env acts ε-greedily on the online Q-network (uniformly at
   random before `learning_starts`) and each step's transitions go into the replay buffer
   (agents/buffers.py: uniform or prioritized, n-step returns, Atari frames stored once). The
   envs reset finished episodes within the step (gymnasium's same-step autoreset), so every step
   is a transition. A truncated episode (time limit) is bootstrapped from its true final
   observation, a terminated one is not; `bootstrap_on_truncation=false` treats both as terminal,
   as the books' old-gym `done` does.
2. Learn: every `train_freq` env steps (or finished episodes), `gradient_steps` updates, each on a
   batch of `batch_size`: target y = R + γ^m·Q_target(s', a') with a' = argmax Q_target (DQN) or
   argmax Q_online (Double DQN, van Hasselt et al. 2016); loss = the batch mean of Huber(δ) or
   squared TD errors, weighted by the importance weights under prioritized replay (whose |δ| become
   the new priorities), or with `regress_all_actions` the Keras books' fit of the whole Q-vector (the
   other actions regressed on the target net's Q(s, ·)); gradients clipped to the global norm
   `max_grad_norm`; one Adam or RMSprop step.
3. Track: the target network copies the online one every `target_update_interval` env steps,
   gradient updates or finished episodes (`tau` < 1: Polyak averaging instead of a copy);
   `target_network=false` bootstraps from the online network itself (HOML's first DQN).

Counting: env steps sum over the envs (8 envs make 8 env steps per vector step); an interval
counted in env steps is crossed, not hit, so any number of envs works, and the ratio of updates to
env steps is gradient_steps / train_freq whatever the env count. ε follows a linear or an
exponential schedule (agents/schedules.py) over env steps or finished episodes.

Speed: updates that bootstrap from the same fixed network (the target network between two of its
updates) are sampled together and their targets come from one batched forward pass; an MLP
Q-network with relu or tanh runs as one fused graph node (agents.actor_critic.MLPFunction).

Envs: `num_envs` and `vectorization` of the agent config, when set, override the env config's.
Evaluation: `cfg.eval_episodes` episodes at the end, greedy or ε-greedy with `eval_epsilon` (Atari:
a greedy agent that never presses FIRE plays until the time limit), in raw rewards, env k seeded
seed + 10_000 + k as scripts/evaluate.py replays them; with `eval_every` also every that many env
steps, and with `target_return` training stops at the first evaluation that reaches it (metrics
time/to_target_s and train/to_target_steps).
Checkpoints (networks, optimizer, replay buffer, envs, every random generator, counters) every
`cfg.checkpoint_every` thousand env steps (0: only at the end), on Ctrl-C and at the end; a resumed
run ends bitwise identical to an uninterrupted one on CPU.
"""
import math
import time
from dataclasses import dataclass, field
from typing import List, Optional

import gymnasium as gym
import numpy as np
from omegaconf import OmegaConf

import core
import core.functional as F
from agents import EVAL_SEED_OFFSET, summarize_returns, wrapper_options
from agents.actor_critic import (MLPFunction, check_each, derive_seed, evaluate, evaluation_envs, one_blas_thread,
                                 training_envs)
from agents.buffers import PrioritizedReplayBuffer, ReplayBuffer
from agents.networks import ACTIVATIONS, INITS, mlp
from agents.schedules import SCHEDULES, exponential_schedule, linear_schedule
from core import nn, optim
from core.backend import get_array_module, to_device
from core.runtime.run import ConfigError, get_rng_state, set_rng_state
from envs.factory import make_env as make_single_env
from envs.rollout import VectorStepper

NETWORKS = ("mlp", "nature_cnn")
LOSSES = ("huber", "mse")
OPTIMIZERS = ("adam", "rmsprop")
UNITS = ("step", "episode")
TARGET_UNITS = ("step", "update", "episode")
AGGREGATIONS = ("mean", "max")
FUSED_ACTIVATIONS = ("relu", "tanh")  # what MLPFunction computes


@dataclass
class Config:
    total_timesteps: int = 50_000          # env steps, summed over the envs
    total_episodes: Optional[int] = None   # also stop after this many training episodes (books count episodes)
    num_envs: Optional[int] = None         # envs stepped together; null: env.num_envs
    vectorization: Optional[str] = None    # sync | async | native; null: env.vectorization
    # Q-network
    network: str = "mlp"                   # mlp | nature_cnn (stacked 84x84 uint8 frames, scaled by 1/255)
    hidden: List[int] = field(default_factory=lambda: [256, 256])  # mlp hidden widths
    activation: str = "relu"
    init: str = "torch"                    # torch | keras | orthogonal (agents/networks.py)
    dueling: bool = False                  # Q = V + A − mean(A) (or − max(A))
    dueling_aggregation: str = "mean"      # mean (Wang et al. 2016) | max (HOML ch. 18)
    # optimisation
    optimizer: str = "adam"                # adam | rmsprop
    lr: float = 2.3e-3
    optim_eps: float = 1e-8                # Adam / RMSprop epsilon (Keras: 1e-7)
    rmsprop_alpha: float = 0.99            # RMSprop smoothing (Keras' rho)
    rmsprop_centered: bool = False
    max_grad_norm: float = 10.0            # global-norm gradient clipping; 0: none
    loss: str = "huber"                    # huber | mse
    huber_delta: float = 1.0
    regress_all_actions: bool = False      # Keras books: fit the whole Q(s, ·) to the target net's Q(s, ·) with
                                           # the taken action's entry set to y (the loss averages over actions)
    # targets
    gamma: float = 0.99
    n_step: int = 1
    double_q: bool = False
    target_network: bool = True            # false: bootstrap from the online network (no gradient through it)
    target_update_interval: int = 10
    target_update_unit: str = "step"       # step (env steps) | update (gradient updates) | episode
    tau: float = 1.0                       # 1: hard copy; < 1: Polyak averaging θ' ← τθ + (1 − τ)θ'
    bootstrap_on_truncation: bool = True
    # replay
    buffer_size: int = 100_000
    batch_size: int = 64
    learning_starts: int = 1_000           # env steps of uniformly random actions before any update
    train_freq: int = 256
    train_freq_unit: str = "step"          # step (env steps) | episode (finished episodes)
    gradient_steps: int = 128              # updates per train_freq
    prioritized: bool = False
    per_alpha: float = 0.6
    per_beta_start: float = 0.4            # annealed linearly to per_beta_end over total_timesteps
    per_beta_end: float = 1.0
    per_eps: float = 1e-6
    # exploration
    epsilon_schedule: str = "linear"       # linear | exponential
    epsilon_unit: str = "step"             # step (env steps) | episode (finished episodes)
    epsilon_start: float = 1.0
    epsilon_end: float = 0.04
    exploration_fraction: float = 0.16     # linear over steps: from start to end in this fraction of total_timesteps
    epsilon_decay_duration: int = 0        # linear: steps (episodes) from start to end; 0: exploration_fraction
    epsilon_decay: float = 0.995           # exponential: the factor per step (episode)
    # evaluation and logging
    eval_every: int = 0                    # env steps between evaluations while training; 0: only at the end
    eval_epsilon: float = 0.0              # ε of the evaluation policy (0: greedy; Atari: 0.05 keeps it from stalling)
    target_return: Optional[float] = None  # stop at the first evaluation whose mean return reaches it
    log_every: int = 100                   # gradient updates between loss logs

    def validate(self):
        for name, allowed in (("network", NETWORKS), ("activation", ACTIVATIONS), ("init", INITS),
                              ("dueling_aggregation", AGGREGATIONS), ("optimizer", OPTIMIZERS), ("loss", LOSSES),
                              ("target_update_unit", TARGET_UNITS), ("train_freq_unit", UNITS),
                              ("epsilon_schedule", SCHEDULES), ("epsilon_unit", UNITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"agent.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.vectorization not in (None, "sync", "async", "native"):
            raise ValueError(f"agent.vectorization must be sync, async, native or null, got {self.vectorization!r}")
        if self.num_envs is not None and self.num_envs < 1:
            raise ValueError(f"agent.num_envs must be >= 1 or null, got {self.num_envs}")
        check_each(self, ("total_episodes",), ">= 1 or null", lambda value: value is None or value >= 1)
        for name in ("total_timesteps", "n_step", "target_update_interval", "buffer_size", "batch_size", "train_freq",
                     "gradient_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_starts", "eval_every", "epsilon_decay_duration", "max_grad_norm", "per_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"agent.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "optim_eps", "huber_delta", "per_eps", "epsilon_decay", "tau"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"agent.{name} must be a positive finite number, got {value}")
        for name in ("gamma", "tau", "rmsprop_alpha", "exploration_fraction", "epsilon_start", "epsilon_end",
                     "eval_epsilon", "per_beta_start", "per_beta_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"agent.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.batch_size > self.buffer_size:
            raise ValueError(f"agent.batch_size ({self.batch_size}) cannot exceed agent.buffer_size "
                             f"({self.buffer_size})")
        if self.network == "mlp" and (not self.hidden or any(width < 1 for width in self.hidden)):
            raise ValueError(f"agent.hidden must list one or more positive layer widths, got {list(self.hidden)}")
        if self.epsilon_schedule == "linear" and self.epsilon_unit == "episode" and not self.epsilon_decay_duration:
            raise ValueError("agent.epsilon_unit=episode with a linear schedule needs agent.epsilon_decay_duration "
                             "(episodes from epsilon_start to epsilon_end)")
        if self.target_return is not None and self.eval_every < 1:
            raise ValueError("agent.target_return needs agent.eval_every >= 1 (it is checked at those evaluations)")


def epsilon_schedule(args):
    """ε as a function of env steps or finished episodes (`args.epsilon_unit`)."""
    if args.epsilon_schedule == "exponential":
        return exponential_schedule(args.epsilon_start, args.epsilon_end, args.epsilon_decay)
    duration = args.epsilon_decay_duration or args.exploration_fraction * args.total_timesteps
    return linear_schedule(args.epsilon_start, args.epsilon_end, duration)


# ----- Q-networks -----
class QNetwork(nn.Module):
    """Observation -> one Q-value per action: an MLP or the Nature CNN (Mnih et al. 2015: conv 8x8/4
    32, 4x4/2 64, 3x3/1 64, dense 512, on uint8 frames scaled by 1/255), with a plain linear head or a
    dueling one (V and A heads on the last hidden layer). Parameters as `mlp` / nn layers make them."""

    def __init__(self, obs_shape, num_actions, args, generator=None):
        super().__init__()
        self.dueling, self.aggregation = args.dueling, args.dueling_aggregation
        self.activation = args.activation
        self.cnn = args.network == "nature_cnn"
        layer_init = "keras" if args.init == "keras" else "torch"
        if self.cnn:
            if len(obs_shape) != 3:
                raise ConfigError(f"network=nature_cnn needs image observations (channels, height, width), got "
                                  f"shape {tuple(obs_shape)}")
            self.features = nature_cnn(obs_shape, layer_init, generator)
            width = 512
        else:
            in_dim = int(np.prod(obs_shape))
            if args.dueling:  # hidden layers with the activation after the last, then the two heads
                self.features = mlp(in_dim, args.hidden[:-1], args.hidden[-1], args.activation, args.init,
                                    generator=generator)
                width = args.hidden[-1]
            else:
                self.features = mlp(in_dim, args.hidden, num_actions, args.activation, args.init, generator=generator)
        if args.dueling:
            self.value = nn.Linear(width, 1, init=layer_init, generator=generator)
            self.advantage = nn.Linear(width, num_actions, init=layer_init, generator=generator)
        elif self.cnn:
            self.head = nn.Linear(width, num_actions, init=layer_init, generator=generator)
        self.fused = not self.cnn and args.activation in FUSED_ACTIVATIONS

    def forward(self, x):
        """Q-values (B, actions) of a float32 batch (B, *obs_shape); frames in 0..255."""
        if self.cnn:
            h = self.features(x * (1.0 / 255))
        else:
            x = x if x.ndim == 2 else x.reshape(x.shape[0], -1)
            if self.fused:
                params = [p for layer in self.features if isinstance(layer, nn.Linear)
                          for p in (layer.weight, layer.bias)]
                h = MLPFunction(self.activation, activate_output=self.dueling)(x, *params)
            else:
                h = self.features(x)
                if self.dueling:
                    h = ACTIVATIONS[self.activation]()(h)
        if self.dueling:
            return dueling_q(self.value(h), self.advantage(h), self.aggregation)
        return self.head(h) if self.cnn else h

    def greedy(self, obs):
        """argmax_a Q(obs, a) for a batch of observations (an array on the network's device); no graph."""
        with core.no_grad():
            return self(as_input(obs)).data.argmax(axis=1)


def dueling_q(value, advantage, aggregation="mean"):
    """Q = V + (A − mean_a A), or V + (A − max_a A): V of shape (B, 1), A (B, actions)."""
    baseline = advantage.mean(axis=1, keepdims=True) if aggregation == "mean" else \
        advantage.max(axis=1, keepdims=True)
    return value + (advantage - baseline)


def nature_cnn(obs_shape, layer_init="torch", generator=None):
    channels, height, width = obs_shape
    layers = []
    for c_in, c_out, kernel, stride in ((channels, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)):
        layers += [nn.Conv2d(c_in, c_out, kernel, stride, init=layer_init, generator=generator), nn.ReLU()]
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    if height < 1 or width < 1:
        raise ConfigError(f"network=nature_cnn needs frames of at least 36x36, got {tuple(obs_shape[1:])}")
    return nn.Sequential(*layers, nn.Flatten(),
                         nn.Linear(64 * height * width, 512, init=layer_init, generator=generator), nn.ReLU())


def as_input(obs, device=None):
    """A float32 network input from an array of observations (uint8 frames too: the network scales them),
    on `device` (None: where the array is)."""
    return core.as_tensor(get_array_module(obs).asarray(obs, dtype=np.float32), device=device)


# ----- the TD loss -----
def td_targets(rewards, discounts, next_q_target, next_q_online=None):
    """y = r + discount·Q_target(s', a'): a' = argmax_a Q_target(s', a) (DQN), or argmax_a Q_online(s', a)
    when `next_q_online` is given (Double DQN). Arrays in, array out."""
    if next_q_online is None:
        next_values = next_q_target.max(axis=1)
    else:
        best = next_q_online.argmax(axis=1)
        next_values = next_q_target[get_array_module(best).arange(len(best)), best]
    return rewards + discounts * next_values


def bootstrap_targets(q_net, target_net, batch, double_q=False, device="cpu"):
    """The TD targets of a replay batch (float32 array on `device`, no graph): `td_targets` with the
    batch's n-step rewards and discounts (γ^m, 0 after a termination)."""
    with core.no_grad():
        next_obs = as_input(batch.next_obs, device)
        next_q_target = _forward_in_chunks(target_net, next_obs)
        next_q_online = _forward_in_chunks(q_net, next_obs) if double_q else None
    xp = get_array_module(next_q_target)
    targets = td_targets(xp.asarray(batch.rewards), xp.asarray(batch.discounts), next_q_target, next_q_online)
    return targets.astype(np.float32, copy=False)


def _forward_in_chunks(net, x, rows=2048):
    """net(x).data over row blocks: the hidden activations of a block stay in cache (20-25 % faster
    than one forward over the 8,192 next observations of a 128-update round)."""
    if len(x) <= rows:
        return net(x).data
    blocks = [net(x[first:first + rows]).data for first in range(0, len(x), rows)]
    return get_array_module(blocks[0]).concatenate(blocks)


def td_loss(q_net, obs, actions, targets, weights=None, loss="huber", huber_delta=1.0, device="cpu",
            q_others=None):
    """(loss Tensor, TD errors Q(s, a) − y, Q(s, a)) of a batch: the mean over the batch of Huber(δ)
    or the squared TD error, each term times its importance weight when `weights` is given.
    With `q_others` (B, actions), the Keras books' target vector: every Q(s, ·) is regressed on
    q_others (the target net's Q(s, ·)) except the taken action's, on y; each row's loss is the
    mean over the actions, so the taken action's term weighs 1/actions of it."""
    q = q_net(as_input(obs, device))
    xp = q.xp
    rows, actions = xp.arange(len(actions)), xp.asarray(actions)
    q_taken = q[rows, actions]
    targets = xp.asarray(targets)
    if q_others is None:
        prediction, goal = q_taken, targets
    else:
        goal = xp.array(q_others, dtype=q.dtype)
        goal[rows, actions] = targets
        prediction = q
    per_entry = q_others is not None or weights is not None  # reduced below, after the row and weight steps
    reduction = "none" if per_entry else "mean"
    if loss == "huber":
        value = F.huber_loss(prediction, core.as_tensor(goal), reduction, delta=huber_delta)
    else:
        value = F.mse_loss(prediction, core.as_tensor(goal), reduction)
    if q_others is not None:
        value = value.mean(axis=1)
    if weights is not None:
        value = value * core.as_tensor(xp.asarray(weights))
    if per_entry:
        value = value.mean()
    return value, q_taken.data - targets, q_taken.data


def update_target(parameter_pairs, tau):
    """θ' ← θ (tau 1) or θ' ← τθ + (1 − τ)θ', in place, for (target, online) parameter pairs."""
    for target_param, param in parameter_pairs:
        if tau == 1.0:
            target_param.data[...] = param.data
        else:
            target_param.data *= 1.0 - tau
            target_param.data += tau * param.data


class EpsilonGreedy:
    """A Q-network's ε-greedy policy, in the interface agents.actor_critic.evaluate drives (`greedy`,
    and `act` whose first result is the actions, drawn with a core.Generator)."""

    def __init__(self, q_net, epsilon, num_actions):
        self.q_net, self.epsilon, self.num_actions = q_net, epsilon, num_actions

    def greedy(self, obs):
        return self.q_net.greedy(obs)

    def act(self, obs, generator):
        device, shape = core.backend.device_of(obs), (len(obs),)
        explore = generator.uniform(shape, device=device).data < self.epsilon
        random = generator.integers(0, self.num_actions, shape, device=device).data
        return (get_array_module(obs).where(explore, random, self.q_net.greedy(obs)),)


def select_actions(q_net, obs, epsilon, rng, num_actions, device="cpu"):
    """ε-greedy actions (numpy ints) for a batch of observations. The random draws are the same
    whatever ε is (runs stay reproducible), and the network runs only when some env acts greedily."""
    explore, uniform = rng.random((2, len(obs)))
    actions = (uniform * num_actions).astype(np.int64)
    greedy = explore >= epsilon
    if greedy.any():
        actions = np.where(greedy, to_device(q_net.greedy(to_device(obs, device)), "cpu"), actions)
    return actions


# ----- environments and policies -----
def check_spaces(action_space, observation_space, env_id):
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"DQN needs a discrete action space; {env_id} has {action_space} (use a policy-gradient "
                          "agent such as ppo for continuous actions)")
    if not isinstance(observation_space, gym.spaces.Box):
        raise ConfigError(f"DQN needs Box (array) observations; {env_id} has {observation_space}")


def make_env(env_cfg, render_mode=None):
    """One env as the agent sees it (time limit, frame skip, Atari preprocessing, frame stack) with
    raw rewards: what scripts/evaluate.py plays."""
    options = {k: v for k, v in wrapper_options(env_cfg).items() if k != "reward_scale"}
    env = make_single_env(env_cfg.id, render_mode=render_mode, **options)
    check_spaces(env.action_space, env.observation_space, env_cfg.id)
    return env


def make_policy(cfg, state, env, greedy=True, generator=None):
    """The checkpointed Q-network as `act(observation) -> action`: argmax Q, or (greedy False)
    ε-greedy with ε = agent.eval_epsilon (agent.epsilon_end when that is 0), drawn from the
    core.Generator `generator`."""
    args = as_config(cfg.agent)
    q_net = QNetwork(env.observation_space.shape, int(env.action_space.n), args)
    q_net.load_state_dict(state["q_net"])
    generator = generator or core.Generator(0)

    def act(obs):
        if not greedy and generator.uniform(()).item() < (args.eval_epsilon or args.epsilon_end):
            return int(generator.integers(env.action_space.n).item())
        return int(q_net.greedy(np.asarray(obs)[None])[0])
    return act


def as_config(agent_cfg):
    """The agent section of a run config as a Config."""
    if isinstance(agent_cfg, Config):
        return agent_cfg
    fields = OmegaConf.to_container(agent_cfg, resolve=True) if OmegaConf.is_config(agent_cfg) else dict(agent_cfg)
    return Config(**fields)


def make_buffer(args, obs_space, num_envs):
    """The replay buffer the config asks for; stacked Atari frames (k, 84, 84) keep each frame once."""
    kwargs = dict(obs_dtype=obs_space.dtype if args.network == "nature_cnn" else np.float32, num_envs=num_envs,
                  n_step=args.n_step, gamma=args.gamma,
                  frame_stack=obs_space.shape[0] if args.network == "nature_cnn" else 1)
    try:
        if args.prioritized:
            return PrioritizedReplayBuffer(args.buffer_size, obs_space.shape, alpha=args.per_alpha, eps=args.per_eps,
                                           **kwargs)
        return ReplayBuffer(args.buffer_size, obs_space.shape, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


# ----- training -----
def train(cfg, run):
    with one_blas_thread():
        return _train(cfg, run)


def _train(cfg, run):
    args = as_config(cfg.agent)
    args.validate()
    device = run.device
    core.manual_seed(cfg.seed)
    envs = training_envs(cfg, args, device)
    check_spaces(envs.single_action_space, envs.single_observation_space, cfg.env.id)
    eval_envs = evaluation_envs(cfg, args, device)
    num_envs, num_actions = envs.num_envs, int(envs.single_action_space.n)
    obs_space = envs.single_observation_space
    host = (lambda array: array) if getattr(envs, "xp", np) is np else (lambda array: to_device(array, "cpu"))

    q_net = QNetwork(obs_space.shape, num_actions, args).to(device)
    target_net = q_net.copy() if args.target_network else q_net
    parameters = list(q_net.parameters())
    parameter_pairs = list(zip(target_net.parameters(), parameters))
    if args.optimizer == "adam":
        optimizer = optim.Adam(parameters, lr=args.lr, eps=args.optim_eps)
    else:
        optimizer = optim.RMSprop(parameters, lr=args.lr, alpha=args.rmsprop_alpha, eps=args.optim_eps,
                                  centered=args.rmsprop_centered)
    buffer = make_buffer(args, obs_space, num_envs)
    epsilon_at = epsilon_schedule(args)
    beta_at = linear_schedule(args.per_beta_start, args.per_beta_end, args.total_timesteps)
    rng = np.random.default_rng(derive_seed(cfg.seed, "dqn"))  # exploration and replay sampling
    stepper = VectorStepper(envs)
    stepper.reset(seed=cfg.seed)
    counters = {"global_step": 0, "episodes": 0, "updates": 0, "since_train": 0, "since_target": 0,
                "since_eval": 0, "since_checkpoint": 0}
    wall_before, evaluation = 0.0, None
    to_target = None  # [wall seconds, env steps] when an evaluation first reached target_return

    if run.resume_state is not None:
        state = run.resume_state
        q_net.load_state_dict(state["q_net"])
        if args.target_network:
            target_net.load_state_dict(state["target_net"])
        optimizer.load_state_dict(state["optimizer"])
        buffer.load_state_dict(state["buffer"])
        stepper.load_state_dict(state["stepper"])
        rng.bit_generator.state = state["rng"]
        set_rng_state(state["global_rng"])
        counters.update(state["counters"])
        wall_before, to_target = state["wall_s"], state["to_target"]

    start, start_step = time.perf_counter(), counters["global_step"]
    saved_step = None

    def wall():
        return wall_before + time.perf_counter() - start

    def checkpoint():
        nonlocal saved_step
        run.checkpoints.save({
            "q_net": q_net.state_dict(), "target_net": target_net.state_dict() if args.target_network else None,
            "optimizer": optimizer.state_dict(), "buffer": buffer.state_dict(), "stepper": stepper.state_dict(),
            "rng": rng.bit_generator.state, "global_rng": get_rng_state(), "counters": dict(counters),
            "wall_s": wall(), "to_target": to_target,
        }, counters["global_step"])
        saved_step = counters["global_step"]

    # Updates that bootstrap from the same fixed network (the target network between two of its
    # updates) are sampled together, their targets computed in one forward pass. Prioritized replay
    # (priorities change after each update), Double DQN and bootstrapping from the online network
    # need the current online network: one update at a time.
    one_at_a_time = args.prioritized or args.double_q or not args.target_network
    obs_bytes = int(np.prod(obs_space.shape)) * (1 if args.network == "nature_cnn" else 4)
    max_together = max(1, (64 << 20) // (2 * obs_bytes * args.batch_size))  # at most 64 MB of observations

    def learn(num_updates):
        # the losses are summed where they are and read once per call: no update waits for a GPU, and a
        # non-finite loss in any of them stops the run before the next checkpoint
        loss_sum = 0.0
        while num_updates > 0:
            together = 1 if one_at_a_time else min(num_updates, max_together)
            if args.target_network and args.target_update_unit == "update":
                interval = args.target_update_interval
                together = min(together, interval - counters["updates"] % interval)
            if args.prioritized:
                batch = buffer.sample(args.batch_size, rng, beta_at(counters["global_step"]))
            else:
                batch = buffer.sample(together * args.batch_size, rng)
            targets = bootstrap_targets(q_net, target_net, batch, args.double_q, device)
            if args.regress_all_actions:
                with core.no_grad():
                    q_others = _forward_in_chunks(target_net, as_input(batch.obs, device))
            for first in range(0, together * args.batch_size, args.batch_size):
                rows = slice(first, first + args.batch_size)
                loss_sum = loss_sum + gradient_step(batch.obs[rows], batch.actions[rows], targets[rows],
                                                    batch.weights[rows] if args.prioritized else None,
                                                    batch.indices[rows], q_others[rows] if args.regress_all_actions
                                                    else None)
            num_updates -= together
        run.check_finite("losses/td_loss", loss_sum, counters["global_step"])

    def gradient_step(obs, actions, targets, weights, indices, q_others):
        loss, td_errors, q_taken = td_loss(q_net, obs, actions, targets, weights, args.loss, args.huber_delta, device,
                                           q_others)
        optimizer.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            optim.clip_grad_norm_(parameters, args.max_grad_norm)
        optimizer.step()
        if args.prioritized:
            buffer.update_priorities(indices, to_device(td_errors, "cpu"))
        counters["updates"] += 1
        if args.target_network and args.target_update_unit == "update" and \
                counters["updates"] % args.target_update_interval == 0:
            update_target(parameter_pairs, args.tau)
        if counters["updates"] % args.log_every == 0:
            run.logger.scalars({"losses/td_loss": float(loss.data), "losses/q_values": float(q_taken.mean()),
                                "charts/learning_rate": args.lr}, counters["global_step"])
        return loss.data

    def evaluate_now():
        policy = EpsilonGreedy(q_net, args.eval_epsilon, num_actions)
        returns, lengths = evaluate(policy, eval_envs, greedy=args.eval_epsilon == 0, seed=cfg.seed + EVAL_SEED_OFFSET,
                                    generator=core.Generator(derive_seed(cfg.seed, "evaluation")), device=device)
        metrics = summarize_returns(returns, lengths)
        run.logger.scalars({k: v for k, v in metrics.items() if k != "eval/episodes"}, counters["global_step"])
        return metrics

    steps_per_checkpoint = cfg.checkpoint_every * 1000
    bar = run.logger.progress(args.total_timesteps, "dqn")
    bar.update(min(counters["global_step"], args.total_timesteps))
    last_return = float("nan")
    episode_budget = args.total_episodes if args.total_episodes is not None else math.inf
    while counters["global_step"] < args.total_timesteps and counters["episodes"] < episode_budget and \
            to_target is None and not run.should_stop():
        # 1. act and store
        if counters["global_step"] < args.learning_starts:
            epsilon = 1.0
        else:
            epsilon = epsilon_at(counters["global_step"] if args.epsilon_unit == "step" else counters["episodes"])
        actions = select_actions(q_net, stepper.obs, epsilon, rng, num_actions, device)
        t = stepper.step(actions)
        terminated, truncated = host(t.terminated), host(t.truncated)
        if not args.bootstrap_on_truncation:
            terminated, truncated = terminated | truncated, np.zeros_like(truncated)
        buffer.add(host(t.obs), actions, host(t.reward), host(t.next_obs), terminated, truncated, host(t.valid))
        for name in ("global_step", "since_target", "since_eval", "since_checkpoint"):
            counters[name] += num_envs
        finished = stepper.pop_finished_episodes()
        for episode in finished:
            counters["episodes"] += 1
            last_return = episode.episodic_return
            run.logger.scalars({"charts/episodic_return": episode.episodic_return,
                                "charts/episodic_length": episode.length, "charts/epsilon": epsilon},
                               counters["global_step"])
        counters["since_train"] += num_envs if args.train_freq_unit == "step" else len(finished)

        # 2. track the online network
        if args.target_network and args.target_update_unit == "step" and \
                counters["since_target"] >= args.target_update_interval:
            counters["since_target"] %= args.target_update_interval
            update_target(parameter_pairs, args.tau)
        elif args.target_network and args.target_update_unit == "episode" and \
                counters["episodes"] // args.target_update_interval > \
                (counters["episodes"] - len(finished)) // args.target_update_interval:
            update_target(parameter_pairs, args.tau)

        # 3. learn
        if counters["since_train"] >= args.train_freq:
            rounds, counters["since_train"] = divmod(counters["since_train"], args.train_freq)
            if counters["global_step"] > args.learning_starts:
                learn(rounds * args.gradient_steps)
                run.logger.scalar("charts/SPS", (counters["global_step"] - start_step) / (time.perf_counter() - start),
                                  counters["global_step"])
                bar.update(min(counters["global_step"], args.total_timesteps) - bar.n)
                bar.set_postfix(ret=last_return, eps=epsilon)

        if args.eval_every and counters["since_eval"] >= args.eval_every:
            counters["since_eval"] %= args.eval_every
            evaluation = evaluate_now()
            if args.target_return is not None and evaluation["eval/return_mean"] >= args.target_return:
                to_target = [wall(), counters["global_step"]]
        if steps_per_checkpoint and counters["since_checkpoint"] >= steps_per_checkpoint:
            counters["since_checkpoint"] %= steps_per_checkpoint
            checkpoint()
    bar.update(min(counters["global_step"], args.total_timesteps) - bar.n)
    bar.close()
    if saved_step != counters["global_step"]:
        checkpoint()
    metrics = {"train/env_steps": counters["global_step"], "train/episodes": counters["episodes"],
               "train/updates": counters["updates"], "time/wall_s": wall()}
    if to_target is not None:
        metrics.update({"time/to_target_s": to_target[0], "train/to_target_steps": to_target[1]})
    if run.should_stop():
        return metrics
    if to_target is None or evaluation is None:  # else the network is the one just evaluated
        evaluation = evaluate_now()
    metrics.update(evaluation)
    return metrics
