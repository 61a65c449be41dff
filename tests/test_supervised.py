"""gans/supervised.py: the declarative networks, the data and splits, learning on real data (MNIST, sklearn's
digits and diabetes), the Himmelblau fixtures, resume, and a few chapter presets end to end through the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import core
from core.runtime.events import read_run
from core.runtime.run import ConfigError, Run
from gans import supervised as S

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO.parent / "shared" / "experiments" / "README.md"


def run_config(dataset: dict, checkpoint_every=0, **model):
    return OmegaConf.create({"model": {**S.Config().__dict__, **model}, "dataset": dataset,
                             "checkpoint_every": checkpoint_every, "optim": None})


def train(tmp_path, dataset, seed=0, resume=None, name="run", **model):
    cfg = run_config(dataset, **model)
    with Run(tmp_path / name, seed=seed, quiet=True, resume=resume) as run:
        return S.train(cfg, run)


def net(layers, shape):
    return S.build_network(S.parse_layers(layers), shape)


def layer(kind, **keys):
    return {"type": kind, **keys}


RELU = {"activation": "relu"}
MLP = [layer("flatten"), layer("dense", units=64, **RELU), layer("dense", units=10)]


# ----- networks -----
def test_book_networks_have_the_books_parameter_counts():
    pool_relu = [layer("maxpool"), layer("activation", **RELU)]
    lenet, _ = net([layer("conv", filters=6, kernel=3), *pool_relu, layer("conv", filters=16, kernel=3), *pool_relu,
                    layer("flatten"), layer("dense", units=120, **RELU), layer("dense", units=84, **RELU),
                    layer("dense", units=10)], (1, 28, 28))
    per_layer = [sum(p.size for p in layer.parameters()) for layer in lenet if list(layer.parameters())]
    assert per_layer == [60, 880, 48120, 10164, 850]  # FX-PC-7
    rnn_ae, out = net([layer("reshape", shape=[28, 28]), layer("lstm", units=100, return_sequences=True),
                       layer("lstm", units=30), layer("repeat_vector", n=28),
                       layer("lstm", units=100, return_sequences=True), layer("dense", units=28)], (1, 28, 28))
    assert out == (28, 28) and rnn_ae.parameter_counts()["total"] == 122_548  # FX-PC-23, Keras' single-bias LSTM
    fraud, _ = net([layer("dense", units=14, activation="tanh", activity_l1=1e-4), layer("dense", units=7, **RELU),
                    layer("dense", units=7, activation="tanh"), layer("dense", units=29, **RELU)], (29,))
    assert fraud.parameter_counts()["total"] == 813  # FX-PC-27
    quant, _ = net([layer("conv", filters=12, kernel=3, **RELU), layer("maxpool"), layer("flatten"),
                    layer("dense", units=10)], (1, 28, 28))
    assert quant.parameter_counts()["trainable"] == 20_410  # FX-PC-15


def test_residual_blocks_add_their_input_or_a_strided_projection():
    block = layer("residual", layers=[layer("conv", filters=8, kernel=3, stride=2, padding="same"), layer("batchnorm")])
    model, out = net([block], (4, 15, 15))
    assert out == (8, 8, 8) and model[0].shortcut.stride == (2, 2)  # BDL's 1x1 downsample
    zero_conv = layer("conv", filters=4, kernel=3, padding="same", init="zeros")
    same, _ = net([layer("residual", activation="linear", layers=[zero_conv])], (4, 5, 5))
    plain, _ = net([layer("residual", shortcut=False, activation="linear", layers=[zero_conv])], (4, 5, 5))
    x = core.randn(2, 4, 5, 5)
    with core.no_grad():
        assert np.allclose(same(x).numpy(), x.numpy())  # zero body: the block is the identity
        assert np.allclose(plain(x).numpy(), 0)


def test_penalties_follow_keras():
    model, _ = net([layer("dense", units=3, l2=0.5, activity_l1=0.1, **RELU)], (2,))
    model[0].layer.weight.data[...] = [[1.0, 2.0], [0.0, 1.0], [-1.0, 0.0]]
    model[0].layer.bias.data[...] = 0.0
    model(core.tensor([[1.0, 1.0], [2.0, 0.0]]))
    # l2: 0.5 * sum(w^2) = 0.5 * 7; activity: 0.1 * sum|relu(xW^T)| / batch = 0.1 * (3 + 1 + 2) / 2
    assert model.penalty().item() == pytest.approx(3.5 + 0.3)


@pytest.mark.parametrize("overrides,optimizer,lr", [
    (["model=supervised", "dataset=digits"], "SGD", 0.01),  # HOML ch. 10's default
    (["experiment=bdl9-l2-moons"], "Adam", 1e-3),  # names only the optimizer: Keras' default lr, not SGD's
    (["experiment=bdl8-mlp-mnist-fit"], "Adam", 0.01),  # a preset's own lr wins
])
def test_a_preset_without_lr_gets_keras_default_for_its_optimizer(overrides, optimizer, lr):
    from hydra import compose, initialize_config_dir
    from scripts import train as cli
    cli.register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    opt = S.make_optimizer(S.model_config(cfg), [core.nn.Parameter(core.tensor([1.0]))])
    assert type(opt).__name__ == optimizer and opt.param_groups[0]["lr"] == lr


@pytest.mark.parametrize("layers,message", [
    ([{"type": "dens", "units": 3}], "model.layers[0]: type must be one of dense"),
    ([{"type": "dense", "unit": 3}], "model.layers[0]: unknown key 'unit' for a dense layer"),
    ([{"type": "dense"}], "model.layers[0]: a dense layer needs 'units'"),
    ([{"type": "dense", "units": 10, "activation": "softmax"}], "leave the output layer linear"),
    ([{"type": "residual", "layers": [{"type": "conv", "filters": 2}]}],
     "model.layers[0].layers[0]: a conv layer needs 'kernel'"),
])
def test_bad_layer_lists_fail_validation_in_one_line(layers, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        S.Config(layers=layers).validate()


# ----- data -----
def test_series_is_the_books_generator_cut_into_windows():
    x, y, (x_test, y_test) = S.load_pool({"name": "series"})
    assert x.shape == (980, 20) and x_test.shape == (461, 20)  # targets 20..999 train, 1000..1460 are the forecast
    noise = 10 * np.random.RandomState(42).randn(1461)
    assert x[0, 0] == pytest.approx(10 + noise[0], rel=1e-6)  # the notebooks' sin(2 s) rise starts at 0
    assert y[360] == pytest.approx(10 + 0.05 * 380 + 50 * np.sin(2 * 15 / 365) + noise[380], rel=1e-6)  # step 380
    assert np.array_equal(x[1, :-1], x[0, 1:]) and y[0] == pytest.approx(x[1, -1])
    course = S.load_pool({"name": "series", "pattern": "cos"})[0]
    assert course[0, 0] == pytest.approx(10 + 50 + noise[0], rel=1e-6)
    with pytest.raises(ConfigError, match="dataset.pattern must be cos or sin, got 'tan'"):
        S.load_pool({"name": "series", "pattern": "tan"})


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


@pytest.mark.parametrize("start,expected", [
    ([4.0, 0.0], [3.584428, -1.8481264]),       # FX-OPT-1 (book)
    ([1.0, 0.0], [3.0, 1.9999999]),             # FX-OPT-2 (float32, computed)
    ([-4.0, 0.0], [-3.7793102, -3.283186]),
    ([-2.0, 2.0], [-2.805118, 3.1313124]),
])
def test_gradient_descent_on_himmelblau_reaches_the_books_points(tmp_path, start, expected):
    metrics = train(tmp_path, {"name": "himmelblau"}, task="minimize", start=start, optimizer="sgd", lr=0.01,
                    epochs=200)
    assert np.allclose(metrics["opt/point"], expected, atol=1e-5)
    assert metrics["opt/f"] < 1e-10 and metrics["train/steps"] == 200


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
    """A run that receives Ctrl-C after `steps` training steps."""

    def __init__(self, *args, steps, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.steps = 0, steps

    def should_stop(self):
        self.calls += 1
        return self.calls > self.steps


def test_resuming_after_ctrl_c_mid_epoch_ends_like_an_uninterrupted_run(tmp_path):
    dataset = {"name": "digits"}
    layers = [layer("flatten"), layer("dropout", rate=0.3), *MLP[1:]]  # dropout draws from the global stream
    model = dict(layers=layers, optimizer="adam", batch_size=50, random_flip=True, validation_split=0.1, epochs=3)
    whole = train(tmp_path, dataset, name="whole", **model)
    with StopAfter(tmp_path / "part", seed=0, quiet=True, steps=40) as run:  # 26 steps per epoch: stops in epoch 2
        stopped = S.train(run_config(dataset, **model), run)
    assert stopped["train/steps"] == 40 and "test/accuracy" not in stopped
    resumed = train(tmp_path, dataset, name="part", resume=str(tmp_path / "part"), **model)
    for key in ("test/accuracy", "test/loss", "val/loss", "train/loss", "train/steps"):
        assert resumed[key] == whole[key], key


# ----- presets through the CLI -----
def run_preset(tmp_path, preset, *overrides):
    run_dir = tmp_path / preset
    command = [sys.executable, str(REPO / "scripts" / "train.py"), f"experiment={preset}", *overrides, "quiet=true",
               f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((run_dir / "metrics.json").read_text()), run_dir


def test_presets_run_end_to_end(tmp_path, mnist_root):
    metrics, _ = run_preset(tmp_path, "bdl7-gd-himmelblau")
    assert np.allclose(metrics["opt/point"], [3.584428, -1.8481264], atol=1e-6) and metrics["status"] == "completed"

    metrics, run_dir = run_preset(tmp_path, "mtf6-linear-series", "model.epochs=3")
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
