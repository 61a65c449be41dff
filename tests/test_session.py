"""The run session (core/runtime/session.py) of a trainer that counts update steps inside its unit
(`steps_per_unit`, as the generative models' epochs of batches): budget and cadence in the unit; bar,
TensorBoard steps, checkpoint numbers and non-finite messages in steps; a run stopped inside a unit is
checkpointed there and resumes bitwise."""
import numpy as np
import pytest

import core
from core import nn, optim
from core.runtime.events import read_run
from core.runtime.run import NonFiniteError, Run

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
