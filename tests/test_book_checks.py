"""scripts/book_checks.py: the books' fixtures and API demos as runs (agent=book_check), including BDL ch. 7's
gradient descent on Himmelblau's function (FX-OPT-1/2), its resume, and its preset through the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf, ValidationError

from core.runtime.events import read_run
from core.runtime.run import Run
from scripts import book_checks

REPO = Path(__file__).resolve().parents[1]


def make_cfg(seed=0, **agent):
    return OmegaConf.create({"agent": OmegaConf.merge(OmegaConf.structured(book_checks.Config), agent), "seed": seed,
                             "checkpoint_every": 0, "env": {"id": "CartPole-v1"}})


def run(run_dir, cfg, **run_options):
    with Run(run_dir, config=OmegaConf.to_container(cfg, enum_to_str=True), seed=cfg.seed, quiet=True,
             **run_options) as r:
        metrics = book_checks.train(cfg, r)
        r.finish(metrics)
    return metrics


@pytest.mark.parametrize("check", ["dqn_loss", "replay_buffer_demo", "sac_smoke"])
def test_checks_pass(tmp_path, check):
    metrics = run(tmp_path, make_cfg(check=check))
    assert metrics["check/passed"] == 1.0 and metrics["check/name"] == check
    assert "check/passed: 1.0" in (tmp_path / "check.txt").read_text().splitlines()


def test_sac_smoke_losses_are_finite_and_seeded():
    first, second = book_checks.sac_smoke_check(0), book_checks.sac_smoke_check(0)
    assert first == second and np.isfinite(first["check/total_loss"])
    assert first["check/alpha_loss"] == 0.0  # log alpha starts at 0, as the book's printed alpha loss


@pytest.mark.parametrize("start,expected", [
    ([4.0, 0.0], [3.584428, -1.8481264]),       # FX-OPT-1 (book)
    ([1.0, 0.0], [3.0, 1.9999999]),             # FX-OPT-2 (float32, computed)
    ([-4.0, 0.0], [-3.7793102, -3.283186]),
    ([-2.0, 2.0], [-2.805118, 3.1313124]),
])
def test_gradient_descent_on_himmelblau_reaches_the_books_points(tmp_path, start, expected):
    metrics = run(tmp_path, make_cfg(check="himmelblau", start=start))
    assert np.allclose(metrics["opt/point"], expected, atol=1e-5)
    assert [metrics["opt/x"], metrics["opt/y"]] == metrics["opt/point"]
    assert metrics["opt/f"] < 1e-10 and metrics["train/steps"] == 200


def test_himmelblau_descent_resumes_where_it_stopped(tmp_path):
    cfg = make_cfg(check="himmelblau", start=[-2.0, 2.0], log_every=10)
    whole = run(tmp_path / "whole", cfg)
    first = run(tmp_path / "part", make_cfg(check="himmelblau", start=[-2.0, 2.0], steps=5))
    assert first["train/steps"] == 5 and first["opt/point"] != whole["opt/point"]
    resumed = run(tmp_path / "part", make_cfg(check="himmelblau", start=[-2.0, 2.0]), resume=str(tmp_path / "part"))
    assert resumed["opt/point"] == whole["opt/point"] and resumed["train/steps"] == 200
    steps = [step for step, _, _ in read_run(tmp_path / "whole").scalars["opt/f"]]
    assert steps == [1, *range(10, 201, 10)]


@pytest.mark.parametrize("keys,message", [
    ({"start": [1.0]}, "agent.start is the initial point (x, y) of Himmelblau's function; got [1.0]"),
    ({"lr": 0.0}, "agent.lr must be a positive finite number, got 0.0"),
    ({"steps": 0}, "agent.steps and agent.log_every must be >= 1"),
])
def test_config_errors_are_one_line(keys, message):
    with pytest.raises(ValueError) as error:
        book_checks.Config(**keys).validate()
    assert str(error.value).startswith(message)


def test_an_unknown_check_fails_when_the_config_is_composed():
    with pytest.raises(ValidationError, match=r"Invalid value 'ppo', expected one of \[dqn_loss, replay_buffer_demo, "
                                              r"qcnn_params, sac_smoke, himmelblau\]"):
        OmegaConf.merge(OmegaConf.structured(book_checks.Config), {"check": "ppo"})


def test_the_himmelblau_preset_runs_through_the_cli(tmp_path):
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "experiment=bdl7-gd-himmelblau", "quiet=true",
               f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["opt/point"] == [3.584428310394287, -1.8481264114379883]  # the float32 point, as before the move
    assert metrics["status"] == "completed"
    assert len(read_run(tmp_path).scalars["opt/f"]) == 200  # the preset's curve: every step


def test_a_resumed_finished_check_reports_its_numbers_without_running_again(tmp_path):
    first = run(tmp_path, make_cfg(check="replay_buffer_demo"))
    (tmp_path / "check.txt").unlink()
    again = run(tmp_path, make_cfg(check="replay_buffer_demo"), resume=str(tmp_path))
    assert not (tmp_path / "check.txt").exists()  # the check did not run again
    first.pop("time/wall_s"), again.pop("time/wall_s")
    assert again == first and again["train/checks"] == 1 and again["check/passed"] == 1.0
