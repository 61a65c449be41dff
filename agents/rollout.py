"""On-policy rollouts of the actor-critic agents (A2C, PPO, A3C's workers): their storage, their
collection from a vector env, the advantages and returns computed from them, their standardisation
and the critic's explained variance.

    model, stepper, buffer, generator = start_rollouts(cfg, args, device, "PPO")
    episodes = collect_rollout(stepper, model, buffer, generator)          # fills buffer, steps the envs
    advantages, returns = compute_gae(buffer.rewards, buffer.values, buffer.next_values,
                                      buffer.terminated, buffer.truncated, gamma, gae_lambda)

Termination vs truncation. Every stored step t has `next_values[t]` = V(the observation its action
led to), and the two flags decide how it is used:
- terminated: the episode really ended, the future is worth 0: δ_t = r_t − V(s_t);
- truncated (time limit): the episode was cut, the future is still worth V(s'_t), where s'_t is the
  true final observation (never the reset one): δ_t = r_t + γ·V(s'_t) − V(s_t);
- either one ends the GAE / n-step chain: nothing flows back from the next episode.
collect_rollout fills next_values with V(obs_{t+1}) (the next stored step's value) and, at truncated
steps, with V(true final observation), computed when the truncation happens.

Steps that are not transitions (gymnasium's NEXT_STEP autoreset: the step that only resets an env)
have `valid` False; they stay in the arrays so the time axis is regular, and the agents drop them
before any loss (`valid_indices`). The agents create their envs with SAME_STEP autoreset, where
every step is valid and no env step is wasted.
"""
import gymnasium as gym
import numpy as np

import core
from agents import derive_seed
from agents.actor_critic import as_batch, build_model, env_actions, training_envs
from core.backend import array_module, get_array_module, to_device
from envs import VectorStepper


class RolloutBuffer:
    """`num_steps` steps of a vector env, arrays of shape (num_steps, num_envs, ...) on `device`:
    obs, actions, logprobs, values, rewards, next_values, terminated, truncated, valid."""

    def __init__(self, num_steps, envs, device="cpu"):
        xp = array_module(device)
        n = envs.num_envs
        space = envs.single_action_space
        discrete = isinstance(space, gym.spaces.Discrete)
        self.num_steps, self.num_envs = num_steps, n
        self.size = num_steps * n  # env steps per rollout
        self.obs = xp.zeros((num_steps, n, *envs.single_observation_space.shape), dtype=np.float32)
        self.actions = xp.zeros((num_steps, n, *(() if discrete else space.shape)),
                                dtype=np.int64 if discrete else np.float32)
        for name in ("logprobs", "values", "rewards", "next_values"):
            setattr(self, name, xp.zeros((num_steps, n), dtype=np.float32))
        for name in ("terminated", "truncated", "valid"):
            setattr(self, name, xp.zeros((num_steps, n), dtype=bool))


def start_rollouts(cfg, args, device, agent):
    """What A2C and PPO build before their first rollout: the model `args` describes (its initial
    weights from the run's "init" stream, on `device`), the training envs in a VectorStepper reset
    with the run seed, a RolloutBuffer of `args.num_steps` steps and the stream actions are drawn from."""
    core.manual_seed(cfg.seed)
    envs = training_envs(cfg, args, device)
    model = build_model(args, envs.single_observation_space, envs.single_action_space, agent,
                        core.Generator(derive_seed(cfg.seed, "init"))).to(device)
    stepper = VectorStepper(envs)
    stepper.reset(seed=cfg.seed)
    return model, stepper, RolloutBuffer(args.num_steps, envs, device), core.Generator(derive_seed(cfg.seed, "actions"))


def collect_rollout(stepper, model, buffer, generator, device="cpu"):
    """Fill `buffer` with `buffer.num_steps` steps of `model`'s stochastic policy on `stepper`
    (an envs.VectorStepper already reset); actions are drawn with `generator` (a core.Generator).
    The model and the buffer live on `device`, the envs wherever they are (arrays move between the
    two when they differ). Returns the episodes that ended meanwhile (envs.EpisodeStats)."""
    action_space = stepper.envs.single_action_space
    env_device = getattr(stepper.envs, "device", "cpu")
    for t in range(buffer.num_steps):
        obs = to_device(stepper.obs, device)
        actions, logprobs, values = model.act(obs, generator)
        step = stepper.step(env_actions(to_device(actions, env_device), action_space))
        buffer.obs[t] = obs
        buffer.actions[t] = actions
        buffer.logprobs[t] = logprobs
        buffer.values[t] = values
        buffer.rewards[t] = to_device(step.reward, device)
        buffer.terminated[t] = to_device(step.terminated, device)
        buffer.truncated[t] = to_device(step.truncated, device)
        buffer.valid[t] = to_device(step.valid, device)
        # a truncated episode is worth V(its true final observation): computed now, while we have it
        if to_device(step.truncated, "cpu").any():
            with core.no_grad():
                buffer.next_values[t] = model.value(as_batch(to_device(step.next_obs, device))).data
    with core.no_grad():
        last_value = model.value(as_batch(to_device(stepper.obs, device))).data
    xp = get_array_module(buffer.values)
    following = xp.concatenate([buffer.values[1:], last_value[None]])
    buffer.next_values[...] = xp.where(buffer.truncated, buffer.next_values, following)
    return stepper.pop_finished_episodes()


def compute_gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda):
    """GAE(λ) advantages and λ-returns (advantages + values), arrays (T, N) in time order.

    δ_t = r_t + γ·(1 − terminated_t)·next_values_t − values_t
    A_t = δ_t + γ·λ·(1 − done_t)·A_{t+1},  done = terminated | truncated,  A_T = 0
    (λ = 1 gives the n-step returns of `n_step_returns`, λ = 0 the one-step TD targets)."""
    dtype = values.dtype
    deltas = rewards + gamma * (1 - terminated.astype(dtype)) * next_values - values
    carry = (gamma * gae_lambda) * (1 - (terminated | truncated).astype(dtype))
    advantages = get_array_module(values).empty_like(values)
    running = 0.0
    for t in reversed(range(len(values))):
        running = deltas[t] + carry[t] * running
        advantages[t] = running
    return advantages, advantages + values


def n_step_returns(rewards, next_values, terminated, truncated, gamma):
    """Bootstrapped discounted returns of a rollout, arrays (T, N): R_t = r_t + γ·(1 − terminated_t)·B_t
    where B_t = next_values_t at the last step or where the episode ended (terminated or truncated),
    else R_{t+1}. This is A3C's target: each step sums the rewards up to the rollout's (or the
    episode's) end and bootstraps from the value there."""
    dtype = next_values.dtype
    xp = get_array_module(next_values)
    continues = 1 - terminated.astype(dtype)
    done = terminated | truncated
    returns = xp.empty_like(next_values)
    running = next_values[-1]
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * continues[t] * xp.where(done[t], next_values[t], running)
        returns[t] = running
    return returns


def valid_indices(buffer):
    """Flat (step-major) indices of the stored steps that are real transitions; None when all are."""
    valid = buffer.valid.reshape(-1)
    if bool(to_device(valid.all(), "cpu")):
        return None
    return get_array_module(valid).flatnonzero(valid)


def normalize(x, eps=1e-8):
    """(x − mean) / (std + eps) of an array, with the sample std (ddof 1) as SB3 and CleanRL use;
    a single element is only centred."""
    if x.size < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std(ddof=1) + eps)


def explained_variance(predictions, targets):
    """1 − Var(targets − predictions) / Var(targets): 1 is perfect, 0 no better than the mean; nan
    when the targets are constant."""
    var = float(targets.var())
    return float("nan") if var == 0 else 1.0 - float((targets - predictions).var()) / var
