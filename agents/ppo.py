"""PPO with the clipped surrogate objective (Schulman et al. 2017), CleanRL-style in one file.

    python scripts/train.py agent=ppo env=cartpole          # rl-baselines3-zoo's tuned CartPole-v1 settings
    python scripts/train.py agent=ppo_native env=cartpole   # the lab's fastest preset (native vectorized CartPole)

Each iteration collects `num_steps` steps from each of the `num_envs` envs with the current
stochastic policy (agents/rollout.py: collect_rollout), computes GAE(λ) advantages and
λ-returns, then makes `n_epochs` passes over the rollout in shuffled minibatches of `batch_size`,
minimising (SB3's form of the loss, which the zoo's settings were tuned for)

    ratio  = π(a|s) / π_old(a|s)                Â = advantage, standardised per minibatch
    policy = mean(max(−Â·ratio, −Â·clip(ratio, 1 − ε, 1 + ε)))
    value  = mean((V(s) − R)²); with clip_range_vf the pessimistic max of that and the loss of
             V_old + clip(V − V_old, ±clip_range_vf) (the PPO paper's code; SB3 keeps only the clipped one)
    loss   = policy − ent_coef·entropy + vf_coef·value

with Adam (eps `adam_eps`) and global-norm gradient clipping at `max_grad_norm`. The loss is
core.functional.ppo_loss; a categorical policy on fused networks uses its fused form
(core.functional.fused_categorical_ppo_loss: the same loss and gradient as one graph node), because on
CartPole-sized minibatches the per-node bookkeeping costs more than the arithmetic. When one minibatch
is the whole rollout it is not shuffled (the loss is a mean: order does not matter).
Schedules: `anneal_lr` / `anneal_clip` make the learning rate and ε fall linearly to 0 (the zoo's
lin_1e-3 and lin_0.2): iteration i of n uses lr·(1 − i/n) (the lr through core.optim.lr_scheduler).
`target_kl`: the epochs of an iteration stop at the first minibatch whose approx-KL exceeds
1.5·target_kl, before its update (SB3's rule).
Logged per iteration: losses/{policy_loss, value_loss, entropy, approx_kl, old_approx_kl, clipfrac,
explained_variance}, charts/{learning_rate, clip_range, SPS, episodic_return, episodic_length}.

Envs: `num_envs` and `vectorization` of the agent config, when set, override the env config's,
so a preset fixes its own env count. Gymnasium's vector envs and the native vectorized ones
(CartPole, Acrobot; numpy, or cupy with device=cuda) both work, always with SAME_STEP autoreset.
Evaluation: greedy (the policy's mode) on `cfg.eval_episodes` envs at the end; with `eval_every`
also every that many env steps, and with `target_return` training stops at the first evaluation
whose mean return reaches it (metrics time/to_target_s and train/to_target_steps).
Checkpoints every `checkpoint_every` env steps (default 100,000), on Ctrl-C and at the end; resume is bitwise exact
on CPU (model, optimizer, random streams, envs and the rollout position are all saved).
"""
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

import core.functional as F
from agents import check_each, derive_seed, with_one_blas_thread
from agents.actor_critic import (SyncActorCriticConfig, agent_session, log_episodes, lr_schedule, make_policy,
                                 parameter_groups, tracked_normalization)
from agents.rollout import (collect_rollout, compute_gae, explained_variance, normalize, start_rollouts,
                            valid_indices)
from core import optim
from core.backend import get_array_module, to_device
from core.runtime.config import config_object
from core.runtime.errors import ConfigError
from core.tensor import Tensor

__all__ = ["Config", "train", "make_policy", "ppo_update", "ppo_loss", "fused_ppo_loss"]
NORMALIZES_ENVS = True  # env.normalize_obs / normalize_reward (agents/__init__.py)


@dataclass
class Config(SyncActorCriticConfig):
    """PPO's settings: Stable-Baselines3's defaults (conf/tuned/ppo_<env>.yaml: the zoo's per env)."""

    # besides these, the fields of agents/actor_critic.py (documented there) that A2C has too:
    # SyncActorCriticConfig's num_envs, vectorization, gae_lambda, critic_lr, and ActorCriticConfig's (A3C's too)
    # total_timesteps, total_episodes, num_steps, gamma, lr, anneal_lr, ent_coef, vf_coef, max_grad_norm,
    # normalize_advantage, hidden, activation, init, shared, distribution, log_std_init, eval_every,
    # target_return, eval_greedy; PPO's own defaults of some of them come first
    num_steps: int = 2048                  # steps per env per rollout (SB3's n_steps)
    lr: float = 3e-4
    normalize_advantage: bool = True
    gae_lambda: float = 0.95
    batch_size: int = 64                   # minibatch size
    n_epochs: int = 10
    clip_range: float = 0.2
    anneal_clip: bool = False              # linear decay to 0
    clip_range_vf: Optional[float] = None  # null: no value clipping
    target_kl: Optional[float] = None
    adam_eps: float = 1e-5

    def validate(self):
        super().validate()
        check_each(self, ("batch_size", "n_epochs"), ">= 1", lambda value: value >= 1)
        check_each(self, ("clip_range", "adam_eps"), "> 0", lambda value: value > 0)
        check_each(self, ("clip_range_vf", "target_kl"), "> 0 or null", lambda value: value is None or value > 0)


def _loss_options(batch, args):
    return {"vf_coef": args.vf_coef, "ent_coef": args.ent_coef, "old_values": batch["values"],
            "clip_range_vf": args.clip_range_vf}


def ppo_loss(model, batch, clip_range, args):
    """The loss of a minibatch (a dict of arrays: obs, actions, logprobs, values, advantages, returns)
    and its parts as arrays (policy_loss, value_loss, entropy, and the ratio and log-ratio), for any
    policy: core.functional.ppo_loss of the model's log-probabilities, entropy and values."""
    logprobs, entropy, values = model.evaluate_actions(Tensor._make(batch["obs"]), batch["actions"],
                                                        entropy_grad=args.ent_coef > 0)
    return F.ppo_loss(logprobs, entropy, values, batch["logprobs"], batch["advantages"], batch["returns"], clip_range,
                      **_loss_options(batch, args))


def fused_ppo_loss(model, batch, clip_range, args):
    """`ppo_loss` of a categorical policy through core.functional.fused_categorical_ppo_loss (one node)."""
    head, values = model(Tensor._make(batch["obs"]))
    return F.fused_categorical_ppo_loss(head, values, batch["actions"], batch["logprobs"], batch["advantages"],
                                        batch["returns"], clip_range, **_loss_options(batch, args))


def ppo_update(model, optimizer, data, clip_range, args, rng):
    """`args.n_epochs` passes of clipped-surrogate minibatch steps over `data` (flat arrays: obs,
    actions, logprobs, values, advantages, returns). `rng` (numpy Generator) shuffles. Returns the
    iteration's mean statistics as floats, and whether target_kl stopped it early."""
    n = len(data["obs"])
    xp = get_array_module(data["obs"])
    params = list(model.parameters())
    loss_fn = fused_ppo_loss if model.distribution_kind == "categorical" and model.fused else ppo_loss
    stats = {name: [] for name in ("policy_loss", "value_loss", "entropy", "loss", "approx_kl", "old_approx_kl",
                                   "clipfrac")}
    for _ in range(args.n_epochs):
        order = xp.asarray(rng.permutation(n)) if args.batch_size < n else None  # one minibatch: all of it
        for start in range(0, n, args.batch_size):
            batch = data if order is None else {name: array[order[start:start + args.batch_size]]
                                                 for name, array in data.items()}
            if args.normalize_advantage:
                batch["advantages"] = normalize(batch["advantages"])
            loss, parts = loss_fn(model, batch, clip_range, args)

            # diagnostics (no graph): the KL estimators of http://joschu.net/blog/kl-approx.html
            ratio, logratio = parts.pop("ratio"), parts.pop("logratio")
            approx_kl = ((ratio - 1) - logratio).mean()
            stats["old_approx_kl"].append(-logratio.mean())
            stats["approx_kl"].append(approx_kl)
            stats["clipfrac"].append((xp.abs(ratio - 1) > clip_range).mean())
            if args.target_kl is not None and float(approx_kl) > 1.5 * args.target_kl:
                return _means(stats), True

            optimizer.zero_grad()
            loss.backward()
            if args.max_grad_norm:
                optim.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            for name, value in (*parts.items(), ("loss", loss.data)):
                stats[name].append(value)
    return _means(stats), False


def _means(stats):
    """Averages of the per-minibatch values (one host transfer each); statistics never recorded (an
    early stop at the first minibatch makes no update) are left out."""
    return {name: float(to_device(get_array_module(v[0]).stack(v).mean(), "cpu")) for name, v in stats.items() if v}


def flatten_rollout(buffer, advantages, returns):
    """The rollout as flat (step-major) arrays, without the steps that are not transitions."""
    data = {"obs": buffer.obs, "actions": buffer.actions, "logprobs": buffer.logprobs, "values": buffer.values,
            "advantages": advantages, "returns": returns}
    data = {k: v.reshape(-1, *v.shape[2:]) for k, v in data.items()}
    keep = valid_indices(buffer)
    return data if keep is None else {k: v[keep] for k, v in data.items()}


@with_one_blas_thread
def train(cfg, run):
    args = config_object(Config, cfg.agent)  # plain attribute reads in the hot loops
    device = run.device
    model, stepper, buffer, action_generator = start_rollouts(cfg, args, device, "PPO")
    if args.batch_size > buffer.size:
        raise ConfigError(f"agent.batch_size {args.batch_size} is larger than a rollout (num_steps {args.num_steps} "
                          f"x {buffer.num_envs} envs = {buffer.size})")
    optimizer = optim.Adam(parameter_groups(model, args.lr, args.critic_lr), lr=args.lr, eps=args.adam_eps)
    minibatch_rng = np.random.default_rng(derive_seed(cfg.seed, "minibatches"))
    num_iterations = math.ceil(args.total_timesteps / buffer.size)
    scheduler = lr_schedule(optimizer, args.anneal_lr, num_iterations)

    session = agent_session(run, cfg, args, "ppo", model, device, training=stepper.envs)
    session.track(model=model, optimizer=optimizer, scheduler=scheduler, action_generator=action_generator,
                  minibatch_rng=minibatch_rng, stepper=stepper, **tracked_normalization(stepper.envs))
    while session.running():
        lr = scheduler.get_last_lr()[0]
        clip_range = args.clip_range * (1.0 - session.iterations / num_iterations) if args.anneal_clip \
            else args.clip_range

        finished = collect_rollout(stepper, model, buffer, action_generator, device)
        mean_return = log_episodes(run, finished, session.progress + buffer.size)
        advantages, returns = compute_gae(buffer.rewards, buffer.values, buffer.next_values, buffer.terminated,
                                          buffer.truncated, args.gamma, args.gae_lambda)
        data = flatten_rollout(buffer, advantages, returns)
        stats, stopped_early = ppo_update(model, optimizer, data, clip_range, args, minibatch_rng)
        session.check_finite("losses/loss", stats.get("loss", 0.0))
        scheduler.step()

        step = session.progress + buffer.size
        session.log({f"losses/{name}": value for name, value in stats.items() if name != "loss"}, step)
        session.log({"losses/explained_variance": explained_variance(data["values"], data["returns"]),
                     "charts/learning_rate": lr, "charts/clip_range": clip_range,
                     "charts/early_stop": float(stopped_early), "charts/SPS": session.sps()}, step)
        run.log_histograms(model, step)
        if mean_return is not None:
            session.show(ret=mean_return, kl=stats["approx_kl"])
        session.advance(buffer.size, episodes=finished)
    return session.finish()
