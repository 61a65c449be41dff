"""DQN end to end: it learns CartPole-v1, same seed gives the same run, a stopped run resumes bitwise
identically, every variant trains, Atari frames go through the Nature CNN, and the CLI runs it."""
import itertools
import json
import pathlib
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

from agents import dqn
from core import load
from core.runtime.run import Run

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(total_timesteps=2000, hidden=[32, 32], learning_starts=500, train_freq=50, gradient_steps=10,
             buffer_size=2000, batch_size=32, target_update_interval=200, exploration_fraction=0.3, lr=1e-3)


def make_cfg(agent, env_id="CartPole-v1", vectorization="sync", seed=0, eval_episodes=5, **env):
    return OmegaConf.create({
        "seed": seed, "device": "cpu", "checkpoint_every": 0, "eval_episodes": eval_episodes,
        "agent": OmegaConf.merge(OmegaConf.structured(dqn.Config), agent),
        "env": {"id": env_id, "num_envs": 1, "vectorization": vectorization, "max_episode_steps": None, **env}})


def run_train(cfg, run_dir, resume=None, stop_after=None):
    with Run(run_dir, config=OmegaConf.to_container(cfg, enum_to_str=True), device=cfg.device, quiet=True,
             tensorboard=False, resume=resume) as run:
        if stop_after is not None:  # what Ctrl-C does, after `stop_after` loop iterations
            calls = itertools.count()
            run.should_stop = lambda: next(calls) >= stop_after
        metrics = dqn.train(cfg, run)
    return metrics, load(pathlib.Path(run_dir) / "checkpoints" / "last.ckpt")


def load_preset(name):
    """conf/agent/<name>.yaml with conf/tuned/<name>_cartpole.yaml over it, as `agent=<name> env=cartpole` composes."""
    values = OmegaConf.load(ROOT / "conf" / "agent" / f"{name}.yaml")
    values.pop("defaults")
    tuned = ROOT / "conf" / "tuned" / f"{name}_cartpole.yaml"
    return OmegaConf.merge(values, OmegaConf.load(tuned).agent) if tuned.is_file() else values


@pytest.mark.slow
def test_fast_preset_solves_cartpole(tmp_path):
    metrics, _ = run_train(make_cfg(load_preset("dqn_fast"), eval_episodes=10), tmp_path / "run")
    assert metrics["eval/return_mean"] >= 475
    assert metrics["time/to_target_s"] is not None and metrics["train/env_steps"] <= 200_000


@pytest.mark.slow
def test_zoo_preset_learns_cartpole(tmp_path):
    """rl-baselines3-zoo's settings (conf/tuned/dqn_cartpole.yaml), 50,000 steps on gymnasium's CartPole-v1,
    judged by the evaluation at the end only (evaluations along the way leave training as it is)."""
    metrics, _ = run_train(make_cfg({**load_preset("dqn"), "eval_every": 0}, eval_episodes=10), tmp_path / "run")
    assert metrics["train/env_steps"] == 50_000 and metrics["train/updates"] == 192 * 128  # rounds at 1,024, 1,280, ..., 49,920 steps
    assert metrics["eval/return_mean"] >= 475


@pytest.mark.parametrize("variant", [
    dict(vectorization="sync"),
    dict(vectorization="native", num_envs=4, prioritized=True, double_q=True, dueling=True, n_step=3,
         target_update_unit="update", target_update_interval=25, tau=0.5),
])
def test_same_seed_same_run_and_a_stopped_run_resumes_bitwise(tmp_path, variant):
    agent = {**SMALL, **variant}
    first, first_state = run_train(make_cfg(agent), tmp_path / "a")
    second, second_state = run_train(make_cfg(agent), tmp_path / "b")
    stopped, _ = run_train(make_cfg(agent), tmp_path / "c", stop_after=900 // agent.get("num_envs", 1))
    assert stopped["train/env_steps"] < 2000 and "eval/return_mean" not in stopped
    resumed, resumed_state = run_train(make_cfg(agent), tmp_path / "c", resume=tmp_path / "c")
    for metrics, state in ((second, second_state), (resumed, resumed_state)):
        assert {k: v for k, v in metrics.items() if not k.startswith("time/")} == \
            {k: v for k, v in first.items() if not k.startswith("time/")}
        for name in ("q_net", "target_net"):
            for key, value in first_state[name].items():
                np.testing.assert_array_equal(state[name][key], value, err_msg=f"{name}.{key}")
        np.testing.assert_array_equal(state["buffer"]["frames"], first_state["buffer"]["frames"])
        assert state["counters"] == first_state["counters"]


@pytest.mark.parametrize("variant", [
    dict(double_q=True), dict(dueling=True, dueling_aggregation="max", activation="elu"), dict(n_step=3),
    dict(prioritized=True), dict(target_network=False, loss="mse"), dict(optimizer="rmsprop", rmsprop_centered=True),
    dict(target_update_unit="episode", target_update_interval=5, train_freq_unit="episode", train_freq=1,
         epsilon_unit="episode", epsilon_decay_duration=50, bootstrap_on_truncation=False),
    dict(epsilon_schedule="exponential", epsilon_decay=0.999, tau=0.05, target_update_interval=1,
         target_update_unit="update", eval_every=500),
])
def test_every_variant_trains(tmp_path, variant):
    metrics, state = run_train(make_cfg({**SMALL, "total_timesteps": 1500, **variant}), tmp_path / "run")
    assert metrics["train/updates"] > 0 and metrics["train/env_steps"] == 1500
    assert np.isfinite(metrics["eval/return_mean"]) and metrics["eval/episodes"] == 5
    assert all(np.isfinite(value).all() for value in state["q_net"].values())


def test_an_episode_budget_stops_training_at_that_episode(tmp_path):
    metrics, _ = run_train(make_cfg({**SMALL, "total_timesteps": 100_000, "total_episodes": 12}), tmp_path / "run")
    assert metrics["train/episodes"] == 12 and metrics["train/env_steps"] < 2000  # random-ish episodes: ~20 steps
    with pytest.raises(ValueError, match="agent.total_episodes must be >= 1 or null, got 0"):
        dqn.Config(total_episodes=0).validate()


@pytest.mark.slow
def test_double_dueling_prioritized_n_step_dqn_learns(tmp_path):
    """Rainbow-lite (Double DQN, dueling head, prioritized replay, 3-step returns) on the fast preset."""
    agent = {**load_preset("dqn_fast"), "double_q": True, "dueling": True, "prioritized": True, "n_step": 3,
             "target_return": 300.0}
    metrics, _ = run_train(make_cfg(agent, eval_episodes=10), tmp_path / "run")
    assert metrics["eval/return_mean"] >= 300


class FramesEnv(gym.Env):
    """84x84 uint8 frames whose brightness is the step count; action 1 ends the episode with reward 1."""
    observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros((84, 84), np.uint8), {}

    def step(self, action):
        self.t += 1
        done = action == 1 or self.t >= 20
        return np.full((84, 84), self.t, np.uint8), float(action == 1), done, False, {}


def test_nature_cnn_on_stacked_frames_stores_each_frame_once(tmp_path):
    gym.register("test/Frames-v0", entry_point=FramesEnv)
    cfg = make_cfg({**SMALL, "network": "nature_cnn", "total_timesteps": 300, "learning_starts": 100,
                    "train_freq": 50, "gradient_steps": 2, "batch_size": 8, "buffer_size": 500},
                   env_id="test/Frames-v0", eval_episodes=2, frame_stack=4)
    metrics, state = run_train(cfg, tmp_path / "run")
    assert metrics["train/updates"] == 8
    assert state["buffer"]["frames"].shape[1:] == (84, 84) and state["buffer"]["frames"].dtype == np.uint8


def test_cli_trains_dqn_into_a_run_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "agent=dqn", "env=cartpole", "agent.total_timesteps=1500",
         "agent.gradient_steps=8", "eval_episodes=2", f"hydra.run.dir={tmp_path / 'run'}", "quiet=true"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train/env_steps"] == 1500 and metrics["eval/episodes"] == 2
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


@pytest.mark.gpu
@pytest.mark.parametrize("vectorization", ["native", "sync"])
def test_dqn_on_the_gpu(tmp_path, vectorization, gpu_device):
    """Networks and updates on cupy; the native envs step there too, gymnasium's on the CPU."""
    cfg = make_cfg({**SMALL, "num_envs": 4, "prioritized": True, "double_q": True}, vectorization=vectorization)
    cfg.device = gpu_device
    metrics, state = run_train(cfg, tmp_path / "run")
    assert metrics["train/updates"] > 0 and np.isfinite(metrics["eval/return_mean"])
    assert all(np.isfinite(value).all() for value in state["q_net"].values())
