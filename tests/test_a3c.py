"""A3C: learning CartPole with truly concurrent workers, core.optim's optimizer and lr schedule, clean
start-up and shutdown (bad worker counts, a crashing worker, Ctrl-C, a killed trainer), resume, and the
Ray backend."""
import multiprocessing
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import types

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv
from omegaconf import OmegaConf, ValidationError

import core
from agents import a3c, a3c_workers
from agents.actor_critic import lr_schedule
from agents.workers import WorkerError, max_workers
from core.runtime.run import ConfigError, Run

ROOT = pathlib.Path(__file__).resolve().parents[1]


class CrashingCartPole(CartPoleEnv):
    """CartPole that breaks at its 31st step: a worker that meets it must be reported, not hung on."""

    def step(self, action):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 30:
            raise RuntimeError("the env broke at step 31")
        return super().step(action)


if "CrashingCartPole-v0" not in gym.registry:
    gym.register("CrashingCartPole-v0", entry_point=f"{__name__}:CrashingCartPole", max_episode_steps=500)


def make_cfg(env_id="CartPole-v1", seed=0, checkpoint_every=0, **agent):
    env = {"id": env_id, "num_envs": 1, "vectorization": "sync", "max_episode_steps": None}
    agent = OmegaConf.merge(OmegaConf.structured(a3c.Config), {"log_every_s": 0.2, **agent})
    return OmegaConf.create({"seed": seed, "device": "cpu", "eval_episodes": 10, "checkpoint_every": checkpoint_every,
                             "env": env, "agent": agent})


def train(cfg, run_dir, resume=None):
    with Run(run_dir, config=OmegaConf.to_container(cfg, enum_to_str=True), seed=cfg.seed, quiet=True,
             resume=resume) as run:
        return a3c.train(cfg, run)


def children(pid):
    """Pids of the live children of `pid` (Linux /proc)."""
    try:
        return [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"  # zombies are gone
    except FileNotFoundError:
        return False


def test_worker_count_limits():
    with pytest.raises(ValueError, match=rf"agent.num_workers must be between 1 and {max_workers()} "
                                         rf"\(4 x the {os.cpu_count()} CPUs of this machine\), got 0"):
        a3c.Config(num_workers=0).validate()
    with pytest.raises(ValueError, match=rf"got {max_workers() + 1}$"):
        a3c.Config(num_workers=max_workers() + 1).validate()
    a3c.Config(num_workers=max_workers()).validate()
    with pytest.raises(ValidationError, match=r"Invalid value 'thread', expected one of \[spawn, forkserver, fork\]"):
        OmegaConf.merge(OmegaConf.structured(a3c.Config), {"start_method": "thread"})


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_the_optimizer_is_core_optims_from_the_config(kind):
    args = a3c.Config(optimizer=kind, lr=0.01, betas=[0.8, 0.9], alpha=0.9, eps=1e-6)
    optimizer = a3c_workers.make_optimizer(args, [core.nn.Parameter(np.zeros(3, np.float32))])
    group = optimizer.param_groups[0]
    assert type(optimizer) is (core.optim.Adam if kind == "adam" else core.optim.RMSprop)
    assert group["lr"] == 0.01 and group["eps"] == 1e-6
    assert group["betas"] == (0.8, 0.9) if kind == "adam" else group["alpha"] == 0.9


def test_annealed_lr_falls_linearly_to_zero_over_all_workers_env_steps():
    args = a3c.Config(optimizer="rmsprop", lr=0.1, alpha=0.0, eps=0.0, anneal_lr=True, total_timesteps=1000)
    steps = []
    for env_steps in (0, 500, 1000, 2000):
        param = core.nn.Parameter(np.zeros(3, np.float32))
        optimizer = a3c_workers.make_optimizer(args, [param])
        scheduler = lr_schedule(optimizer, args.anneal_lr, args.total_timesteps)
        a3c_workers.apply_gradient(optimizer, scheduler, [np.ones(3, np.float32)], env_steps)
        steps.append(-param.data[0])  # RMSprop with alpha 0, eps 0: a step of lr
    np.testing.assert_allclose(steps, [0.1, 0.05, 0.0, 0.0], rtol=1e-6)


def test_the_parameter_server_steps_core_optim_with_each_pushed_gradient():
    # the Ray backend's two sides, called directly (no Ray needed): 10 rollouts of 20 steps use up 200 env steps
    cfg = make_cfg(num_steps=20, anneal_lr=True, total_timesteps=200)
    args = OmegaConf.to_object(cfg.agent)
    worker = a3c_workers.Worker(0, a3c_workers.worker_spec(cfg, args, 0, (200, None)))
    initial = [p.data.copy() for p in worker.params]
    server = a3c_workers.ParameterServer(args, initial, 1, (200, None))
    weights, stop, pushes = server.pull(), False, 0
    while not stop:
        grads, steps, finished, parts = worker.gradient(weights)
        assert steps == 20 and set(parts) == {"policy_loss", "value_loss", "entropy"}
        weights, stop = server.push(0, grads, steps, [], time.time(), 0.0, parts)
        pushes += 1
    final, optimizer_state = server.state_dict()
    assert pushes == 10 and (optimizer_state["state"][0]["step"] == 10).all()
    assert all(not np.array_equal(a, b) for a, b in zip(final, initial))
    assert server.optimizer.param_groups[0]["lr"] == pytest.approx(args.lr * 0.1)  # annealed: 180 of 200 steps done


def test_workers_learn_cartpole_concurrently(tmp_path):
    # asynchronous updates make each run's numbers differ: 80,000 steps reached 500 in 10 of 10 runs,
    # 40,000 fell short of 150 in 1 of 16
    metrics = train(make_cfg(total_timesteps=80_000, num_workers=2), tmp_path)
    assert metrics["eval/return_mean"] >= 150  # a random policy gets about 22
    updates, steps = metrics["a3c/worker_updates"], metrics["a3c/worker_env_steps"]
    assert len(updates) == 2 and min(updates) > 100 and sum(steps) == metrics["train/env_steps"] >= 80_000
    # every worker kept updating while the others did: their update periods overlap
    first, last = metrics["a3c/worker_first_update_s"], metrics["a3c/worker_last_update_s"]
    assert max(first) < min(last)
    assert metrics["train/iterations"] == sum(updates)  # the session counts every worker's updates
    state = core.load(tmp_path / "checkpoints" / "last.ckpt")
    act = a3c.make_policy(OmegaConf.create({"agent": OmegaConf.to_container(make_cfg().agent)}), state,
                          gym.make("CartPole-v1"))
    assert act(np.zeros(4, np.float32)) in (0, 1)


def test_an_episode_budget_stops_the_workers(tmp_path):
    metrics = train(make_cfg(total_timesteps=1_000_000, total_episodes=30), tmp_path)
    # each worker checks the shared count after its update: a few episodes may end past the budget
    assert 30 <= metrics["train/episodes"] < 40 and metrics["train/env_steps"] < 5000


def test_an_evaluation_that_reaches_the_target_stops_the_workers(tmp_path):
    # eval_every counts all workers' env steps; any CartPole policy returns >= 8, so the first evaluation stops
    metrics = train(make_cfg(total_timesteps=1_000_000, eval_every=2000, target_return=1.0), tmp_path)
    assert 2000 <= metrics["train/to_target_steps"] < 4000 and metrics["train/env_steps"] < 50_000


def test_a_crashing_worker_is_reported_not_hung_on(tmp_path):
    started = time.time()
    with pytest.raises(WorkerError, match=r"(?s)A3C worker \d failed:.*RuntimeError: the env broke at step 31"):
        train(make_cfg(f"{__name__}:CrashingCartPole-v0", total_timesteps=10_000), tmp_path)
    assert time.time() - started < 60
    assert multiprocessing.active_children() == []  # every worker process was joined


def test_stop_and_resume_finish_the_budget(tmp_path):
    cfg = make_cfg(total_timesteps=4000, num_steps=10, checkpoint_every=200)  # env steps: about 20 updates
    with Run(tmp_path, config=OmegaConf.to_container(cfg, enum_to_str=True), quiet=True) as run:
        run.should_stop = lambda: (tmp_path / "checkpoints" / "last.ckpt").exists()  # stop after the first one
        stopped = a3c.train(cfg, run)
    saved = core.load(tmp_path / "checkpoints" / "last.ckpt")
    assert "eval/return_mean" not in stopped and 0 < saved["session"]["progress"] < 4000
    assert saved["session"]["extra"]["generation"] == 0 and saved["session"]["progress"] == stopped["train/env_steps"]
    metrics = train(cfg, tmp_path, resume=tmp_path)
    resumed = core.load(tmp_path / "checkpoints" / "last.ckpt")
    assert resumed["session"]["extra"]["generation"] == 1 and metrics["train/env_steps"] >= 4000
    assert "eval/return_mean" in metrics
    # the shared step counts lost no update to the races between the workers
    assert optimizer_steps(resumed) == metrics["train/iterations"] > optimizer_steps(saved) \
        == saved["session"]["iterations"]


def optimizer_steps(checkpoint):
    (steps,) = {int(step) for step in checkpoint["optimizer"]["state"][0]["step"]}  # every parameter alike
    return steps


SCRIPT = """
import sys
from omegaconf import OmegaConf
from agents import a3c
from agents.actor_critic import lr_schedule
from core.runtime.run import Run
agent = OmegaConf.merge(OmegaConf.structured(a3c.Config), {"total_timesteps": 10_000_000, "num_workers": 2,
                                                          "own_sessions": sys.argv[2] == "own"})
cfg = OmegaConf.create({"seed": 0, "device": "cpu", "eval_episodes": 1, "checkpoint_every": 0, "agent": agent,
                        "env": {"id": "CartPole-v1", "num_envs": 1, "vectorization": "sync", "max_episode_steps": None}})
with Run(sys.argv[1], config=OmegaConf.to_container(cfg, enum_to_str=True), quiet=True) as run:
    print(a3c.train(cfg, run)["train/env_steps"], flush=True)
"""


def start_trainer(run_dir, sessions="shared"):
    """An A3C run in a subprocess; returns it and its worker pids once the workers are updating."""
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT), str(run_dir), sessions], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(children(process.pid)) < 2:
        time.sleep(0.2)
    time.sleep(3)  # past the workers' start-up: they are in their update loop
    return process, children(process.pid)


def session(pid):
    return int(pathlib.Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[3])


def wait_gone(pids, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return not any(alive(pid) for pid in pids)


def test_ctrl_c_stops_cleanly_with_a_checkpoint(tmp_path):
    # the workers ignore SIGINT; the trainer stops them through the shared flag, checkpoints and returns
    process, pids = start_trainer(tmp_path)
    assert len(pids) >= 2
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert int(out.split()[-1]) > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert wait_gone(pids, 10)


@pytest.mark.parametrize("sessions", ["shared", "own"])
def test_a_killed_trainer_leaves_no_orphans(tmp_path, sessions):
    process, pids = start_trainer(tmp_path, sessions)
    assert len(pids) >= 2
    expected = 2 if sessions == "own" else 0  # the resource tracker stays in the trainer's session
    deadline = time.time() + 30  # a loaded machine may take a while to get the workers into their sessions
    while True:
        pids = children(process.pid)
        worker_sessions = {session(pid) for pid in pids if alive(pid)} - {session(process.pid)}
        if len(worker_sessions) == expected or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(worker_sessions) == expected
    process.kill()
    process.wait(timeout=10)
    assert wait_gone(pids, 15)


def test_ray_missing_or_unreachable_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"agent.backend=ray needs Ray, which is not installed: "
                                          r"pip install 'rlgen-lab\[ray\]'"):
        train(make_cfg(backend="ray"), tmp_path / "missing")
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))  # importable; the address is checked first
    with pytest.raises(ConfigError, match=r"the Ray cluster at agent.ray_address='127.0.0.1:1' does not answer"):
        train(make_cfg(backend="ray", ray_address="127.0.0.1:1"), tmp_path / "unreachable")


@pytest.mark.slow
def test_ray_backend_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    metrics = train(make_cfg(backend="ray", total_timesteps=20_000, num_workers=2), tmp_path)
    updates = metrics["a3c/worker_updates"]
    assert len(updates) == 2 and min(updates) > 50 and metrics["train/env_steps"] >= 20_000
    first, last = metrics["a3c/worker_first_update_s"], metrics["a3c/worker_last_update_s"]
    assert max(first) < min(last)
    assert metrics["eval/return_mean"] > 50


def test_ray_auto_without_a_cluster_fails_clearly(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"cannot connect to Ray at agent.ray_address='auto': Could not find any "
                                          r"running Ray instance"):
        train(make_cfg(backend="ray", ray_address="auto"), tmp_path)
