"""Sweeps end to end (scripts/train.py -m in a subprocess): job names, progress, the summary of every
job, aggregates over seeds, curves, refusing and resuming a sweep directory, and the launcher and
sweeper plugins where they are installed."""
import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.runtime.sweep import aggregate, dirname, job_number, DIRNAME_LIMIT

REPO = Path(__file__).resolve().parents[1]
TINY = ["agent=reinforce", "env=cartpole", "agent.total_timesteps=1200", "eval_episodes=2"]


def train(*args, timeout=240):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def jobs_of(sweep):
    return {job_number(p): p for p in sweep.iterdir() if p.is_dir()}


def summary_rows(sweep):
    with open(sweep / "summary.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two seeds of two discount factors, one of which no job can accept, and a bad type for one lr."""
    sweep = tmp_path_factory.mktemp("sweeps") / "s"
    result = train("-m", *TINY, "seed=0,1", "agent.gamma=0.99,2.0", f"hydra.sweep.dir={sweep}")
    return sweep, result


def test_job_directories_carry_their_overrides(sweep):
    sweep, _ = sweep
    names = {number: path.name for number, path in jobs_of(sweep).items()}
    assert names[0] == "0_agent.gamma-0.99_agent.total_timesteps-1200_agent-reinforce_env-cartpole_eval_episodes-2_seed-0"
    assert names[3] == "3_agent.gamma-2.0_agent.total_timesteps-1200_agent-reinforce_env-cartpole_eval_episodes-2_seed-1"


def test_dirname_is_filesystem_safe_unique_by_prefix_and_capped():
    assert dirname(7, "") == "7"
    assert dirname(7, "dataset-toy/moons_model.layers-[4, 4]_x-'a=b,c'") == \
        "7_dataset-toy-moons_model.layers-_4__4__x-_a_b_c_"
    long = dirname("12-00-00-000001", "agent.lr-" + "1" * 300)
    assert len(long) == DIRNAME_LIMIT and long.startswith("12-00-00-000001_agent.lr-111")


def test_progress_lines_count_jobs_failures_and_eta(sweep):
    _, result = sweep
    lines = [line for line in result.stdout.splitlines() if line.startswith("sweep: ") and "jobs done" in line]
    assert [line.split(",")[0] for line in lines] == [f"sweep: {n}/4 jobs done" for n in (1, 2, 3, 4)]
    assert "ETA" in lines[0] and "ETA" not in lines[-1]
    assert lines[-1].startswith("sweep: 4/4 jobs done, 2 failed, ")


def test_summary_lists_every_job_with_status_reason_and_metrics(sweep):
    sweep, result = sweep
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: 2 sweep job(s) failed")
    rows = summary_rows(sweep)
    assert [row["job"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["status"] for row in rows] == ["completed", "failed", "completed", "failed"]
    for row in rows:
        metrics = json.loads((sweep / row["directory"] / "metrics.json").read_text())
        if row["status"] == "completed":
            assert float(row["eval/return_mean"]) == metrics["eval/return_mean"] == metrics["objective"]
            assert float(row["wall_s"]) == metrics["time/wall_s"] and row["error"] == ""
        else:
            assert row["error"] == metrics["error"] == "agent.gamma must be in [0, 1], got 2.0"
            assert row["eval/return_mean"] == ""
    assert "seed=0 agent.gamma=2.0" in rows[1]["overrides"]
    markdown = (sweep / "summary.md").read_text()
    assert "| 1 | seed=0,agent.gamma=2.0 | failed: agent.gamma must be in [0, 1], got 2.0 |" in markdown
    assert "  3    seed=1,agent.gamma=2.0   failed: agent.gamma must be in [0, 1], got 2.0" in result.stdout


def test_seeds_are_aggregated_and_curves_drawn(sweep):
    sweep, result = sweep
    returns = [json.loads((jobs_of(sweep)[n] / "metrics.json").read_text())["eval/return_mean"] for n in (0, 2)]
    with open(sweep / "aggregates.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["metric"] == "eval/return_mean"]
    assert len(rows) == 1 and "seed" not in rows[0]["configuration"] and "agent.gamma=0.99" in rows[0]["configuration"]
    assert rows[0]["n"] == "2" and float(rows[0]["mean"]) == pytest.approx(np.mean(returns), rel=1e-3)
    assert float(rows[0]["std"]) == pytest.approx(np.std(returns), rel=1e-3, abs=1e-9)
    assert "over seeds" in result.stdout
    assert Image.open(sweep / "curves.png").format == "PNG"


def test_iqm_and_its_bootstrap_interval():
    result = aggregate([1.0, 2.0, 3.0, 4.0, 100.0])
    assert result["iqm"] == 3.0 and result["mean"] == 22.0  # the middle half ignores the outlier
    assert 1.0 <= result["iqm_low"] < 3.0 < result["iqm_high"] <= 100.0
    assert aggregate([1.0, 2.0, 3.0, 4.0, 100.0]) == result  # a fixed bootstrap seed: the same interval
    one = aggregate([5.0])
    assert one["iqm"] == 5.0 and np.isnan(one["iqm_low"])


def test_a_sweep_directory_is_refused_then_resumed(tmp_path):
    sweep = tmp_path / "s"
    assert train("-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}").returncode == 0
    (jobs_of(sweep)[1] / "metrics.json").unlink()  # as if job 1 had been killed after its checkpoint
    checkpoint = next(jobs_of(sweep)[0].glob("checkpoints/last.ckpt"))
    before = checkpoint.stat().st_mtime_ns

    again = train("-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 2
    assert again.stderr.strip() == (f"error: {sweep} already holds a sweep; continue it with python scripts/train.py "
                                    f"-m resume={sweep}, or choose another hydra.sweep.dir")

    changed = train("-m", f"resume={sweep}", "agent.lr=0.5")
    assert changed.returncode == 2 and "it cannot change agent.lr=0.5" in changed.stderr

    resumed = train("-m", f"resume={sweep}")
    assert resumed.returncode == 0, resumed.stderr
    assert f"job 0 completed already: {jobs_of(sweep)[0]}" in resumed.stdout
    assert checkpoint.stat().st_mtime_ns == before  # the completed job was left as it was
    assert json.loads((jobs_of(sweep)[1] / "metrics.json").read_text())["status"] == "completed"
    assert sorted(jobs_of(sweep)) == [0, 1]
    # a job directory's name is a plain value for Hydra: resume=<job dir> continues that job alone
    alone = train(f"resume={jobs_of(sweep)[0]}", "agent.total_timesteps=1500", "quiet=true")
    assert alone.returncode == 0 and f"run completed: {jobs_of(sweep)[0]}" in alone.stdout, alone.stderr


def test_a_job_whose_override_cannot_be_composed_fails_alone(tmp_path):
    sweep = tmp_path / "s"
    result = train("-m", *TINY, "agent.lr=0.01,abc", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1
    rows = summary_rows(sweep)
    assert [row["status"] for row in rows] == ["completed", "failed"]
    assert rows[1]["error"] == "Error merging override agent.lr=abc: Value 'abc' of type 'str' could not be " \
                               "converted to Float"
    assert rows[1]["directory"].startswith("1_agent.lr-abc_")


def test_an_unknown_launcher_names_the_installed_ones_and_the_extras(tmp_path):
    result = train("-m", *TINY, "hydra/launcher=nosuch", f"hydra.sweep.dir={tmp_path / 's'}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: unknown hydra/launcher 'nosuch'; installed: basic")
    if not plugin("hydra_joblib_launcher"):
        assert "pip install -e '.[sweep]' brings joblib, local_parallel" in result.stderr
    else:
        assert "installed: basic, joblib, local_parallel" in result.stderr
    assert not (tmp_path / "s").exists()


def plugin(name):
    try:
        return importlib.util.find_spec(f"hydra_plugins.{name}") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(not plugin("hydra_joblib_launcher"), reason="hydra-joblib-launcher not installed (extra sweep)")
def test_joblib_launcher_shows_progress_and_the_summary(tmp_path):
    sweep = tmp_path / "s"
    result = train("-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", *TINY, "seed=0,1,2",
                   f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    assert "sweep: 3/3 jobs done" in result.stdout  # the jobs ran in worker processes; this one polled them
    assert [row["status"] for row in summary_rows(sweep)] == ["completed"] * 3


@pytest.mark.skipif(not plugin("hydra_optuna_sweeper"), reason="hydra-optuna-sweeper not installed (extra sweep)")
def test_optuna_trials_are_in_the_summary_without_console_noise(tmp_path):
    sweep = tmp_path / "s"
    result = train("-m", "hydra/sweeper=optuna_search", "hydra.sweeper.n_trials=3", *TINY,
                   "agent.lr=tag(log, interval(0.001, 0.1))", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warnings from optuna/sqlalchemy
    assert "A new study created" not in result.stdout and "alembic" not in result.stdout
    rows = summary_rows(sweep)
    assert len(rows) == 3 and len({row["overrides"] for row in rows}) == 3  # three trials, three learning rates
    for row in rows:
        metrics = json.loads((sweep / row["directory"] / "metrics.json").read_text())
        assert float(row["eval/return_mean"]) == metrics["objective"]  # the value Optuna got for the trial
    assert "sweep: 3/3 jobs done" in result.stdout
