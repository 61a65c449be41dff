"""scripts/bench_suite.py's run store: a cut benchmark continues, a changed config reruns only its side."""
import json

from scripts.bench_suite import RunStore


def settings(lab_lr):
    return {"a2c_acrobot": {"sb3": {"learning_rate": 7e-4}, "lab": {"agent": {"lr": lab_lr}}}}


def test_finished_runs_are_reused_while_their_settings_hold(tmp_path):
    path = tmp_path / "runs.json"
    store = RunStore(path, settings(7e-4))
    assert store.get(0, "a2c_acrobot", "sb3") is None
    store.put(0, "a2c_acrobot", "sb3", {"return": -80.0})
    store.put(0, "a2c_acrobot", "lab", {"return": -79.0})
    again = RunStore(path, settings(7e-4))  # the next invocation reads the file
    assert again.get(0, "a2c_acrobot", "lab") == {"return": -79.0}
    assert again.get(1, "a2c_acrobot", "lab") is None  # another seed is another run
    changed = RunStore(path, settings(1e-3))  # the lab's config changed: only its runs are stale
    assert changed.get(0, "a2c_acrobot", "sb3") == {"return": -80.0}
    assert changed.get(0, "a2c_acrobot", "lab") is None
    assert len(json.loads(path.read_text())) == 2 and not list(tmp_path.glob("*.tmp"))


def test_without_a_path_nothing_is_kept(tmp_path):
    store = RunStore(None, settings(7e-4))
    assert store.put(0, "a2c_acrobot", "sb3", {"return": 1.0}) == {"return": 1.0}
    assert store.get(0, "a2c_acrobot", "sb3") is None
