"""Device "emu", the strict cupy stand-in (core/backend_emu.py): it fails where cupy would, and one short
training of each model family runs on it end to end through scripts/train.py."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import core
from core import backend
from core.backend import to_device, to_numpy

REPO = Path(__file__).resolve().parents[1]
xp = backend.array_module("emu")


# ----- it fails where cupy fails -----
def test_implicit_conversion_to_numpy_is_refused():
    a = xp.arange(3.0)
    host = np.zeros(3)
    for convert in (np.asarray, np.array, lambda x: host.__setitem__(slice(None), x), lambda x: host[x.astype(int)]):
        with pytest.raises(TypeError, match="implicit conversion"):
            convert(a)
    for explicit in (a.get(), to_device(a, "cpu"), to_numpy(a), xp.asnumpy(a)):
        assert type(explicit) is np.ndarray and explicit.tolist() == [0.0, 1.0, 2.0]


def test_host_arrays_are_refused_in_device_operations():
    a, host = xp.ones(3), np.ones(3)
    for mix in (lambda: a + host, lambda: host * a, lambda: xp.where(host > 0, a, 0.0), lambda: xp.exp(host),
                lambda: xp.concatenate([a, host]), lambda: xp.multiply(a, 2, out=host)):
        with pytest.raises(TypeError, match="host numpy array"):
            mix()
    with pytest.raises(ValueError, match="cannot be used for fill"):
        a[:2] = host[:2]
    a[np.array([0, 2])] = np.array([5.0, 7.0])  # host index arrays and advanced-index values: cupy copies them over
    a[1] = 6.0
    assert a.get().tolist() == [5.0, 6.0, 7.0] and (a + xp.asarray(host)).get().tolist() == [6.0, 7.0, 8.0]


def test_reductions_and_elements_are_device_arrays():
    a = xp.asarray([[1.0, 2.0], [3.0, 4.0]])
    assert type(a.sum()) is xp.ndarray and a.sum().shape == () and float(a.sum()) == 10.0
    assert type(xp.max(a)) is xp.ndarray and type(a[0, 1]) is xp.ndarray
    first = a[0, 0]
    first += 10  # a view, as on cupy
    assert a.get()[0, 0] == 11.0
    row, _ = a  # iteration gives views too
    row *= 0
    assert a.get().tolist() == [[0.0, 0.0], [3.0, 4.0]]


def test_host_data_is_copied_to_the_device():
    host = np.ones(2)
    a = xp.asarray(host)
    host[0] = 5.0
    assert a.get().tolist() == [1.0, 1.0]
    assert xp.asarray(a) is a and xp.array(a) is not a


def test_random_generators_offer_what_cupys_offer():
    rng = xp.random.default_rng(0)
    assert type(rng.random(3, dtype=np.float32)) is xp.ndarray and rng.standard_normal(2).dtype == np.float64
    assert rng.integers(0, 5, size=4).dtype == np.int64
    for missing in ("permutation", "normal", "choice"):  # not on cupy.random.Generator
        assert not hasattr(rng, missing)
    assert not hasattr(xp.random.RandomState(0), "get_state")


def test_tensors_on_emu():
    assert backend.parse_device("emu") == ("emu", 0)
    with pytest.raises(ValueError, match="unknown device 'emu:1'"):
        backend.parse_device("emu:1")
    x = core.tensor([1.0, 2.0], device="emu", requires_grad=True)
    assert x.device == "emu" and type(x.data) is xp.ndarray
    (x * x).sum().backward()
    assert x.grad.device == "emu" and x.grad.numpy().tolist() == [2.0, 4.0]
    assert (xp.ones(2) + x.detach()).device == "emu"  # a raw device array next to a Tensor: the Tensor's operator
    with pytest.raises(RuntimeError, match="same device"):
        x + core.ones(2)
    with pytest.raises(TypeError, match="tensor.cpu"):
        np.asarray(x.detach())
    assert x.detach().cpu().device == "cpu" and core.ones(2).to("emu").device == "emu"


# ----- one short training of each family, through the CLI -----
def train(tmp_path, *overrides):
    stats = tmp_path / "emu_stats.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "device=emu", "quiet=true",
                           f"hydra.run.dir={tmp_path / 'run'}", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "LAB_EMU_STATS": str(stats)})
    return done, stats


def generative(mnist_root, model, *overrides):
    return (f"model={model}", "dataset=mnist", f"dataset.root={mnist_root}", "dataset.split=test", "dataset.limit=32",
            "model.batch_size=16", "model.epochs=1", "model.quality.enabled=false", *overrides)


FAMILIES = {
    "ppo": lambda root: ("agent=ppo_native", "env=cartpole", "agent.total_timesteps=2048", "agent.target_return=null",
                         "eval_episodes=2"),
    "dqn": lambda root: ("agent=dqn", "env=cartpole", "agent.total_timesteps=600", "agent.learning_starts=200",
                         "agent.train_freq=64", "agent.gradient_steps=4", "eval_episodes=2"),
    # the workers' forward and backward passes on the device, the shared weights on the host
    "a3c": lambda root: ("agent=a3c", "env=cartpole", "agent.num_workers=2", "agent.total_timesteps=400",
                         "eval_episodes=2"),
    "dcgan": lambda root: generative(root, "dcgan"),
    "wgan_gp": lambda root: generative(root, "wgan_gp", "model.n_critic=2"),  # second order through the critic's convs
    "vae": lambda root: generative(root, "vae"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_training_runs_on_the_device(family, mnist_root, tmp_path):
    done, stats = train(tmp_path, *FAMILIES[family](mnist_root))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    numbers = {k: v for k, v in metrics.items() if k.startswith(("losses/", "eval/return"))}
    assert numbers and all(math.isfinite(v) for v in numbers.values()), numbers
    used = json.loads(stats.read_text())
    assert used["arrays"] > 100, used  # the networks and their updates lived on the device


def test_a3c_refuses_forked_workers_on_a_device_in_one_line(tmp_path):
    done, _ = train(tmp_path, "agent=a3c", "env=cartpole", "agent.start_method=fork")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: device=emu needs worker processes that start fresh (a forked process cannot use the parent's GPU "
        "context): set agent.start_method=spawn or forkserver")