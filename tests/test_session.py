"""The run session (core/runtime/session.py) of a trainer that polls work done elsewhere (A3C's
workers): each `advance` counts the iterations (updates) made since the previous poll, the counters
land in the checkpoints and the final metrics, and a resumed run counts on from them."""
import core
from core import nn
from core.runtime.run import Run

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
