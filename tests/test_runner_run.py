"""core.runtime.run: checkpoints, resume paths, RNG state, finite checks, signals, metrics and hparams."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

import core
from core.runtime.events import read_run
from core.runtime.run import (
    Checkpoints, NonFiniteError, Run, get_rng_state, resolve_resume, run_dir_of_checkpoint, set_rng_state,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_checkpoints_keep_the_newest_and_point_last_at_the_newest(tmp_path):
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=2, config={"seed": 3})
    for step in (1, 2, 10, 11):
        ckpts.save({"w": np.full(3, step, dtype=np.float32)}, step)
    assert [p.name for p in ckpts.periodic()] == ["ckpt_10.ckpt", "ckpt_11.ckpt"]  # numeric, not text, order
    last = ckpts.latest()
    assert last["step"] == 11 and last["config"] == {"seed": 3}
    np.testing.assert_array_equal(last["w"], np.full(3, 11, dtype=np.float32))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt_10.ckpt", "ckpt_11.ckpt", "last.ckpt"]


def test_keep_zero_keeps_every_checkpoint(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=0)
    for step in range(5):
        ckpts.save({"x": step}, step)
    assert len(ckpts.periodic()) == 5


def test_a_nan_state_is_refused_and_the_last_good_checkpoint_stays(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=3)
    ckpts.save({"model": {"w": core.tensor([1.0, 2.0])}}, 1)
    with pytest.raises(NonFiniteError, match=r"state\['model'\]\['w'\] holds NaN.*last.ckpt \(step 1\)"):
        ckpts.save({"model": {"w": core.tensor([1.0, float("nan")])}}, 2)
    assert ckpts.latest()["step"] == 1
    assert [p.name for p in ckpts.periodic()] == ["ckpt_1.ckpt"]
    ckpts.save({"best": float("nan"), "q": np.array([-np.inf, 0.0])}, 3)  # plain floats and inf are allowed


def test_latest_is_none_without_checkpoints(tmp_path):
    assert Checkpoints(tmp_path / "none").latest() is None


def test_resolve_resume_accepts_a_run_dir_or_a_file_and_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        resolve_resume(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    core.save({"step": 4}, tmp_path / "checkpoints" / "last.ckpt")  # a checkpoint dir with only last.ckpt
    assert resolve_resume(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    Checkpoints(tmp_path / "checkpoints").save({}, 5)
    assert resolve_resume(tmp_path) == tmp_path / "checkpoints" / "ckpt_5.ckpt"
    core.save({"step": 6}, tmp_path / "checkpoints" / "ckpt_6.ckpt")  # killed before last.ckpt pointed at step 6
    assert resolve_resume(tmp_path) == tmp_path / "checkpoints" / "ckpt_6.ckpt"
    assert resolve_resume(tmp_path / "checkpoints" / "ckpt_5.ckpt") == tmp_path / "checkpoints" / "ckpt_5.ckpt"
    assert core.load(resolve_resume(tmp_path / "checkpoints" / "last.ckpt"))["step"] == 5
    assert run_dir_of_checkpoint(tmp_path / "checkpoints" / "ckpt_5.ckpt") == tmp_path.resolve()
    assert run_dir_of_checkpoint(tmp_path / "elsewhere.ckpt") is None
    with pytest.raises(FileNotFoundError, match="no run directory or checkpoint file at"):
        resolve_resume(tmp_path / "missing")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    core.manual_seed(7)
    random.seed(7)
    core.randn(3)
    state = get_rng_state()
    Checkpoints(tmp_path).save({"rng": state}, 0)
    expected = (core.randn(4).numpy(), np.random.rand(2), random.random())
    core.manual_seed(99)
    random.seed(99)
    set_rng_state(Checkpoints(tmp_path).latest()["rng"])
    got = (core.randn(4).numpy(), np.random.rand(2), random.random())
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_run_writes_config_metrics_and_hparams(tmp_path):
    config = {"seed": 1, "agent": {"lr": 0.01, "hidden": [8, 8]}}
    with Run(tmp_path, config=config, seed=1, quiet=True) as run:
        run.logger.scalar("charts/episodic_return", 10.0, 5)
        run.finish({"eval/return_mean": 12.5, "train/env_steps": 5})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == {"status": "completed", "eval/return_mean": 12.5, "train/env_steps": 5}
    events = read_run(tmp_path)
    assert events.hparams["agent.lr"] == 0.01 and events.hparams["agent.hidden"] == "[8, 8]"
    assert set(events.hparam_metrics) == {"eval/return_mean", "train/env_steps"}
    assert "lr: 0.01" in events.texts["config/text_summary"][0][1]


def test_a_fresh_run_refuses_a_directory_holding_checkpoints_and_resume_loads_them(tmp_path):
    with Run(tmp_path, quiet=True, tensorboard=False) as run:
        run.checkpoints.save({"iteration": 4}, 4)
    with pytest.raises(FileExistsError, match="resume="):
        Run(tmp_path, quiet=True, tensorboard=False)
    with Run(tmp_path, quiet=True, tensorboard=False, resume=tmp_path) as run:
        assert run.resume_state["iteration"] == 4 and run.resume_state["step"] == 4


def test_check_finite(tmp_path):
    with Run(tmp_path, quiet=True, tensorboard=False) as run:
        run.check_finite("loss", core.tensor(1.5), 3)
        run.check_finite("loss", np.array([1.0, 2.0]), 3)
        with pytest.raises(NonFiniteError, match=r"^losses/x is inf at step 3: .*none \(no checkpoint"):
            run.check_finite("losses/x", float("inf"), 3)
        with pytest.raises(NonFiniteError, match="an array with 1 non-finite entries"):
            run.check_finite("grads", np.array([1.0, np.nan]), 4)


def test_sigterm_requests_a_stop_and_close_restores_the_handlers(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with Run(tmp_path, quiet=True, tensorboard=False) as run:
        assert not run.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert run.should_stop()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_second_signal_exits_at_once(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from core.runtime.run import Run
        run = Run({str(tmp_path)!r}, quiet=True, tensorboard=False)
        print("ready", flush=True)
        while True:  # a trainer that never looks at should_stop()
            time.sleep(0.01)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None  # the first Ctrl-C only asks
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert "SIGINT again: exiting now" in proc.stderr.read()


def test_histograms_follow_histogram_every(tmp_path):
    from agents.networks import mlp
    net = mlp(3, [4], 2)
    net(core.ones(1, 3)).sum().backward()
    with Run(tmp_path, quiet=True, histogram_every=2) as run:
        run.log_histograms(net, 1)
        run.log_histograms(net, 2, prefix="policy/")
        run.logger.flush()
    assert read_run(tmp_path).histograms == ["policy/grads/0.bias", "policy/grads/0.weight", "policy/grads/2.bias",
                                             "policy/grads/2.weight", "policy/params/0.bias", "policy/params/0.weight",
                                             "policy/params/2.bias", "policy/params/2.weight"]
