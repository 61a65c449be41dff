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

The budget is `total_timesteps` env steps: training stops at the first batch boundary past it.
Checkpoints are written every `checkpoint_every` iterations (0: only at the end), on Ctrl-C, and at
the end, always at a batch boundary, where no episode is in flight. The envs are reset at every
batch with seeds drawn from the run's seeded generator, whose state is checkpointed with the
networks, the optimizers and every random generator, so a resumed run ends bitwise identical to
an uninterrupted one (CPU).

Evaluation at the end: `cfg.eval_episodes` episodes on a fresh env seeded `seed + 10_000 + k`,
with the greedy action (argmax of the logits) when `eval_greedy`, else sampled from the policy.
`cfg.env.num_envs` is not used: the batch size in episodes is `episodes_per_batch`.
"""
import time
from dataclasses import dataclass, field
from typing import List

import gymnasium as gym
import numpy as np

import core
import core.functional as F
from agents import EVAL_SEED_OFFSET, evaluate_policy, summarize_returns, wrapper_options
from agents.networks import ACTIVATIONS, INITS, mlp
from core import optim
from core.distributions import Categorical
from core.runtime.run import ConfigError, get_rng_state, set_rng_state
from envs import factory

BASELINES = ("none", "mean", "value")


@dataclass
class Config:
    total_timesteps: int = 100_000  # env steps
    episodes_per_batch: int = 8     # complete episodes per gradient step
    gamma: float = 0.99
    lr: float = 0.01                # policy Adam learning rate
    hidden: List[int] = field(default_factory=lambda: [32])
    activation: str = "tanh"
    init: str = "torch"             # see agents.networks
    normalize_returns: bool = True
    baseline: str = "none"          # none | mean | value
    value_lr: float = 0.01          # value-net Adam learning rate (baseline: value)
    ent_coef: float = 0.0
    max_grad_norm: float = 0.0      # global-norm gradient clipping; 0: none
    eval_greedy: bool = True

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
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"agent.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.init not in INITS:
            raise ValueError(f"agent.init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"agent.baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.ent_coef < 0 or self.max_grad_norm < 0:
            raise ValueError("agent.ent_coef and agent.max_grad_norm must be >= 0")


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
    value_net = build_network(args, envs[0], 1).to(device) if args.baseline == "value" else None
    optimizer = optim.Adam(policy.parameters(), lr=args.lr)
    value_optimizer = optim.Adam(value_net.parameters(), lr=args.value_lr) if value_net is not None else None
    action_generator = core.Generator(cfg.seed)
    env_seeds = np.random.default_rng(cfg.seed)  # the envs' reset seeds, batch after batch
    iteration = global_step = episodes = 0
    wall_before = 0.0  # wall time of the run before a resume

    if run.resume_state is not None:
        state = run.resume_state
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        if value_net is not None:
            value_net.load_state_dict(state["value"])
            value_optimizer.load_state_dict(state["value_optimizer"])
        action_generator.set_state(state["action_generator"])
        env_seeds.bit_generator.state = state["env_seeds"]
        set_rng_state(state["rng"])
        iteration, global_step, episodes = state["iteration"], state["global_step"], state["episodes"]
        wall_before = state["wall_s"]

    start, start_step = time.perf_counter(), global_step
    saved_iteration = None

    def checkpoint():
        nonlocal saved_iteration
        run.checkpoints.save({
            "policy": policy.state_dict(), "optimizer": optimizer.state_dict(),
            "value": value_net.state_dict() if value_net is not None else None,
            "value_optimizer": value_optimizer.state_dict() if value_net is not None else None,
            "action_generator": action_generator.get_state(), "env_seeds": env_seeds.bit_generator.state,
            "rng": get_rng_state(), "iteration": iteration, "global_step": global_step, "episodes": episodes,
            "wall_s": wall_before + time.perf_counter() - start,
        }, iteration)
        saved_iteration = iteration

    bar = run.logger.progress(args.total_timesteps, "reinforce")
    bar.update(min(global_step, args.total_timesteps))
    while global_step < args.total_timesteps and not run.should_stop():
        seeds = env_seeds.integers(2**31, size=len(envs))
        trajectories = play_episodes(envs, seeds, policy, encode, action_generator, device)
        rewards = [t["rewards"] for t in trajectories]
        lengths = [len(r) for r in rewards]
        # in lockstep, when episode i ends every env has taken min(length_j, length_i) steps
        ends = [global_step + sum(min(other, length) for other in lengths) for length in lengths]
        for end, trajectory in sorted(zip(ends, trajectories), key=lambda pair: pair[0]):
            run.logger.scalar("charts/episodic_return", trajectory["return"], end)
            run.logger.scalar("charts/episodic_length", len(trajectory["rewards"]), end)
        global_step += sum(lengths)
        episodes += len(lengths)

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
        run.check_finite("losses/policy_loss", loss, global_step)  # before any update touches the weights
        if value_net is not None:
            run.check_finite("losses/value_loss", value_loss, global_step)

        optimizer.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            optim.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
        optimizer.step()
        if value_net is not None:
            value_optimizer.zero_grad()
            value_loss.backward()
            value_optimizer.step()
            run.logger.scalar("losses/value_loss", value_loss, global_step)
        iteration += 1

        batch_return = float(np.mean([t["return"] for t in trajectories]))
        sps = (global_step - start_step) / (time.perf_counter() - start)
        run.logger.scalars({"losses/policy_loss": policy_loss, "losses/entropy": entropy,
                            "charts/learning_rate": args.lr, "charts/SPS": sps}, global_step)
        run.log_histograms(policy, global_step, prefix="policy/")
        bar.update(min(global_step, args.total_timesteps) - bar.n)
        bar.set_postfix(ret=batch_return, it=iteration)
        if cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0:
            checkpoint()
    bar.close()
    if saved_iteration != iteration:
        checkpoint()
    metrics = {"train/env_steps": global_step, "train/episodes": episodes, "train/iterations": iteration,
               "time/wall_s": wall_before + time.perf_counter() - start}
    if run.should_stop():
        return metrics

    eval_env = make_env(cfg.env)
    act = make_policy(cfg, {"policy": policy.state_dict()}, eval_env, greedy=args.eval_greedy,
                      generator=core.Generator(cfg.seed + EVAL_SEED_OFFSET))
    result = evaluate_policy(eval_env, act, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
    metrics.update(summarize_returns(result["returns"], result["lengths"]))
    run.logger.scalars({k: v for k, v in metrics.items() if k.startswith("eval/")}, global_step)
    return metrics
