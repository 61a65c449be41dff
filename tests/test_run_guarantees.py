"""The run guarantees every trainer gets from the one run session, tried as a user meets them:
through the CLI in subprocesses, with failures injected (a full disk, a busy directory, a bad
resume, a failing sweep job, a half-written checkpoint)."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import core
from core.runtime.errors import ConfigError
from core.runtime.run import Run, RunDirectoryBusy
from core.runtime.sweep import job_number

REPO = Path(__file__).resolve().parents[1]
# about a second of PPO on CartPole
PPO = ["agent=ppo", "env=cartpole", "agent.total_timesteps=512", "agent.num_envs=2", "agent.num_steps=64",
       "agent.batch_size=64", "agent.n_epochs=1", "eval_episodes=1", "quiet=true"]


def train(*args, cwd=REPO, limit_file_size=None, timeout=120):
    """scripts/train.py in a subprocess; `limit_file_size` (bytes) makes every larger file write fail
    as a full disk would (RLIMIT_FSIZE, with SIGXFSZ ignored so the write returns the error)."""
    prelude = ""
    if limit_file_size is not None:
        prelude = (f"import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                   f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_file_size}, {limit_file_size})); ")
    code = (f"{prelude}import runpy, sys; sys.argv = ['train.py', *sys.argv[1:]]; "
            f"runpy.run_path({str(REPO / 'scripts' / 'train.py')!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1]


def snapshot(directory):
    """Every file under `directory` with its bytes' hash and modification time."""
    return {str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = train(*PPO, "checkpoint_every=256", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_a_run_ends_by_saying_where_its_results_are(finished_run):
    run_dir, result = finished_run
    assert f"run completed: {run_dir}" in result.stdout
    assert "eval/return_mean" in result.stdout
    for how in (f"tensorboard --logdir {run_dir}", f"python scripts/plot.py {run_dir}",
                f"python scripts/evaluate.py {run_dir}"):
        assert how in result.stdout


def test_a_refused_run_changes_nothing_in_the_directory_it_refused(finished_run):
    run_dir, _ = finished_run
    before = snapshot(run_dir)
    result = train(*PPO, "agent.lr=0.01", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert "already holds a run's checkpoints" in error_line(result)
    assert snapshot(run_dir) == before


def test_a_second_run_into_a_directory_in_use_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    with Run(run_dir, config={}):  # a run in progress holds the directory
        result = train(*PPO, f"hydra.run.dir={run_dir}")
        with pytest.raises(RunDirectoryBusy):
            Run(run_dir, config={})
    assert result.returncode == 2
    assert error_line(result) == f"error: {run_dir} is in use by another run; wait for it to finish or choose " \
                                 "another run directory"
    assert list(run_dir.iterdir()) == []
    Run(run_dir, config={}).close()  # free again once the first run ends


def test_errors_before_training_starts_leave_no_run_directory(tmp_path):
    result = train(*PPO, "agent.batch_size=100000", cwd=tmp_path)  # larger than a rollout: refused at setup
    assert result.returncode == 2
    assert "is larger than a rollout" in error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_resume_with_a_bad_path_names_it(tmp_path):
    missing = tmp_path / "no-such-run"
    result = train(f"resume={missing}", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == f"error: no run directory or checkpoint file at {missing}"
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_a_checkpoint_of_another_algorithm_in_one_line(finished_run, tmp_path):
    run_dir, _ = finished_run
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    result = train("agent=dqn", "env=cartpole", f"resume={checkpoint}", f"hydra.run.dir={tmp_path / 'new'}")
    assert result.returncode == 2
    assert "was trained with agent=ppo, this run has agent=dqn" in error_line(result)
    assert not (tmp_path / "new").exists()


def test_resume_refuses_a_change_of_shape_in_one_line(finished_run, tmp_path):
    run_dir, _ = finished_run
    before = snapshot(run_dir)
    result = train(f"resume={run_dir}", "agent.hidden=[16]")
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith("error: resume cannot change agent.hidden=[64, 64]->[16]")
    assert snapshot(run_dir) == before


def test_a_learning_rate_given_with_resume_takes_effect_and_is_recorded(tmp_path):
    run_dir = tmp_path / "run"
    assert train(*PPO, "agent.anneal_lr=false", f"hydra.run.dir={run_dir}").returncode == 0
    first = core.load(run_dir / "checkpoints" / "last.ckpt")
    assert [g["lr"] for g in first["optimizer"]["param_groups"]] == [0.001]
    result = train(f"resume={run_dir}", "agent.total_timesteps=1024", "agent.lr=0.0005")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = core.load(run_dir / "checkpoints" / "last.ckpt")
    assert resumed["step"] > first["step"]
    assert [g["lr"] for g in resumed["optimizer"]["param_groups"]] == [0.0005]
    assert resumed["config"]["agent"]["lr"] == 0.0005
    saved_overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "agent.lr=0.0005" in saved_overrides and "resume=" not in saved_overrides
    from core.runtime.events import read_run
    assert any("agent.lr 0.001 -> 0.0005" in text for _, text in read_run(run_dir).texts["resume/text_summary"])


def test_stale_checkpoint_temporaries_are_removed_on_resume(finished_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], run_dir)
    for name in ("ckpt_768.ckpt.1a2b3c4d.tmp", ".last.ckpt.4242.tmp"):
        (run_dir / "checkpoints" / name).write_bytes(b"half a checkpoint")
    result = train(f"resume={run_dir}", "agent.total_timesteps=1024")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list((run_dir / "checkpoints").glob("*.tmp")) and not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_a_full_disk_on_a_checkpoint_ends_the_run_in_one_line_with_the_last_good_one_intact(tmp_path):
    # DQN's checkpoints hold its replay buffer: the first one fits the limit, a later, larger one does not
    run_dir = tmp_path / "run"
    start = time.monotonic()
    result = train("agent=dqn", "env=cartpole", "agent.total_timesteps=4000", "agent.learning_starts=100",
                   "agent.buffer_size=4000", "checkpoint_every=1000", "logger=none", "quiet=true",
                   f"hydra.run.dir={run_dir}", limit_file_size=1_190_000)  # ckpt_1000 and _2000 fit, _3000 not
    assert time.monotonic() - start < 60  # it ended instead of hanging
    assert result.returncode == 1
    line = error_line(result)
    assert line == f"error: cannot write {run_dir / 'checkpoints'}/ckpt_3000.ckpt: File too large (errno 27); the last " \
                   f"good checkpoint stays {run_dir / 'checkpoints' / 'last.ckpt'} (step 2000)"
    assert metrics(run_dir)["status"] == "write-error"
    good = core.load(run_dir / "checkpoints" / "last.ckpt")  # the last good checkpoint loads
    assert good["step"] == 2000
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


def test_a_full_disk_on_the_event_file_ends_the_run_instead_of_hanging(tmp_path):
    run_dir = tmp_path / "run"
    start = time.monotonic()
    # no evaluation before the end: its best.ckpt would be the first file over the limit
    result = train(*PPO, "agent.total_timesteps=20000", "checkpoint_every=0", "agent.eval_every=0",
                   f"hydra.run.dir={run_dir}", limit_file_size=20_000, timeout=90)
    assert time.monotonic() - start < 60
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(f"error: cannot write {run_dir}/events.out.tfevents.") and "File too large" in line
    assert metrics(run_dir)["status"] == "write-error"


def test_a_failing_sweep_job_is_reported_and_the_others_run(tmp_path):
    result = train("-m", *PPO, "agent.gamma=0.99,2.0,0.9", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 1
    jobs = {job_number(p): metrics(p) for p in (tmp_path / "sweep").iterdir() if p.is_dir()}
    assert {number: m["status"] for number, m in jobs.items()} == {0: "completed", 1: "failed", 2: "completed"}
    assert "agent.gamma must be in [0, 1]" in jobs[1]["error"]
    assert "sweep: 2 of 3 jobs completed" in result.stdout
    assert error_line(result).startswith("error: 1 sweep job(s) failed:")


def test_session_refuses_a_checkpoint_of_another_trainer(tmp_path):
    from core import nn
    with Run(tmp_path / "a", config={}) as run:
        session = run.session("ppo", "env_steps", 10)
        session.track(model=nn.Linear(2, 2))
        session.advance(10)
        session.finish()
    with Run(tmp_path / "b", config={}, resume=tmp_path / "a") as run:
        session = run.session("dqn", "env_steps", 10)
        with pytest.raises(ConfigError, match="is a checkpoint of ppo, not of dqn"):
            session.track(model=nn.Linear(2, 2))
    with Run(tmp_path / "c", config={}, resume=tmp_path / "a") as run:
        session = run.session("ppo", "env_steps", 10)
        with pytest.raises(ConfigError, match=r"does not fit this run's model: "):
            session.track(model=nn.Linear(3, 2))


def test_session_cadence_counts_in_the_declared_unit(tmp_path):
    from core import nn
    evaluations = []
    with Run(tmp_path / "run", config={}) as run:
        session = run.session("ppo", "env_steps", 100, checkpoint_every=30, eval_every=25,
                              evaluate=lambda: evaluations.append(session.progress) or {"eval/return_mean": 1.0})
        session.track(model=nn.Linear(2, 2))
        while session.running():
            session.advance(10)
        final = session.finish()
    assert evaluations == [30, 50, 80, 100]
    assert sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "run" / "checkpoints").glob("ckpt_*.ckpt")) == \
        [60, 90, 100]  # keep_checkpoints=3 of 30, 60, 90 and the last
    assert final["train/env_steps"] == 100 and final["train/iterations"] == 10 and final["eval/return_mean"] == 1.0
    assert len(evaluations) == 4  # the final evaluation reuses the one at step 100
    assert os.path.exists(tmp_path / "run" / "config.yaml")


# one tiny run of each kind of trainer: the same session gives every one of them the same guarantees
TRAINERS = {
    "ppo": PPO,
    "a2c": ["agent=a2c", "env=cartpole", "agent.total_timesteps=200", "eval_episodes=1"],
    "a3c": ["agent=a3c", "env=cartpole", "agent.num_workers=1", "agent.total_timesteps=200", "eval_episodes=1"],
    "dqn": ["agent=dqn", "env=cartpole", "agent.total_timesteps=300", "agent.learning_starts=100", "eval_episodes=1"],
    "reinforce": ["agent=reinforce", "env=cartpole", "agent.total_timesteps=300", "eval_episodes=1"],
    "tabular": ["agent=tabular", "env=mdp3"],
    "vae": ["model=vae", "dataset=digits", "model.epochs=1", "model.quality.enabled=false"],
    "supervised": ["model=supervised", "dataset=digits", "model.epochs=1"],
    "book_check": ["agent=book_check", "env=cartpole", "agent.check=dqn_loss"],
}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_runs_in_the_session_with_the_same_guarantees(trainer, tmp_path):
    run_dir = tmp_path / "run"
    result = train(*TRAINERS[trainer], "quiet=true", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run completed: {run_dir}" in result.stdout and f"tensorboard --logdir {run_dir}" in result.stdout
    assert metrics(run_dir)["status"] == "completed"
    assert core.load(run_dir / "checkpoints" / "last.ckpt")["session"]["progress"] > 0
    before = snapshot(run_dir)
    refused = train(*TRAINERS[trainer], "quiet=true", f"hydra.run.dir={run_dir}")
    assert refused.returncode == 2 and "already holds a run's checkpoints" in error_line(refused)
    assert snapshot(run_dir) == before


def test_the_summary_names_only_what_works_for_the_run(tmp_path):
    run_dir = tmp_path / "run"
    result = train(*TRAINERS["book_check"], "quiet=true", f"hydra.run.dir={run_dir}")
    look = next(line for line in result.stdout.splitlines() if line.strip().startswith("look:"))
    assert f"python scripts/plot.py {run_dir} --tag check/" in look and "evaluate.py" not in look
    # and each viewer, asked anyway, says in one line why not
    for script, args in (("evaluate.py", [str(run_dir)]), ("plot.py", [str(run_dir)])):
        done = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr


NORMALIZED_PPO = [*PPO, "agent.total_timesteps=4096", "env.normalize_obs=true", "env.normalize_reward=true",
                  "checkpoint_every=256"]


def test_a_killed_normalised_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert train(*NORMALIZED_PPO, f"hydra.run.dir={whole}").returncode == 0
    code = (f"import runpy, sys; sys.argv = ['train.py', *sys.argv[1:]]; "
            f"runpy.run_path({str(REPO / 'scripts' / 'train.py')!r}, run_name='__main__')")
    process = subprocess.Popen([sys.executable, "-c", code, *NORMALIZED_PPO, f"hydra.run.dir={killed}"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # last.ckpt, not the first ckpt_*.ckpt: a kill between writing a periodic checkpoint and pointing
    # last.ckpt at it would leave no last.ckpt to read below (the resume would then start over)
    while process.poll() is None and not (killed / "checkpoints" / "last.ckpt").is_file():
        time.sleep(0.02)
    process.kill()  # SIGKILL: no last checkpoint, the newest periodic one is where the run resumes
    process.wait()
    assert core.load(killed / "checkpoints" / "last.ckpt")["session"]["progress"] < 4096
    result = train(f"resume={killed}")
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = (core.load(run / "checkpoints" / "last.ckpt") for run in (whole, killed))
    assert metrics(killed)["eval/return_mean"] == metrics(whole)["eval/return_mean"]
    assert all(np.array_equal(a["model"][key], b["model"][key]) for key in a["model"])
    for kind, count in (("obs", 2 + 4096), ("reward", 4096)):  # the first reset's observations and every step
        assert a["normalization"][kind]["count"] == b["normalization"][kind]["count"] == count
        for name in ("mean", "var"):
            assert np.array_equal(a["normalization"][kind][name], b["normalization"][kind][name])


@pytest.mark.parametrize("args, line", [
    ([*PPO, "env.id=FrozenLake-v1", "env.normalize_obs=true"],
     "error: env.normalize_obs needs Box (array) observations; FrozenLake-v1 has Discrete(16) "
     "(set env.normalize_obs=false)"),
    (["agent=reinforce", "env=cartpole", "env.normalize_reward=true"],
     "error: env.normalize_reward=true is not supported by agent=reinforce; agents that normalise their envs: "
     "a2c, dqn, dqn_fast, ppo, ppo_native"),
    ([*PPO, "env.clip_obs=-1"], "error: env.clip_obs must be a positive finite number, got -1.0"),
    (["agent=dqn", "env=cartpole", "agent.gradient_steps=0"],
     "error: agent.gradient_steps must be >= 1, or -1 (as many updates as env steps collected), got 0"),
])
def test_bad_normalisation_and_gradient_steps_are_refused_in_one_line(args, line, tmp_path):
    result = train(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == line
    assert list(tmp_path.iterdir()) == []
