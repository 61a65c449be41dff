"""The training session (core/runtime/session.py): tracked plain dicts, runs bounded by episodes only, the
non-finite guard."""
import numpy as np
import pytest

from core import load
from core.runtime.errors import NonFiniteError
from core.runtime.run import Run


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
