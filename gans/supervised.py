"""Supervised learning on arrays (classification, regression, autoencoding) from a declarative layer list,
and optimisation toys: the books' non-generative chapter experiments.

    python scripts/train.py model=supervised dataset=digits
    python scripts/train.py experiment=bdl8-mlp-mnist-fit

Tasks (`task`):
- "classification": integer labels. Losses: "sparse_ce" (softmax cross-entropy), "bce" (one output unit,
  labels 0/1), "mse" (against one-hot labels, BDL ch. 5/7). Metric: accuracy.
- "regression": one output per example. Losses "mse", "mae", "huber" (`huber_delta`). Metrics: MAE and MSE.
- "autoencoder": the target is the input itself. Losses "bce" (per value, inputs in [0, 1]) or "mse".
  With `anomaly_class`, training sees only the other classes, and every test example is scored by its
  reconstruction error: the threshold is the highest one whose recall of the anomaly class stays above
  `anomaly_recall` (TFMLP ch. 7), and the flagged examples give true/false positives.
- "minimize": gradient descent on the point `start` of the objective that `dataset.name` names
  ("himmelblau", BDL ch. 7); `epochs` counts the steps. Metrics: the point and the function value.

The cross-entropy losses take logits: leave the last layer linear where Keras puts softmax/sigmoid in it
and uses from_logits=False. That is the same function computed stably (Keras' clipping of probabilities at
1e-7 is the only difference). The difference losses ("mse" for classification, regression, autoencoding
with mse) compare the last layer's output as it is, so give it its activation there.

Model (`layers`): a list of dicts, each with a `type`, applied in order; input shapes are inferred from the
data. Types and keys (defaults in brackets; Keras' defaults, glorot_uniform kernels and zero biases):
- dense: units, activation [linear], init [glorot_uniform], init_std [0.05], bias [true], l2 [0],
  activity_l1 [0]. Applies to the last axis, so it also works per time step of a sequence.
- conv: filters, kernel, stride [1], padding [valid], activation, init, init_std, bias, l2.
- maxpool / avgpool: size [2], stride [size], padding [valid]. global_avgpool. flatten. reshape: shape
  (per example; -1 allowed). dropout: rate. batchnorm: momentum [0.99], eps [0.001] (Keras' values).
  activation: activation. scale: factor (Keras' Lambda(x * factor)). repeat_vector: n.
- simple_rnn / lstm / gru: units, return_sequences [false], bidirectional [false] (concatenated); input
  (N, T, features); Keras' initialisation and biases.
- residual: layers (a nested list), activation [relu] applied after the sum, shortcut [true]: the input is
  added to the output of `layers`, through a 1×1 conv with the matching stride and channels when the shapes
  differ (BDL's ResNet-18); false gives the same block without the sum (MTF's "plain" network).
Activations: linear, relu, elu, selu, tanh, sigmoid, leaky_relu (Keras' layer slope 0.3).
Inits: glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal (Keras' truncated normals),
truncated_normal (N(0, init_std) cut at 2 std, TF's truncated_normal), zeros, bdl_numpy (BDL ch. 7's NumPy
network: kernel N(0, 1/units), bias U[0, 0.1)).
Penalties, added to the loss as Keras adds a layer's losses: l2 = λ·Σw² of the kernel; activity_l1 =
λ·Σ|output| divided by the batch size (per example, GM-07). Keras also includes them in val_loss; so does this.

Data (`cfg.dataset`):
- image datasets of gans/datasets.py (mnist, fashion_mnist, cifar10, digits): images NCHW in
  `dataset.normalize`'s range, labels 0..9. `dataset.split` is the pool to train on.
- toy datasets (conf/dataset/toy/): moons (sklearn make_moons), iris, breast_cancer, diabetes (sklearn's
  bundled files; diabetes' targets times `target_scale`), cloud3d (a correlated 3-D Gaussian cloud, inputs =
  targets), series (MTF ch. 6's synthetic series cut into windows: the `window` values before each time step
  predict it; targets before `split_time` train, the rest is the test set, as the book's forecast), and the
  objective himmelblau.
Splits: with `test_fraction` > 0 the pool is split by sklearn's train_test_split(random_state=split_seed), the
books' own call, so every seed of a run sees the same test set. With test_fraction 0 an image dataset's
"test" split is the test set (so `dataset.split` must be train). Only the MNIST test file exists offline:
presets then train on dataset.split=test with test_fraction 0.2 (8000 training, 2000 test images).
Validation: the last `validation_split` of the training part (Keras' rule, taken before shuffling), or the
test set itself with `validate_on_test` (as several books do). `standardize` scales features with the
training part's mean and std. `center_crop` keeps the central fraction of each image, `random_flip` flips
training images left-right with probability 0.5.

Training: `epochs` passes over the training part in shuffled batches (the last one may be smaller, as Keras),
or `steps_per_epoch` batches from a stream of shuffled passes. `lr_milestones` multiply the learning rate by
`lr_gamma` at those epochs. `early_stopping_patience` stops after that many epochs without a lower val loss;
`keep_best` ("val/loss" or "val/accuracy") evaluates the test set with the weights of the best epoch.
`mc_dropout_samples` adds MC-Dropout test accuracy (dropout on, softmax averaged, HOML ch. 11).
`weight_stats` reports min/max/mean of every kernel (`weights/<layer index>/...`, BDL ch. 9).

Logged to TensorBoard: losses/loss every `log_every` steps; per epoch train/loss, train/accuracy, val/...,
charts/learning_rate; the network summary as text. metrics.json: the last epoch's train/... and val/...,
val/loss_best and val/accuracy_best, test/loss and test/accuracy (or test/mae, test/mse), model/params,
train/epochs, train/steps, time/wall_s, and `objective`: what train.py returns to sweepers (test accuracy,
−test MAE, −test loss for autoencoders, −f for minimize). Checkpoints every `checkpoint_every` epochs, at the
end and on Ctrl-C hold the network, optimizer, every random stream and the position in the data, so a
resumed run continues bitwise as an uninterrupted one.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

import core
import core.functional as F
from core import nn, optim
from core.nn import init as initializers
from core.runtime.run import ConfigError, get_rng_state, set_rng_state
from gans.datasets import DATASETS as IMAGE_DATASETS, load_dataset

MAIN_METRIC = "objective"
TASKS = ("classification", "regression", "autoencoder", "minimize")
TASK_LOSSES = {"classification": ("sparse_ce", "bce", "mse"), "regression": ("mse", "mae", "huber"),
               "autoencoder": ("bce", "mse")}
OPTIMIZERS = ("sgd", "rmsprop", "adam", "nadam", "adagrad", "adadelta")
# Keras' (TF 2) default learning rates and decays, used where the config leaves lr / rho null
KERAS_LR = {"sgd": 0.01, "rmsprop": 1e-3, "adam": 1e-3, "nadam": 1e-3, "adagrad": 1e-3, "adadelta": 1e-3}
KERAS_RHO = {"rmsprop": 0.9, "adadelta": 0.95}
ACTIVATIONS = ("linear", "relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu")
INITS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal", "truncated_normal", "zeros",
         "bdl_numpy")
KEEP_BEST = ("val/loss", "val/accuracy")
REQUIRED = object()
_KERNEL = {"activation": "linear", "init": "glorot_uniform", "init_std": 0.05, "bias": True, "l2": 0.0}
_RECURRENT = {"units": REQUIRED, "return_sequences": False, "bidirectional": False}
_POOL = {"size": 2, "stride": None, "padding": "valid"}
LAYER_KEYS = {
    "dense": {"units": REQUIRED, **_KERNEL, "activity_l1": 0.0},
    "conv": {"filters": REQUIRED, "kernel": REQUIRED, "stride": 1, "padding": "valid", **_KERNEL},
    "maxpool": _POOL, "avgpool": _POOL, "global_avgpool": {}, "flatten": {},
    "reshape": {"shape": REQUIRED}, "dropout": {"rate": REQUIRED}, "batchnorm": {"momentum": 0.99, "eps": 1e-3},
    "activation": {"activation": REQUIRED}, "scale": {"factor": REQUIRED}, "repeat_vector": {"n": REQUIRED},
    "simple_rnn": _RECURRENT, "lstm": _RECURRENT, "gru": _RECURRENT,
    "residual": {"layers": REQUIRED, "activation": "relu", "shortcut": True},
}


def _default_layers():  # HOML ch. 10's MLP
    return [{"type": "flatten"}, {"type": "dense", "units": 300, "activation": "relu"},
            {"type": "dense", "units": 100, "activation": "relu"}, {"type": "dense", "units": 10}]


@dataclass
class Config:
    """Defaults: HOML ch. 10's classifier (Flatten → 300 relu → 100 relu → 10, SGD 0.01, batch 32)."""

    task: str = "classification"
    layers: List[Dict[str, Any]] = field(default_factory=_default_layers)
    loss: str = "sparse_ce"
    huber_delta: float = 1.0
    optimizer: str = "sgd"
    lr: Optional[float] = None  # null: Keras' default for the optimizer (KERAS_LR)
    momentum: float = 0.0  # sgd, rmsprop
    nesterov: bool = False
    rho: Optional[float] = None  # rmsprop / adadelta decay; null: Keras' 0.9 / 0.95
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-7
    initial_accumulator: float = 0.1  # adagrad
    lr_milestones: List[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    epochs: int = 30
    batch_size: int = 32
    steps_per_epoch: Optional[int] = None
    test_fraction: float = 0.0
    split_seed: int = 42
    validation_split: float = 0.0
    validate_on_test: bool = False
    standardize: bool = False
    center_crop: float = 1.0
    random_flip: bool = False
    early_stopping_patience: int = 0
    keep_best: Optional[str] = None
    mc_dropout_samples: int = 0
    anomaly_class: Optional[int] = None
    anomaly_recall: float = 0.8
    weight_stats: bool = False
    start: List[float] = field(default_factory=lambda: [4.0, 0.0])  # minimize: the initial point
    log_every: int = 100

    def validate(self):
        _one_of(self, "task", TASKS)
        if self.task != "minimize":
            _one_of(self, "loss", TASK_LOSSES[self.task])
        _one_of(self, "optimizer", OPTIMIZERS)
        for name in ("epochs", "batch_size", "log_every", "huber_delta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"model.lr must be a positive finite number or null, got {self.lr}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"model.steps_per_epoch must be >= 1 or null, got {self.steps_per_epoch}")
        for name in ("test_fraction", "validation_split"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.validate_on_test and self.validation_split:
            raise ValueError("model.validate_on_test and model.validation_split both choose the validation data; "
                             "set one of them")
        if not 0 < self.center_crop <= 1:
            raise ValueError(f"model.center_crop must be in (0, 1], got {self.center_crop}")
        if self.keep_best is not None:
            _one_of(self, "keep_best", KEEP_BEST)
        if self.early_stopping_patience < 0 or self.mc_dropout_samples < 0:
            raise ValueError("model.early_stopping_patience and model.mc_dropout_samples must be >= 0")
        if self.anomaly_class is not None and self.task != "autoencoder":
            raise ValueError("model.anomaly_class scores reconstruction errors: it needs model.task=autoencoder")
        if not 0 < self.anomaly_recall < 1:
            raise ValueError(f"model.anomaly_recall must be in (0, 1), got {self.anomaly_recall}")
        if self.task == "minimize":
            if not self.start:
                raise ValueError("model.start must give the initial point of model.task=minimize")
        else:
            parse_layers(self.layers, "model.layers")


def _one_of(cfg, name, allowed):
    if getattr(cfg, name) not in allowed:
        raise ValueError(f"model.{name} must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}")


def parse_layers(layers, where="layers") -> list[dict]:
    """The layer dicts with their defaults filled in; ValueError naming the layer for anything unknown."""
    if not layers:
        raise ValueError(f"{where} is empty; give at least one layer")
    specs = []
    for i, layer in enumerate(layers):
        here = f"{where}[{i}]"
        layer = dict(layer)
        kind = layer.pop("type", None)
        if kind not in LAYER_KEYS:
            raise ValueError(f"{here}: type must be one of {', '.join(LAYER_KEYS)}; got {kind!r}")
        allowed = LAYER_KEYS[kind]
        unknown = sorted(set(layer) - set(allowed))
        if unknown:
            raise ValueError(f"{here}: unknown key {unknown[0]!r} for a {kind} layer; allowed: "
                             f"{', '.join(allowed) or 'none'}")
        spec = {"type": kind, **{k: v for k, v in allowed.items() if v is not REQUIRED}, **layer}
        missing = [k for k, v in allowed.items() if v is REQUIRED and k not in layer]
        if missing:
            raise ValueError(f"{here}: a {kind} layer needs {missing[0]!r}")
        if spec.get("activation") == "softmax":
            raise ValueError(f"{here}: leave the output layer linear (activation linear): the cross-entropy losses "
                             "apply the softmax to its logits")
        if "activation" in spec and spec["activation"] not in ACTIVATIONS:
            raise ValueError(f"{here}: activation must be one of {', '.join(ACTIVATIONS)}; got {spec['activation']!r}")
        if "init" in spec and spec["init"] not in INITS:
            raise ValueError(f"{here}: init must be one of {', '.join(INITS)}; got {spec['init']!r}")
        for key in ("units", "filters", "n"):
            if key in spec and not (isinstance(spec[key], int) and spec[key] > 0):
                raise ValueError(f"{here}: {key} must be a positive integer, got {spec[key]!r}")
        if kind == "dropout" and not 0 <= spec["rate"] < 1:
            raise ValueError(f"{here}: rate must be in [0, 1), got {spec['rate']}")
        if spec.get("padding", "valid") not in ("valid", "same"):
            raise ValueError(f"{here}: padding must be valid or same, got {spec['padding']!r}")
        if kind == "residual":
            spec["layers"] = parse_layers(spec["layers"], f"{here}.layers")
        specs.append(spec)
    return specs


# ----- the network -----
class Block(nn.Module):
    """A Dense or Conv layer with its activation and penalties; `penalty` holds the last forward's
    activity penalty (per example), `l2` weighs the kernel's Σw²."""

    def __init__(self, layer, activation, l2=0.0, activity_l1=0.0):
        super().__init__()
        self.layer, self.activation = layer, activation
        self.l2, self.activity_l1 = l2, activity_l1
        self.penalty = None

    def forward(self, x):
        out = self.activation(self.layer(x))
        if self.activity_l1:
            self.penalty = self.activity_l1 * core.abs(out).sum() / out.shape[0]
        return out


class Residual(nn.Module):
    def __init__(self, body, shortcut, activation):
        super().__init__()
        self.body, self.shortcut, self.activation = body, shortcut, activation

    def forward(self, x):
        out = self.body(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.activation(out)


class Lambda(nn.Module):
    """A parameter-free reshaping or scaling step."""

    def __init__(self, fn, description):
        super().__init__()
        self.fn, self.description = fn, description

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self):
        return self.description


class Network(nn.Sequential):
    def penalty(self):
        """The sum of the l2 and activity penalties of the last forward pass (0.0 when there are none)."""
        total = 0.0
        for block in self.modules():
            if isinstance(block, Block):
                if block.l2:
                    total = total + block.l2 * (block.layer.weight * block.layer.weight).sum()
                if block.penalty is not None:
                    total = total + block.penalty
        return total


def activation(name: str) -> nn.Module:
    return {"linear": nn.Identity, "relu": nn.ReLU, "elu": nn.ELU, "selu": nn.SELU, "tanh": nn.Tanh,
            "sigmoid": nn.Sigmoid, "leaky_relu": lambda: nn.LeakyReLU(0.3)}[name]()


def init_kernel(layer, spec):
    weight, bias = layer.weight, layer.bias
    name = spec["init"]
    if name == "glorot_uniform":
        initializers.xavier_uniform_(weight)
    elif name == "glorot_normal":
        initializers.variance_scaling_(weight, 1.0, "fan_avg")
    elif name == "he_uniform":
        initializers.variance_scaling_(weight, 2.0, "fan_in", "uniform")
    elif name == "he_normal":
        initializers.variance_scaling_(weight, 2.0, "fan_in")
    elif name == "lecun_normal":
        initializers.variance_scaling_(weight, 1.0, "fan_in")
    elif name == "truncated_normal":
        std = spec["init_std"]
        initializers.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
    elif name == "zeros":
        initializers.zeros_(weight)
    else:  # bdl_numpy: np.random.randn(n_input, n_neurons) * sqrt(1 / n_neurons), bias rand(n_neurons) * 0.1
        initializers.normal_(weight, 0.0, math.sqrt(1.0 / weight.shape[0]))
        if bias is not None:
            initializers.uniform_(bias, 0.0, 0.1)
        return
    if bias is not None:
        initializers.zeros_(bias)


def make_layer(spec: dict, shape: tuple) -> nn.Module:
    """One module for `spec`, given the input shape of one example."""
    kind = spec["type"]
    if kind in ("dense", "conv"):
        if kind == "dense":
            layer = nn.Linear(shape[-1], spec["units"], bias=spec["bias"])
        else:
            if len(shape) != 3:
                raise ConfigError(f"a conv layer needs (C, H, W) examples, got shape {shape}; reshape first")
            layer = nn.Conv2d(shape[0], spec["filters"], spec["kernel"], spec["stride"], padding=spec["padding"],
                              bias=spec["bias"])
        init_kernel(layer, spec)
        return Block(layer, activation(spec["activation"]), spec["l2"], spec.get("activity_l1", 0.0))
    if kind in ("maxpool", "avgpool"):
        pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
        return pool(spec["size"], spec["stride"], padding=spec["padding"])
    if kind == "global_avgpool":
        return nn.GlobalAvgPool2d()
    if kind == "flatten":
        return nn.Flatten()
    if kind == "reshape":
        target = tuple(spec["shape"])
        return Lambda(lambda x: x.reshape(x.shape[0], *target), f"shape={target}")
    if kind == "dropout":
        return nn.Dropout(spec["rate"])
    if kind == "batchnorm":
        if len(shape) not in (1, 3):
            raise ConfigError(f"batchnorm works on (features,) or (C, H, W) examples, got shape {shape}")
        norm = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
        return norm(shape[0], momentum=round(1 - spec["momentum"], 12), eps=spec["eps"])  # Keras: the decay
    if kind == "activation":
        return activation(spec["activation"])
    if kind == "scale":
        factor = spec["factor"]
        return Lambda(lambda x: x * factor, f"factor={factor}")
    if kind == "repeat_vector":
        n = spec["n"]
        return Lambda(lambda x: core.broadcast_to(x.unsqueeze(1), (x.shape[0], n, x.shape[1])), f"n={n}")
    if kind in ("simple_rnn", "lstm", "gru"):
        if len(shape) != 2:
            raise ConfigError(f"a {kind} layer needs (time, features) examples, got shape {shape}; reshape first")
        cls = {"simple_rnn": nn.SimpleRNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        layer = cls(shape[-1], spec["units"], batch_first=True, return_sequences=spec["return_sequences"],
                    init="keras")
        return nn.Bidirectional(layer) if spec["bidirectional"] else layer  # Bidirectional concatenates
    # residual
    body, out_shape = build_network(spec["layers"], shape)
    shortcut = None
    if spec["shortcut"]:
        if out_shape == tuple(shape):
            shortcut = nn.Identity()
        elif len(shape) == 3 and len(out_shape) == 3:  # BDL's downsample: a 1x1 conv with the block's stride
            shortcut = nn.Conv2d(shape[0], out_shape[0], 1, max(round(shape[1] / out_shape[1]), 1), init="keras")
        if shortcut is None or _output_shape(shortcut, shape) != out_shape:
            raise ConfigError(f"a residual block maps {tuple(shape)} to {out_shape}; its shortcut cannot match that")
    return Residual(body, shortcut, activation(spec["activation"]))


def _output_shape(layer: nn.Module, shape: tuple) -> tuple:
    """The output shape per example of `layer` for examples of `shape`, from a dummy batch."""
    layer.eval()  # the probe must not touch batch-norm statistics
    with core.no_grad():
        out = tuple(layer(core.zeros(2, *shape)).shape[1:])
    layer.train()
    return out


def build_network(specs: list[dict], input_shape) -> tuple[Network, tuple]:
    """The network of parsed layer specs for examples of `input_shape`, and its output shape per example."""
    layers, shape = [], tuple(input_shape)
    for i, spec in enumerate(specs):
        layer = make_layer(spec, shape)
        try:
            shape = _output_shape(layer, shape)
        except ValueError as e:
            raise ConfigError(f"layer {i} ({spec['type']}) cannot take examples of shape {shape}: "
                              f"{str(e).splitlines()[0]}") from None
        layers.append(layer)
    return Network(*layers), shape


# ----- data -----
def _moons(n_samples=2000, noise=0.2, seed=100):
    from sklearn.datasets import make_moons
    x, y = make_moons(n_samples, noise=noise, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64), None


def _sklearn_bundled(loader):
    def load():
        data = loader()
        return data.data.astype(np.float32), data.target.astype(np.int64), None
    return load


def _diabetes(target_scale=1.0):
    """sklearn's diabetes regression data; `target_scale` rescales the targets (25..346), e.g. to the scale of
    a dataset it stands in for."""
    from sklearn.datasets import load_diabetes
    data = load_diabetes()
    return data.data.astype(np.float32), (data.target * target_scale).astype(np.float32), None


def _cloud3d(n_samples=80, seed=4):
    """A centred 3-D Gaussian cloud with standard deviations 1, 0.5 and 0.1 along random orthogonal axes:
    nearly planar, so a 2-unit linear autoencoder can find the plane (HOML ch. 17; the book does not print
    its generator)."""
    rng = np.random.default_rng(seed)
    axes, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    x = (rng.standard_normal((n_samples, 3)) * [1.0, 0.5, 0.1]) @ axes.T
    x = (x - x.mean(axis=0)).astype(np.float32)
    return x, x.copy(), None


def _series(length=4 * 365 + 1, baseline=10.0, slope=0.05, amplitude=50.0, period=365, noise=10.0, seed=42,
            window=20, split_time=1000, pattern="sin"):
    """MTF ch. 6 (after the TensorFlow time-series course): trend + a yearly pattern + Gaussian noise from
    np.random.RandomState(seed). The pattern rises as sin(2 s) over the first 40 % of the period s (the book's
    notebooks; "cos" is the course's cos(2π s)), then decays as exp(-3 s). Each example is the `window` values
    before a time step, its target the value at that step."""
    if pattern not in ("cos", "sin"):
        raise ConfigError(f"dataset.pattern must be cos or sin, got {pattern!r}")
    time_steps = np.arange(length, dtype=np.float32)
    season = ((time_steps % period) / period)
    rise = np.cos(season * 2 * np.pi) if pattern == "cos" else np.sin(season * 2)
    yearly = np.where(season < 0.4, rise, 1 / np.exp(3 * season))
    series = baseline + slope * time_steps + amplitude * yearly
    series = (series + np.random.RandomState(seed).randn(length) * noise).astype(np.float32)
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], window).copy()
    y = series[window:]
    train = np.arange(window, length) < split_time
    return x[train], y[train], (x[~train], y[~train])


def _himmelblau(point):
    x, y = point[0], point[1]
    return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


def _toy_loaders():
    from sklearn import datasets
    return {"moons": _moons, "iris": _sklearn_bundled(datasets.load_iris),
            "breast_cancer": _sklearn_bundled(datasets.load_breast_cancer),
            "diabetes": _diabetes, "cloud3d": _cloud3d,
            "series": _series}


TOY_DATASETS = ("moons", "iris", "breast_cancer", "diabetes", "cloud3d", "series")
OBJECTIVES = {"himmelblau": (_himmelblau, ("x", "y"))}


@dataclass
class Part:
    x: np.ndarray
    y: np.ndarray

    def __len__(self):
        return len(self.x)


@dataclass
class Splits:
    train: Part
    val: Optional[Part]
    test: Part


def _plain(section) -> dict:
    if hasattr(section, "_metadata"):  # an OmegaConf node
        from omegaconf import OmegaConf
        return OmegaConf.to_container(section, resolve=True)
    return dict(section)


def load_pool(dataset: dict):
    """(x, y, test or None) of the dataset config: the pool to train on and, for a fixed split, the test part."""
    name = dataset.get("name")
    if name in IMAGE_DATASETS:
        x, y = load_dataset(name, root=dataset.get("root"), split=dataset.get("split", "train"),
                            normalize=dataset.get("normalize", "01"), classes=dataset.get("classes"),
                            image_size=dataset.get("image_size"), limit=dataset.get("limit"),
                            download=dataset.get("download", False))
        return x, y, None
    if name not in TOY_DATASETS:
        raise ConfigError(f"unknown dataset.name {name!r} for model=supervised; allowed: "
                          f"{', '.join(IMAGE_DATASETS + TOY_DATASETS + tuple(OBJECTIVES))}")
    loader = _toy_loaders()[name]
    options = {k: v for k, v in dataset.items() if k != "name"}
    allowed = list(inspect.signature(loader).parameters)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"dataset.{unknown[0]} is not a setting of the {name} dataset; allowed: "
                          f"{', '.join(allowed) or 'none'}")
    return loader(**options)


def load_splits(dataset: dict, args: Config) -> Splits:
    x, y, fixed_test = load_pool(dataset)
    image = dataset["name"] in IMAGE_DATASETS
    if fixed_test is not None:
        test = Part(*fixed_test)
    elif args.test_fraction:
        from sklearn.model_selection import train_test_split
        x, x_test, y, y_test = train_test_split(x, y, test_size=args.test_fraction, random_state=args.split_seed)
        test = Part(x_test, y_test)
    elif image and dataset.get("split", "train") == "train":
        test = Part(*load_pool({**dataset, "split": "test"})[:2])
    else:
        raise ConfigError(f"the {dataset['name']} data has no separate test set here; set model.test_fraction "
                          "(e.g. 0.2) to hold part of it out")
    if args.anomaly_class is not None:  # the autoencoder learns what normal examples look like
        x, y = x[y != args.anomaly_class], y[y != args.anomaly_class]
    train, val = Part(x, y), None
    if args.validation_split:
        cut = len(x) - int(len(x) * args.validation_split)
        train, val = Part(x[:cut], y[:cut]), Part(x[cut:], y[cut:])
    parts = [part for part in (train, val, test) if part is not None]
    if args.standardize:
        mean, std = train.x.mean(axis=0), train.x.std(axis=0)
        std[std == 0] = 1
        for part in parts:
            part.x = ((part.x - mean) / std).astype(np.float32)
    if args.center_crop < 1:
        for part in parts:
            part.x = center_crop(part.x, args.center_crop)
    return Splits(train, test if args.validate_on_test else val, test)


def center_crop(images: np.ndarray, fraction: float) -> np.ndarray:
    if images.ndim != 4:
        raise ConfigError(f"model.center_crop needs images (N, C, H, W), got shape {images.shape}")
    h, w = images.shape[2:]
    ch, cw = max(int(round(h * fraction)), 1), max(int(round(w * fraction)), 1)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(images[:, :, top:top + ch, left:left + cw])


class BatchStream:
    """Shuffled batches from passes over n examples, a new permutation per pass; its position and the
    generator's state are all a checkpoint needs to continue it."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.order, self.position = None, 0

    def next(self) -> np.ndarray:
        if self.order is None or self.position >= self.n:
            self.order, self.position = self.rng.permutation(self.n), 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += len(index)
        return index

    def state(self) -> dict:
        return {"order": self.order, "position": self.position, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict):
        self.order, self.position = state["order"], state["position"]
        self.rng.bit_generator.state = state["rng"]


# ----- losses and evaluation -----
def task_loss(args: Config, out, x, y):
    if args.task == "classification":
        if args.loss == "sparse_ce":
            return F.cross_entropy(out, y)
        if args.loss == "bce":
            return F.binary_cross_entropy_with_logits(out.reshape(-1), core.cast(y, out.dtype))
        return F.mse_loss(out, F.one_hot(y, out.shape[1], dtype=out.dtype))
    if args.task == "autoencoder":
        target = x.reshape(out.shape)
        return F.binary_cross_entropy_with_logits(out, target) if args.loss == "bce" else F.mse_loss(out, target)
    prediction = out.reshape(y.shape)
    if args.loss == "mae":
        return F.l1_loss(prediction, y)
    if args.loss == "huber":
        return F.huber_loss(prediction, y, delta=args.huber_delta)
    return F.mse_loss(prediction, y)


def correct(args: Config, out, y) -> int:
    predicted = (out.reshape(-1).data > 0) if args.loss == "bce" else out.data.argmax(axis=1)
    return int((predicted == y.data).sum())


def check_outputs(args: Config, out_shape: tuple, data: Splits):
    """The last layer must fit the task: one output per example for regression and bce, one per class, as
    many values as the input for an autoencoder."""
    size = math.prod(out_shape)
    fix = "change the last layer's units"
    if args.task == "autoencoder":
        if size != math.prod(data.train.x.shape[1:]):
            raise ConfigError(f"the autoencoder outputs {size} values per example but its input has "
                              f"{math.prod(data.train.x.shape[1:])}; {fix}")
    elif args.task == "regression" or args.loss == "bce":
        if size != 1:
            raise ConfigError(f"model.task={args.task} with loss {args.loss} needs one output per example, "
                              f"the network gives {size}; {fix} to 1")
    else:
        classes = int(max(data.train.y.max(), data.test.y.max())) + 1
        if len(out_shape) != 1 or out_shape[0] < classes:
            raise ConfigError(f"the labels go up to {classes - 1} but the network's output per example has shape "
                              f"{out_shape}; {fix} to {classes}")


def predict(model, x: np.ndarray, device, batch_size=1000):
    """Outputs for x in eval mode, batch by batch, and the mean penalty per batch (Keras' val_loss has it)."""
    outs, penalty = [], 0.0
    with core.no_grad():
        for start in range(0, len(x), batch_size):
            outs.append(model(core.tensor(x[start:start + batch_size], device=device)).numpy())
            value = model.penalty()
            penalty += float(value.item() if isinstance(value, core.Tensor) else value)
    return np.concatenate(outs), penalty / max(len(outs), 1)


def evaluate(args: Config, model, part: Part, device) -> dict:
    model.eval()
    out, penalty = predict(model, part.x, device)
    model.train()
    metrics = {"loss": task_loss(args, core.tensor(out), core.tensor(part.x), core.tensor(part.y)).item() + penalty}
    if args.task == "classification":
        metrics["accuracy"] = correct(args, core.tensor(out), core.tensor(part.y)) / len(part)
    elif args.task == "regression":
        error = out.reshape(part.y.shape) - part.y
        metrics.update(mae=float(np.abs(error).mean()), mse=float((error ** 2).mean()))
    else:
        metrics["mse"] = float(((_reconstruction(args, out) - part.x.reshape(out.shape)) ** 2).mean())
    return metrics


def _reconstruction(args: Config, out: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-out)) if args.loss == "bce" else out


def mc_dropout_accuracy(model, part: Part, samples: int, device) -> float:
    """Accuracy of the softmax averaged over `samples` passes with dropout on (HOML ch. 11's MC Dropout)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    probabilities = 0.0
    for _ in range(samples):
        out, _ = predict(model, part.x, device)
        out = np.exp(out - out.max(axis=1, keepdims=True))
        probabilities = probabilities + out / out.sum(axis=1, keepdims=True)
    model.train()
    return float((probabilities.argmax(axis=1) == part.y).mean())


def anomaly_scores(args: Config, model, part: Part, device) -> dict:
    """TFMLP ch. 7: reconstruction MSE per example; the threshold is the highest one that still flags more
    than `anomaly_recall` of the anomaly class."""
    model.eval()
    out, _ = predict(model, part.x, device)
    model.train()
    errors = ((_reconstruction(args, out) - part.x.reshape(out.shape)) ** 2).reshape(len(part), -1).mean(axis=1)
    is_anomaly = part.y == args.anomaly_class
    if not is_anomaly.any():
        raise ConfigError(f"the test set holds no example of model.anomaly_class={args.anomaly_class}")
    # with the anomalies' errors sorted high to low, flagging the k highest gives recall k/n: take the
    # smallest k above the target, and the threshold at that anomaly's error
    ranked = np.sort(errors[is_anomaly])[::-1]
    k = int(math.floor(args.anomaly_recall * len(ranked))) + 1
    threshold = float(ranked[min(k, len(ranked)) - 1])
    flagged = errors >= threshold
    true_positives, false_positives = int((flagged & is_anomaly).sum()), int((flagged & ~is_anomaly).sum())
    return {"test/threshold": threshold, "test/true_positives": true_positives,
            "test/false_positives": false_positives, "test/anomalies": int(is_anomaly.sum()),
            "test/recall": true_positives / int(is_anomaly.sum()),
            "test/precision": true_positives / max(true_positives + false_positives, 1)}


def weight_statistics(model: Network) -> dict:
    stats = {}
    for index, layer in enumerate(model):
        if isinstance(layer, Block):
            w = layer.layer.weight.detach().numpy()
            stats.update({f"weights/{index}/min": float(w.min()), f"weights/{index}/max": float(w.max()),
                          f"weights/{index}/mean": float(w.mean())})
    return stats


# ----- optimisers -----
def make_optimizer(args: Config, params, optim_cfg=None):
    """The model's optimizer with Keras' defaults where lr / rho are null; an `optim=<name>` group in the run
    config replaces it."""
    if optim_cfg is not None:
        return optim.create(params, **_plain(optim_cfg))
    name = args.optimizer
    lr = args.lr if args.lr is not None else KERAS_LR[name]
    rho = args.rho if args.rho is not None else KERAS_RHO.get(name)
    adam = {"betas": args.betas, "eps": args.eps}
    options = {"sgd": {"momentum": args.momentum, "nesterov": args.nesterov},
               "rmsprop": {"alpha": rho, "eps": args.eps, "momentum": args.momentum}, "adam": adam, "nadam": adam,
               "adagrad": {"initial_accumulator_value": args.initial_accumulator, "eps": args.eps},
               "adadelta": {"rho": rho, "eps": args.eps}}
    return optim.create(params, name, lr=lr, **options[name])


def learning_rate(args: Config, base_lr: float, epoch: int) -> float:
    return base_lr * args.lr_gamma ** sum(epoch >= m for m in args.lr_milestones)


# ----- training -----
def model_config(cfg) -> Config:
    section = cfg.model
    if isinstance(section, Config):
        return section
    return Config(**_plain(section))


def train(cfg, run) -> dict:
    args = model_config(cfg)
    dataset = _plain(cfg.dataset)
    core.manual_seed(run.seed)
    if args.task == "minimize" or dataset.get("name") in OBJECTIVES:
        return minimize(args, dataset, run)
    device = run.device
    data = load_splits(dataset, args)
    model, out_shape = build_network(parse_layers(args.layers), data.train.x.shape[1:])
    model.to(device)
    check_outputs(args, out_shape, data)
    opt = make_optimizer(args, model.parameters(), cfg.get("optim"))
    base_lr = opt.param_groups[0]["lr"]
    counts = model.parameter_counts()
    run.logger.text("model/summary", model.summary(data.train.x.shape[1:], print_fn=None))

    stream = BatchStream(len(data.train), args.batch_size, np.random.default_rng([run.seed, 1]))
    steps_per_epoch = args.steps_per_epoch or math.ceil(len(data.train) / args.batch_size)
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "sums": [0.0, 0, 0], "best": {}, "best_weights": None,
             "bad_epochs": 0, "last": {}, "wall_s": 0.0}
    if run.resume_state is not None:
        saved = run.resume_state
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"])
        stream.restore(saved["stream"])
        state = saved["progress"]
    started = time.perf_counter() - state["wall_s"]

    def save():
        state["wall_s"] = time.perf_counter() - started
        run.checkpoints.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": get_rng_state(),
                              "stream": stream.state(), "progress": state}, state["step"])

    bar = run.logger.progress(args.epochs * steps_per_epoch, "train")
    bar.update(state["step"])
    stopped = early_stop = False
    while state["epoch"] < args.epochs and not (stopped or early_stop):
        lr = learning_rate(args, base_lr, state["epoch"])
        for group in opt.param_groups:
            group["lr"] = lr
        sums = state["sums"]  # loss × examples, correct predictions, examples of this epoch
        while state["batch_in_epoch"] < steps_per_epoch:
            if run.should_stop():
                stopped = True
                break
            index = stream.next()
            xb = data.train.x[index]
            if args.random_flip:  # drawn from the data stream's generator, so a checkpoint covers it
                flip = stream.rng.random(len(xb)) < 0.5
                xb = np.where(flip[:, None, None, None], xb[..., ::-1], xb)
            x, y = core.tensor(xb, device=device), core.tensor(data.train.y[index], device=device)
            out = model(x)
            loss = task_loss(args, out, x, y) + model.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()
            state["step"] += 1
            state["batch_in_epoch"] += 1
            run.check_finite("losses/loss", value, state["step"])
            sums[0] += value * len(index)
            sums[2] += len(index)
            if args.task == "classification":
                sums[1] += correct(args, out, y)
            if state["step"] % args.log_every == 0 or state["step"] == 1:
                run.logger.scalar("losses/loss", value, state["step"])
                bar.set_postfix(loss=value)
            bar.update(1)
        if stopped:
            break

        epoch_metrics = {"train/loss": sums[0] / sums[2], "charts/learning_rate": lr}
        if args.task == "classification":
            epoch_metrics["train/accuracy"] = sums[1] / sums[2]
        if data.val is not None:
            epoch_metrics.update({f"val/{k}": v for k, v in evaluate(args, model, data.val, device).items()})
            improved = _update_best(state, epoch_metrics, args, model)
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
            early_stop = bool(args.early_stopping_patience) and state["bad_epochs"] >= args.early_stopping_patience
        run.logger.scalars(epoch_metrics, state["step"])
        state.update(last=epoch_metrics, epoch=state["epoch"] + 1, batch_in_epoch=0, sums=[0.0, 0, 0])
        last = state["epoch"] == args.epochs or early_stop
        if last or (cfg.checkpoint_every and state["epoch"] % cfg.checkpoint_every == 0):
            save()
    bar.close()
    if stopped:
        save()
        return {**state["last"], "train/epochs": state["epoch"], "train/steps": state["step"],
                "time/wall_s": time.perf_counter() - started}

    metrics = {**state["last"], **{f"val/{k}_best": v for k, v in state["best"].items()}}
    metrics.pop("charts/learning_rate", None)
    if args.keep_best and state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    metrics.update({f"test/{k}": v for k, v in evaluate(args, model, data.test, device).items()})
    if args.mc_dropout_samples:
        metrics["test/accuracy_mc"] = mc_dropout_accuracy(model, data.test, args.mc_dropout_samples, device)
    if args.anomaly_class is not None:
        metrics.update(anomaly_scores(args, model, data.test, device))
    if args.weight_stats:
        metrics.update(weight_statistics(model))
    metrics.update({"model/params": counts["total"], "model/trainable_params": counts["trainable"],
                    "train/epochs": state["epoch"], "train/steps": state["step"],
                    "time/wall_s": time.perf_counter() - started})
    metrics["objective"] = (metrics["test/accuracy"] if args.task == "classification"
                            else -metrics["test/mae"] if args.task == "regression" else -metrics["test/loss"])
    run.logger.scalars({k: v for k, v in metrics.items() if k.startswith("test/")}, state["step"])
    return metrics


def _update_best(state: dict, epoch_metrics: dict, args: Config, model) -> bool:
    """Record the best val loss (and accuracy); keep the weights of the best `keep_best` epoch. True when
    the val loss improved (the early-stopping criterion, as Keras' default monitor)."""
    best = state["best"]
    improved = "loss" not in best or epoch_metrics["val/loss"] < best["loss"]
    if improved:
        best["loss"] = epoch_metrics["val/loss"]
    better_accuracy = "val/accuracy" in epoch_metrics and epoch_metrics["val/accuracy"] > best.get("accuracy", -1.0)
    if better_accuracy:
        best["accuracy"] = epoch_metrics["val/accuracy"]
    if (args.keep_best == "val/loss" and improved) or (args.keep_best == "val/accuracy" and better_accuracy):
        state["best_weights"] = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    return improved


def minimize(args: Config, dataset: dict, run) -> dict:
    """Plain gradient steps on an objective of a few variables (BDL ch. 7's Himmelblau descent)."""
    name = dataset.get("name")
    if name not in OBJECTIVES or args.task != "minimize":
        raise ConfigError(f"model.task=minimize goes with an objective as the dataset ({', '.join(OBJECTIVES)}); "
                          f"got task {args.task!r} with dataset {name!r}")
    function, names = OBJECTIVES[name]
    if len(args.start) != len(names):
        raise ConfigError(f"{name} is a function of {len(names)} variables; model.start has {len(args.start)} values")
    point = nn.Parameter(core.tensor(args.start, device=run.device))
    opt = make_optimizer(args, [point])
    step, started = 0, time.perf_counter()
    if run.resume_state is not None:
        point.data[...] = core.tensor(run.resume_state["point"], device=run.device).data
        opt.load_state_dict(run.resume_state["optimizer"])
        step = run.resume_state["step"]
    value = function(point)
    while step < args.epochs and not run.should_stop():
        opt.zero_grad()
        value.backward()
        opt.step()
        step += 1
        value = function(point)
        run.check_finite("opt/f", value.item(), step)
        if step % args.log_every == 0 or step == 1:
            run.logger.scalar("opt/f", value.item(), step)
    run.checkpoints.save({"point": point.detach().numpy(), "optimizer": opt.state_dict(), "step": step}, step)
    coordinates = point.detach().numpy().tolist()
    return {"opt/point": coordinates, **{f"opt/{n}": v for n, v in zip(names, coordinates)}, "opt/f": value.item(),
            "objective": -value.item(),
            "train/steps": step, "time/wall_s": time.perf_counter() - started}
