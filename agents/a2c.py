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
Logged about every 1000 env steps: losses/{policy_loss, value_loss, entropy, explained_variance},
charts/{learning_rate, SPS, episodic_return, episodic_length}.

Envs, evaluation (`eval_every` env steps, `target_return`), checkpoints (every `checkpoint_every`
env steps, default 100,000) and resume (bitwise exact on CPU) work as in agents/ppo.py (see there).
"""
import math
from dataclasses import dataclass

import core.functional as F
from agents import check_each, with_one_blas_thread
from agents.actor_critic import (Optimizer, SyncActorCriticConfig, agent_session, log_episodes, lr_schedule,
                                 make_policy, parameter_groups, tracked_normalization)
from agents.rollout import (collect_rollout, compute_gae, explained_variance, normalize, start_rollouts,
                            valid_indices)
from core import optim
from core.runtime.config import config_object
from core.tensor import Tensor

__all__ = ["Config", "train", "make_policy"]
NORMALIZES_ENVS = True  # env.normalize_obs / normalize_reward (agents/__init__.py)


@dataclass
class Config(SyncActorCriticConfig):
    """A2C's settings: Stable-Baselines3's defaults (conf/tuned/a2c_<env>.yaml: the zoo's per env)."""

    # besides these, the fields of agents/actor_critic.py (documented there) that PPO has too:
    # SyncActorCriticConfig's num_envs, vectorization, gae_lambda, critic_lr, and ActorCriticConfig's (A3C's too)
    # total_timesteps, total_episodes, num_steps, gamma, lr, anneal_lr, ent_coef, vf_coef, max_grad_norm,
    # normalize_advantage, hidden, activation, init, shared, distribution, log_std_init, eval_every,
    # target_return, eval_greedy
    optimizer: Optimizer = Optimizer.rmsprop
    rms_prop_eps: float = 1e-5             # eps of RMSprop (and of Adam)

    def validate(self):
        super().validate()
        check_each(self, ("rms_prop_eps",), "> 0", lambda value: value > 0)


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


@with_one_blas_thread
def train(cfg, run):
    args = config_object(Config, cfg.agent)  # plain attribute reads in the hot loop
    device = run.device
    model, stepper, buffer, action_generator = start_rollouts(cfg, args, device, "A2C")
    params = list(model.parameters())
    optimizer = make_optimizer(args, model)
    scheduler = lr_schedule(optimizer, args.anneal_lr, math.ceil(args.total_timesteps / buffer.size))
    log_every = max(1, 1000 // buffer.size)  # A2C's iterations are tiny: log about every 1000 steps

    session = agent_session(run, cfg, args, "a2c", model, device, training=stepper.envs)
    session.track(model=model, optimizer=optimizer, scheduler=scheduler, action_generator=action_generator,
                  stepper=stepper, **tracked_normalization(stepper.envs))
    unlogged = session.extra.setdefault("unlogged_episodes", [])  # (return, length) of those ended since the last log
    while session.running():
        lr = scheduler.get_last_lr()[0]
        finished = collect_rollout(stepper, model, buffer, action_generator, device)
        unlogged += [list(episode) for episode in finished]
        advantages, returns = compute_gae(buffer.rewards, buffer.values, buffer.next_values, buffer.terminated,
                                          buffer.truncated, args.gamma, args.gae_lambda)
        loss, parts = a2c_loss(model, buffer, advantages, returns, args)
        session.check_finite("losses/loss", loss)  # before the update touches the weights
        optimizer.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            optim.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        scheduler.step()

        step = session.progress + buffer.size
        if (session.iterations + 1) % log_every == 0 or step >= args.total_timesteps:
            mean_return = log_episodes(run, unlogged, step)
            unlogged.clear()
            session.log({f"losses/{name}": value for name, value in parts.items()}, step)
            session.log({"losses/explained_variance": explained_variance(buffer.values, returns),
                         "charts/learning_rate": lr, "charts/SPS": session.sps()}, step)
            run.log_histograms(model, step)
            if mean_return is not None:
                session.show(ret=mean_return)
        session.advance(buffer.size, episodes=finished)
    return session.finish()
