"""scripts/evaluate.py on generative runs: `samples=N` writes the samples (npy and an enlarged PNG grid), the
sample-quality score and a latent-interpolation GIF, with one line on the console; bad input gets one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gans.quality import quality_bar

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LAB_DATA_DIR") or REPO.parent / "shared" / "data")


def run_script(script, *args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A VAE barely trained on 256 MNIST test images, its quality classifier on 500 of them."""
    if not (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test set not found under {DATA}")
    run_dir = tmp_path_factory.mktemp("runs") / "vae"
    done = run_script("train.py", "model=vae", "dataset=mnist", f"dataset.root={DATA}", "dataset.split=test",
                      "dataset.limit=256", "model.epochs=1", "model.quality.samples=100",
                      "model.quality.classifier_split=test", "model.quality.classifier_limit=500",
                      f"model.quality.cache_dir={run_dir.parent / 'cache'}", "quiet=true", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


def test_samples_grid_quality_and_interpolation(vae_run):
    done = run_script("evaluate.py", str(vae_run), "samples=5")
    assert done.returncode == 0, done.stderr[-2000:]
    evaluation = json.loads((vae_run / "eval.json").read_text())
    out = vae_run / "samples" / f"eval_{evaluation['step']}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0] == evaluation["eval/summary"]
    assert lines[0].startswith(f"5 samples (samples.npy, samples.png, interpolation.gif) in {out.resolve()}; samples ")
    # the lab's one bar (gans.quality.quality_bar), then the distance as context
    passed, verdict = quality_bar(evaluation)
    assert passed is not None and f"; {verdict}; Fréchet distance " in lines[0]
    assert " classes covered, " in verdict and "relative Fréchet distance" in verdict

    samples = np.load(out / "samples.npy")
    assert samples.shape == (5, 1, 28, 28) and samples.dtype == np.float32
    assert 0 <= samples.min() and samples.max() <= 1 and samples.std() > 0
    with Image.open(out / "samples.png") as grid:  # 3×2 grid of 30-pixel cells + 2, enlarged ×5 towards 512
        assert grid.size == ((3 * 30 + 2) * 5, (2 * 30 + 2) * 5)
    # the run recorded at its end the score reproduce.py judges; the checkpoint scores the same again
    from scripts.reproduce import sample_quality
    recorded = sample_quality(json.loads((vae_run / "metrics.json").read_text()))
    assert recorded == pytest.approx(sample_quality(evaluation), abs=1e-6) and recorded["quality/score"] >= 1
    with Image.open(out / "interpolation.gif") as gif:
        assert gif.n_frames == 16 and gif.size == ((2 * 30 + 2) * 8,) * 2  # 2×2 grid of the 4 paths, ×8

    again = run_script("evaluate.py", str(vae_run), "samples=5")  # the run's seed: the same samples
    assert again.returncode == 0 and np.array_equal(np.load(out / "samples.npy"), samples)
    other = run_script("evaluate.py", str(vae_run), "samples=5", "seed=3")
    assert other.returncode == 0 and not np.array_equal(np.load(out / "samples.npy"), samples)


def test_interpolation_frames_walk_from_one_code_to_the_other(vae_run):
    import core
    from gans import vae
    from scripts import evaluate
    from scripts.evaluate import INTERPOLATION_FRAMES, interpolation_frames

    state = core.load(vae_run / "checkpoints" / "last.ckpt")
    cfg = evaluate.OmegaConf.create({k: v for k, v in state["config"].items() if k != "choices"})
    frames = np.stack(interpolation_frames(vae, cfg, state, seed=0)).astype(float)
    assert len(frames) == INTERPOLATION_FRAMES
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    # straight paths: every step changes the images, by much less than the whole way does
    assert np.all(steps > 0) and steps.max() < np.abs(frames[-1] - frames[0]).mean() / 3


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_non_positive_number_of_samples_is_one_line(vae_run, value):
    done = run_script("evaluate.py", str(vae_run), f"samples={value}")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: samples must be >= 1, got {value}\n"


def test_samples_of_an_agent_run_is_one_line(tmp_path):
    run_dir = tmp_path / "agent"
    done = run_script("train.py", "agent=reinforce", "env=cartpole", "agent.total_timesteps=200", "eval_episodes=1",
                      "quiet=true", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_script("evaluate.py", str(run_dir), "samples=4")
    assert done.returncode == 2 and not (run_dir / "eval.json").exists()
    assert done.stderr == (f"error: samples=4 is for generative runs (GAN, VAE, autoencoder); {run_dir.resolve()} "
                           "is a run of agent 'reinforce': evaluate it with episodes=N\n")
