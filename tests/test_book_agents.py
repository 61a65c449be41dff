"""The agents that run the books' non-deep experiments: tabular methods (agents/tabular_runner.py) and the
random / scripted baselines (agents/baselines.py)."""
import itertools
import json

import numpy as np
import pytest
from omegaconf import OmegaConf, ValidationError

from agents import baselines, tabular_runner
from core import load
from core.runtime.events import read_run
from core.runtime.run import ConfigError, Run


def make_cfg(module, env_id, seed=0, eval_episodes=3, max_episode_steps=None, **agent):
    return OmegaConf.create({"agent": OmegaConf.merge(OmegaConf.structured(module.Config), agent), "seed": seed,
                             "eval_episodes": eval_episodes, "checkpoint_every": 0,
                             "env": {"id": env_id, "num_envs": 1, "max_episode_steps": max_episode_steps}})


def run(tmp_path, module, cfg, resume=None, stop_after=None):
    with Run(tmp_path, config=OmegaConf.to_container(cfg, enum_to_str=True), seed=cfg.seed, quiet=True,
             resume=resume) as r:
        if stop_after is not None:  # what Ctrl-C does, after `stop_after` loop iterations
            calls = itertools.count()
            r.should_stop = lambda: next(calls) >= stop_after
        metrics = module.train(cfg, r)
        r.finish(metrics)
    return metrics


# ----- tabular -----
def test_policy_evaluation_and_iteration_on_the_gridworld(tmp_path):
    cfg = make_cfg(tabular_runner, "lab/GridWorld4x4-v0", method="policy_evaluation", gamma=1.0)
    metrics = run(tmp_path / "eval", tabular_runner, cfg)
    np.testing.assert_allclose(metrics["tabular/V"][:4], [0, -13.99993529, -19.99990698, -21.99989761], atol=1e-8)
    table = (tmp_path / "eval" / "values.txt").read_text()
    assert "-13.99993529" in table and "greedy policy" in table
    cfg = make_cfg(tabular_runner, "lab/GridWorld4x4-v0", method="policy_iteration", gamma=1.0)
    metrics = run(tmp_path / "iter", tabular_runner, cfg)
    assert metrics["tabular/policy"] == [0, 3, 3, 2, 0, 0, 0, 2, 0, 0, 1, 2, 0, 1, 1, 0]
    assert metrics["tabular/evaluations"] == 3
    # the optimal policy walks to the nearest terminal: the return is minus that distance, at most 3 steps
    assert -3 <= metrics["eval/return_mean"] <= -1 and metrics["eval/length_mean"] <= 3
    act = tabular_runner.make_policy(cfg, load(tmp_path / "iter" / "checkpoints" / "last.ckpt"), None)
    assert [act(state) for state in range(16)] == metrics["tabular/policy"]  # what scripts/evaluate.py plays
    saved = json.loads((tmp_path / "iter" / "metrics.json").read_text())
    assert saved["tabular/V"] == pytest.approx([0, -1, -2, -3, -1, -2, -3, -2, -2, -3, -2, -1, -3, -2, -1, 0])


def test_q_value_iteration_and_q_learning_on_gerons_mdp(tmp_path):
    cfg = make_cfg(tabular_runner, "lab/ThreeStateMDP-v0", method="q_value_iteration", iterations=50)
    metrics = run(tmp_path / "qvi", tabular_runner, cfg)  # gamma null: the env's 0.9
    assert metrics["tabular/Q"][0] == pytest.approx([18.91891892, 17.02702702, 13.62162162], abs=1e-8)
    assert metrics["tabular/Q"][2][0] == -np.inf and metrics["tabular/policy"] == [0, 0, 1]
    assert metrics["tabular/converged_iteration"] == 18  # fixtures.md FX-RL-5 (computed)
    assert metrics["eval/length_mean"] == 100  # a continuing task: cut at eval_horizon
    cfg = make_cfg(tabular_runner, "lab/ThreeStateMDP-v0", method="q_learning", steps=10_000)
    metrics = run(tmp_path / "ql", tabular_runner, cfg)
    assert metrics["tabular/policy"] == [0, 0, 1] and metrics["train/env_steps"] == 10_000
    errors = [value for _, _, value in read_run(tmp_path / "ql").scalars["tabular/max_abs_error_vs_qvi"]]
    assert len(errors) == tabular_runner.CURVE_POINTS and errors[-1] < errors[0]
    assert errors[-1] == pytest.approx(metrics["tabular/max_abs_error_vs_qvi"], rel=1e-6)


def test_value_iteration_on_the_maze_and_the_bandit(tmp_path):
    cfg = make_cfg(tabular_runner, "lab/Maze3x4-v0", method="value_iteration", theta=1e-12)
    metrics = run(tmp_path / "maze", tabular_runner, cfg)
    assert metrics["tabular/V"][8] == pytest.approx(3.122) and metrics["tabular/Q"][8][3] == pytest.approx(0.62882)
    assert "wall" in (tmp_path / "maze" / "values.txt").read_text()
    cfg = make_cfg(tabular_runner, "lab/Bandit-v0", method="bandit_egreedy", steps=20_000, epsilon=0.1)
    metrics = run(tmp_path / "bandit", tabular_runner, cfg)
    assert 2.8 < metrics["tabular/average_reward"] < 3.0 and metrics["tabular/policy"] == [2]
    assert sum(metrics["tabular/counts"]) == 20_000 and metrics["tabular/best_arm_fraction"] > 0.9


def test_tabular_config_errors(tmp_path):
    with pytest.raises(ValidationError, match="Invalid value 'sarsa', expected one of \\[policy_evaluation, "):
        OmegaConf.merge(OmegaConf.structured(tabular_runner.Config), {"method": "sarsa"})
    with pytest.raises(ValueError, match="agent.epsilon must be in"):
        tabular_runner.Config(epsilon=1.5).validate()
    with pytest.raises(ConfigError, match="Discrete observations and actions"):
        run(tmp_path / "a", tabular_runner, make_cfg(tabular_runner, "CartPole-v1"))
    with pytest.raises(ConfigError, match="FrozenLake-v1 has no discount of its own; set agent.gamma"):
        run(tmp_path / "b", tabular_runner, make_cfg(tabular_runner, "FrozenLake-v1", method="value_iteration"))
    # gymnasium's FrozenLake exposes the same P[s][a] model as the toy envs
    metrics = run(tmp_path / "c", tabular_runner, make_cfg(tabular_runner, "FrozenLake-v1", gamma=0.9))
    assert len(metrics["tabular/V"]) == 16 and metrics["tabular/V"][15] == 0.0 and metrics["tabular/V"][14] > 0.5


# ----- baselines -----
def test_angle_sign_rule_on_capped_cartpole(tmp_path):
    cfg = make_cfg(baselines, "CartPole-v1", max_episode_steps=200, policy="angle_sign", episodes=50)
    metrics = run(tmp_path, baselines, cfg)
    assert metrics["train/episodes"] == 50 and metrics["eval/episodes"] == 50
    assert 35 < metrics["eval/return_mean"] < 50 and metrics["eval/return_max"] < 100  # the book: 41.7, max 68
    returns = [value for _, _, value in read_run(tmp_path).scalars["charts/episodic_return"]]
    assert np.mean(returns) == pytest.approx(metrics["eval/return_mean"])


def test_random_policy_with_a_step_budget(tmp_path):
    cfg = make_cfg(baselines, "CartPole-v1", policy="random", total_timesteps=300)
    metrics = run(tmp_path, baselines, cfg)
    assert metrics["train/env_steps"] == 300 and 5 <= metrics["train/episodes"] <= 30
    assert 8 < metrics["eval/return_mean"] < 40  # random CartPole: about 22
    again = run(tmp_path / "again", baselines, cfg)
    assert again["eval/return_mean"] == metrics["eval/return_mean"]  # seeded


def test_a_stopped_baseline_run_resumes_as_the_uninterrupted_one(tmp_path):
    cfg = make_cfg(baselines, "CartPole-v1", policy="random", episodes=30)
    whole = run(tmp_path / "whole", baselines, cfg)
    stopped = run(tmp_path / "part", baselines, cfg, stop_after=10)  # one loop iteration per episode
    assert stopped["train/episodes"] == 10 and "eval/return_mean" not in stopped
    resumed = run(tmp_path / "part", baselines, cfg, resume=tmp_path / "part")
    assert {k: v for k, v in resumed.items() if not k.startswith("time/")} == \
        {k: v for k, v in whole.items() if not k.startswith("time/")}


def test_baseline_errors(tmp_path):
    with pytest.raises(ValidationError, match=r"Invalid value 'greedy', expected one of \[random, angle_sign\]"):
        OmegaConf.merge(OmegaConf.structured(baselines.Config), {"policy": "greedy"})
    with pytest.raises(ConfigError, match="reads a CartPole observation"):
        run(tmp_path, baselines, make_cfg(baselines, "lab/GridWorld4x4-v0", policy="angle_sign", episodes=1))

