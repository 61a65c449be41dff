"""A2C: learning CartPole with the zoo's settings, the loss by hand, determinism and exact resume,
bad input."""
import functools

import gymnasium as gym
import numpy as np
import pytest
from agent_runs import agent_cfg, last_model, train_agent
from omegaconf import OmegaConf, ValidationError

import core
from agents import a2c
from agents.actor_critic import ActorCritic, build_model
from agents.rollout import RolloutBuffer
from core.runtime.run import ConfigError
from envs import make_vector_env

make_cfg = functools.partial(agent_cfg, a2c, "a2c")
train = functools.partial(train_agent, a2c)


def test_zoo_settings_learn_cartpole(tmp_path):
    # the zoo's A2C (8 envs, n_steps 5, RMSprop 7e-4) for a fifth of its 500,000 steps
    metrics = train(make_cfg(total_timesteps=100_000), tmp_path)
    assert metrics["train/env_steps"] == 100_000
    assert metrics["eval/return_mean"] >= 150  # a random policy gets about 22


def test_loss_by_hand():
    envs = make_vector_env("CartPole-v1", 2, seed=0)
    model = ActorCritic(4, 2, generator=core.Generator(0))
    buffer = RolloutBuffer(3, envs)
    rng = np.random.default_rng(0)
    buffer.obs[...] = rng.standard_normal(buffer.obs.shape)
    buffer.actions[...] = rng.integers(0, 2, (3, 2))
    buffer.valid[...] = True
    buffer.valid[1, 0] = False  # a NEXT_STEP reset step: left out of the loss
    advantages = rng.standard_normal((3, 2)).astype(np.float32)
    returns = rng.standard_normal((3, 2)).astype(np.float32)
    args = a2c.Config(vf_coef=0.5, ent_coef=0.01)
    loss, parts = a2c.a2c_loss(model, buffer, advantages, returns, args)

    keep = buffer.valid.reshape(-1)
    obs = core.tensor(buffer.obs.reshape(-1, 4)[keep])
    with core.no_grad():
        logits, values = model(obs)
    log_probs = logits.data - np.log(np.exp(logits.data).sum(-1, keepdims=True))
    chosen = log_probs[np.arange(keep.sum()), buffer.actions.reshape(-1)[keep]]
    policy = -(chosen * advantages.reshape(-1)[keep]).mean()
    value = ((values.data - returns.reshape(-1)[keep]) ** 2).mean()
    entropy = -(np.exp(log_probs) * log_probs).sum(-1).mean()
    np.testing.assert_allclose([parts["policy_loss"].item(), parts["value_loss"].item(), parts["entropy"].item()],
                               [policy, value, entropy], rtol=1e-5)
    np.testing.assert_allclose(loss.item(), policy + 0.5 * value - 0.01 * entropy, rtol=1e-5)


def test_same_seed_same_result_and_exact_resume(tmp_path):
    cfg = make_cfg(total_timesteps=400, optimizer="adam", anneal_lr=True)
    first, second = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    assert first["eval/return_mean"] == second["eval/return_mean"]
    a, b = last_model(tmp_path / "a"), last_model(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    stopped = train(cfg, tmp_path / "c", stop_after=4)
    assert stopped["train/iterations"] == 4
    resumed = train(cfg, tmp_path / "c", resume=tmp_path / "c")
    assert resumed["train/iterations"] == 10 and resumed["train/episodes"] == first["train/episodes"]
    c = last_model(tmp_path / "c")
    assert all(np.array_equal(a[k], c[k]) for k in a)


def test_an_episode_budget_stops_at_the_first_update_that_reaches_it(tmp_path):
    metrics = train(make_cfg(total_timesteps=100_000, total_episodes=10), tmp_path)
    assert 10 <= metrics["train/episodes"] < 18 and metrics["train/env_steps"] < 5000  # one 8 x 5-step rollout past it


def test_evaluations_every_eval_every_env_steps_stop_at_the_target(tmp_path):
    # 8 envs x 5 steps: an evaluation after every 10th update; any CartPole policy returns >= 8
    metrics = train(make_cfg(total_timesteps=100_000, eval_every=400, target_return=1.0), tmp_path)
    assert metrics["train/to_target_steps"] == metrics["train/env_steps"] == 400


def test_bad_input_fails_clearly(tmp_path):
    with pytest.raises(ConfigError, match=r"distribution='categorical' needs a Discrete action space, the env has Box"):
        train(make_cfg(env={"id": "Pendulum-v1"}, distribution="categorical"), tmp_path)
    with pytest.raises(ConfigError, match="A2C acts in Discrete or 1-D Box action spaces; the env has MultiBinary"):
        build_model(a2c.Config(), gym.spaces.Box(-1, 1, (4,)), gym.spaces.MultiBinary(3), "A2C")
    with pytest.raises(ValidationError, match=r"Invalid value 'sgd', expected one of \[adam, rmsprop\]"):
        OmegaConf.merge(OmegaConf.structured(a2c.Config), {"optimizer": "sgd"})
    with pytest.raises(ValueError, match="agent.num_steps must be >= 1"):
        a2c.Config(num_steps=0).validate()
