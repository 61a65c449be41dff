"""What A2C, PPO and A3C share: their config's common fields (ActorCriticConfig), actor-critic networks,
policies, envs, vectorized evaluation and the run session (rollouts, advantages and returns are in
agents/rollout.py).

    model = ActorCritic(obs_dim, action_dim, "categorical", hidden=[64, 64], shared=False)
    session = agent_session(run, cfg, args, "ppo", model, device)   # env steps, evaluation of `model`

Policies: `Categorical` over logits for Discrete action spaces, `DiagonalNormal` (a state-independent
learned log-std, as in SB3 and CleanRL) for 1-D Box action spaces; Gaussian actions are clipped to
the space's bounds only when sent to the env (the stored action and its log-prob are the sampled ones).
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

import gymnasium as gym
import numpy as np

import core
import core.functional as F
from agents import (EVAL_SEED_OFFSET, check_each, check_evaluation, derive_seed, episode_recorder,
                    normalization_options, summarize_returns,
                    wrapper_options)
from agents.networks import ACTIVATIONS, Activation, Init, linear_params, mlp
from core import nn
from core.backend import get_array_module, to_device
from core.distributions import Categorical, Normal
from core.optim import lr_scheduler
from core.ops import log_softmax, where
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError
from core.tensor import Tensor
from envs import VectorStepper, make_vector_env
from envs.factory import Vectorization
from envs.normalize import NormalizeVector

DISTRIBUTIONS = ("auto", "categorical", "gaussian")
CHECKPOINT_EVERY = 100_000  # env steps between checkpoints unless the run's checkpoint_every says otherwise
# the agent configs' types
Distribution = Choice("Distribution", DISTRIBUTIONS)
Optimizer = Choice("Optimizer", "adam rmsprop")


# ----- config -----
@dataclass
class ActorCriticConfig:
    """The settings A2C, PPO and A3C share. Each agent's Config extends it (a comment there names these fields);
    the defaults are Stable-Baselines3's A2C, and an agent's Config sets its own where they differ."""

    total_timesteps: int = 1_000_000       # env steps (A3C: all workers together)
    total_episodes: Optional[int] = None   # also stop after this many training episodes (books count episodes)
    num_steps: int = 5                     # steps per env per rollout (SB3's n_steps; A3C: t_max of the paper)
    gamma: float = 0.99
    lr: float = 7e-4
    anneal_lr: bool = False                # the learning rate falls linearly to 0
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5             # global-norm gradient clipping; 0: none
    normalize_advantage: bool = False      # standardise the advantages (per rollout; PPO: per minibatch)
    hidden: List[int] = field(default_factory=lambda: [64, 64])
    activation: Activation = Activation.tanh
    init: Init = Init.orthogonal           # see agents/networks.py
    shared: bool = False                   # one trunk for policy and value
    distribution: Distribution = Distribution.auto  # auto: categorical for Discrete, gaussian for Box actions
    log_std_init: float = 0.0              # gaussian policies
    eval_every: Optional[int] = None       # env steps between evaluations; null: about 10 per run; 0: only at the end
    target_return: Optional[float] = None  # stop at the first evaluation whose mean return reaches it
    eval_greedy: bool = True

    def validate(self):
        """The checks of the shared fields: budgets, discount, learning rate, loss weights, network, evaluation."""
        check_each(self, ("total_timesteps", "num_steps"), ">= 1", lambda value: value >= 1)
        check_each(self, ("total_episodes",), ">= 1 or null", lambda value: value is None or value >= 1)
        check_each(self, ("gamma",), "in [0, 1]", lambda value: 0 <= value <= 1)
        check_each(self, ("lr",), "a positive finite number", lambda value: value > 0 and math.isfinite(value))
        check_each(self, ("ent_coef", "vf_coef", "max_grad_norm"), ">= 0", lambda value: value >= 0)
        check_evaluation(self)
        if any(width < 1 for width in self.hidden) or (self.shared and not self.hidden):
            raise ValueError(f"agent.hidden must list positive widths (at least one with shared), "
                             f"got {list(self.hidden)}")


@dataclass
class SyncActorCriticConfig(ActorCriticConfig):
    """ActorCriticConfig and what A2C and PPO add to it: the learner steps one vector env, its advantages
    are GAE(λ)'s, and the critic may learn at a rate of its own."""

    num_envs: Optional[int] = None         # envs stepped together; null: env.num_envs
    vectorization: Optional[Vectorization] = None  # null: env.vectorization
    gae_lambda: float = 1.0
    critic_lr: Optional[float] = None      # null: the critic learns at lr; else at its own rate

    def validate(self):
        super().validate()
        check_each(self, ("num_envs",), ">= 1 or null", lambda value: value is None or value >= 1)
        check_each(self, ("gae_lambda",), "in [0, 1]", lambda value: 0 <= value <= 1)
        check_each(self, ("critic_lr",), "a positive finite number or null",
                   lambda value: value is None or (value > 0 and math.isfinite(value)))


# ----- spaces -----
def distribution_for(action_space, requested="auto", agent="the agent"):
    """"categorical" or "gaussian" for `action_space`; ConfigError when the policy cannot act in it
    or `requested` (a config's `distribution`) does not fit it."""
    if requested not in DISTRIBUTIONS:
        raise ConfigError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {requested!r}")
    if isinstance(action_space, gym.spaces.Discrete):
        natural = "categorical"
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        natural = "gaussian"
    else:
        raise ConfigError(f"{agent} acts in Discrete or 1-D Box action spaces; the env has {action_space}")
    if requested not in ("auto", natural):
        needs = "a Discrete" if requested == "categorical" else "a 1-D Box (continuous)"
        raise ConfigError(f"distribution={requested!r} needs {needs} action space, the env has {action_space}; "
                          f"use distribution=auto or {natural}")
    return natural


def observation_size(observation_space, agent="the agent"):
    if not isinstance(observation_space, gym.spaces.Box) or not observation_space.shape:
        raise ConfigError(f"{agent} needs Box observations (they are flattened), the env has {observation_space}")
    return int(np.prod(observation_space.shape))


def action_size(action_space):
    return int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else int(action_space.shape[0])


# ----- policies -----
class DiagonalNormal:
    """Independent Gaussians over the last axis: log_prob and entropy sum over it."""

    def __init__(self, mean, log_std):
        self.normal = Normal(mean, log_std.exp())

    def sample(self, generator=None):
        return self.normal.sample(generator=generator)

    def log_prob(self, actions):
        return self.normal.log_prob(actions).sum(-1)

    def entropy(self):
        return self.normal.entropy().sum(-1)


class ActorCritic(nn.Module):
    """A policy head and a value head, on two separate MLPs (`shared=False`, SB3's default for PPO
    and A2C) or on one shared trunk (`shared=True`: the hidden layers feed both heads).

    init "orthogonal" (CleanRL / SB3): hidden gain sqrt(2), policy head gain 0.01 (a nearly uniform
    first policy), value head gain 1. forward(obs) returns (policy head output, value of shape (B,)).
    fused: run each MLP as one core.functional.fused_mlp node (tanh and relu nets: the same parameters
    and bitwise the same results, with less bookkeeping per step); fused=False keeps a node per layer.
    """

    def __init__(self, obs_dim, action_dim, distribution="categorical", hidden=(64, 64), activation="tanh",
                 shared=False, init="orthogonal", log_std_init=0.0, generator=None, fused=True):
        super().__init__()
        self.fused = fused and activation in ("tanh", "relu")
        self.activation = activation
        if distribution not in ("categorical", "gaussian"):
            raise ValueError(f"distribution must be 'categorical' or 'gaussian', got {distribution!r}")
        hidden = [int(h) for h in hidden]
        if shared and not hidden:
            raise ValueError("a shared trunk needs at least one hidden layer")
        self.distribution_kind = distribution
        if shared:
            trunk = mlp(obs_dim, hidden[:-1], hidden[-1], activation, init, math.sqrt(2), generator)
            self.trunk = nn.Sequential(*trunk, ACTIVATIONS[activation]())
            self.actor = mlp(hidden[-1], [], action_dim, activation, init, 0.01, generator)
            self.critic = mlp(hidden[-1], [], 1, activation, init, 1.0, generator)
        else:
            self.trunk = None
            self.actor = mlp(obs_dim, hidden, action_dim, activation, init, 0.01, generator)
            self.critic = mlp(obs_dim, hidden, 1, activation, init, 1.0, generator)
        if distribution == "gaussian":
            self.log_std = nn.Parameter(core.full((action_dim,), float(log_std_init)).data)

    def _run(self, net, x, activate_output=False):
        if self.fused:
            return F.fused_mlp(x, linear_params(net), self.activation, activate_output)
        return net(x)

    def _features(self, obs):
        return obs if self.trunk is None else self._run(self.trunk, obs, activate_output=True)

    def forward(self, obs):
        features = self._features(obs)
        return self._run(self.actor, features), self._run(self.critic, features).reshape(-1)

    def policy(self, obs):
        """The policy head alone (acting greedily needs no value)."""
        return self._run(self.actor, self._features(obs))

    def value(self, obs):
        return self._run(self.critic, self._features(obs)).reshape(-1)

    def distribution(self, head):
        if self.distribution_kind == "categorical":
            return Categorical(logits=head)
        return DiagonalNormal(head, self.log_std)

    def act(self, obs, generator):
        """Sampled actions for a batch of observations (an array), with their log-probabilities and
        the values, as arrays; no graph. The categorical case works on raw arrays: acting is the
        per-env-step cost, and it needs none of the distribution object's generality."""
        with core.no_grad():
            head, value = self(as_batch(obs))
            if self.distribution_kind == "gaussian":
                dist = self.distribution(head)
                actions = dist.sample(generator=generator)
                return actions.data, dist.log_prob(actions).data, value.data
            xp = head.xp
            z = head.data - head.data.max(-1, keepdims=True)
            log_probs = z - xp.log(xp.exp(z).sum(-1, keepdims=True))
            actions = (generator or core.default_generator).categorical(log_probs).data
            return actions, xp.take_along_axis(log_probs, actions[:, None], -1)[:, 0], value.data

    def greedy(self, obs):
        """The policy's mode for a batch of observations (an array): argmax or mean; no graph."""
        with core.no_grad():
            head = self.policy(as_batch(obs)).data
        return head.argmax(-1) if self.distribution_kind == "categorical" else head

    def evaluate_actions(self, obs, actions, entropy_grad=True):
        """Differentiable (log π(actions | obs), entropy, V(obs)) for a batch: obs a Tensor, actions
        an array. The categorical case takes one log-softmax and reuses it for both; without
        `entropy_grad` (no entropy bonus) the entropy is a constant, computed off the graph."""
        head, value = self(obs)
        if self.distribution_kind == "gaussian":
            dist = self.distribution(head)
            return dist.log_prob(Tensor._make(actions)), dist.entropy(), value
        log_probs = log_softmax(head, -1)
        chosen = actions[:, None] == head.xp.arange(head.shape[-1])
        if entropy_grad:
            entropy = -(log_probs.exp() * log_probs).sum(-1)
        else:
            entropy = Tensor._make(-(head.xp.exp(log_probs.data) * log_probs.data).sum(-1))
        return where(chosen, log_probs, 0.0).sum(-1), entropy, value


def parameter_groups(model, lr, critic_lr=None):
    """The optimizer's parameter groups: all parameters at `lr`, or with `critic_lr` the critic's in a
    group of its own (what separate actor and critic optimizers do, as some books train them: Adam and
    RMSprop work per element, so only the rates differ)."""
    if critic_lr is None:
        return [{"params": list(model.parameters()), "lr": lr}]
    if model.trunk is not None:
        raise ConfigError("agent.critic_lr needs separate actor and critic networks (agent.shared=false)")
    critic = list(model.critic.parameters())
    in_critic = {id(p) for p in critic}
    return [{"params": [p for p in model.parameters() if id(p) not in in_critic], "lr": lr},
            {"params": critic, "lr": critic_lr}]


def lr_schedule(optimizer, anneal, total):
    """The learning-rate schedule of `optimizer`: with `anneal`, every group's lr falls linearly from its
    configured rate to 0 over `total` scheduler steps (lr·(1 − step/total)), else it stays. Step it once
    per iteration (A2C, PPO), or jump to a position with `step(epoch)` (A3C: env steps so far)."""
    return lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0 if anneal else 1.0, total_iters=total)


def build_model(args, observation_space, action_space, agent, generator=None):
    """The ActorCritic an agent config (`hidden`, `activation`, `init`, `shared`, `distribution`,
    `log_std_init`) describes for these spaces."""
    kind = distribution_for(action_space, args.distribution, agent)
    return ActorCritic(observation_size(observation_space, agent), action_size(action_space), kind,
                       hidden=list(args.hidden), activation=args.activation, shared=args.shared, init=args.init,
                       log_std_init=args.log_std_init, generator=generator)


def as_batch(obs):
    """A float32 (B, obs_dim) Tensor of a batch of observations, without a copy when it already is one."""
    array = get_array_module(obs).asarray(obs, dtype=np.float32)
    return Tensor._make(array.reshape(array.shape[0], -1))


def env_actions(actions, action_space):
    """What the env gets: Gaussian actions clipped to the Box bounds (SB3's behaviour), others unchanged."""
    if isinstance(action_space, gym.spaces.Box):
        xp = get_array_module(actions)
        return xp.clip(actions, xp.asarray(action_space.low), xp.asarray(action_space.high))
    return actions


# ----- environments -----
def make_envs(env_cfg, num_envs, seed, device="cpu", vectorization=None, evaluation=False, **normalization):
    """The vector env of an env config (its wrapper options included), with SAME_STEP autoreset.
    Evaluation envs leave out reward scaling: returns are reported in raw rewards. `normalization`:
    make_vector_env's normalisation keywords (agents.normalization_options)."""
    options = wrapper_options(env_cfg)
    if evaluation:
        options.pop("reward_scale", None)
    return make_vector_env(env_cfg.id, num_envs, seed=seed, vectorization=vectorization or env_cfg.vectorization,
                           device=device, autoreset_mode="same_step",
                           native_dtype=env_cfg.get("native_dtype", "float64"), **normalization, **options)


# ----- evaluation -----
def evaluate(model, envs, greedy=True, generator=None, seed=None, device="cpu"):
    """One episode in every env of the vector env `envs` (reset with `seed`), all stepped together;
    greedy takes the policy's mode, else samples with `generator`. Returns (returns, lengths),
    float64 / int64 numpy arrays of each env's first episode."""
    stepper = VectorStepper(envs)
    stepper.reset(seed=seed)
    env_device = getattr(envs, "device", "cpu")
    xp = get_array_module(stepper.obs)
    returns, lengths = xp.zeros(envs.num_envs), xp.zeros(envs.num_envs, dtype=np.int64)
    running = xp.ones(envs.num_envs, dtype=bool)
    while bool(to_device(running.any(), "cpu")):
        obs = to_device(stepper.obs, device)
        action = model.greedy(obs) if greedy else model.act(obs, generator)[0]
        step = stepper.step(env_actions(to_device(action, env_device), envs.single_action_space))
        counted = running & step.valid
        returns += xp.where(counted, step.reward, 0.0)
        lengths += counted
        running &= ~(step.terminated | step.truncated)
    return to_device(returns, "cpu"), to_device(lengths, "cpu")


# ----- what the agents' train functions share -----
def training_envs(cfg, args, device):
    """The training vector env: the env config, with the agent's `num_envs` / `vectorization` when
    the agent config sets them (a preset like the zoo's names its own env count). The envs live on
    `device` when native, else on the CPU."""
    vectorization = args.vectorization or cfg.env.vectorization
    env_device = device if vectorization == "native" else "cpu"
    return make_envs(cfg.env, args.num_envs or cfg.env.num_envs, cfg.seed, env_device, vectorization,
                     **normalization_options(cfg.env, getattr(args, "gamma", None)))


def evaluation_envs(cfg, args, device, episodes=None, training=None):
    """`episodes` (default cfg.eval_episodes) envs, env k seeded seed + EVAL_SEED_OFFSET + k: with
    gymnasium's envs exactly the episodes scripts/evaluate.py replays. When the `training` envs
    normalise (NormalizeVector), their observation statistics normalise these too, frozen."""
    vectorization = args.vectorization or cfg.env.vectorization
    env_device = device if vectorization == "native" else "cpu"
    envs = make_envs(cfg.env, episodes or cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET, env_device, vectorization,
                     evaluation=True)
    return training.frozen(envs) if isinstance(training, NormalizeVector) else envs


def tracked_normalization(envs):
    """What a session tracks of the training envs' normalisation: {"normalization": envs} when they
    normalise (the statistics go into checkpoints; scripts/evaluate.py reads them), else nothing."""
    return {"normalization": envs} if isinstance(envs, NormalizeVector) else {}


def evaluation_metrics(model, envs, cfg, args, device):
    """Evaluate `model` on `envs` (from `evaluation_envs`): the eval/... metrics."""
    returns, lengths = evaluate(model, envs, greedy=args.eval_greedy, seed=cfg.seed + EVAL_SEED_OFFSET,
                                generator=core.Generator(derive_seed(cfg.seed, "evaluation")), device=device)
    return summarize_returns(returns, lengths)


def log_episodes(run, episodes, step):
    """Mean return and length of `episodes` ((return, length) pairs such as envs.EpisodeStats: those
    that ended since the last call; one point per log line, as a native env ends hundreds of episodes
    per iteration). Returns the mean return or None."""
    if not episodes:
        return None
    returns, lengths = zip(*episodes)
    mean_return = float(np.mean(returns))
    run.logger.scalars({"charts/episodic_return": mean_return, "charts/episodic_length": float(np.mean(lengths))}, step)
    return mean_return


def agent_session(run, cfg, args, name, model, device="cpu", snapshot=False, training=None):
    """The run session of an actor-critic agent (core.runtime.session): `args.total_timesteps` env steps
    and `args.total_episodes`, a checkpoint every `checkpoint_every` env steps (default CHECKPOINT_EVERY),
    greedy evaluation of `model` every `args.eval_every` env steps and at the end (the best one kept
    in best.ckpt, filmed with the run's `capture_video`), a stop at `args.target_return`, the console
    line every `console_every`. `snapshot`: evaluate a copy of the weights taken when the evaluation
    starts (A3C: the workers go on changing the shared ones meanwhile); best.ckpt holds that copy.
    `training`: the training vector env, whose normalisation (if any) the evaluation envs share."""
    eval_envs = evaluation_envs(cfg, args, device, training=training)
    evaluated = model.copy() if snapshot else model

    def evaluate():
        if snapshot:
            evaluated.load_state_dict(model.state_dict())
        return evaluation_metrics(evaluated, eval_envs, cfg, args, device)
    return run.session(name, "env_steps", args.total_timesteps, checkpoint_every=cfg.get("checkpoint_every"),
                       checkpoint_default=CHECKPOINT_EVERY, eval_every=args.eval_every, episodes=args.total_episodes,
                       target=args.target_return, evaluate=evaluate, console_every=cfg.get("console_every"),
                       record=episode_recorder(cfg, make_policy), evaluated={"model": evaluated} if snapshot else None)


def make_policy(cfg, state, env, greedy=True, generator=None):
    """The checkpointed actor-critic's policy as `act(observation) -> action` (the distribution's
    mode when greedy, else a sample drawn with `generator`)."""
    model = build_model(cfg.agent, env.observation_space, env.action_space, "the policy")
    model.load_state_dict(state["model"])
    discrete = isinstance(env.action_space, gym.spaces.Discrete)

    def act(obs):
        batch = np.asarray(obs)[None]
        action = (model.greedy(batch) if greedy else model.act(batch, generator)[0])[0]
        return int(action) if discrete else env_actions(action, env.action_space)
    return act
