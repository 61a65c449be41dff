"""Agents evaluated and watched while training: evaluating does not change training (CPU), the eval/*
curves, best.ckpt and scripts/evaluate.py checkpoint=best, the console line and capture_video, end to
end through the CLI on CartPole."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import core
from agents import a2c, dqn, ppo, reinforce
from core.runtime.events import read_run
from tests.agent_runs import agent_cfg, train_agent

REPO = Path(__file__).resolve().parents[1]

# agent, its network's name in a checkpoint, a tiny CartPole budget
AGENTS = {
    "dqn": (dqn, "q_net", {"total_timesteps": 600, "learning_starts": 100}),
    "ppo": (ppo, "model", {"total_timesteps": 512, "num_steps": 128, "n_epochs": 2}),
    "a2c": (a2c, "model", {"total_timesteps": 400}),
    "reinforce": (reinforce, "policy", {"total_timesteps": 600, "episodes_per_batch": 2}),
}


@pytest.mark.parametrize("name", AGENTS)
def test_evaluating_while_training_leaves_the_training_as_it_was(name, tmp_path):
    agent, network, budget = AGENTS[name]
    runs = {}
    for eval_every in (100, 0):
        run_dir = tmp_path / str(eval_every)
        metrics = train_agent(agent, agent_cfg(agent, eval_episodes=2, eval_every=eval_every, **budget), run_dir)
        scalars = read_run(run_dir).scalars
        runs[eval_every] = (metrics, scalars, core.load(run_dir / "checkpoints" / "last.ckpt")[network])
    (evaluated, evaluated_tb, evaluated_net), (plain, plain_tb, plain_net) = runs[100], runs[0]
    assert len(evaluated_tb["eval/return_mean"]) >= 4 and len(plain_tb["eval/return_mean"]) == 1
    curve = [(step, value) for step, _, value in evaluated_tb["charts/episodic_return"]]
    assert curve == [(step, value) for step, _, value in plain_tb["charts/episodic_return"]]
    for key in evaluated_net:
        np.testing.assert_array_equal(evaluated_net[key].numpy(), plain_net[key].numpy(), err_msg=key)
    assert evaluated["eval/return_mean"] == plain["eval/return_mean"]  # the final evaluation too


def train(run_dir, *overrides):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)


CARTPOLE = ["agent=reinforce", "env=cartpole", "agent.total_timesteps=1500", "agent.eval_every=500",
            "eval_episodes=2", "console_every=500"]


def console_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("reinforce env_steps ")]


def test_a_cli_run_is_evaluated_filmed_and_printed_and_its_best_policy_is_evaluable(tmp_path):
    run_dir = tmp_path / "run"
    result = train(run_dir, *CARTPOLE, "capture_video=true")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = console_lines(result.stdout)
    assert len(lines) == 3 and all("SPS" in line and "ep_rew_mean" in line and "policy_loss" in line
                                   for line in lines), result.stdout
    events = read_run(run_dir)
    curve = [(step, value) for step, _, value in events.scalars["eval/return_mean"]]
    steps = [step for step, _ in curve]  # the first batch boundaries past 500 and 1000 env steps, and the end
    assert len(steps) == 3 and steps == sorted(steps) and 500 <= steps[0] < 1000 <= steps[1] < 1500 <= steps[2]
    assert {"eval/return_std", "eval/length_mean"} <= set(events.scalars)
    assert "eval/video" in events.images
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == sorted(f"eval-{step}.gif" for step, _ in curve)

    best_step, best_value = max(curve, key=lambda point: point[1])  # the first of equal maxima
    assert core.load(run_dir / "checkpoints" / "best.ckpt")["step"] == best_step
    assert f"python scripts/evaluate.py {run_dir} [checkpoint=best]" in result.stdout
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), str(run_dir), "checkpoint=best"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    evaluated = json.loads(done.stdout)
    assert evaluated["step"] == best_step and evaluated["eval/return_mean"] == best_value  # the run's own evaluation


def test_a_quiet_run_prints_no_console_line(tmp_path):
    result = train(tmp_path / "run", *CARTPOLE, "quiet=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert console_lines(result.stdout) == [] and "run completed" in result.stdout
