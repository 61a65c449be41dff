"""The generative path end to end: scripts/train.py trains a DCGAN on real MNIST in a subprocess, says what it
prepares and how each epoch went, and writes sample grids (TensorBoard images at update steps), their GIF and
the quality score; scripts/evaluate.py scores the checkpoint again."""
import json
import subprocess
import sys
from pathlib import Path

from core.runtime.events import find_event_files, read_events, read_run

REPO = Path(__file__).resolve().parents[1]


def run_script(script, *args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def image_events(run_dir):
    """(tag, step, height, width) of every image the run's TensorBoard files hold."""
    return [(value.tag, event.step, value.image.height, value.image.width)
            for path in find_event_files(run_dir) for event in read_events(path)
            for value in event.summary.value if value.WhichOneof("value") == "image"]


def test_train_dcgan_on_mnist_then_evaluate(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    # no override names the classifier's split: the test split is all there is, so it learns from that
    done = run_script("train.py", "model=dcgan", "dataset=mnist", f"dataset.root={mnist_root}", "dataset.split=test",
                      "dataset.limit=64", "model.batch_size=32", "model.epochs=2", "model.quality.samples=200",
                      "model.quality.classifier_limit=1000", f"model.quality.cache_dir={tmp_path / 'cache'}",
                      f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("quality: training the sample classifier on mnist/test (1,000 images")
               for line in lines), done.stdout
    epoch_lines = [line for line in lines if line.startswith("[epoch ")]
    assert [line.split("]")[0] for line in epoch_lines] == ["[epoch 1/2", "[epoch 2/2"], done.stdout
    assert all(" D loss " in line and ", G loss " in line and " | quality score " in line and "/10 classes" in line
               for line in epoch_lines), epoch_lines

    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == ["fixed_noise.gif", "fixed_noise_epoch0001.png", "fixed_noise_epoch0002.png",
                       "latent_interpolation.png"]
    from PIL import Image
    with Image.open(run_dir / "samples" / "fixed_noise.gif") as gif:
        assert gif.n_frames == 2
    # 64 images, 8×8, each 28×28 digit shown 3× enlarged (84 px) with 2 px borders
    with Image.open(run_dir / "samples" / "fixed_noise_epoch0002.png") as grid:
        assert grid.size == (8 * 86 + 2, 8 * 86 + 2)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["train/steps"] == 4
    assert metrics["quality/frechet_distance"] > 0 and 0 <= metrics["quality/class_entropy"] <= 2.31
    assert isinstance(metrics["quality/mode_collapse"], bool)

    events = read_run(run_dir)
    assert {"losses/d", "losses/g", "quality/frechet_distance", "quality/score"} <= set(events.scalars)
    # every image at the update step (2 per epoch), as the losses; quality measured after each epoch
    assert sorted(image[:2] for image in image_events(run_dir)) == [
        ("samples/fixed_noise", 2), ("samples/fixed_noise", 4), ("samples/latent_interpolation", 4)]
    assert [step for step, _, _ in events.scalars["quality/score"]] == [2, 4]
    assert {image[2:] for image in image_events(run_dir) if image[0] == "samples/fixed_noise"} == {(690, 690)}

    done = run_script("evaluate.py", str(run_dir), "samples=9")
    assert done.returncode == 0, done.stderr[-2000:]
    evaluation = json.loads((run_dir / "eval.json").read_text())
    # the same generator, noise seed and classifier: the score of the end of training again
    assert abs(evaluation["quality/frechet_distance"] - metrics["quality/frechet_distance"]) < 1e-6
    assert Path(evaluation["eval/samples"]).is_file()


def test_a_preset_that_cannot_handle_the_image_size_fails_in_one_line(mnist_root, tmp_path):
    done = run_script("train.py", "model=dcgan_bdl", "dataset=mnist", f"dataset.root={mnist_root}",
                      "dataset.split=test", "dataset.limit=64", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: arch 'dcgan_bdl' generates 64×64 images, the dataset has 28×28; set dataset.image_size=64")
