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
    store = RunStore(path, {pair: {"sb3": bench_suite.sb3_spec(pair, 1.0), "lab": bench_suite.lab_config(pair, 1.0)}})
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


def test_table_only_needs_a_results_file(monkeypatch, capsys):
    from scripts import bench_suite

    monkeypatch.setattr("sys.argv", ["bench_suite.py", "--table-only"])
    with pytest.raises(SystemExit) as exit_:
        bench_suite.main()
    assert exit_.value.code == 2 and "--table-only tabulates the runs of a --results file" in capsys.readouterr().err
