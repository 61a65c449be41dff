"""scripts/bench_suite.py's run store: a cut benchmark continues, a changed config reruns only its side."""
import json

import pytest

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


def test_table_only_tabulates_the_stored_runs_and_runs_nothing(tmp_path, monkeypatch, capsys):
    from scripts import bench_suite

    path = tmp_path / "runs.json"
    pair = "ppo_cartpole"
    store = RunStore(path, bench_suite.run_settings([pair], 1.0))
    run = {"wall_s": 10.0, "cpu_s": 9.0, "versions": "stable-baselines3 test"}
    store.put(0, pair, "sb3", {**run, "return": 480.0})
    store.put(0, pair, "lab", {**run, "wall_s": 4.0, "cpu_s": 3.0, "return": 500.0})
    store.put(1, pair, "lab", {**run, "wall_s": 4.0, "cpu_s": 3.0, "return": 490.0})
    monkeypatch.setattr(bench_suite, "measure", lambda *a, **k: pytest.fail("--table-only ran a benchmark"))
    monkeypatch.setattr("sys.argv", ["bench_suite.py", "--pairs", pair, "--seeds", "0", "1", "--results", str(path),
                                     "--table-only", "--sb3-python", str(tmp_path / "no-python")])
    bench_suite.main()
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {pair} "))
    assert "| 1 + 2 |" in row and "480.0" in row and "495.0 ± 7.1" in row and "| 0.40x | 0.33x |" in row
    assert "both met" in row


def test_runs_evaluated_over_more_episodes_are_kept_apart(tmp_path, monkeypatch, capsys):
    """--eval-episodes changes what a run measures: its runs are stored beside the 10-episode ones, and
    its table says how many episodes made each return."""
    from scripts import bench_suite

    path, pair = tmp_path / "runs.json", "ppo_acrobot"
    RunStore(path, bench_suite.run_settings([pair], 1.0)).put(0, pair, "lab", {"return": -80.0})
    many = RunStore(path, bench_suite.run_settings([pair], 1.0, eval_episodes=100))
    assert many.get(0, pair, "lab") is None
    many.put(0, pair, "lab", {"return": -74.0, "wall_s": 45.0, "cpu_s": 44.0})
    assert RunStore(path, bench_suite.run_settings([pair], 1.0)).get(0, pair, "lab") == {"return": -80.0}
    monkeypatch.setattr("sys.argv", ["bench_suite.py", "--pairs", pair, "--seeds", "0", "--results", str(path),
                                     "--table-only", "--eval-episodes", "100", "--skip-sb3"])
    bench_suite.main()
    out = capsys.readouterr().out
    assert "Return: 100 greedy episodes after training" in out and "| -74.0 |" in out


def test_eval_episodes_must_be_positive(monkeypatch, capsys):
    from scripts import bench_suite

    monkeypatch.setattr("sys.argv", ["bench_suite.py", "--eval-episodes", "0"])
    with pytest.raises(SystemExit) as exit_:
        bench_suite.main()
    assert exit_.value.code == 2 and "--eval-episodes must be at least 1, got 0" in capsys.readouterr().err


def test_table_only_needs_a_results_file(monkeypatch, capsys):
    from scripts import bench_suite

    monkeypatch.setattr("sys.argv", ["bench_suite.py", "--table-only"])
    with pytest.raises(SystemExit) as exit_:
        bench_suite.main()
    assert exit_.value.code == 2 and "--table-only tabulates the runs of a --results file" in capsys.readouterr().err
