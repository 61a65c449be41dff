"""gans/supervised.py: the data and splits (with gans/toy_datasets.py), learning on real data (MNIST, sklearn's
digits and diabetes), resume, and a few chapter presets end to end through the CLI. The layer lists are
core.nn.build's (tests/test_nn_builder.py)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import core
from core.runtime.config import config_object
from core.runtime.events import read_run
from core.runtime.run import ConfigError, Run
from gans import supervised as S
from gans.toy_datasets import load_toy

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO.parent / "shared" / "experiments" / "README.md"


def run_config(dataset: dict, checkpoint_every=0, **model):
    return OmegaConf.create({"model": {**S.Config().__dict__, **model}, "dataset": dataset,
                             "checkpoint_every": checkpoint_every, "optim": None})


def train(tmp_path, dataset, seed=0, resume=None, name="run", **model):
    cfg = run_config(dataset, **model)
    with Run(tmp_path / name, seed=seed, quiet=True, resume=resume) as run:
        return S.train(cfg, run)


def layer(kind, **keys):
    return {"type": kind, **keys}


RELU = {"activation": "relu"}
MLP = [layer("flatten"), layer("dense", units=64, **RELU), layer("dense", units=10)]


# ----- config -----
@pytest.mark.parametrize("overrides,optimizer,lr", [
    (["model=supervised", "dataset=digits"], "SGD", 0.01),  # HOML ch. 10's default
    (["experiment=bdl9-l2-moons"], "Adam", 1e-3),  # names only the optimizer: Keras' default lr, not SGD's
    (["experiment=bdl8-mlp-mnist-fit"], "Adam", 0.01),  # a preset's own lr wins
    (["experiment=bdl8-mlp-mnist-fit", "optim=rmsprop"], "RMSprop", 1e-3),  # an optim group replaces the model's
])
def test_a_preset_gets_keras_default_lr_unless_it_or_an_optim_group_sets_one(overrides, optimizer, lr):
    from hydra import compose, initialize_config_dir
    from scripts import train as cli
    cli.register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    opt = S.make_optimizer(config_object(S.Config, cfg.model), [core.nn.Parameter(core.tensor([1.0]))], cfg.optim)
    assert type(opt).__name__ == optimizer and opt.param_groups[0]["lr"] == lr


def test_a_bad_layer_list_fails_config_validation_naming_the_key():
    with pytest.raises(ValueError, match=r"^model\.layers\[1\]: unknown key 'unit' for a dense layer"):
        S.Config(layers=[{"type": "flatten"}, {"type": "dense", "unit": 3}]).validate()


def test_a_loss_the_task_does_not_take_fails_config_validation():
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(S.Config), {"task": "regression"}))
    with pytest.raises(ValueError, match=r"^model\.loss for model\.task=regression must be one of mse, mae, huber; "
                                         r"got 'sparse_ce'$"):
        config.validate()


# ----- data -----
def test_series_is_the_books_generator_cut_into_windows():
    x, y, (x_test, y_test) = load_toy("series")
    assert x.shape == (980, 20) and x_test.shape == (461, 20)  # targets 20..999 train, 1000..1460 are the forecast
    noise = 10 * np.random.RandomState(42).randn(1461)
    assert x[0, 0] == pytest.approx(10 + noise[0], rel=1e-6)  # the notebooks' sin(2 s) rise starts at 0
    assert y[360] == pytest.approx(10 + 0.05 * 380 + 50 * np.sin(2 * 15 / 365) + noise[380], rel=1e-6)  # step 380
    assert np.array_equal(x[1, :-1], x[0, 1:]) and y[0] == pytest.approx(x[1, -1])
    course = load_toy("series", pattern="cos")[0]
    assert course[0, 0] == pytest.approx(10 + 50 + noise[0], rel=1e-6)
    with pytest.raises(ConfigError, match="dataset.pattern must be cos or sin, got 'tan'"):
        S.load_pool({"name": "series", "pattern": "tan"})  # the trainer reports a dataset's error as a config error


def test_splits_are_the_books_sklearn_calls_and_do_not_depend_on_the_seed():
    args = S.Config(test_fraction=0.3, split_seed=42, validation_split=0.2)
    data = S.load_splits({"name": "moons", "n_samples": 2000, "noise": 0.2, "seed": 100}, args)
    assert (len(data.train), len(data.val), len(data.test)) == (1120, 280, 600)  # BDL ch. 7: 1400 / 600
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split
    x, y = make_moons(2000, noise=0.2, random_state=100)
    _, x_test, _, _ = train_test_split(x, y, test_size=0.3, random_state=42)
    assert np.allclose(data.test.x, x_test)


def test_data_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="dataset.samples is not a setting of the moons dataset; allowed: n_samples"):
        S.load_pool({"name": "moons", "samples": 10})
    with pytest.raises(ConfigError, match="no separate test set here; set model.test_fraction"):
        S.load_splits({"name": "iris"}, S.Config())
    data = S.load_splits({"name": "iris"}, S.Config(test_fraction=0.2))
    with pytest.raises(ConfigError, match="labels go up to 2 but the network's output .* has shape \\(2,\\)"):
        S.check_outputs(S.Config(), (2,), data)


def test_a_layer_list_that_does_not_fit_the_data_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^model\.layers\[0\]: a conv layer needs \(C, H, W\) examples, got shape "
                                          r"\(4,\); reshape first$"):
        train(tmp_path, {"name": "iris"}, layers=[layer("conv", filters=2, kernel=3)], test_fraction=0.2)


# ----- learning -----
def test_learns_mnist_from_4000_images_in_a_few_seconds(tmp_path, mnist_root):
    metrics = train(tmp_path, {"name": "mnist", "root": mnist_root, "split": "test", "limit": 5000},
                    layers=MLP, optimizer="adam", epochs=6, batch_size=64, test_fraction=0.2, validation_split=0.1)
    assert metrics["test/accuracy"] > 0.9 and metrics["val/accuracy"] > 0.9
    assert metrics["objective"] == metrics["test/accuracy"] and metrics["model/params"] == 50_890
    events = read_run(tmp_path / "run")
    losses = [v for _, _, v in events.scalars["train/loss"]]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert {"val/accuracy", "charts/learning_rate", "losses/loss", "test/accuracy"} <= set(events.scalars)


def test_a_convnet_learns_sklearn_digits(tmp_path):
    layers = [layer("conv", filters=16, kernel=3, padding="same", **RELU), layer("batchnorm"), layer("maxpool"),
              layer("dropout", rate=0.2), layer("flatten"), layer("dense", units=10)]
    metrics = train(tmp_path, {"name": "digits"}, layers=layers, optimizer="adam", epochs=8, batch_size=32)
    assert metrics["test/accuracy"] > 0.8  # sklearn's last 360 digits (other writers: MLPs reach ~0.9)


def test_regression_on_diabetes_drives_the_mae_well_below_the_mean_predictor(tmp_path):
    layers = [layer("dense", units=32, **RELU), layer("dense", units=1)]
    metrics = train(tmp_path, {"name": "diabetes"}, task="regression", loss="mse", layers=layers, optimizer="adam",
                    lr=0.01, epochs=60, batch_size=32, test_fraction=0.2, standardize=True)
    data = S.load_splits({"name": "diabetes"}, S.Config(test_fraction=0.2))
    baseline = np.abs(data.test.y - data.train.y.mean()).mean()  # ~62
    assert metrics["test/mae"] < 0.75 * baseline
    maes = [v for _, _, v in read_run(tmp_path / "run").scalars["train/loss"]]
    assert maes[-1] < 0.2 * maes[0]


def test_anomaly_scores_mc_dropout_and_best_weights(tmp_path):
    layers = [layer("dense", units=8, activation="tanh"), layer("dense", units=30)]
    metrics = train(tmp_path, {"name": "breast_cancer"}, task="autoencoder", loss="mse", layers=layers,
                    optimizer="adam", epochs=5, test_fraction=0.25, validate_on_test=True, standardize=True,
                    keep_best="val/loss", anomaly_class=0)
    # the threshold is the 44th highest error of the 54 malignant test rows: the fewest flags above recall 0.8
    assert metrics["test/anomalies"] == 54 and metrics["test/true_positives"] >= 44 and metrics["test/recall"] > 0.8
    assert metrics["test/loss"] == pytest.approx(metrics["val/loss_best"], rel=1e-6)  # scored with the best epoch

    dropout = [layer("flatten"), layer("dropout", rate=0.2), layer("dense", units=10)]
    metrics = train(tmp_path, {"name": "digits"}, name="mc", layers=dropout, optimizer="adam", epochs=10,
                    mc_dropout_samples=20)
    assert abs(metrics["test/accuracy_mc"] - metrics["test/accuracy"]) < 0.05 and metrics["test/accuracy_mc"] > 0.75


class StopAfter(Run):
    """A run that receives Ctrl-C after `steps` optimizer steps (as its session counts them)."""

    def __init__(self, *args, steps, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = steps

    def session(self, *args, **kwargs):
        session = super().session(*args, **kwargs)
        count = session.step

        def step():
            count()
            if session.steps == self.steps:
                self.request_stop()
        session.step = step
        return session


@pytest.mark.parametrize("checkpoint_every,steps_per_epoch,stop", [
    (0, None, 40),  # 26 steps per epoch: stops in epoch 2
    (1, 20, 30),  # epochs of 20 steps across passes of 26 batches; the stop's checkpoint replaces epoch 1's
])
def test_resuming_after_ctrl_c_mid_epoch_ends_like_an_uninterrupted_run(tmp_path, checkpoint_every, steps_per_epoch,
                                                                         stop):
    dataset = {"name": "digits"}
    layers = [layer("flatten"), layer("dropout", rate=0.3), *MLP[1:]]  # dropout draws from the global stream
    model = dict(layers=layers, optimizer="adam", batch_size=50, random_flip=True, validation_split=0.1, epochs=3,
                 steps_per_epoch=steps_per_epoch, checkpoint_every=checkpoint_every)
    whole = train(tmp_path, dataset, name="whole", **model)
    with StopAfter(tmp_path / "part", seed=0, quiet=True, steps=stop) as run:
        stopped = S.train(run_config(dataset, **model), run)
    assert stopped["train/steps"] == stop and "test/accuracy" not in stopped
    assert core.load(tmp_path / "part" / "checkpoints" / "last.ckpt")["session"]["steps"] == stop
    resumed = train(tmp_path, dataset, name="part", resume=str(tmp_path / "part"), **model)
    for key in ("test/accuracy", "test/loss", "val/loss", "train/loss", "train/steps"):
        assert resumed[key] == whole[key], key


def test_an_early_stopped_run_stays_stopped_when_resumed(tmp_path):
    model = dict(task="regression", loss="mse", layers=[layer("dense", units=8, **RELU), layer("dense", units=1)],
                 optimizer="sgd", lr=0.05, epochs=40, test_fraction=0.25, validation_split=0.25, standardize=True,
                 early_stopping_patience=2)
    first = train(tmp_path, {"name": "diabetes", "target_scale": 0.01}, **model)
    assert first["train/epochs"] < 40
    resumed = train(tmp_path, {"name": "diabetes", "target_scale": 0.01}, resume=str(tmp_path / "run"), **model)
    assert resumed["train/epochs"] == first["train/epochs"] and resumed["test/mse"] == first["test/mse"]


# ----- presets through the CLI -----
def run_preset(tmp_path, preset, *overrides):
    run_dir = tmp_path / preset
    command = [sys.executable, str(REPO / "scripts" / "train.py"), f"experiment={preset}", *overrides, "quiet=true",
               f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((run_dir / "metrics.json").read_text()), run_dir


def test_presets_run_end_to_end(tmp_path, mnist_root):
    metrics, run_dir = run_preset(tmp_path, "mtf6-linear-series", "model.epochs=3")
    assert metrics["status"] == "completed"
    assert metrics["train/steps"] == 3 * 31 and metrics["test/mae"] > 0
    assert len(read_run(run_dir).scalars["val/mae"]) == 3

    metrics, _ = run_preset(tmp_path, "bdl8-mlp-mnist-fit", f"dataset.root={mnist_root}", "model.epochs=1",
                            "model.steps_per_epoch=40")
    assert metrics["train/steps"] == 40 and metrics["test/accuracy"] > 0.8 and metrics["model/params"] == 244_522

    metrics, run_dir = run_preset(tmp_path, "mtf3-ae-mnist", f"dataset.root={mnist_root}", "dataset.limit=512",
                                  "model.epochs=1", "model.quality.samples=100", "model.quality.classifier_limit=500",
                                  f"model.quality.cache_dir={tmp_path / 'cache'}")
    assert metrics["train/steps"] == 4 and 0 < metrics["losses/recon"] < 0.3
    assert (run_dir / "samples" / "reconstructions_epoch0001.png").is_file()


def test_a_bad_dataset_setting_exits_2_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "experiment=bdl9-l2-moons",
                           "+dataset.samples=3", f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("error: dataset.samples is not a setting of the moons dataset; "
                                                     "allowed: n_samples, noise, seed")


@pytest.mark.skipif(not CATALOGUE.is_file(), reason="the experiment catalogue is not next to the repository")
def test_every_generative_and_supervised_experiment_has_a_preset_or_a_reason():
    ids = set()
    for line in CATALOGUE.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        kinds = ("ae", "vae", "gan", "sup", "opt", "out")  # "sup (P)", "out of scope"
        if len(cells) > 4 and cells[1].startswith("`") and cells[3].split(" ")[0] in kinds:
            ids.add(cells[1].strip("`"))
    assert len(ids) == 29 + 60  # the catalogue's totals
    presets = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    not_runnable = (REPO / "conf" / "experiment" / "NOT_RUNNABLE.md").read_text()
    missing = sorted(i for i in ids if i not in presets and f"| `{i}` |" not in not_runnable)
    assert not missing
