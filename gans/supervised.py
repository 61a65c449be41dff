"""Supervised learning on arrays (classification, regression, autoencoding): the books' non-generative
chapter experiments, a network from a declarative layer list (`core.nn.build`) trained on image or toy data.

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

The cross-entropy losses take logits: leave the last layer linear where Keras puts softmax/sigmoid in it
and uses from_logits=False. That is the same function computed stably (Keras' clipping of probabilities at
1e-7 is the only difference). The difference losses ("mse" for classification, regression, autoencoding
with mse) compare the last layer's output as it is, so give it its activation there.

Model (`layers`): the layer list of `core.nn.build` (core/nn/builder.py lists the types, keys and defaults),
input shapes inferred from the data. Its l2 and activity penalties are added to the loss, and to the
validation and test losses, as Keras adds a model's losses (the activity penalty per example, GM-07).

Data (`cfg.dataset`):
- image datasets of gans/datasets.py (mnist, fashion_mnist, cifar10, digits): images NCHW in
  `dataset.normalize`'s range, labels 0..9. `dataset.split` is the pool to train on.
- toy datasets of gans/toy_datasets.py (conf/dataset/toy/): moons, iris, breast_cancer, diabetes, cloud3d,
  series (with its own test part, the book's forecast).
Splits: with `test_fraction` > 0 the pool is split by sklearn's train_test_split(random_state=split_seed), the
books' own call, so every seed of a run sees the same test set. With test_fraction 0 an image dataset's
"test" split is the test set (so `dataset.split` must be train). Only the MNIST test file exists offline:
presets then train on dataset.split=test with test_fraction 0.2 (8000 training, 2000 test images).
Validation: the last `validation_split` of the training part (Keras' rule, taken before shuffling), or the
test set itself with `validate_on_test` (as several books do). `standardize` scales features with the
training part's mean and std. `center_crop` keeps the central fraction of each image, `random_flip` flips
training images left-right with probability 0.5.

Training: `epochs` of `dataset.repeat` passes (default 1) over the training part in shuffled batches of
core.data.DataLoader (the last one may be smaller, as Keras), or `steps_per_epoch` batches from its shuffled
passes one after another. `lr_milestones`
multiply the learning rate by `lr_gamma` at those epochs. `early_stopping_patience` stops after that many epochs
without a lower val loss (a resumed early-stopped run stays stopped);
`keep_best` ("val/loss" or "val/accuracy") evaluates the test set with the weights of the best epoch.
`mc_dropout_samples` adds MC-Dropout test accuracy (dropout on, softmax averaged, HOML ch. 11).
`weight_stats` reports min/max/mean of every kernel (`weights/<layer index>/...`, BDL ch. 9).

The run session (core/runtime/session.py) counts epochs: `checkpoint_every` is in epochs (default 1), and its
final evaluation is the test set's. Logged to TensorBoard, at the optimizer step: losses/loss every `log_every`
steps; per epoch train/loss, train/accuracy, val/..., charts/learning_rate; test/... at the end; the network
summary as text. metrics.json: the last epoch's train/... and val/..., val/loss_best and val/accuracy_best,
test/loss and test/accuracy (or test/mae, test/mse), model/params, train/epochs, train/steps, time/wall_s, and
`objective`: what train.py returns to sweepers (test accuracy, −test MAE, −test loss for autoencoders).
Checkpoints (periodic, at the end, and on Ctrl-C also inside an epoch) hold the network, optimizer, the global
random stream, the loader (its generator, pass order and position) and the unfinished epoch's sums, so a
resumed run continues bitwise as an uninterrupted one.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

import core
import core.functional as F
from core import nn, optim
from core.data import DataLoader
from core.nn.builder import Block, parse_layers
from core.runtime.choices import Choice
from core.runtime.config import config_object, plain
from core.runtime.errors import ConfigError
from gans.common import eval_mode
from gans.datasets import DATASETS as IMAGE_DATASETS, load_dataset
from gans.toy_datasets import TOY_DATASETS, load_toy

MAIN_METRIC = "objective"
TASK_LOSSES = {"classification": ("sparse_ce", "bce", "mse"), "regression": ("mse", "mae", "huber"),
               "autoencoder": ("bce", "mse")}
# Keras' (TF 2) default learning rates and decays, used where the config leaves lr / rho null
KERAS_LR = {"sgd": 0.01, "rmsprop": 1e-3, "adam": 1e-3, "nadam": 1e-3, "adagrad": 1e-3, "adadelta": 1e-3}
KERAS_RHO = {"rmsprop": 0.9, "adadelta": 0.95}
# the config's types
Task = Choice("Task", list(TASK_LOSSES))
Loss = Choice("Loss", "sparse_ce bce mse mae huber")  # which of them a task takes: TASK_LOSSES
Optimizer = Choice("Optimizer", list(KERAS_LR))
KeepBest = Choice("KeepBest", ["val/loss", "val/accuracy"])


def _default_layers():  # HOML ch. 10's MLP
    return [{"type": "flatten"}, {"type": "dense", "units": 300, "activation": "relu"},
            {"type": "dense", "units": 100, "activation": "relu"}, {"type": "dense", "units": 10}]


@dataclass
class Config:
    """Defaults: HOML ch. 10's classifier (Flatten → 300 relu → 100 relu → 10, SGD 0.01, batch 32)."""

    task: Task = Task.classification
    layers: List[Dict[str, Any]] = field(default_factory=_default_layers)
    loss: Loss = Loss.sparse_ce
    huber_delta: float = 1.0
    optimizer: Optimizer = Optimizer.sgd
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
    keep_best: Optional[KeepBest] = None
    mc_dropout_samples: int = 0
    anomaly_class: Optional[int] = None
    anomaly_recall: float = 0.8
    weight_stats: bool = False
    log_every: int = 100

    def validate(self):
        if self.loss not in TASK_LOSSES[self.task]:
            raise ValueError(f"model.loss for model.task={self.task} must be one of "
                             f"{', '.join(TASK_LOSSES[self.task])}; got {self.loss!r}")
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
        if self.early_stopping_patience < 0 or self.mc_dropout_samples < 0:
            raise ValueError("model.early_stopping_patience and model.mc_dropout_samples must be >= 0")
        if self.anomaly_class is not None and self.task != "autoencoder":
            raise ValueError("model.anomaly_class scores reconstruction errors: it needs model.task=autoencoder")
        if not 0 < self.anomaly_recall < 1:
            raise ValueError(f"model.anomaly_recall must be in (0, 1), got {self.anomaly_recall}")
        parse_layers(self.layers, "model.layers")


# ----- data -----
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


def load_pool(dataset: dict):
    """(x, y, test or None) of the dataset config: the pool to train on and, for a fixed split, the test part."""
    name = dataset.get("name")
    if name in IMAGE_DATASETS:
        x, y = load_dataset(name, root=dataset.get("root"), split=dataset.get("split", "train"),
                            normalize=dataset.get("normalize", "01"), classes=dataset.get("classes"),
                            image_size=dataset.get("image_size"), limit=dataset.get("limit"),
                            download=dataset.get("download", True))
        return x, y, None
    if name not in TOY_DATASETS:
        raise ConfigError(f"unknown dataset.name {name!r} for model=supervised; allowed: "
                          f"{', '.join(IMAGE_DATASETS + TOY_DATASETS)}")
    try:
        return load_toy(name, **{k: v for k, v in dataset.items() if k != "name"})
    except ValueError as e:
        raise ConfigError(str(e)) from None


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


def predict(model, x: np.ndarray, device, dropout=False, batch_size=1000):
    """Outputs for x in eval mode (but with dropout on when `dropout`), batch by batch, and the mean penalty
    per batch (Keras' val_loss has it); the model is back in its mode after."""
    outs, penalty = [], 0.0
    with core.no_grad(), eval_mode(model):
        for module in model.modules():
            if dropout and isinstance(module, nn.Dropout):
                module.train()
        for start in range(0, len(x), batch_size):
            outs.append(model(core.tensor(x[start:start + batch_size], device=device)).numpy())
            value = model.penalty()
            penalty += float(value.item() if isinstance(value, core.Tensor) else value)
    return np.concatenate(outs), penalty / max(len(outs), 1)


def evaluate(args: Config, model, part: Part, device) -> dict:
    out, penalty = predict(model, part.x, device)
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
    probabilities = 0.0
    for _ in range(samples):
        out, _ = predict(model, part.x, device, dropout=True)
        out = np.exp(out - out.max(axis=1, keepdims=True))
        probabilities = probabilities + out / out.sum(axis=1, keepdims=True)
    return float((probabilities.argmax(axis=1) == part.y).mean())


def anomaly_scores(args: Config, model, part: Part, device) -> dict:
    """TFMLP ch. 7: reconstruction MSE per example; the threshold is the highest one that still flags more
    than `anomaly_recall` of the anomaly class."""
    out, _ = predict(model, part.x, device)
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


def weight_statistics(model: nn.Module) -> dict:
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
        return optim.create(params, **plain(optim_cfg))
    name = args.optimizer
    lr = args.lr if args.lr is not None else KERAS_LR[name]
    rho = args.rho if args.rho is not None else KERAS_RHO.get(name)
    adam = {"betas": args.betas, "eps": args.eps}
    options = {"sgd": {"momentum": args.momentum, "nesterov": args.nesterov},
               "rmsprop": {"alpha": rho, "eps": args.eps, "momentum": args.momentum}, "adam": adam, "nadam": adam,
               "adagrad": {"initial_accumulator_value": args.initial_accumulator, "eps": args.eps},
               "adadelta": {"rho": rho, "eps": args.eps}}
    return optim.create(params, name, lr=lr, **options[name])


# ----- training -----
def train(cfg, run) -> dict:
    args = config_object(Config, cfg.model)
    core.manual_seed(run.seed)
    device = run.device
    data = load_splits(plain(cfg.dataset), args)
    try:
        model = nn.build(args.layers, data.train.x.shape[1:], "model.layers")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model.to(device)
    check_outputs(args, model.output_shape, data)
    opt = make_optimizer(args, model.parameters(), cfg.get("optim"))
    base_lr = opt.param_groups[0]["lr"]
    counts = model.parameter_counts()
    run.logger.text("model/summary", model.summary(data.train.x.shape[1:], print_fn=None))
    loader = DataLoader((data.train.x, data.train.y), batch_size=args.batch_size, shuffle=True,
                        generator=np.random.default_rng([run.seed, 1]))
    steps_per_epoch = args.steps_per_epoch or len(loader) * (cfg.dataset.get("repeat") or 1)

    def test_metrics():  # the session's final evaluation: the test set, with the best epoch's weights if kept
        if args.keep_best and state["best_weights"] is not None:
            model.load_state_dict(state["best_weights"])
        metrics = {f"test/{k}": v for k, v in evaluate(args, model, data.test, device).items()}
        if args.mc_dropout_samples:
            metrics["test/accuracy_mc"] = mc_dropout_accuracy(model, data.test, args.mc_dropout_samples, device)
        if args.anomaly_class is not None:
            metrics.update(anomaly_scores(args, model, data.test, device))
        if args.weight_stats:
            metrics.update(weight_statistics(model))
        metrics["objective"] = (metrics["test/accuracy"] if args.task == "classification"
                                else -metrics["test/mae"] if args.task == "regression" else -metrics["test/loss"])
        session.log({k: v for k, v in metrics.items() if k.startswith("test/")})
        return metrics

    # the bar, the TensorBoard steps and the checkpoint numbers count optimizer steps
    session = run.session("supervised", "epochs", args.epochs, checkpoint_every=cfg.get("checkpoint_every"),
                          checkpoint_default=1, evaluate=test_metrics, steps_per_unit=steps_per_epoch)
    # what an epoch carries besides the tracked objects: the unfinished epoch's batches and sums (loss x
    # examples, correct predictions, examples), the best validation values and weights, early stopping
    session.extra.update(batch_in_epoch=0, sums=[0.0, 0, 0], best={}, best_weights=None, bad_epochs=0, last={})
    session.track(model=model, optimizer=opt, data=loader)
    state = session.extra
    # passes one after another, so steps_per_epoch may end an epoch inside a pass (each pass draws its
    # permutation when its first batch is taken, as Keras' repeat)
    stream = itertools.chain.from_iterable(itertools.repeat(loader))
    patience = args.early_stopping_patience
    while session.running() and not (patience and state["bad_epochs"] >= patience):
        lr = base_lr * args.lr_gamma ** sum(session.progress >= m for m in args.lr_milestones)
        for group in opt.param_groups:
            group["lr"] = lr
        sums = state["sums"]
        while state["batch_in_epoch"] < steps_per_epoch and session.running():
            xb, yb = next(stream)
            if args.random_flip:  # drawn from the loader's generator, so a checkpoint covers it
                flip = loader.generator.random(len(xb)) < 0.5
                xb = np.where(flip[:, None, None, None], xb[..., ::-1], xb)
            x, y = core.tensor(xb, device=device), core.tensor(yb, device=device)
            out = model(x)
            loss = task_loss(args, out, x, y) + model.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()
            session.step()
            state["batch_in_epoch"] += 1
            session.check_finite("losses/loss", value)  # named by the optimizer step, not the epoch
            sums[0] += value * len(xb)
            sums[2] += len(xb)
            if args.task == "classification":
                sums[1] += correct(args, out, y)
            if session.steps % args.log_every == 0 or session.steps == 1:
                session.log({"losses/loss": value})
                session.show(loss=value)
        if state["batch_in_epoch"] < steps_per_epoch:  # stopped inside the epoch: finish() saves where it stands
            break
        epoch_metrics = {"train/loss": sums[0] / sums[2], "charts/learning_rate": lr}
        if args.task == "classification":
            epoch_metrics["train/accuracy"] = sums[1] / sums[2]
        if data.val is not None:
            epoch_metrics.update({f"val/{k}": v for k, v in evaluate(args, model, data.val, device).items()})
            state["bad_epochs"] = 0 if _update_best(state, epoch_metrics, args, model) else state["bad_epochs"] + 1
        session.log(epoch_metrics)
        state.update(last=epoch_metrics, batch_in_epoch=0, sums=[0.0, 0, 0])
        session.advance(1)

    metrics = {**state["last"], **{f"val/{k}_best": v for k, v in state["best"].items()}}
    metrics.pop("charts/learning_rate", None)
    metrics.update({"model/params": counts["total"], "model/trainable_params": counts["trainable"]})
    return session.finish(metrics)


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
