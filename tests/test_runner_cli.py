"""scripts/train.py, evaluate.py and plot.py end to end, as subprocesses writing into temporary run dirs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import core
from core.runtime.events import read_run
from core.runtime.run import resolve_resume
from core.runtime.sweep import job_number

REPO = Path(__file__).resolve().parents[1]
# a few seconds of REINFORCE on CartPole: about 40 iterations of 8 episodes
SHORT = ["agent=reinforce", "env=cartpole", "agent.total_timesteps=12000", "eval_episodes=3"]


def command(script, *args):
    return [sys.executable, str(REPO / "scripts" / script), *args]


def run_script(script, *args, timeout=120):
    return subprocess.run(command(script, *args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def train(run_dir, *overrides):
    return run_script("train.py", *overrides, f"hydra.run.dir={run_dir}")


def read_metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def wait_for(path_glob, proc, timeout=60):
    """Wait until a file matching `path_glob` (a (dir, pattern) pair) exists while `proc` runs."""
    directory, pattern = path_glob
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if directory.is_dir() and any(directory.glob(pattern)):
            return
        assert proc.poll() is None, f"the run ended before {pattern} appeared: {proc.communicate()[1][-2000:]}"
        time.sleep(0.005)
    raise TimeoutError(f"{pattern} did not appear in {directory}")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "reinforce"
    result = train(run_dir, *SHORT, "checkpoint_every=3000")  # REINFORCE counts env steps
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A barely trained run: its episodes are short, so recording one is quick."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = train(run_dir, "agent=reinforce", "env=cartpole", "agent.total_timesteps=500", "eval_episodes=2")
    assert result.returncode == 0, result.stderr
    return run_dir


def test_train_writes_the_run_directory(finished_run):
    files = {p.name for p in finished_run.iterdir()}
    assert {".hydra", "config.yaml", "metrics.json", "checkpoints"} <= files
    assert any(name.startswith("events.out.tfevents.") for name in files)
    metrics = read_metrics(finished_run)
    assert metrics["status"] == "completed"
    assert metrics["train/env_steps"] >= 12000 and metrics["eval/episodes"] == 3
    assert {"eval/return_mean", "eval/return_std", "time/wall_s"} <= set(metrics)
    steps = sorted(int(p.stem.removeprefix("ckpt_")) for p in (finished_run / "checkpoints").glob("ckpt_*.ckpt"))
    assert len(steps) == 3 and steps[-1] == metrics["train/env_steps"]  # keep_checkpoints=3, the final one last
    assert all(a // 3000 < b // 3000 for a, b in zip(steps, steps[1:]))  # one per 3,000 env steps crossed
    state = core.load(finished_run / "checkpoints" / "last.ckpt")
    assert state["step"] == state["session"]["progress"] == metrics["train/env_steps"]
    assert state["session"]["iterations"] == metrics["train/iterations"]
    assert state["config"]["choices"]["agent"] == "reinforce" and state["config"]["agent"]["lr"] == 0.01
    assert type(state["config"]["agent"]["baseline"]) is str  # a choice (enum) is stored as the string typed
    assert "  baseline: none\n" in (finished_run / "config.yaml").read_text()


def test_event_files_hold_cleanrl_tags_config_and_hparams(finished_run):
    events = read_run(finished_run)
    metrics = read_metrics(finished_run)
    returns = events.scalars["charts/episodic_return"]
    assert len(returns) == metrics["train/episodes"]
    steps = [step for step, _, _ in returns]
    assert steps == sorted(steps) and steps[-1] == metrics["train/env_steps"]  # at the env step where each ended
    for tag in ("charts/episodic_length", "charts/SPS", "charts/learning_rate", "losses/policy_loss", "losses/entropy"):
        assert len(events.scalars[tag]) >= metrics["train/iterations"]
    assert events.scalars["eval/return_mean"][-1][2] == pytest.approx(metrics["eval/return_mean"], rel=1e-6)
    assert "agent: reinforce" in events.texts["config/text_summary"][0][1]
    assert events.hparams["agent.lr"] == 0.01 and events.hparams["env.id"] == "CartPole-v1"
    assert "eval/return_mean" in events.hparam_metrics


def test_evaluate_reproduces_the_final_evaluation(finished_run):
    result = run_script("evaluate.py", str(finished_run))
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((finished_run / "eval.json").read_text())
    assert json.loads(result.stdout) == evaluation
    metrics = read_metrics(finished_run)
    assert evaluation["eval/episodes"] == 3 and evaluation["eval/seed"] == 10_000
    assert evaluation["eval/return_mean"] == metrics["eval/return_mean"]  # same policy, same seeds
    assert evaluation["step"] == metrics["train/env_steps"]


def test_evaluate_records_a_gif_headlessly(tiny_run):
    pytest.importorskip("pygame")  # gymnasium's CartPole renders with pygame
    result = run_script("evaluate.py", str(tiny_run), "record=gif", "episodes=1")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads(result.stdout)
    gif = Path(evaluation["eval/video"])
    assert gif == tiny_run / "samples" / f"eval_{evaluation['step']}.gif" and gif.read_bytes()[:6] == b"GIF89a"
    from PIL import Image
    with Image.open(gif) as image:  # PIL merges identical consecutive frames, so count at most one per step
        assert image.size == (600, 400) and 1 < image.n_frames <= evaluation["eval/returns"][0] + 1


def test_evaluate_with_sampled_actions_and_the_run_as_an_override(tiny_run):
    result = run_script("evaluate.py", "episodes=2", "greedy=false", f"run={tiny_run / 'checkpoints' / 'last.ckpt'}",
                        "seed=5")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads(result.stdout)
    assert evaluation["eval/episodes"] == 2 and evaluation["eval/greedy"] is False and evaluation["eval/seed"] == 5
    result = run_script("evaluate.py", str(tiny_run), "frames=3")
    assert result.returncode == 2
    assert result.stderr == ("error: Could not override 'frames': Key 'frames' not in 'EvaluateConfig' (allowed keys: "
                             "run, checkpoint, episodes, greedy, seed, record, fps, samples)\n")
    result = run_script("evaluate.py", str(tiny_run / "nowhere"))
    assert result.returncode == 2 and result.stderr.startswith("error: no run directory or checkpoint file at")


@pytest.mark.parametrize("args, message", [
    ([], "no run to evaluate: pass a run directory or checkpoint file first"),
    (["runs/x", "episodes=0"], "episodes must be >= 1, got 0"),
    (["runs/x", "seed=-1"], "seed must be >= 0, got -1"),
    (["runs/x", "record=avi"], "record must be one of gif, mp4, got 'avi'"),
    (["runs/x", "episodes=ten"], "Error merging override episodes=ten: Value 'ten' of type 'str' could not be "
                                 "converted to Integer"),
    (["runs/x", "+frames=3"],
     "unknown key 'frames'; allowed keys: run, checkpoint, episodes, greedy, seed, record, fps, samples"),
    (["runs/x", "run=runs/y"], "two runs to evaluate: runs/x and run=runs/y; pass one"),
    (["runs/x", "runs/y"], "cannot parse the override 'runs/y'"),
])
def test_evaluate_rejects_bad_options_in_one_line(args, message):
    from scripts.evaluate import UsageError, parse_args
    with pytest.raises(UsageError) as error:
        parse_args(args)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_evaluate_takes_the_run_first_or_as_run(tmp_path):
    from scripts.evaluate import parse_args
    weird = tmp_path / "a,b c"  # a positional path needs no Hydra quoting
    assert parse_args([str(weird), "episodes=4"]).run == str(weird)
    options = parse_args(["fps=12", "run=runs/x", "greedy=false"])
    assert (options.run, options.fps, options.greedy) == ("runs/x", 12, False)
    assert options.episodes is None and options.seed is None  # from the run: its eval_episodes and seeds


def test_multirun_over_two_seeds_then_plot(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", *SHORT[:2], "agent.total_timesteps=1500", "eval_episodes=2", "seed=0,1",
                        f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    assert "reinforce:" not in result.stderr  # no progress bars in multirun
    runs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=job_number)
    assert [p.name for p in runs] == [f"{job}_agent.total_timesteps-1500_agent-reinforce_env-cartpole_eval_episodes-2_"
                                      f"seed-{job}" for job in (0, 1)]
    metrics = [read_metrics(run) for run in runs]
    assert all(m["status"] == "completed" for m in metrics)
    seeds = [core.load(run / "checkpoints" / "last.ckpt")["config"]["seed"] for run in runs]
    assert seeds == [0, 1]
    first_returns = [read_run(run).scalars["charts/episodic_return"][0][2] for run in runs]
    assert first_returns[0] != first_returns[1]  # different seeds, different episodes

    out = tmp_path / "curve.png"
    result = run_script("plot.py", str(sweep), "--tag", "charts/episodic_return", "--smoothing", "0.5",
                        "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    overrides = [*SHORT[:2], "agent.total_timesteps=6000", "eval_episodes=2", "checkpoint_every=1", "quiet=true"]
    whole = tmp_path / "whole"
    assert train(whole, *overrides).returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command("train.py", *overrides, f"hydra.run.dir={killed}"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for((killed / "checkpoints", "ckpt_*.ckpt"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (killed / "metrics.json").exists()  # it really died mid-run
    interrupted_at = core.load(resolve_resume(killed))["step"]

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = subprocess.run(command("train.py", f"resume={killed}"), cwd=elsewhere, capture_output=True, text=True,
                            timeout=120)  # the run's own overrides and directory are reused
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == []  # no new run directory

    expected, got = read_metrics(whole), read_metrics(killed)
    for metrics in (expected, got):
        del metrics["time/wall_s"]
    assert got == expected
    final_whole = core.load(whole / "checkpoints" / "last.ckpt")
    final_resumed = core.load(killed / "checkpoints" / "last.ckpt")
    assert final_resumed["step"] == final_whole["step"] > interrupted_at
    for key, param in final_whole["policy"].items():
        assert np.array_equal(final_resumed["policy"][key].numpy(), param.numpy()), key  # bitwise
    for name, buffer in final_whole["optimizer"]["state"][0].items():
        assert np.array_equal(final_resumed["optimizer"]["state"][0][name], buffer), name
    # the resumed run appended to the same directory: a second event file, episodes logged again after the restart
    assert len(list(killed.glob("events.out.tfevents.*"))) == 2
    assert read_run(killed).scalars["charts/episodic_return"][-1][0] == expected["train/env_steps"]


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(command("train.py", "agent=reinforce", "env=cartpole", "checkpoint_every=1",
                                    f"hydra.run.dir={run_dir}"),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for((run_dir / "checkpoints", "ckpt_*.ckpt"), proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "SIGINT: stopping after the current step and saving a checkpoint" in stderr
    assert "Traceback" not in stderr
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and "eval/return_mean" not in metrics
    state = core.load(run_dir / "checkpoints" / "last.ckpt")
    assert state["step"] == state["session"]["progress"] == metrics["train/env_steps"] < 100_000


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    # relu with a huge learning rate: after one Adam step the logits overflow to inf and the next loss is NaN
    result = train(tmp_path, "agent=reinforce", "env=cartpole", "agent.activation=relu", "agent.lr=1e30",
                   "checkpoint_every=1", "quiet=true")
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    state = core.load(tmp_path / "checkpoints" / "last.ckpt")
    assert state["session"]["iterations"] == 1  # the checkpoint of the one update before the loss went NaN
    assert last_line.startswith(f"error: losses/policy_loss is nan at step {state['step']}")
    assert last_line.endswith(f"the last good checkpoint is {tmp_path / 'checkpoints' / 'last.ckpt'} "
                              f"(step {state['step']})")
    assert "Traceback" not in result.stderr
    assert all(np.isfinite(p.numpy()).all() for p in state["policy"].values())
    assert read_metrics(tmp_path)["status"] == "non-finite"


@pytest.mark.parametrize("overrides,message", [
    (["agent=reinforce", "env=cartpole", "agent.lr_decay=0.5"],
     "error: Could not override 'agent.lr_decay': Key 'lr_decay' not in 'Config' (allowed keys: total_timesteps,"),
    (["agent=reinforce", "env=cartpole", "agent.gamma=high"],
     "error: Error merging override agent.gamma=high: Value 'high' of type 'str' could not be converted to Float"),
    (["agent=reinforce", "env=cartpole", "agent.lr=-0.01"],
     "error: agent.lr must be a positive finite number, got -0.01"),
    (["agent=dqn", "env=cartpole", "agent.loss=l1"],
     "error: Error merging override agent.loss=l1: Invalid value 'l1', expected one of [huber, mse]"),
    (["agent=reinforce2", "env=cartpole"], "error: unknown agent 'reinforce2'; available: "),
    (["agent=reinforce", "env=cartpole", "env.id=Pong-v9"], "error: unknown env id 'Pong-v9'"),
    (["agent=reinforce", "env=bandit"], "error: REINFORCE learns from complete episodes, but lab/Bandit-v0 has no time "
                                        "limit; set env.max_episode_steps"),
    ([], "error: nothing to train: pass agent=<name> env=<name> (agents: "),
    (["agent=reinforce", "env=cartpole", "resume=/nonexistent/run"],
     "error: no run directory or checkpoint file at /nonexistent/run"),
])
def test_bad_input_gives_one_line_and_exit_status_2(tmp_path, overrides, message):
    result = train(tmp_path / "run", *overrides)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    if "REINFORCE" not in message:  # refused before the run started: Hydra's directory is removed again
        assert not (tmp_path / "run").exists()


def test_a_missing_launcher_plugin_names_the_extra(tmp_path):
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
        pytest.skip("hydra-joblib-launcher is installed")
    except ImportError:
        pass
    result = train(tmp_path, "-m", "agent=reinforce", "env=cartpole", "hydra/launcher=local_parallel")
    assert result.returncode == 2
    assert result.stderr == ("error: hydra/launcher/joblib is provided by the hydra-joblib-launcher plugin, which is "
                             "not installed: pip install -e '.[sweep]' (or pip install hydra-joblib-launcher)\n")


def test_the_console_command_finds_the_configs_from_any_directory(tmp_path):
    """`lab-train` imports scripts.train as a module (not __main__) and may start anywhere."""
    code = "import sys; from scripts.train import cli; sys.argv = ['lab-train']; cli()"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert result.stderr.startswith("error: nothing to train: pass agent=<name> env=<name>"), result.stderr
    assert list(tmp_path.iterdir()) == []
