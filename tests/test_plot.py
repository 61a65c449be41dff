import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.runtime.logger import RunLogger
from core.runtime.curves import MAX_LEGEND, group_label, plot_runs, smooth

REPO = Path(__file__).resolve().parents[1]
TAG = "charts/episodic_return"


def write_run(run_dir, steps, values, overrides=None, tag=TAG):
    with RunLogger(run_dir, quiet=True) as log:
        for step, value in zip(steps, values):
            log.scalar(tag, value, step)
    if overrides is not None:  # what Hydra writes into each job directory
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


@pytest.fixture
def multirun(tmp_path):
    """A Hydra-like sweep: ppo over seeds 0..2 (seed 2 logged every other step) and dqn over seeds 0..1."""
    root = tmp_path / "multirun" / "2024-01-01" / "12-00-00"
    steps = np.arange(0, 20)
    for job, seed in enumerate(range(3)):
        every = 2 if seed == 2 else 1
        write_run(root / str(job), steps[::every], (3 * steps + seed)[::every],
                  ["agent=ppo", "env=cartpole", f"seed={seed}"])
    for job, seed in zip((3, 4), range(2)):
        write_run(root / str(job), steps[:10], np.full(10, 100.0 * seed),
                  [f"+seed={seed}", "env=cartpole", "agent=dqn"])
    return root


def test_groups_mean_and_std(multirun, tmp_path):
    out = tmp_path / "plots" / "returns.png"
    curves = plot_runs(multirun, TAG, out, smoothing=0)[TAG]
    assert set(curves) == {"agent=ppo,env=cartpole", "agent=dqn,env=cartpole"}
    ppo = curves["agent=ppo,env=cartpole"]
    assert [p.name for p in ppo.runs] == ["0", "1", "2"]
    # seed 2 ends at step 18: the common grid is 0..18; its odd steps are interpolated exactly (linear data)
    assert np.array_equal(ppo.steps, np.arange(19))
    assert np.allclose(ppo.mean, 3 * np.arange(19) + 1, rtol=0, atol=1e-9)
    assert np.allclose(ppo.std, np.sqrt(2 / 3), rtol=0, atol=1e-9)
    dqn = curves["agent=dqn,env=cartpole"]
    assert np.array_equal(dqn.steps, np.arange(10))
    assert np.array_equal(dqn.mean, np.full(10, 50.0)) and np.array_equal(dqn.std, np.full(10, 50.0))
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (960, 600)


def ema_reference(values, weight):
    """TensorBoard's debiased EMA in closed form: weights (1-w) w^(n-i), normalised."""
    n = len(values) - 1
    terms = [(1 - weight) * weight ** (n - i) for i in range(n + 1)]
    return sum(t * v for t, v in zip(terms, values)) / sum(terms)


def test_smoothing_is_applied_per_run_before_averaging(multirun, tmp_path):
    curves = plot_runs([multirun], TAG, tmp_path / "p.png", smoothing=0.5)[TAG]
    assert np.array_equal(curves["agent=dqn,env=cartpole"].mean, np.full(10, 50.0))  # constants stay constant
    ppo = curves["agent=ppo,env=cartpole"]
    # at step 2 seeds 0 and 1 have seen 3 points (0, 3, 6) + seed, seed 2 two points (2, 8)
    expected = (ema_reference([0, 3, 6], 0.5) * 2 + 1 + ema_reference([2, 8], 0.5)) / 3
    assert ppo.mean[0] == 1.0 and np.isclose(ppo.mean[2], expected, rtol=0, atol=1e-9)


def test_ema_and_window_smoothing_exact():
    # TensorBoard: last = w*last + (1-w)*v, shown as last / (1 - w**n)
    assert np.allclose(smooth([1.0, 3.0, 3.0], 0.5), [1.0, (0.25 + 1.5) / 0.75, (0.875 + 1.5) / 0.875])
    assert smooth([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert smooth([1.0, 3.0], 0).tolist() == [1.0, 3.0]
    assert smooth([1.0, 3.0], 1).tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="smoothing must be"):
        smooth([1.0], 2.5)


def test_group_label_rules(tmp_path):
    run = tmp_path / "sweep" / "7"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=3\n- agent.seed=4\n- ++seed=1\n- lr=0.1\n- agent=a2c\n"
                                                   "- resume=runs/x\n")
    assert group_label(run, tmp_path / "sweep") == "agent=a2c,lr=0.1"
    (run / ".hydra" / "overrides.yaml").write_text("- seed=3\n")
    assert group_label(run, tmp_path) == "defaults"
    # no overrides file: the directory name without its seed part
    assert group_label(tmp_path / "ppo_cartpole_seed12") == "ppo_cartpole"
    assert group_label(tmp_path / "lr=0.1,seed=2") == "lr=0.1"
    assert group_label(tmp_path / "baseline") == "baseline"


def test_runs_grouped_by_directory_name(tmp_path):
    for seed in range(2):
        write_run(tmp_path / f"ppo_seed{seed}", [0, 1], [seed, seed + 2.0])
    write_run(tmp_path / "dqn_seed0", [0, 1], [5.0, 5.0])
    curves = plot_runs(tmp_path, TAG, tmp_path / "p.png", smoothing=0)[TAG]
    assert sorted(curves) == ["dqn", "ppo"]
    assert curves["ppo"].mean.tolist() == [0.5, 2.5] and curves["ppo"].std.tolist() == [0.5, 0.5]


def test_missing_tag_names_the_tags_present(multirun, tmp_path):
    with pytest.raises(ValueError, match="no run has the scalar 'losses/x'; tags present: charts/episodic_return"):
        plot_runs(multirun, "losses/x", tmp_path / "p.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files under .*empty"):
        plot_runs(tmp_path / "empty", TAG, tmp_path / "p.png")
    with pytest.raises(FileNotFoundError, match="no run directory at .*missing"):
        plot_runs(tmp_path / "missing", TAG, tmp_path / "p.png")


def test_cli(multirun):
    result = subprocess.run([sys.executable, "scripts/plot.py", str(multirun), "--smoothing", "3"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "agent=ppo,env=cartpole: 3 run(s)" in result.stdout
    assert (multirun / "curves.png").is_file()


def test_defaults_smooth_like_tensorboard(multirun, tmp_path):
    smoothed = plot_runs(multirun, out=tmp_path / "p.png")[TAG]["agent=ppo,env=cartpole"]
    raw = plot_runs(multirun, out=tmp_path / "p.png", smoothing=0)[TAG]["agent=ppo,env=cartpole"]
    # each run is smoothed with weight 0.6: at step 1 seeds 0 and 1 are the EMA of (s, 3 + s), seed 2
    # (logged at steps 0 and 2) is halfway between its smoothed values there
    seeds01 = [ema_reference([s, 3 + s], 0.6) for s in (0, 1)]
    seed2 = (2 + ema_reference([2, 8], 0.6)) / 2
    assert np.isclose(smoothed.mean[1], (sum(seeds01) + seed2) / 3, rtol=0, atol=1e-9)
    assert raw.mean[1] == 4.0 and smoothed.mean[1] < raw.mean[1]  # a rising curve lags when smoothed


def test_confidence_band_is_the_t_interval_of_the_mean(multirun, tmp_path):
    from scipy.stats import t
    dqn = plot_runs(multirun, TAG, tmp_path / "p.png", smoothing=0, band="ci")[TAG]["agent=dqn,env=cartpole"]
    half = t.ppf(0.975, 1) * np.std([0.0, 100.0], ddof=1) / np.sqrt(2)
    assert np.allclose(dqn.low, 50 - half) and np.allclose(dqn.high, 50 + half)
    assert np.array_equal(dqn.std, np.full(10, 50.0))


def test_a_generative_run_plots_its_losses_and_quality_by_default(tmp_path):
    run = tmp_path / "gan"
    with RunLogger(run, quiet=True) as log:
        for step in range(5):
            log.scalars({"losses/d_loss": 1.0 / (step + 1), "losses/g_loss": 2.0 + step}, step)
        log.scalar("quality/frechet_distance", 40.0, 4)
        log.scalar("quality/score_real", 8.1, 4)  # the real images' reference: a constant, not a curve
        log.image_grid("samples/grid", np.zeros((4, 1, 8, 8), dtype=np.float32), 4)  # images are not scalars
    panels = plot_runs(run, out=tmp_path / "p.png", smoothing=0)
    assert list(panels) == ["losses/d_loss", "losses/g_loss", "quality/frechet_distance"]
    assert panels["losses/g_loss"]["gan"].mean.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    result = subprocess.run([sys.executable, "scripts/plot.py", str(run)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert Image.open(run / "curves.png").format == "PNG"


def test_dozens_of_configurations_stay_one_line_each(tmp_path):
    for lr in range(MAX_LEGEND + 8):
        for seed in range(2):
            write_run(tmp_path / f"{lr}_{seed}", [0, 1], [lr, lr + seed], [f"agent.lr={lr}", f"seed={seed}", "agent=ppo"])
    curves = plot_runs(tmp_path, TAG, tmp_path / "p.png", smoothing=0)[TAG]
    assert len(curves) == MAX_LEGEND + 8 and all(len(curve.runs) == 2 for curve in curves.values())
    assert Image.open(tmp_path / "p.png").format == "PNG"
