"""A2C: synchronous advantage actor-critic (Mnih et al. 2016, the synchronous variant), CleanRL-style.

    python scripts/train.py agent=a2c env=cartpole    # rl-baselines3-zoo's CartPole-v1 settings

Each iteration collects `num_steps` steps from each of the `num_envs` envs with the current
stochastic policy (agents/actor_critic.py: collect_rollout) and makes ONE gradient step on

    A      = GAE(λ) advantages (λ = 1, SB3's default: the n-step bootstrapped return minus V(s))
    policy = −mean(Â · log π(a|s))        Â = A, standardised over the rollout with normalize_advantage
    value  = mean((V(s) − R)²)            R = A + V(s) (the n-step return)
    loss   = policy − ent_coef·entropy + vf_coef·value

with RMSprop (PyTorch's form, alpha 0.99, eps `rms_prop_eps`: SB3's A2C) or Adam, and global-norm
gradient clipping at `max_grad_norm`. Truncated episodes bootstrap from the value of their true
final observation; terminated ones do not. `anneal_lr` decays the learning rate linearly to 0
(core.optim.lr_scheduler). A3C (agents/a3c.py) computes its gradients with this loss too.

Envs, evaluation, checkpoints and resume work as in agents/ppo.py (see there).
"""
import math
import time
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import OmegaConf

import core
import core.functional as F
from agents.actor_critic import (RolloutBuffer, build_model, check_actor_critic_config, check_each, collect_rollout,
                                 compute_gae, derive_seed, evaluation_envs, evaluation_metrics, explained_variance,
                                 log_episodes, lr_schedule, make_policy, normalize, one_blas_thread,
                                 parameter_groups, training_envs, valid_indices)
from core import optim
from core.runtime.run import get_rng_state, set_rng_state
from core.tensor import Tensor
from envs import EpisodeStats, VectorStepper

__all__ = ["Config", "train", "make_policy"]
OPTIMIZERS = ("rmsprop", "adam")


@dataclass
class Config:
    # defaults are Stable-Baselines3's A2C; conf/agent/a2c.yaml holds the zoo's CartPole-v1 values
    total_timesteps: int = 1_000_000
    total_episodes: Optional[int] = None   # also stop after this many training episodes (books count episodes)
    num_envs: Optional[int] = None         # envs stepped together; null: env.num_envs
    vectorization: Optional[str] = None    # sync | async | native; null: env.vectorization
    num_steps: int = 5                     # steps per env per update (SB3's n_steps)
    gamma: float = 0.99
    gae_lambda: float = 1.0
    lr: float = 7e-4
    critic_lr: Optional[float] = None      # null: the critic learns at lr; else at its own rate
    anneal_lr: bool = False
    optimizer: str = "rmsprop"             # rmsprop | adam
    rms_prop_eps: float = 1e-5             # eps of RMSprop (and of Adam)
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5             # 0: no clipping
    normalize_advantage: bool = False
    hidden: List[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    init: str = "orthogonal"
    shared: bool = False
    distribution: str = "auto"             # auto | categorical | gaussian
    log_std_init: float = 0.0
    eval_greedy: bool = True

    def validate(self):
        check_actor_critic_config(self)
        if self.num_envs is not None and self.num_envs < 1:
            raise ValueError(f"agent.num_envs must be >= 1 or null, got {self.num_envs}")
        if self.vectorization not in (None, "sync", "async", "native"):
            raise ValueError(f"agent.vectorization must be sync, async, native or null, got {self.vectorization!r}")
        check_each(self, ("gamma", "gae_lambda"), "in [0, 1]", lambda value: 0 <= value <= 1)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"agent.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        check_each(self, ("rms_prop_eps",), "> 0", lambda value: value > 0)
        check_each(self, ("critic_lr",), "a positive finite number or null",
                   lambda value: value is None or (value > 0 and math.isfinite(value)))


def make_optimizer(args, model):
    """RMSprop (alpha 0.99) or Adam, both with eps `rms_prop_eps`, as SB3's A2C."""
    return optim.create(parameter_groups(model, args.lr, args.critic_lr), args.optimizer, lr=args.lr,
                        eps=args.rms_prop_eps)


def a2c_loss(model, buffer, advantages, returns, args):
    """The A2C loss of a rollout and its parts (Tensors), over the steps that are transitions."""
    obs = buffer.obs.reshape(-1, *buffer.obs.shape[2:])
    actions = buffer.actions.reshape(-1, *buffer.actions.shape[2:])
    advantages, returns = advantages.reshape(-1), returns.reshape(-1)
    keep = valid_indices(buffer)
    if keep is not None:
        obs, actions, advantages, returns = obs[keep], actions[keep], advantages[keep], returns[keep]
    if args.normalize_advantage:
        advantages = normalize(advantages)
    logprobs, entropy, values = model.evaluate_actions(Tensor._make(obs), actions, entropy_grad=args.ent_coef > 0)
    policy_loss = -(logprobs * Tensor._make(advantages)).mean()
    value_loss = F.mse_loss(values, Tensor._make(returns))
    entropy = entropy.mean()
    loss = policy_loss + args.vf_coef * value_loss
    if args.ent_coef:
        loss = loss - args.ent_coef * entropy
    return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def train(cfg, run):
    with one_blas_thread():
        return _train(cfg, run)


def _train(cfg, run):
    args = OmegaConf.to_object(cfg.agent)  # the Config dataclass: plain attribute reads in the hot loop
    device = run.device
    core.manual_seed(cfg.seed)
    envs = training_envs(cfg, args, device)
    rollout_size = args.num_steps * envs.num_envs
    model = build_model(args, envs.single_observation_space, envs.single_action_space, "A2C",
                        core.Generator(derive_seed(cfg.seed, "init"))).to(device)
    params = list(model.parameters())
    optimizer = make_optimizer(args, model)
    action_generator = core.Generator(derive_seed(cfg.seed, "actions"))
    stepper = VectorStepper(envs)
    stepper.reset(seed=cfg.seed)
    buffer = RolloutBuffer(args.num_steps, envs, device)
    num_iterations = math.ceil(args.total_timesteps / rollout_size)
    scheduler = lr_schedule(optimizer, args.anneal_lr, num_iterations)
    iteration = global_step = episodes = 0
    wall_before = 0.0
    finished = []  # episodes that ended since the last log line

    if run.resume_state is not None:
        state = run.resume_state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        action_generator.set_state(state["action_generator"])
        stepper.load_state_dict(state["stepper"])
        set_rng_state(state["rng"])
        iteration, global_step, episodes = state["iteration"], state["global_step"], state["episodes"]
        wall_before = state["wall_s"]
        finished = [EpisodeStats(*episode) for episode in state["unlogged_episodes"]]

    start, start_step = time.perf_counter(), global_step
    saved_iteration = None

    def wall():
        return wall_before + time.perf_counter() - start

    def checkpoint():
        nonlocal saved_iteration
        run.checkpoints.save({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "action_generator": action_generator.get_state(), "stepper": stepper.state_dict(),
            "rng": get_rng_state(), "iteration": iteration, "global_step": global_step, "episodes": episodes,
            "wall_s": wall(), "unlogged_episodes": [list(episode) for episode in finished],
        }, iteration)
        saved_iteration = iteration

    log_every = max(1, 1000 // rollout_size)  # A2C's iterations are tiny: log about every 1000 steps
    bar = run.logger.progress(num_iterations * rollout_size, "a2c")
    bar.update(global_step)
    episode_budget = args.total_episodes if args.total_episodes is not None else math.inf
    while iteration < num_iterations and episodes < episode_budget and not run.should_stop():
        lr = scheduler.get_last_lr()[0]

        ended = collect_rollout(stepper, model, buffer, action_generator, device)
        finished += ended
        episodes += len(ended)
        global_step += rollout_size
        advantages, returns = compute_gae(buffer.rewards, buffer.values, buffer.next_values, buffer.terminated,
                                          buffer.truncated, args.gamma, args.gae_lambda)
        loss, parts = a2c_loss(model, buffer, advantages, returns, args)
        run.check_finite("losses/loss", loss, global_step)  # before the update touches the weights
        optimizer.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            optim.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        iteration += 1

        if iteration % log_every == 0 or iteration == num_iterations:
            mean_return = log_episodes(run, finished, global_step)
            finished = []
            run.logger.scalars({f"losses/{name}": value for name, value in parts.items()}, global_step)
            run.logger.scalars({
                "losses/explained_variance": explained_variance(buffer.values, returns),
                "charts/learning_rate": lr,
                "charts/SPS": (global_step - start_step) / (time.perf_counter() - start)}, global_step)
            run.log_histograms(model, global_step)
            bar.update(global_step - bar.n)
            if mean_return is not None:
                bar.set_postfix(ret=mean_return)
        if cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0:
            checkpoint()
    bar.close()
    if saved_iteration != iteration:
        checkpoint()
    metrics = {"train/env_steps": global_step, "train/episodes": episodes, "train/iterations": iteration,
               "time/wall_s": wall()}
    if run.should_stop():
        return metrics
    metrics.update(evaluation_metrics(model, evaluation_envs(cfg, args, device), cfg, args, device))
    run.logger.scalars({k: v for k, v in metrics.items() if k.startswith("eval/")}, global_step)
    return metrics
