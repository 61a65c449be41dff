"""Running normalisation of vector envs (envs/normalize.py): the statistics are exactly those of
everything seen, observations and rewards are normalised and clipped as specified, evaluation
uses the statistics frozen, checkpoints restore them bitwise, native and gymnasium envs agree,
the agents honour the options (and learn with them), evaluate.py plays on the run's statistics."""
import gymnasium as gym
import numpy as np
import pytest
from agent_runs import agent_cfg, train_agent
from omegaconf import OmegaConf

import core
from agents import a2c, dqn, ppo
from core.runtime.errors import ConfigError
from core.runtime.run import Run
from envs import VectorStepper, make_vector_env
from envs.normalize import NormalizeObservation, NormalizeVector, RunningMeanStd


def test_running_statistics_are_those_of_everything_seen():
    stats = RunningMeanStd((3,))
    assert stats.mean.tolist() == [0, 0, 0] and stats.var.tolist() == [1, 1, 1]  # before any data: identity
    rng = np.random.default_rng(0)
    seen = []
    for size in (1, 7, 2, 50, 1, 13):  # batches of every size combine, a single sample included
        batch = rng.normal(loc=[3.0, -1.0, 100.0], scale=[0.5, 2.0, 10.0], size=(size, 3)).astype(np.float32)
        stats.update(batch)
        seen.append(batch)
        everything = np.concatenate(seen).astype(np.float64)
        np.testing.assert_allclose(stats.mean, everything.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(stats.var, everything.var(axis=0), rtol=1e-10)
        assert stats.count == len(everything)


def stepped(envs, steps, seed=0, actions_seed=1):
    """(observations, rewards) of `steps` vector steps with the same random actions: arrays (steps + 1, n, ...)
    of the reset's and each step's observations, and (steps, n) rewards, plus the dones."""
    rng = np.random.default_rng(actions_seed)
    observations, rewards, dones = [envs.reset(seed=seed)[0]], [], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = envs.step(rng.integers(2, size=envs.num_envs))
        observations.append(obs)
        rewards.append(reward)
        dones.append(terminated | truncated)
    return np.array(observations), np.array(rewards), np.array(dones)


def test_observations_are_standardised_with_all_observations_so_far_and_clipped():
    raw, _, _ = stepped(make_vector_env("CartPole-v1", 3, seed=0, autoreset_mode="same_step"), 60)
    envs = make_vector_env("CartPole-v1", 3, seed=0, autoreset_mode="same_step", normalize_obs=True, clip_obs=1.5)
    normalized, _, _ = stepped(envs, 60)
    assert normalized.dtype == np.float32 and envs.single_observation_space == gym.spaces.Box(-1.5, 1.5, (4,))
    for t in range(len(raw)):
        so_far = raw[:t + 1].reshape(-1, 4).astype(np.float64)
        expected = np.clip((raw[t] - so_far.mean(0)) / np.sqrt(so_far.var(0) + 1e-8), -1.5, 1.5)
        np.testing.assert_allclose(normalized[t], expected, rtol=1e-5, atol=1e-6)
    assert np.abs(normalized).max() == np.float32(1.5)  # the clip was reached


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_rewards_are_divided_by_the_std_of_the_discounted_return(mode):
    gamma = 0.9
    _, raw, dones = stepped(make_vector_env("CartPole-v1", 2, seed=0, autoreset_mode=mode), 80)
    envs = make_vector_env("CartPole-v1", 2, seed=0, autoreset_mode=mode, normalize_reward=True, norm_gamma=gamma,
                           clip_reward=1.0)
    _, normalized, _ = stepped(envs, 80)
    returns, seen = np.zeros(2), []
    reset_next = np.zeros(2, dtype=bool)  # next_step: the step after an episode's end only resets the env
    for t in range(len(raw)):
        returns = gamma * returns + raw[t]
        seen.extend(returns[~reset_next] if mode == "next_step" else returns)
        expected = np.clip(raw[t] / np.sqrt(np.var(seen) + 1e-8), -1.0, 1.0)
        np.testing.assert_allclose(normalized[t], expected, rtol=1e-6)
        returns[dones[t]] = 0
        reset_next = dones[t]
    assert envs.return_stats.count == len(seen) == (2 * 80 - dones[:-1].sum() if mode == "next_step" else 2 * 80)
    assert normalized.max() == np.float32(1.0) and normalized.min() < 1.0  # clipped early, scaled later


def test_episode_returns_stay_raw_on_native_and_gymnasium_envs():
    for vectorization in ("sync", "native"):
        envs = make_vector_env("CartPole-v1", 2, seed=0, vectorization=vectorization, autoreset_mode="same_step",
                               normalize_obs=True, normalize_reward=True)
        stepper = VectorStepper(envs)
        stepper.reset(seed=0)
        lengths = []
        while not lengths:
            stepper.step(np.zeros(2, dtype=np.int64))
            lengths = stepper.pop_finished_episodes()
        assert all(episode.episodic_return == episode.length for episode in lengths)  # CartPole: +1 a step


@pytest.mark.parametrize("env_id, num_envs, steps", [("CartPole-v1", 1, 200), ("Acrobot-v1", 2, 520)])
def test_native_and_gymnasium_envs_give_the_same_normalised_numbers(env_id, num_envs, steps):
    """The same seed gives the same data on both (envs/cartpole.py and envs/acrobot.py match gymnasium
    bit for bit), so the normalised observations, final observations and rewards are identical."""
    results = []
    for vectorization in ("sync", "native"):
        envs = make_vector_env(env_id, num_envs, seed=3, vectorization=vectorization, autoreset_mode="same_step",
                               normalize_obs=True, normalize_reward=True)
        stepper = VectorStepper(envs)
        stepper.reset(seed=3)
        rng = np.random.default_rng(0)
        transitions = [stepper.step(rng.integers(envs.single_action_space.n, size=num_envs)) for _ in range(steps)]
        results.append([np.array([getattr(t, name) for t in transitions]) for name in ("obs", "next_obs", "reward")])
        # episodes ended (CartPole falls; random Acrobot hits the time limit): final observations were compared too
        assert any((t.terminated | t.truncated).any() for t in transitions)
    for gymnasium_array, native_array in zip(*results):
        np.testing.assert_array_equal(gymnasium_array, native_array)


def test_evaluation_envs_use_the_training_statistics_frozen_with_raw_rewards():
    train_envs = make_vector_env("CartPole-v1", 2, seed=0, autoreset_mode="same_step", normalize_obs=True,
                                 normalize_reward=True)
    stepped(train_envs, 30)
    eval_envs = train_envs.frozen(make_vector_env("CartPole-v1", 3, seed=100, autoreset_mode="same_step"))
    raw_envs = make_vector_env("CartPole-v1", 3, seed=100, autoreset_mode="same_step")
    before = train_envs.state_dict()
    normalized, rewards, _ = stepped(eval_envs, 30, seed=100)
    raw, raw_rewards, _ = stepped(raw_envs, 30, seed=100)
    after = train_envs.state_dict()
    assert after["obs"]["count"] == before["obs"]["count"] == 2 * 31
    assert np.array_equal(after["obs"]["mean"], before["obs"]["mean"])
    stats = train_envs.obs_stats
    np.testing.assert_allclose(normalized, np.clip((raw - stats.mean) / np.sqrt(stats.var + 1e-8), -10, 10),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(rewards, raw_rewards)
    stepped(train_envs, 5)  # training goes on: evaluation follows its statistics
    assert eval_envs.obs_stats is train_envs.obs_stats and eval_envs.obs_stats.count == 2 * 36 + 2


def test_checkpointed_statistics_and_episode_state_continue_bitwise(tmp_path):
    def make():
        return make_vector_env("CartPole-v1", 3, seed=0, autoreset_mode="same_step", normalize_obs=True,
                               normalize_reward=True)
    envs, rng = make(), np.random.default_rng(0)
    stepper = VectorStepper(envs)
    stepper.reset(seed=0)
    for _ in range(40):
        stepper.step(rng.integers(2, size=3))
    core.save({"stepper": stepper.state_dict(), "normalization": envs.state_dict()}, tmp_path / "ckpt")
    saved = core.load(tmp_path / "ckpt")
    restored = make()
    restored_stepper = VectorStepper(restored)
    restored_stepper.reset(seed=99)  # a fresh process's start, overwritten below
    assert restored_stepper.load_state_dict(saved["stepper"])
    restored.load_state_dict(saved["normalization"])
    for _ in range(60):
        actions = rng.integers(2, size=3)
        a, b = stepper.step(actions), restored_stepper.step(actions)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    for key in ("obs", "reward"):
        for name in ("mean", "var", "count"):
            assert np.array_equal(envs.state_dict()[key][name], restored.state_dict()[key][name])
    with pytest.raises(ValueError, match="the checkpoint has reward normalisation statistics, this run does not"):
        make_vector_env("CartPole-v1", 3, normalize_obs=True).load_state_dict(saved["normalization"])


def test_observations_that_are_not_arrays_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^env.normalize_obs needs Box \(array\) observations; FrozenLake-v1 has "
                                          r"Discrete\(16\) \(set env.normalize_obs=false\)$"):
        make_vector_env("FrozenLake-v1", 2, normalize_obs=True)
    envs = make_vector_env("FrozenLake-v1", 2, seed=0, normalize_reward=True)  # rewards alone need no Box
    assert envs.reset()[0].shape == (2,)
    with pytest.raises(ConfigError, match="env.clip_obs must be a positive finite number, got 0"):
        make_vector_env("CartPole-v1", 2, normalize_obs=True, clip_obs=0)


# ----- the agents -----
NORMALIZED = {"normalize_obs": True, "normalize_reward": True}
TINY = {ppo: {"total_timesteps": 256, "num_envs": 2, "num_steps": 64, "batch_size": 64, "n_epochs": 1},
        a2c: {"total_timesteps": 256, "num_envs": 2, "num_steps": 8},
        dqn: {"total_timesteps": 256, "num_envs": 2, "learning_starts": 64, "train_freq": 16, "gradient_steps": 4,
              "buffer_size": 512, "hidden": [16]}}


@pytest.mark.parametrize("agent", [ppo, a2c, dqn], ids=lambda module: module.__name__)
def test_agents_train_on_normalised_envs_and_checkpoint_the_statistics(agent, tmp_path):
    cfg = agent_cfg(agent, env=NORMALIZED, eval_episodes=3, **TINY[agent])
    metrics = train_agent(agent, cfg, tmp_path)
    state = core.load(tmp_path / "checkpoints" / "last.ckpt")
    # every training observation (the first reset and 256 steps of 2 envs) and none of the evaluation's
    assert state["normalization"]["obs"]["count"] == 2 + 256
    assert state["normalization"]["reward"]["count"] == 256
    assert metrics["eval/return_mean"] == np.mean(metrics_returns(agent, cfg, state))  # raw returns
    if agent is dqn:  # the replay buffer holds normalised observations and rewards (CartPole's raw ones are 1)
        rewards = state["buffer"]["rewards"]
        assert np.abs(state["buffer"]["frames"]).max() <= 10.0 and rewards.max() == 10.0  # the first ones clipped
        assert ((rewards > 0) & (rewards < 1)).sum() > 200  # scaled down as the return's std grows


def metrics_returns(agent, cfg, state):
    """The evaluation episodes replayed one by one as scripts/evaluate.py plays them."""
    from agents import EVAL_SEED_OFFSET, evaluate_policy, with_normalization
    env = with_normalization(agent.make_env(cfg.env) if hasattr(agent, "make_env") else gym.make(cfg.env.id),
                             cfg.env, state)
    act = agent.make_policy(cfg, state, env)
    return evaluate_policy(env, act, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)["returns"]


def test_ppo_resumes_bitwise_with_normalisation(tmp_path):
    cfg = agent_cfg(ppo, env=NORMALIZED, eval_episodes=2, total_timesteps=6 * 128, num_envs=2, num_steps=64,
                    batch_size=64, n_epochs=2)
    first = train_agent(ppo, cfg, tmp_path / "a")
    train_agent(ppo, cfg, tmp_path / "b", stop_after=3)
    resumed = train_agent(ppo, cfg, tmp_path / "b", resume=tmp_path / "b")
    assert resumed["eval/return_mean"] == first["eval/return_mean"]
    a, b = (core.load(tmp_path / name / "checkpoints" / "last.ckpt") for name in ("a", "b"))
    assert a["model"].keys() == b["model"].keys() and all(np.array_equal(a["model"][k], b["model"][k]) for k in a["model"])
    for kind in ("obs", "reward"):
        assert all(np.array_equal(a["normalization"][kind][k], b["normalization"][kind][k]) for k in ("mean", "var"))
        assert a["normalization"][kind]["count"] == b["normalization"][kind]["count"]


def test_ppo_learns_cartpole_with_normalised_observations_and_rewards(tmp_path):
    cfg = agent_cfg(ppo, "ppo_native", env={**NORMALIZED, "vectorization": "native"})
    metrics = train_agent(ppo, cfg, tmp_path)
    assert metrics["eval/return_mean"] >= 475


def test_evaluate_plays_a_normalised_run_on_its_statistics(tmp_path):
    from scripts import evaluate
    cfg = agent_cfg(ppo, env=NORMALIZED, eval_episodes=5, total_timesteps=4096, num_envs=4, num_steps=128,
                    batch_size=128, n_epochs=4)
    # what scripts/train.py writes into a run's config: the group choices evaluate.py reads
    config = {**OmegaConf.to_container(cfg, enum_to_str=True), "choices": {"agent": "ppo", "env": "cartpole"}}
    with Run(tmp_path / "run", config=config, seed=cfg.seed, quiet=True) as run:
        metrics = ppo.train(cfg, run)
    evaluated = evaluate.evaluate(evaluate.parse_args([str(tmp_path / "run")]))
    assert evaluated["eval/return_mean"] == metrics["eval/return_mean"]  # the run's own final evaluation
    state = core.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    del state["normalization"]  # the same policy on raw observations plays other episodes
    core.save(state, tmp_path / "raw.ckpt")
    raw = evaluate.evaluate(evaluate.parse_args([str(tmp_path / "raw.ckpt")]))
    assert raw["eval/returns"] != evaluated["eval/returns"]


def test_a_frozen_single_env_matches_the_vector_normalisation():
    envs = make_vector_env("CartPole-v1", 2, seed=0, autoreset_mode="same_step", normalize_obs=True)
    stepped(envs, 20)
    single = NormalizeObservation(gym.make("CartPole-v1"), envs.state_dict()["obs"])
    obs, _ = single.reset(seed=5)
    raw, _ = gym.make("CartPole-v1").reset(seed=5)
    expected = envs.frozen(make_vector_env("CartPole-v1", 1, seed=5)).reset(seed=5)[0][0]
    np.testing.assert_array_equal(obs, expected)
    assert not np.array_equal(obs, raw)
