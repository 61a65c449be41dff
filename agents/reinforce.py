"""REINFORCE: Monte-Carlo policy gradient (Williams 1992), CleanRL-style in one file.

    python scripts/train.py agent=reinforce env=cartpole

Each iteration plays `episodes_per_batch` complete episodes with the current stochastic policy, one
env copy per episode stepped in lockstep (one batched policy forward per step), then makes one
gradient step on

    loss = −mean over all steps t of the batch [ log π(a_t | s_t) · A_t ]  (− ent_coef · entropy)

where A_t is built from the discounted return G_t = Σ_k γ^k r_{t+k} of the step's own episode:
- normalize_returns (Géron's discount-and-normalise): G is standardised with the mean and the
  population std over all steps of the batch;
- baseline "mean": A = G − mean(G) over the batch; "value": A = G − V(s_t) with a learned value
  net V (its own Adam, fitted to G by MSE; V sees the normalised G when normalize_returns is on);
  "none": A = G.
A truncated episode (CartPole-v1's 500-step limit) is treated like a terminated one: its return
is what it collected, nothing is bootstrapped.

The session counts env steps (core/runtime/session.py): the budget is `total_timesteps` env steps,
and training stops at the first batch boundary past it. Checkpoints are written every
`checkpoint_every` env steps (default 50,000, about 100 batches of mid-length CartPole episodes;
0: only at the end), on Ctrl-C, and at the end, always at a batch boundary, where no episode is in
flight. The envs are reset at every batch with seeds drawn from the run's seeded generator, whose
state is checkpointed with the networks (`policy`, `value`), the optimizers and every random
generator, so a resumed run ends bitwise identical to an uninterrupted one (CPU).

Evaluation: `cfg.eval_episodes` episodes on a fresh env seeded `seed + 10_000 + k`, with the greedy
action (argmax of the logits) when `eval_greedy`, else sampled from the policy, at the end and at
the first batch boundary past every `eval_every` env steps (default: about 10 per run; the best
policy in best.ckpt); `target_return` stops training at the first evaluation that reaches it.
`cfg.env.num_envs` is not used: the batch size in episodes is `episodes_per_batch`.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import gymnasium as gym
import numpy as np

import core
import core.functional as F
from agents import (EVAL_SEED_OFFSET, check_evaluation, episode_recorder, evaluate_policy, summarize_returns,
                    wrapper_options)
from agents.networks import Activation, Init, mlp
from core import optim
from core.distributions import Categorical
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError
from envs import factory

Baseline = Choice("Baseline", "none mean value")  # the config's type
CHECKPOINT_EVERY = 50_000  # env steps between checkpoints unless the run's checkpoint_every says otherwise


@dataclass
class Config:
    total_timesteps: int = 100_000  # env steps
    episodes_per_batch: int = 8     # complete episodes per gradient step
    gamma: float = 0.99
    lr: float = 0.01                # policy Adam learning rate
    hidden: List[int] = field(default_factory=lambda: [32])
    activation: Activation = Activation.tanh
    init: Init = Init.torch         # see agents.networks
    normalize_returns: bool = True
    baseline: Baseline = Baseline.none
    value_lr: float = 0.01          # value-net Adam learning rate (baseline: value)
    ent_coef: float = 0.0
    max_grad_norm: float = 0.0      # global-norm gradient clipping; 0: none
    eval_greedy: bool = True
    eval_every: Optional[int] = None  # env steps between evaluations; null: about 10 per run; 0: only at the end
    target_return: Optional[float] = None  # stop at the first evaluation whose mean return reaches it

    def validate(self):
        if self.total_timesteps < 1:
            raise ValueError(f"agent.total_timesteps must be >= 1, got {self.total_timesteps}")
        if self.episodes_per_batch < 1:
            raise ValueError(f"agent.episodes_per_batch must be >= 1, got {self.episodes_per_batch}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"agent.gamma must be in [0, 1], got {self.gamma}")
        for name in ("lr", "value_lr"):
            value = getattr(self, name)
            if not (value > 0 and np.isfinite(value)):
                raise ValueError(f"agent.{name} must be a positive finite number, got {value}")
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"agent.hidden must list positive layer widths, got {list(self.hidden)}")
        if self.ent_coef < 0 or self.max_grad_norm < 0:
            raise ValueError("agent.ent_coef and agent.max_grad_norm must be >= 0")
        check_evaluation(self)


# ----- returns (HOML ch. 18) -----
def discount_rewards(rewards, gamma):
    """G_t = r_t + γ·G_{t+1}, computed backwards (float64)."""
    returns = np.zeros(len(rewards))
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def discount_and_normalize_rewards(all_rewards, gamma):
    """Discounted returns of each episode, standardised over all steps of all episodes together."""
    all_returns = [discount_rewards(rewards, gamma) for rewards in all_rewards]
    flat = np.concatenate(all_returns)
    mean, std = flat.mean(), flat.std()
    std = std if std > 0 else 1.0  # identical returns: nothing to prefer, all advantages 0
    return [(returns - mean) / std for returns in all_returns]


# ----- environments and policy -----
def make_env(env_cfg, render_mode=None):
    env = factory.make_env(env_cfg.id, render_mode=render_mode, **wrapper_options(env_cfg))
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ConfigError(f"REINFORCE needs a discrete action space; {env_cfg.id} has {env.action_space}")
    if env.spec.max_episode_steps is None:  # a continuing task (bandit, Géron's MDP) never ends an episode
        raise ConfigError(f"REINFORCE learns from complete episodes, but {env_cfg.id} has no time limit; "
                          "set env.max_episode_steps")
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Discrete) or (isinstance(space, gym.spaces.Box) and space.shape)):
        raise ConfigError(f"REINFORCE needs Box or Discrete observations; {env_cfg.id} has {space}")
    masks = getattr(env.unwrapped, "action_masks", None)  # the toy MDPs' allowed actions, state by state
    if masks is not None and not np.all(masks):
        raise ConfigError(f"REINFORCE samples from all actions, but {env_cfg.id} forbids some in some states "
                          "(info['action_mask'])")
    return env


def observation_encoder(space):
    """(input size, function mapping a list of observations to a float32 batch): Box observations
    are flattened, Discrete ones one-hot encoded."""
    if isinstance(space, gym.spaces.Discrete):
        eye = np.eye(space.n, dtype=np.float32)
        return space.n, lambda observations: eye[np.asarray(observations) - space.start]
    size = int(np.prod(space.shape))
    return size, lambda observations: np.asarray(observations, dtype=np.float32).reshape(len(observations), size)


def build_network(args, env, out_dim, out_gain=1.0):
    obs_dim, _ = observation_encoder(env.observation_space)
    return mlp(obs_dim, args.hidden, out_dim, args.activation, args.init, out_gain)


def build_policy(args, env):
    # orthogonal init: a small output gain makes the first policy nearly uniform (CleanRL's actor)
    return build_network(args, env, int(env.action_space.n), out_gain=0.01 if args.init == "orthogonal" else 1.0)


def make_policy(cfg, state, env, greedy=True, generator=None):
    """The checkpointed policy as `act(observation) -> action` (argmax when greedy, else sampled
    with `generator`)."""
    policy = build_policy(cfg.agent, env)
    policy.load_state_dict(state["policy"])
    encode = observation_encoder(env.observation_space)[1]

    def act(obs):
        with core.no_grad():
            logits = policy(core.tensor(encode([obs])))
        action = logits.argmax(-1) if greedy else Categorical(logits=logits).sample(generator=generator)
        return int(action.numpy()[0])
    return act


def play_episodes(envs, seeds, policy, encode, generator, device):
    """One complete episode on each env, all stepped together: per episode, its lists of
    observations, actions and rewards, and its raw return (before any reward scaling)."""
    observations = [env.reset(seed=int(seed))[0] for env, seed in zip(envs, seeds)]
    trajectories = [{"obs": [], "actions": [], "rewards": [], "return": None} for _ in envs]
    active = list(range(len(envs)))
    while active:
        with core.no_grad():
            logits = policy(core.tensor(encode([observations[i] for i in active]), device=device))
            actions = Categorical(logits=logits).sample(generator=generator).numpy()
        still_active = []
        for i, action in zip(active, actions.tolist()):
            trajectory = trajectories[i]
            trajectory["obs"].append(observations[i])
            trajectory["actions"].append(action)
            observations[i], reward, terminated, truncated, info = envs[i].step(action)
            trajectory["rewards"].append(float(reward))
            if terminated or truncated:
                trajectory["return"] = float(info["episode"]["r"])  # envs.factory's RecordEpisodeStatistics
            else:
                still_active.append(i)
        active = still_active
    return trajectories


def train(cfg, run):
    args = cfg.agent
    device = run.device
    core.manual_seed(cfg.seed)
    envs = [make_env(cfg.env) for _ in range(args.episodes_per_batch)]
    encode = observation_encoder(envs[0].observation_space)[1]
    policy = build_policy(args, envs[0]).to(device)
    optimizer = optim.Adam(policy.parameters(), lr=args.lr)
    action_generator = core.Generator(cfg.seed)
    env_seeds = np.random.default_rng(cfg.seed)  # the envs' reset seeds, batch after batch
    tracked = {"policy": policy, "optimizer": optimizer, "action_generator": action_generator, "env_seeds": env_seeds}
    if args.baseline == "value":
        value_net = build_network(args, envs[0], 1).to(device)
        value_optimizer = optim.Adam(value_net.parameters(), lr=args.value_lr)
        tracked.update(value=value_net, value_optimizer=value_optimizer)

    def evaluate():
        eval_env = make_env(cfg.env)
        act = make_policy(cfg, {"policy": policy.state_dict()}, eval_env, greedy=args.eval_greedy,
                          generator=core.Generator(cfg.seed + EVAL_SEED_OFFSET))
        result = evaluate_policy(eval_env, act, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
        return summarize_returns(result["returns"], result["lengths"])

    session = run.session("reinforce", "env_steps", args.total_timesteps, checkpoint_every=cfg.get("checkpoint_every"),
                          checkpoint_default=CHECKPOINT_EVERY, evaluate=evaluate, eval_every=args.eval_every,
                          target=args.target_return, console_every=cfg.get("console_every"),
                          record=episode_recorder(cfg, make_policy, make_env))
    session.track(**tracked)
    while session.running():
        seeds = env_seeds.integers(2**31, size=len(envs))
        trajectories = play_episodes(envs, seeds, policy, encode, action_generator, device)
        rewards = [t["rewards"] for t in trajectories]
        lengths = [len(r) for r in rewards]
        step = session.progress + sum(lengths)
        # in lockstep, when episode i ends every env has taken min(length_j, length_i) steps
        ends = [session.progress + sum(min(other, length) for other in lengths) for length in lengths]
        for end, trajectory in sorted(zip(ends, trajectories), key=lambda pair: pair[0]):
            session.log({"charts/episodic_return": trajectory["return"],
                         "charts/episodic_length": len(trajectory["rewards"])}, end)

        if args.normalize_returns:
            returns = np.concatenate(discount_and_normalize_rewards(rewards, args.gamma))
        else:
            returns = np.concatenate([discount_rewards(r, args.gamma) for r in rewards])
        obs = core.tensor(encode([o for t in trajectories for o in t["obs"]]), device=device)
        actions = core.tensor(np.array([a for t in trajectories for a in t["actions"]]), device=device)
        returns = core.tensor(returns.astype(np.float32), device=device)

        dist = Categorical(logits=policy(obs))
        if args.baseline == "value":
            values = value_net(obs).reshape(-1)
            advantages = returns - values.detach()
            value_loss = F.mse_loss(values, returns)
        elif args.baseline == "mean":
            advantages = returns - returns.mean()
        else:
            advantages = returns
        policy_loss = -(dist.log_prob(actions) * advantages).mean()
        entropy = dist.entropy().mean()
        loss = policy_loss - args.ent_coef * entropy
        session.check_finite("losses/policy_loss", loss)  # before any update touches the weights
        if args.baseline == "value":
            session.check_finite("losses/value_loss", value_loss)

        optimizer.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            optim.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
        optimizer.step()
        if args.baseline == "value":
            value_optimizer.zero_grad()
            value_loss.backward()
            value_optimizer.step()
            session.log({"losses/value_loss": value_loss}, step)

        session.log({"losses/policy_loss": policy_loss, "losses/entropy": entropy, "charts/learning_rate": args.lr,
                     "charts/SPS": session.sps()}, step)
        run.log_histograms(policy, step, prefix="policy/")
        session.show(ret=float(np.mean([t["return"] for t in trajectories])), it=session.iterations + 1)
        session.advance(sum(lengths), episodes=[(t["return"], len(t["rewards"])) for t in trajectories])
    return session.finish()
