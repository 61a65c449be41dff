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
2. Learn: every `train_freq` env steps (or finished episodes), `gradient_steps` updates (-1: as
   many as env steps were collected since the last round, SB3's -1), each on a batch of
   `batch_size`: target y = R + γ^m·Q_target(s', a') with a' = argmax Q_target (DQN) or
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
updates) are sampled together and their targets come from one batched forward pass, which computes
only the max_a Q_target(s', a) not already kept for that entry since the last target update
(TargetValues); an MLP Q-network with relu or tanh runs as one fused graph node
(core.functional.fused_mlp).

Envs: `num_envs` and `vectorization` of the agent config, when set, override the env config's.
With env.normalize_obs / normalize_reward (envs/normalize.py) the replay buffer stores the
observations and rewards as normalised when collected (SB3 stores raw ones and normalises them
with the current statistics when it samples).
Evaluation: `cfg.eval_episodes` episodes at the end, greedy or ε-greedy with `eval_epsilon` (Atari:
a greedy agent that never presses FIRE plays until the time limit), in raw rewards, env k seeded
seed + 10_000 + k as scripts/evaluate.py replays them; also every `eval_every` env steps (default:
about 10 evaluations per run; the best one's networks in best.ckpt, without the replay buffer), and
with `target_return` training stops at the first evaluation that reaches it (metrics
time/to_target_s and train/to_target_steps).
Checkpoints (q_net, target_net, optimizer, replay buffer and its kept target values, envs, every
random generator, the update counters) every `checkpoint_every` env steps (default 100,000; 0: only at the end), on
Ctrl-C and at the end; a resumed run ends bitwise identical to an uninterrupted one on CPU.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

import gymnasium as gym
import numpy as np

import core
import core.functional as F
from agents import (EVAL_SEED_OFFSET, check_each, check_evaluation, derive_seed, episode_recorder, with_one_blas_thread,
                    summarize_returns, wrapper_options)
from agents.actor_critic import Optimizer, evaluate, evaluation_envs, tracked_normalization, training_envs
from agents.buffers import make_replay_buffer
from agents.networks import (Activation, EpsilonGreedy, Init, QNetwork, as_input, flatten_rows, forward_in_chunks,
                             max_over_actions, select_actions)
from agents.schedules import Schedule, epsilon_schedule, linear_schedule
from core import optim
from core.backend import array_module, get_array_module, to_device
from core.runtime.choices import Choice
from core.runtime.config import config_object
from core.runtime.errors import ConfigError
from envs.factory import Vectorization, make_env as make_single_env
from envs.rollout import VectorStepper

NORMALIZES_ENVS = True  # env.normalize_obs / normalize_reward (agents/__init__.py)
CHECKPOINT_EVERY = 100_000  # env steps between checkpoints unless the run's checkpoint_every says otherwise
# the config's types
Network = Choice("Network", "mlp nature_cnn")
Loss = Choice("Loss", "huber mse")
Unit = Choice("Unit", "step episode")
TargetUnit = Choice("TargetUnit", "step update episode")
Aggregation = Choice("Aggregation", "mean max")


@dataclass
class Config:
    """The defaults are Stable-Baselines3's DQN (2.x) where it has the setting; per-env values (the zoo's) are in
    conf/tuned/dqn_<env>.yaml."""

    total_timesteps: int = 1_000_000       # env steps, summed over the envs
    total_episodes: Optional[int] = None   # also stop after this many training episodes (books count episodes)
    num_envs: Optional[int] = None         # envs stepped together; null: env.num_envs
    vectorization: Optional[Vectorization] = None  # null: env.vectorization
    # Q-network
    network: Network = Network.mlp         # nature_cnn: stacked 84x84 uint8 frames, scaled by 1/255
    hidden: List[int] = field(default_factory=lambda: [64, 64])  # mlp hidden widths
    activation: Activation = Activation.relu
    init: Init = Init.torch                # see agents/networks.py
    dueling: bool = False                  # Q = V + A − mean(A) (or − max(A))
    dueling_aggregation: Aggregation = Aggregation.mean  # mean (Wang et al. 2016) | max (HOML ch. 18)
    # optimisation
    optimizer: Optimizer = Optimizer.adam
    lr: float = 1e-4
    optim_eps: float = 1e-8                # Adam / RMSprop epsilon (Keras: 1e-7)
    rmsprop_alpha: float = 0.99            # RMSprop smoothing (Keras' rho)
    rmsprop_centered: bool = False
    max_grad_norm: float = 10.0            # global-norm gradient clipping; 0: none
    loss: Loss = Loss.huber
    huber_delta: float = 1.0
    regress_all_actions: bool = False      # Keras books: fit the whole Q(s, ·) to the target net's Q(s, ·) with
                                           # the taken action's entry set to y (the loss averages over actions)
    # targets
    gamma: float = 0.99
    n_step: int = 1
    double_q: bool = False
    target_network: bool = True            # false: bootstrap from the online network (no gradient through it)
    target_update_interval: int = 10_000
    target_update_unit: TargetUnit = TargetUnit.step  # step (env steps) | update (gradient updates) | episode
    tau: float = 1.0                       # 1: hard copy; < 1: Polyak averaging θ' ← τθ + (1 − τ)θ'
    bootstrap_on_truncation: bool = True
    # replay
    buffer_size: int = 1_000_000
    batch_size: int = 32
    learning_starts: int = 100             # env steps of uniformly random actions before any update
    train_freq: int = 4
    train_freq_unit: Unit = Unit.step      # step (env steps) | episode (finished episodes)
    gradient_steps: int = 1                # updates per train_freq; -1: one per env step collected (SB3's -1)
    prioritized: bool = False
    per_alpha: float = 0.6
    per_beta_start: float = 0.4            # annealed linearly to per_beta_end over total_timesteps
    per_beta_end: float = 1.0
    per_eps: float = 1e-6
    # exploration
    epsilon_schedule: Schedule = Schedule.linear
    epsilon_unit: Unit = Unit.step         # step (env steps) | episode (finished episodes)
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    exploration_fraction: float = 0.1      # linear over steps: from start to end in this fraction of total_timesteps
    epsilon_decay_duration: int = 0        # linear: steps (episodes) from start to end; 0: exploration_fraction
    epsilon_decay: float = 0.995           # exponential: the factor per step (episode)
    # evaluation and logging
    eval_every: Optional[int] = None       # env steps between evaluations; null: about 10 per run; 0: only at the end
    eval_epsilon: float = 0.0              # ε of the evaluation policy (0: greedy; Atari: 0.05 keeps it from stalling)
    target_return: Optional[float] = None  # stop at the first evaluation whose mean return reaches it
    log_every: int = 100                   # gradient updates between loss (and SPS) logs

    def validate(self):
        check_each(self, ("num_envs", "total_episodes"), ">= 1 or null", lambda value: value is None or value >= 1)
        check_each(self, ("total_timesteps", "n_step", "target_update_interval", "buffer_size", "batch_size",
                          "train_freq", "log_every"), ">= 1", lambda value: value >= 1)
        # SB3 takes 0 and then never learns; a run that cannot learn is refused instead
        check_each(self, ("gradient_steps",), ">= 1, or -1 (as many updates as env steps collected)",
                   lambda value: value >= 1 or value == -1)
        check_each(self, ("learning_starts", "epsilon_decay_duration", "max_grad_norm", "per_alpha"),
                   ">= 0", lambda value: value >= 0)
        check_each(self, ("lr", "optim_eps", "huber_delta", "per_eps", "epsilon_decay", "tau"),
                   "a positive finite number", lambda value: value > 0 and math.isfinite(value))
        check_each(self, ("gamma", "tau", "rmsprop_alpha", "exploration_fraction", "epsilon_start", "epsilon_end",
                          "eval_epsilon", "per_beta_start", "per_beta_end"), "in [0, 1]", lambda value: 0 <= value <= 1)
        if self.batch_size > self.buffer_size:
            raise ValueError(f"agent.batch_size ({self.batch_size}) cannot exceed agent.buffer_size "
                             f"({self.buffer_size})")
        if self.network == "mlp" and (not self.hidden or any(width < 1 for width in self.hidden)):
            raise ValueError(f"agent.hidden must list one or more positive layer widths, got {list(self.hidden)}")
        if self.epsilon_schedule == "linear" and self.epsilon_unit == "episode" and not self.epsilon_decay_duration:
            raise ValueError("agent.epsilon_unit=episode with a linear schedule needs agent.epsilon_decay_duration "
                             "(episodes from epsilon_start to epsilon_end)")
        check_evaluation(self)


# ----- the TD loss -----
def td_targets(rewards, discounts, next_q_target, next_q_online=None):
    """y = r + discount·Q_target(s', a'): a' = argmax_a Q_target(s', a) (DQN), or argmax_a Q_online(s', a)
    when `next_q_online` is given (Double DQN). Arrays in, array out."""
    if next_q_online is None:
        next_values = max_over_actions(next_q_target)
    else:
        best = next_q_online.argmax(axis=1)
        next_values = next_q_target[get_array_module(best).arange(len(best)), best]
    return rewards + discounts * next_values


def bootstrap_targets(q_net, target_net, batch, double_q=False, device="cpu"):
    """The TD targets of a replay batch (float32 array on `device`, no graph): `td_targets` with the
    batch's n-step rewards and discounts (γ^m, 0 after a termination)."""
    with core.no_grad():
        next_obs = as_input(batch.next_obs, device)
        next_q_target = forward_in_chunks(target_net, next_obs)
        next_q_online = forward_in_chunks(q_net, next_obs) if double_q else None
    xp = get_array_module(next_q_target)
    targets = td_targets(xp.asarray(batch.rewards), xp.asarray(batch.discounts), next_q_target, next_q_online)
    return targets.astype(np.float32, copy=False)


class TargetValues:
    """max_a Q_target(s', a) of the replay entries bootstrapped from, kept per ring slot until the target
    network changes (`refresh`) or the slot holds a newer entry. Between two target updates the same
    entries are drawn again and again (MountainCar's zoo settings draw each of the 10,000 held entries
    about 4 times per target period): each is computed once instead. A pure function of the target
    network and the entry, so the targets are those `bootstrap_targets` computes; checkpointed, so that
    a resumed run ends bitwise identical even where BLAS rounds a row differently in another batch."""

    def __init__(self, capacity, device="cpu"):
        self.xp = array_module(device)
        self.entry = np.full(capacity, -1, np.int64)  # the absolute entry each slot's value is of
        self.computed_in = np.full(capacity, -1, np.int64)  # the target-network version it was computed with
        self.values = self.xp.zeros(capacity, np.float32)
        self.version = 0

    def refresh(self):
        """The target network changed: every value is stale."""
        self.version += 1

    def targets(self, target_net, batch, device="cpu"):
        """y = R + γ^m·max_a Q_target(s', a) of a batch (float32 array on `device`), computing only the
        values not held, from the batch's own next observations (one row per missing entry)."""
        entries = batch.next_entries
        slots = entries % len(self.entry)
        stale = np.flatnonzero((self.entry[slots] != entries) | (self.computed_in[slots] != self.version))
        missing, first = np.unique(entries[stale], return_index=True)
        if missing.size:
            with core.no_grad():
                q = forward_in_chunks(target_net, as_input(batch.next_obs[stale[first]], device))
            fresh = missing % len(self.entry)
            self.values[self.xp.asarray(fresh)] = max_over_actions(q)
            self.entry[fresh], self.computed_in[fresh] = missing, self.version
        xp = self.xp
        return xp.asarray(batch.rewards) + xp.asarray(batch.discounts) * self.values[xp.asarray(slots)]

    def state_dict(self):
        """The values still current, with their slots and entries (the rest would be recomputed anyway)."""
        slots = np.flatnonzero(self.computed_in == self.version)
        return {"capacity": len(self.entry), "slots": slots, "entries": self.entry[slots],
                "values": np.array(to_device(self.values[self.xp.asarray(slots)], "cpu")), "version": self.version}

    def load_state_dict(self, state):
        if state["capacity"] != len(self.entry):
            raise ValueError(f"kept target values of a {state['capacity']}-entry replay buffer, this one holds "
                             f"{len(self.entry)}")
        self.version = int(state["version"])
        self.computed_in[...] = -1
        slots = np.asarray(state["slots"])
        self.entry[slots], self.computed_in[slots] = state["entries"], self.version
        self.values[self.xp.asarray(slots)] = self.xp.asarray(state["values"])


def td_loss(q_net, obs, actions, targets, weights=None, loss="huber", huber_delta=1.0, device="cpu",
            q_others=None):
    """(loss Tensor, TD errors Q(s, a) − y, Q(s, a)) of a batch: the mean over the batch of Huber(δ)
    or the squared TD error, each term times its importance weight when `weights` is given.
    With `q_others` (B, actions), the Keras books' target vector: every Q(s, ·) is regressed on
    q_others (the target net's Q(s, ·)) except the taken action's, on y; each row's loss is the
    mean over the actions, so the taken action's term weighs 1/actions of it. The plain loss of an MLP
    Q-network is one graph node (core.functional.fused_mlp_q_loss), with the same numbers."""
    params = getattr(q_net, "fused_mlp_params", None) if weights is None and q_others is None else None
    if params is not None:
        x = flatten_rows(as_input(obs, device))
        targets = x.xp.asarray(targets)
        value, q_taken = F.fused_mlp_q_loss(x, params, x.xp.asarray(actions), targets, q_net.activation, loss,
                                            huber_delta)
        return value, q_taken - targets, q_taken
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
    args = config_object(Config, cfg.agent)
    q_net = QNetwork(env.observation_space.shape, int(env.action_space.n), args)
    q_net.load_state_dict(state["q_net"])
    generator = generator or core.Generator(0)

    def act(obs):
        if not greedy and generator.uniform(()).item() < (args.eval_epsilon or args.epsilon_end):
            return int(generator.integers(env.action_space.n).item())
        return int(q_net.greedy(np.asarray(obs)[None])[0])
    return act


# ----- training -----
@with_one_blas_thread
def train(cfg, run):
    args = config_object(Config, cfg.agent)
    args.validate()
    device = run.device
    core.manual_seed(cfg.seed)
    envs = training_envs(cfg, args, device)
    check_spaces(envs.single_action_space, envs.single_observation_space, cfg.env.id)
    eval_envs = evaluation_envs(cfg, args, device, training=envs)
    num_envs, num_actions, obs_space = envs.num_envs, int(envs.single_action_space.n), envs.single_observation_space
    host = (lambda array: array) if getattr(envs, "xp", np) is np else (lambda array: to_device(array, "cpu"))

    q_net = QNetwork(obs_space.shape, num_actions, args).to(device)
    target_net = q_net.copy() if args.target_network else q_net
    parameters = list(q_net.parameters())
    parameter_pairs = list(zip(target_net.parameters(), parameters))
    rmsprop = {"alpha": args.rmsprop_alpha, "centered": args.rmsprop_centered} if args.optimizer == "rmsprop" else {}
    optimizer = optim.create(parameters, args.optimizer, lr=args.lr, eps=args.optim_eps, **rmsprop)
    buffer = make_replay_buffer(args, obs_space, num_envs)
    # Double DQN's a' comes from the online network, which every update changes: nothing to keep
    target_values = TargetValues(buffer.capacity, device) if args.target_network and not args.double_q else None
    epsilon_at = epsilon_schedule(args)
    beta_at = linear_schedule(args.per_beta_start, args.per_beta_end, args.total_timesteps)
    rng = np.random.default_rng(derive_seed(cfg.seed, "dqn"))  # exploration and replay sampling
    stepper = VectorStepper(envs)
    stepper.reset(seed=cfg.seed)
    # env steps / episodes since the last round; the progress when the last round ended
    counters = {"updates": 0, "since_train": 0, "since_target": 0, "round_start": 0}

    def evaluate_now():
        policy = EpsilonGreedy(q_net, args.eval_epsilon, num_actions)
        returns, lengths = evaluate(policy, eval_envs, greedy=args.eval_epsilon == 0, seed=cfg.seed + EVAL_SEED_OFFSET,
                                    generator=core.Generator(derive_seed(cfg.seed, "evaluation")), device=device)
        return summarize_returns(returns, lengths)

    session = run.session("dqn", "env_steps", args.total_timesteps, checkpoint_every=cfg.get("checkpoint_every"),
                          checkpoint_default=CHECKPOINT_EVERY, eval_every=args.eval_every, episodes=args.total_episodes,
                          target=args.target_return, evaluate=evaluate_now, console_every=cfg.get("console_every"),
                          record=episode_recorder(cfg, make_policy, make_env), not_in_best=("buffer", "target_values"))
    session.track(q_net=q_net, **({"target_net": target_net} if args.target_network else {}), optimizer=optimizer,
                  buffer=buffer, stepper=stepper, rng=rng, counters=counters, **tracked_normalization(envs),
                  **({"target_values": target_values} if target_values else {}))

    # updates sampled together (Speed, above) need a fixed bootstrap network: not so with PER, Double DQN, no target net
    one_at_a_time = args.prioritized or args.double_q or not args.target_network
    obs_bytes = int(np.prod(obs_space.shape)) * (1 if args.network == "nature_cnn" else 4)
    max_together = max(1, (64 << 20) // (2 * obs_bytes * args.batch_size))  # at most 64 MB of observations

    def learn(num_updates, step):
        # the losses are summed where they are and read once per call: no update waits for a GPU, and a
        # non-finite loss in any of them stops the run before the next checkpoint
        loss_sum = 0.0
        while num_updates > 0:
            together = 1 if one_at_a_time else min(num_updates, max_together)
            if args.target_network and args.target_update_unit == "update":
                interval = args.target_update_interval
                together = min(together, interval - counters["updates"] % interval)
            if args.prioritized:
                batch = buffer.sample(args.batch_size, rng, beta_at(step))
            else:
                batch = buffer.sample(together * args.batch_size, rng)
            targets = target_values.targets(target_net, batch, device) if target_values else \
                bootstrap_targets(q_net, target_net, batch, args.double_q, device)
            if args.regress_all_actions:
                with core.no_grad():
                    q_others = forward_in_chunks(target_net, as_input(batch.obs, device))
            for first in range(0, together * args.batch_size, args.batch_size):
                rows = slice(first, first + args.batch_size)
                loss_sum = loss_sum + gradient_step(batch.obs[rows], batch.actions[rows], targets[rows],
                                                    batch.weights[rows] if args.prioritized else None,
                                                    batch.indices[rows], q_others[rows] if args.regress_all_actions
                                                    else None, step)
            num_updates -= together
        session.check_finite("losses/td_loss", loss_sum)

    def sync_target():
        update_target(parameter_pairs, args.tau)
        if target_values:
            target_values.refresh()

    def gradient_step(obs, actions, targets, weights, indices, q_others, step):
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
            sync_target()
        if counters["updates"] % args.log_every == 0:
            session.log({"losses/td_loss": float(loss.data), "losses/q_values": float(q_taken.mean()),
                         "charts/learning_rate": args.lr, "charts/SPS": session.sps()}, step)
        return loss.data

    last_return = float("nan")
    while session.running():
        step = session.progress + num_envs  # env steps once this vector step is taken
        # 1. act and store
        epsilon = 1.0 if session.progress < args.learning_starts else \
            epsilon_at(session.progress if args.epsilon_unit == "step" else session.episodes)
        actions = select_actions(q_net, stepper.obs, epsilon, rng, num_actions, device)
        t = stepper.step(actions)
        terminated, truncated = host(t.terminated), host(t.truncated)
        if not args.bootstrap_on_truncation:
            terminated, truncated = terminated | truncated, np.zeros_like(truncated)
        buffer.add(host(t.obs), actions, host(t.reward), host(t.next_obs), terminated, truncated, host(t.valid))
        counters["since_target"] += num_envs
        finished = stepper.pop_finished_episodes()
        for episode in finished:
            last_return = episode.episodic_return
            session.log({"charts/episodic_return": episode.episodic_return, "charts/episodic_length": episode.length,
                         "charts/epsilon": epsilon}, step)
        counters["since_train"] += num_envs if args.train_freq_unit == "step" else len(finished)

        # 2. track the online network
        if args.target_network and args.target_update_unit == "step" and \
                counters["since_target"] >= args.target_update_interval:
            counters["since_target"] %= args.target_update_interval
            sync_target()
        elif args.target_network and args.target_update_unit == "episode" and \
                (session.episodes + len(finished)) // args.target_update_interval > \
                session.episodes // args.target_update_interval:
            sync_target()

        # 3. learn
        if counters["since_train"] >= args.train_freq:
            rounds, counters["since_train"] = divmod(counters["since_train"], args.train_freq)
            if args.gradient_steps > 0:
                num_updates = rounds * args.gradient_steps
            else:  # one per env step of the rounds completed (episodes: every env step since the last round)
                num_updates = rounds * args.train_freq if args.train_freq_unit == "step" else \
                    step - counters["round_start"]
            counters["round_start"] = step
            if step > args.learning_starts:
                learn(num_updates, step)
                session.show(ret=last_return, eps=epsilon)
        session.advance(num_envs, episodes=finished)
    return session.finish({"train/updates": counters["updates"]})
