"""The training session (core/runtime/session.py): a trainer that counts update steps inside its unit
(`steps_per_unit`, as the generative models' epochs of batches: budget and cadence in the unit; bar,
TensorBoard steps, checkpoint numbers and non-finite messages in steps; a run stopped inside a unit is
checkpointed there and resumes bitwise), tracked plain dicts, runs bounded by episodes only, the
non-finite guard, and a trainer that polls work done elsewhere (A3C's workers: `advance` counts the
iterations it is given)."""
import numpy as np
import pytest

import core
from core import load, nn, optim
from core.runtime.errors import NonFiniteError
from core.runtime.events import read_run
from core.runtime.run import Run

STEPS_PER_EPOCH = 3


def fit(run, epochs=4, checkpoint_every=None, stop_at_step=None, poison_at_step=None):
    """Linear regression by SGD on 3 shuffled batches per epoch, on the session with steps_per_unit; the
    place in the epoch and its order travel in `session.extra`."""
    core.manual_seed(0)
    model = nn.Linear(2, 1)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(1)
    x = np.random.default_rng(2).normal(size=(12, 2)).astype(np.float32)
    y = x @ np.array([[2.0], [-1.0]], dtype=np.float32)
    session = run.session("fit", "epochs", epochs, checkpoint_every=checkpoint_every, checkpoint_default=1,
                          steps_per_unit=STEPS_PER_EPOCH)
    session.track(model=model, optimizer=optimizer, rng=rng)
    session.extra.setdefault("position", 0)
    while session.running():
        if session.extra["position"] == 0:
            session.extra["order"] = rng.permutation(len(x))
        while session.extra["position"] < STEPS_PER_EPOCH and session.running():
            index = session.extra["order"][session.extra["position"] * 4:(session.extra["position"] + 1) * 4]
            loss = ((model(core.tensor(x[index])) - core.tensor(y[index])) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            session.extra["position"] += 1
            session.step()
            value = float("nan") if session.steps == poison_at_step else loss.item()
            session.check_finite("losses/loss", value)
            session.log({"losses/loss": value})
            if session.steps == stop_at_step:
                run.request_stop()  # what the first Ctrl-C does
        if session.extra["position"] == STEPS_PER_EPOCH:
            session.extra["position"] = 0
            session.advance(1)
    return session.finish({"losses/loss": value}), model


def test_budget_and_cadence_count_epochs_while_bar_logs_and_checkpoints_count_steps(tmp_path, capsys):
    with Run(tmp_path / "run", keep_checkpoints=0) as run:
        metrics, _ = fit(run, epochs=4, checkpoint_every=2)
    assert (metrics["train/epochs"], metrics["train/steps"], metrics["train/iterations"]) == (4, 12, 4)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt_*")) == ["ckpt_12.ckpt", "ckpt_6.ckpt"]
    assert [step for step, _, _ in read_run(tmp_path / "run").scalars["losses/loss"]] == list(range(1, 13))
    assert "12/12" in capsys.readouterr().err  # the bar counted steps


def test_a_run_stopped_inside_an_epoch_is_checkpointed_there_and_resumes_bitwise(tmp_path):
    with Run(tmp_path / "whole") as run:
        whole, whole_model = fit(run)
    with Run(tmp_path / "part") as run:
        stopped, _ = fit(run, stop_at_step=5)
    assert (stopped["train/epochs"], stopped["train/steps"]) == (1, 5)
    state = core.load(tmp_path / "part" / "checkpoints" / "last.ckpt")
    assert (state["step"], state["session"]["progress"], state["session"]["extra"]["position"]) == (5, 1, 2)
    with Run(tmp_path / "part", resume=tmp_path / "part") as run:
        resumed, resumed_model = fit(run)
    assert (resumed["train/epochs"], resumed["train/steps"], resumed["losses/loss"]) == (4, 12, whole["losses/loss"])
    for key, value in whole_model.state_dict().items():
        np.testing.assert_array_equal(resumed_model.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_a_non_finite_value_is_reported_at_its_step_and_the_epoch_checkpoint_stays(tmp_path):
    with Run(tmp_path / "run") as run:
        with pytest.raises(NonFiniteError, match=r"losses/loss is nan at step 5: .*ckpt \(step 3\)"):
            fit(run, poison_at_step=5)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt_*")) == ["ckpt_3.ckpt"]


def test_without_steps_per_unit_the_session_counts_in_its_unit_only(tmp_path):
    with Run(tmp_path / "run") as run:
        session = run.session("count", "iterations", 3, checkpoint_default=2)
        session.track()
        while session.running():
            session.log({"charts/progress": float(session.progress)})
            session.advance(1)
        metrics = session.finish()
    assert "train/steps" not in metrics and metrics["train/iterations"] == 3
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt_*")) == ["ckpt_2.ckpt", "ckpt_3.ckpt"]
    assert [step for step, _, _ in read_run(tmp_path / "run").scalars["charts/progress"]] == [0, 1, 2]


def count_updates(run_dir, resume=None, stop_after=None):
    """A trainer whose own counter lives in a tracked dict: 2 updates per unit of progress, 10 units."""
    with Run(run_dir, quiet=True, tensorboard=False, resume=resume) as run:
        counters = {"updates": 0}
        session = run.session("counting", "env_steps", 10, checkpoint_every=0)
        session.track(counters=counters)
        restored = dict(counters)
        while session.running():
            counters["updates"] += 2
            session.advance(1)
            if session.progress == stop_after:
                run.request_stop()
        metrics = session.finish({"train/updates": counters["updates"]})
    return metrics, restored, load(run_dir / "checkpoints" / "last.ckpt")


def test_a_tracked_dict_is_saved_under_its_name_and_restored_in_place(tmp_path):
    stopped, _, state = count_updates(tmp_path / "run", stop_after=4)
    assert stopped["train/env_steps"] == 4 and state["counters"] == {"updates": 8}
    resumed, restored, state = count_updates(tmp_path / "run", resume=tmp_path / "run")
    assert restored == {"updates": 8}  # in the trainer's own dict, before its loop starts
    assert resumed["train/updates"] == 20 and resumed["train/env_steps"] == 10 and state["counters"] == {"updates": 20}


def test_without_a_unit_budget_the_episode_budget_ends_the_run_and_the_bar_counts_episodes(tmp_path, capsys):
    with Run(tmp_path / "run", tensorboard=False) as run:
        session = run.session("episodic", "env_steps", None, episodes=3)
        session.track()
        while session.running():
            session.advance(7, episodes=1)
        metrics = session.finish()
    assert metrics["train/env_steps"] == 21 and metrics["train/episodes"] == 3
    assert "3/3" in capsys.readouterr().err  # the bar's count is episodes, not env steps


def test_a_session_needs_a_budget(tmp_path):
    with Run(tmp_path / "run", quiet=True, tensorboard=False) as run, \
            pytest.raises(ValueError, match="session 'endless' needs a budget: total \\(env_steps\\) or episodes"):
        run.session("endless", "env_steps", None)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("nan"), np.array([1.0, np.inf])])
def test_check_finite_passes_finite_values_and_stops_at_the_first_bad_one(tmp_path, bad):
    with Run(tmp_path / "run", quiet=True, tensorboard=False) as run:
        session = run.session("checked", "env_steps", 10)
        session.track()
        session.advance(3)
        for good in (0.5, np.float32(2.0), np.ones(3)):
            session.check_finite("losses/loss", good)
        with pytest.raises(NonFiniteError, match="losses/loss is .* at step 3"):
            session.check_finite("losses/loss", bad)


CONFIG = {"seed": 0, "agent": {"total_timesteps": 100}}


def poll(run, polls):
    """`polls`: (env steps, episodes, updates) made by the workers between two polls."""
    model = nn.Linear(2, 1)
    session = run.session("poller", "env_steps", 100, checkpoint_every=50)
    session.track(model=model)
    for steps, episodes, updates in polls:
        if not session.running():
            break
        session.advance(steps, episodes=episodes, iterations=updates)
    return session.finish()


def test_advance_counts_the_iterations_it_is_given(tmp_path):
    with Run(tmp_path, config=CONFIG, quiet=True) as run:
        metrics = poll(run, [(30, 1, 3), (0, 0, 0), (40, 2, 5), (10, 0, 1)])
    assert (metrics["train/env_steps"], metrics["train/episodes"], metrics["train/iterations"]) == (80, 3, 9)
    crossed = core.load(tmp_path / "checkpoints" / "ckpt_70.ckpt")["session"]  # the poll that crossed 50
    assert (crossed["progress"], crossed["episodes"], crossed["iterations"]) == (70, 3, 8)
    assert core.load(tmp_path / "checkpoints" / "last.ckpt")["session"]["iterations"] == 9


def test_a_resumed_session_counts_on(tmp_path):
    with Run(tmp_path, config=CONFIG, quiet=True) as run:
        run.should_stop = iter([False, False, True, True]).__next__  # stopped after two polls, as by Ctrl-C
        stopped = poll(run, [(30, 1, 3), (30, 1, 4), (30, 1, 5)])
    assert stopped["train/iterations"] == 7 and "ckpt_60.ckpt" in {p.name for p in (tmp_path / "checkpoints").iterdir()}
    with Run(tmp_path, config=CONFIG, quiet=True, resume=tmp_path) as run:
        resumed = poll(run, [(30, 2, 6), (30, 0, 2)])
    assert (resumed["train/env_steps"], resumed["train/episodes"], resumed["train/iterations"]) == (120, 4, 15)


# ----- evaluation while training: best.ckpt, the random streams, the cadence defaults, the console line -----
def scripted_run(run_dir, returns, resume=None, total=None, keep=1, quiet=True, eval_every=1, **options):
    """A trainer of `total` (default: len(returns)) units, 1 per iteration, evaluated after each;
    evaluation k returns `returns[k]` and draws from the global random streams (which the session
    must put back). Returns (final metrics, the global draws the training made)."""
    with Run(run_dir, config=CONFIG, quiet=quiet, tensorboard=False, resume=resume, keep_checkpoints=keep) as run:
        model, buffer = nn.Linear(2, 1), {"transitions": [1, 2, 3]}
        answers = iter(returns)

        def evaluate():
            core.randn(3), np.random.rand(), __import__("random").random()
            value = next(answers)
            model.weight.data[...] = value  # the weights that scored `value`
            return {"eval/return_mean": value, "eval/episodes": 1}
        session = run.session("scripted", "env_steps", total or len(returns), checkpoint_every=1, eval_every=eval_every,
                              evaluate=evaluate, not_in_best=("buffer",), **options)
        session.track(model=model, buffer=buffer)
        draws = []
        while session.running():
            draws.append((core.randn(1).item(), np.random.rand()))
            session.advance(1, episodes=[(float(session.progress), 10)])
        return session.finish(), draws


def best_state(run_dir):
    return load(run_dir / "checkpoints" / "best.ckpt")


def test_the_best_evaluation_is_kept_in_best_ckpt_through_rotation(tmp_path):
    scripted_run(tmp_path, [1.0, 3.0, 2.0, 2.5], keep=1)
    best = best_state(tmp_path)
    assert best["step"] == 2 and best["session"]["best"] == {"value": 3.0, "progress": 2}
    assert float(np.asarray(best["model"]["weight"].numpy()).ravel()[0]) == 3.0  # the policy that scored it
    assert "buffer" not in best and "buffer" in load(tmp_path / "checkpoints" / "last.ckpt")
    assert [p.name for p in (tmp_path / "checkpoints").glob("ckpt_*")] == ["ckpt_4.ckpt"]  # rotation left best alone


def test_a_resumed_run_keeps_its_best_so_far_even_when_best_ckpt_is_newer_than_the_checkpoint(tmp_path):
    scripted_run(tmp_path, [1.0, 5.0, 2.0])
    # as if killed after best.ckpt of step 2 but before that step's checkpoint: resume from step 1
    (tmp_path / "checkpoints" / "last.ckpt").unlink()
    for path in (tmp_path / "checkpoints").glob("ckpt_*"):
        path.unlink()
    scripted_run(tmp_path / "first", [1.0, 0.0], keep=0, total=1)
    resumed, _ = scripted_run(tmp_path, [4.0, 3.0, 2.0], total=4, resume=tmp_path / "first" / "checkpoints" /
                              "ckpt_1.ckpt")
    assert best_state(tmp_path)["session"]["best"]["value"] == 5.0  # worse evaluations after the resume kept it
    assert resumed["eval/return_mean"] == 2.0


def test_evaluation_leaves_the_training_random_streams_as_they_were(tmp_path):
    core.manual_seed(0), np.random.seed(0)
    _, evaluated = scripted_run(tmp_path / "a", [1.0, 2.0, 3.0])
    core.manual_seed(0), np.random.seed(0)
    _, not_evaluated = scripted_run(tmp_path / "b", [1.0, 2.0, 3.0], eval_every=0)
    assert evaluated == not_evaluated


def test_without_a_cadence_a_run_is_evaluated_and_printed_10_times(tmp_path, capsys):
    with Run(tmp_path, config=CONFIG, tensorboard=False) as run:
        evaluations = []
        session = run.session("auto", "env_steps", 1000, eval_every=None, console_every=None,
                              evaluate=lambda: evaluations.append(session.progress) or {"eval/return_mean": 1.0})
        session.track()
        while session.running():
            session.advance(10)
        session.finish()
    assert evaluations == list(range(100, 1001, 100))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("auto env_steps")]
    assert [line.split()[2] for line in lines] == [f"{n}/1000" for n in range(100, 1001, 100)]


def test_the_console_line_shows_progress_the_last_100_episodes_losses_and_the_evaluation(tmp_path, capsys):
    with Run(tmp_path, config=CONFIG, tensorboard=False) as run:
        session = run.session("ppo", "env_steps", 300, console_every=300, eval_every=300,
                              evaluate=lambda: {"eval/return_mean": 7.5})
        session.track()
        session.log({"losses/policy_loss": 0.25, "losses/value_loss": 2.0, "losses/approx_kl": 0.01})
        session.advance(300, episodes=[(1000.0, 1)] + [(float(k), 2 * k) for k in range(100)])
        session.finish()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("ppo env_steps 300/300  SPS ")
    # the oldest of 101 episodes has left the window: mean of 0..99 and of their lengths 0..198
    for shown in ("episodes 101", "ep_rew_mean 49.5  ep_len_mean 99", "policy_loss 0.25  value_loss 2",
                  "eval 7.5 (best 7.5)"):
        assert shown in line
    assert "approx_kl" not in line


def test_a_quiet_run_prints_no_console_line(tmp_path, capsys):
    scripted_run(tmp_path, [1.0, 2.0], quiet=True, console_every=1)
    assert capsys.readouterr().out == ""
