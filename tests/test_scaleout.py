"""Scale-out on existing engines, as the docs advertise it: Hydra's joblib launcher, its Ray launcher
on a local Ray instance, the Slurm launcher's submitit plugin through submitit's local executor, all
real sweeps of scripts/train.py in subprocesses. CI installs the `sweep`, `ray` and `slurm` extras;
without them these tests skip (A3C on Ray has its learning test in tests/test_a3c.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# a few seconds of REINFORCE on CartPole per job
JOB = ["agent=reinforce", "env=cartpole", "agent.total_timesteps=3000", "eval_episodes=2"]


def sweep(tmp_path, *overrides, timeout=240):
    """Run a multirun into tmp_path/sweep; (completed process, [(seed, metrics.json)] of its jobs; the
    seed of a job refused before it started is None: it wrote no config.yaml)."""
    sweep_dir = tmp_path / "sweep"
    tmp_path.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "-m", *JOB, *overrides,
                             f"hydra.sweep.dir={sweep_dir}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    jobs = []
    for path in sweep_dir.rglob("metrics.json"):  # job directories' names are the sweep's business
        config = path.parent / "config.yaml"
        lines = config.read_text().splitlines() if config.is_file() else []
        seed = next((int(line.split(":")[1]) for line in lines if line.startswith("seed:")), None)
        jobs.append((seed, json.loads(path.read_text())))
    return result, jobs


def assert_completed(result, jobs, seeds):
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(seed for seed, _ in jobs) == list(seeds)
    for _, metrics in jobs:
        assert metrics["status"] == "completed" and metrics["train/env_steps"] >= 3000
        assert "eval/return_mean" in metrics


def test_joblib_launcher_runs_jobs_in_parallel_processes_with_the_numbers_of_a_plain_run(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result, jobs = sweep(tmp_path, "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "seed=0,1")
    assert_completed(result, jobs, [0, 1])
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    plain, plain_jobs = sweep(tmp_path / "plain", "seed=1")  # Hydra's basic launcher, in this process
    assert_completed(plain, plain_jobs, [1])
    same = ("eval/return_mean", "eval/return_std", "train/episodes", "train/env_steps")
    [swept] = [metrics for seed, metrics in jobs if seed == 1]
    assert {k: swept[k] for k in same} == {k: plain_jobs[0][1][k] for k in same}


def test_joblib_sweep_lists_a_failed_job_and_exits_non_zero(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result, jobs = sweep(tmp_path, "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "seed=0,1",
                         "agent.lr=0.01,-1")
    assert result.returncode != 0
    statuses = sorted(metrics["status"] for _, metrics in jobs)
    assert statuses == ["completed", "completed", "failed", "failed"]
    assert all("agent.lr" in m["error"] for _, m in jobs if m["status"] == "failed")
    assert "failed:" in result.stdout


@pytest.mark.slow
def test_ray_launcher_on_a_local_instance(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    result, jobs = sweep(tmp_path, "hydra/launcher=ray_cluster", "seed=0,1")
    assert_completed(result, jobs, [0, 1])
    assert "Ray Launcher is launching 2 jobs" in result.stdout + result.stderr


def test_submitit_launcher_through_the_local_executor(tmp_path):
    """The plugin that carries hydra/launcher=slurm, with submitit's local executor in place of
    Slurm's: each job pickled, run in its own process and its result read back from the folder."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result, jobs = sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "seed=0,1")
    assert_completed(result, jobs, [0, 1])
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # the jobs really went through submitit, each with its own log
