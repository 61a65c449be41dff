"""Pieces every generative trainer shares: configs, data, layers and optimizers by name, the training
session (resume, NaN guard, logging, checkpoints, Ctrl-C), sample grids and their GIF, latent
interpolation, and restoring a trained model from a checkpoint for the `sample`/`evaluate` hooks.

A trainer receives the whole composed run config (`cfg.model` holds its Config fields, `cfg.dataset`,
`cfg.optim`, `cfg.seed`, `cfg.checkpoint_every`) and reads top to bottom like this (see gans/gan.py):

    args = model_config(Config, cfg)
    data = load_data(cfg.dataset, args.normalize)
    ... build networks and optimizers ...
    session = Session(args, run, modules={...}, optimizers={...}, data=data, ...)
    for epoch in session.epochs():            # starts at the resumed epoch, ends early after Ctrl-C
        for index in session.batches():       # skips what a resumed epoch already did
            ... one training step ...
            session.log_step({"losses/d": d_loss, "losses/g": g_loss})
        grids.write("fixed_noise", generator(fixed_z), epoch)
        session.checkpoint()                  # every `checkpoint_every` epochs, at the end and on Ctrl-C
    return session.finish(generate)           # final losses + sample quality
"""
from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

import core
from core import nn, optim
from core.runtime.logger import save_gif
from core.runtime.run import ConfigError, get_rng_state, set_rng_state
from gans.datasets import CLASS_NAMES, ChecksumError, load_dataset
from gans.quality import QualityConfig, evaluate_quality, get_classifier, to_unit_range

ACTIVATIONS = ("linear", "relu", "leaky_relu", "selu", "elu", "tanh", "sigmoid")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
NORMALIZATIONS = ("01", "tanh")


# ----- configuration -----
@dataclass
class TrainConfig:
    """Settings every generative model has; each model's Config extends it."""

    epochs: int = 10
    batch_size: int = 64
    # the pixel range the model trains in: "01" or "tanh"; it wins over dataset.normalize (null: the dataset's)
    normalize: Optional[str] = None
    log_every: int = 10  # steps between TensorBoard scalars
    grid_size: int = 64  # images in the fixed-noise / reconstruction grids
    quality: QualityConfig = field(default_factory=QualityConfig)

    def validate(self):
        positive(self, "epochs", "batch_size", "log_every", "grid_size")
        if self.normalize is not None and self.normalize not in NORMALIZATIONS:
            raise ValueError(f"model.normalize must be null or one of {', '.join(NORMALIZATIONS)}, "
                             f"got {self.normalize!r}")
        self.quality.validate()


def positive(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ValueError(f"model.{name} must be positive, got {value}")


def one_of(cfg, name, allowed):
    value = getattr(cfg, name)
    if value not in allowed:
        raise ValueError(f"model.{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def config_from_dict(cls, values: dict):
    """Rebuild a (nested) Config dataclass from plain values, e.g. a checkpoint's stored run config."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
            if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
                value = config_from_dict(hints[f.name], value)
            kwargs[f.name] = value
    return cls(**kwargs)


def plain(section) -> Any:
    """A config section (OmegaConf node, dict or dataclass) as plain dicts and lists."""
    if hasattr(section, "_metadata"):  # an OmegaConf node, without importing omegaconf here
        from omegaconf import OmegaConf
        return OmegaConf.to_container(section, resolve=True)
    if dataclasses.is_dataclass(section):
        return dataclasses.asdict(section)
    return section


def model_config(cls, cfg):
    """The model's Config object from the composed run config (its `model` section)."""
    section = cfg.model
    return section if isinstance(section, cls) else config_from_dict(cls, plain(section))


# ----- data -----
@dataclass
class Data:
    images: np.ndarray  # float32 (N, C, H, W) in the model's value range
    labels: np.ndarray  # int64 (N,)
    normalize: str  # "01" or "tanh"
    n_classes: int
    dataset: dict  # the dataset config it came from (the quality classifier is trained on the same data)

    @property
    def shape(self):
        return self.images.shape[1:]

    def __len__(self):
        return len(self.images)


def value_range(normalize: Optional[str], dataset) -> str:
    """The model's pixel range: its own `normalize` when set, else the dataset's."""
    value = normalize or dataset["normalize"]
    if value not in NORMALIZATIONS:
        raise ConfigError("dataset.normalize is null (raw 0..255 pixels) and so is model.normalize; generative "
                          "models need 01 or tanh: set one of them")
    return value


def load_data(dataset, normalize: Optional[str] = None) -> Data:
    """The images of the run's dataset config, in the model's value range (see `value_range`)."""
    dataset = plain(dataset)
    normalize = value_range(normalize, dataset)
    try:
        images, labels = load_dataset(dataset["name"], root=dataset.get("root"), split=dataset.get("split", "train"),
                                      normalize=normalize, classes=dataset.get("classes"),
                                      image_size=dataset.get("image_size"), limit=dataset.get("limit"),
                                      download=dataset.get("download", False))
    except (FileNotFoundError, ChecksumError) as e:  # the message says which file to put where
        raise ConfigError(str(e)) from None
    return Data(images, labels, normalize, len(CLASS_NAMES[dataset["name"]]), dataset)


def output_activation(normalize: str) -> nn.Module:
    """The generator's last activation, matching the data's value range."""
    return nn.Tanh() if normalize == "tanh" else nn.Sigmoid()


def check_image_shape(what: str, produced, wanted, fix: str):
    """A one-line ConfigError when a network's images do not have the data's shape."""
    if tuple(produced) != tuple(wanted):
        raise ConfigError(f"{what} produces images of shape {tuple(produced)} (C, H, W) but the dataset has "
                          f"{tuple(wanted)}; {fix}")


def batch(array: np.ndarray, index, device) -> core.Tensor:
    return core.tensor(array[index], device=device)


def random_images(images: np.ndarray, n: int, seed) -> np.ndarray:
    """n different images (all of them when there are fewer), picked with numpy's generator of `seed`."""
    return images[np.random.default_rng(seed).choice(len(images), min(n, len(images)), replace=False)]


# ----- layers and optimizers by name -----
def activation(name: str, slope: float = 0.2) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return {"linear": nn.Identity, "relu": nn.ReLU, "selu": nn.SELU, "elu": nn.ELU, "tanh": nn.Tanh,
            "sigmoid": nn.Sigmoid, "leaky_relu": lambda: nn.LeakyReLU(slope)}[name]()


def dense_layers(width: int, units, activations, slope: float = 0.2):
    """Linear + activation per entry of `units`/`activations` (Keras init), and the final width."""
    layers = []
    for size, name in zip(units, activations):
        layers += [nn.Linear(width, size, init="keras"), activation(name, slope)]
        width = size
    return layers, width


def keras_batch_norm(channels: int, rank: int = 2) -> nn.Module:
    """Keras' BatchNormalization defaults (momentum 0.99, epsilon 1e-3) in PyTorch terms."""
    cls = nn.BatchNorm2d if rank == 2 else nn.BatchNorm1d
    return cls(channels, momentum=0.01, eps=1e-3)


def norm_layer(kind: str, channels: int, hw, keras: bool = False) -> nn.Module:
    """Normalisation after a conv: "batch" (Keras' settings when `keras`), "layer" (over C, H, W, per image:
    no mixing between the images of a batch, as WGAN-GP critics need) or "none"."""
    if kind == "batch":
        return keras_batch_norm(channels) if keras else nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.LayerNorm((channels, *hw))
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}; allowed: batch, layer, none")


_OPTIMIZER_CLASSES = {"adam": optim.Adam, "rmsprop": optim.RMSprop, "sgd": optim.SGD}


def make_optimizer(optim_cfg, args, params, lr: float):
    """The optimizer of one network. With an `optim=<name>` group in the run config, that optimizer and its
    settings (its own lr included) serve every network of the model; otherwise the model's `optimizer`
    with learning rate `lr` and its betas/eps (Adam) or rho/eps (RMSprop, no momentum), Keras' style."""
    params = list(params)
    if optim_cfg is not None:
        settings = plain(optim_cfg)
        name = settings.pop("name")
        if name not in _OPTIMIZER_CLASSES:
            raise ConfigError(f"optim={name} is not available to generative models; allowed: {', '.join(OPTIMIZERS)}")
        if "betas" in settings:
            settings["betas"] = tuple(settings["betas"])
        return _OPTIMIZER_CLASSES[name](params, **settings)
    if args.optimizer == "adam":
        return optim.Adam(params, lr=lr, betas=tuple(args.betas), eps=args.eps)
    if args.optimizer == "rmsprop":
        return optim.RMSprop(params, lr=lr, alpha=args.rho, eps=args.eps)
    return optim.SGD(params, lr=lr)


# ----- the training session -----
class Session:
    """Counters, resume, logging, the NaN guard and checkpoints around a trainer's own loop.

    modules / optimizers: name -> object; their state goes into every checkpoint with the random
    streams (the global ones, which give noise and dropout, and the numpy generator that orders the
    data) and the position in the current epoch, so a resumed run continues bitwise as it would have.
    data: the training data (its size sets the batches; its dataset, the quality classifier, which is
        trained or loaded here, before training, so that a missing file stops the run at once).
    arch_keys: model config fields a checkpoint must agree on to be resumed (latent size, architecture).
    checkpoint_every: epochs between checkpoints (0: only at the end and on Ctrl-C).
    """

    def __init__(self, args, run, modules: dict, optimizers: dict, data: Data, arch_keys=(), checkpoint_every: int = 1):
        self.args, self.run, self.data = args, run, data
        self.modules, self.optimizers = modules, optimizers
        self.n_items, self.data_shape, self.arch_keys = len(data), tuple(data.shape), tuple(arch_keys)
        self.checkpoint_every = checkpoint_every
        if args.quality.enabled:
            try:
                get_classifier(data.dataset, args.quality, data.shape, run.device)
            except (FileNotFoundError, ChecksumError) as e:
                raise ConfigError(f"the quality classifier cannot be trained: {e} (or set "
                                  "model.quality.classifier_split, or model.quality.enabled=false)") from None
        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.order = None  # the current epoch's permutation of the data
        self.data_rng = np.random.default_rng([run.seed, 1])
        self.stopped = False
        self.last_losses = {}
        self._unread = []  # (step, losses) of the steps whose losses were not read yet
        self.bar = None
        self.start_time = time.perf_counter()
        if run.resume_state is not None:
            self._restore(run.resume_state)

    # --- loops ---
    def epochs(self):
        """Epoch numbers from the resumed one on; ends early after Ctrl-C / SIGTERM."""
        self.bar = self.run.logger.progress(self.args.epochs * self.batches_per_epoch, "train")
        self.bar.update(self.step)
        try:
            while self.epoch < self.args.epochs and not self.stopped:
                yield self.epoch
                if self.epoch_complete:
                    self.epoch += 1
                    self.batch_in_epoch, self.order = 0, None
        finally:
            self.bar.close()

    @property
    def batches_per_epoch(self) -> int:
        return max(self.n_items // self.args.batch_size, 1)

    @property
    def epoch_complete(self) -> bool:
        return self.batch_in_epoch >= self.batches_per_epoch

    def steps(self):
        """Step numbers within the current epoch (`batches_per_epoch` of them), continuing where a resumed
        epoch stopped; ends early after Ctrl-C / SIGTERM."""
        while not self.epoch_complete:
            if self.run.should_stop():
                self.stopped = True
                break
            yield self.batch_in_epoch
            self.batch_in_epoch += 1
        self._read_losses()  # before the epoch's samples and checkpoint

    def batches(self):
        """Index arrays of the shuffled batches of the current epoch (full batches only, as the books'
        `drop_remainder`), continuing where a resumed epoch stopped."""
        if self.order is None:
            self.order = self.data_rng.permutation(self.n_items)
        size = min(self.args.batch_size, self.n_items)
        for k in self.steps():
            yield self.order[k * size:(k + 1) * size]

    def random_batch(self, size: int) -> np.ndarray:
        """Indices of a random batch (no repeats inside it), for trainers that draw several batches per
        step (WGAN critics); drawn from the data stream, so resume reproduces them."""
        return self.data_rng.choice(self.n_items, min(size, self.n_items), replace=False)

    # --- logging ---
    def log_step(self, losses: dict):
        """Count one step. Its losses stay where they are (no GPU step waits for the host) until every
        `log_every`-th step and the end of the epoch; then they are read and checked in order (a non-finite
        one stops the run with a clear error naming its step, before any sample or checkpoint of the bad
        state), and the logged step's go to TensorBoard."""
        self.step += 1
        self._unread.append((self.step, {tag: v.detach() if isinstance(v, core.Tensor) else v
                                         for tag, v in losses.items()}))
        if self.step % self.args.log_every == 0 or self.step == 1:
            self._read_losses()
            self.run.logger.scalars(self.last_losses, self.step)
            self.bar.set_postfix({tag.split("/")[-1]: v for tag, v in self.last_losses.items()})
        self.bar.update(1)

    def _read_losses(self):
        """Read the unread steps' losses to the host (one wait for a GPU) and check them in order."""
        for step, losses in self._unread:
            values = {tag: float(v.item() if isinstance(v, core.Tensor) else v) for tag, v in losses.items()}
            for tag, value in values.items():
                self.run.check_finite(tag, value, step)
            self.last_losses = values
        self._unread = []

    # --- checkpoints ---
    def checkpoint(self):
        """Save at the end of every `checkpoint_every`-th epoch, of the last one, and after Ctrl-C."""
        self._read_losses()
        last = self.epoch == self.args.epochs - 1 and self.epoch_complete
        periodic = self.checkpoint_every and self.epoch_complete and (self.epoch + 1) % self.checkpoint_every == 0
        if last or periodic or self.stopped:
            self.run.checkpoints.save(self.state(), self.step)

    def state(self) -> dict:
        return {
            "data_shape": self.data_shape,
            "modules": {name: m.state_dict() for name, m in self.modules.items()},
            "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
            "rng": {"global": get_rng_state(), "data": self.data_rng.bit_generator.state},
            "counters": {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch},
            "order": self.order,
        }

    def _restore(self, state: dict):
        saved = state["config"]["model"]
        for key in self.arch_keys:
            ours, theirs = getattr(self.args, key), saved.get(key)
            if ours != theirs:
                raise ConfigError(f"the checkpoint was trained with model.{key}={theirs} but the config has "
                                  f"model.{key}={ours}; set model.{key}={theirs} to resume it, or start a new run")
        if tuple(state["data_shape"]) != self.data_shape:
            raise ConfigError(f"the checkpoint was trained on images of shape {tuple(state['data_shape'])} but the "
                              f"dataset gives {self.data_shape}; use the same dataset and image_size to resume it")
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        set_rng_state(state["rng"]["global"])
        self.data_rng.bit_generator.state = state["rng"]["data"]
        counters = state["counters"]
        self.epoch, self.step, self.batch_in_epoch = counters["epoch"], counters["step"], counters["batch_in_epoch"]
        self.order = state["order"]

    # --- the end ---
    def finish(self, generate: Callable, conditional: bool = False) -> dict:
        """Final metrics: the last losses, counters, wall time, and (unless stopped early) the sample quality
        of `generate(n, rng)` (see `gans.quality.evaluate_quality`), also logged to TensorBoard."""
        self._read_losses()
        metrics = dict(self.last_losses)
        if self.args.quality.enabled and not self.stopped:
            for module in self.modules.values():
                module.eval()
            quality = evaluate_quality(generate, self.data, self.args.quality, self.run.device, self.run.seed,
                                       conditional)
            self.run.logger.scalars({k: float(v) for k, v in quality.items()}, self.step)
            metrics.update(quality)
        metrics["train/steps"] = self.step
        metrics["train/epochs"] = self.epoch + self.epoch_complete
        metrics["time/wall_s"] = time.perf_counter() - self.start_time
        return metrics


def restore(config_cls, build: Callable, cfg, state: dict, device="cpu"):
    """(model Config, modules by name, pixel range) of a checkpoint of the run config `cfg`:
    `build(args, data_shape, n_classes, normalize)` makes the networks, which get the checkpoint's
    weights and are put in eval mode."""
    args = model_config(config_cls, cfg)
    dataset = plain(cfg.dataset)
    normalize = value_range(args.normalize, dataset)
    modules = build(args, tuple(state["data_shape"]), len(CLASS_NAMES[dataset["name"]]), normalize)
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
        module.to(device).eval()
    return args, modules, normalize


def latent_tensor(z, latent_size: int) -> core.Tensor:
    """A user-supplied latent batch as a float32 tensor; it must match the model's latent size."""
    if np.ndim(z) != 2 or np.shape(z)[1] != latent_size:
        raise ValueError(f"the model was trained with latent_size={latent_size}, got latent vectors of shape "
                         f"{np.shape(z)}; pass an array of shape (n, {latent_size})")
    return core.tensor(np.asarray(z, dtype=np.float32))


# ----- images written during training -----
class SampleGrids:
    """Image grids as PNG files under `samples/` and as TensorBoard images under `samples/<name>`;
    `gif(name)` animates the PNGs of one name (one per epoch) into `samples/<name>.gif`."""

    def __init__(self, run, normalize: str):
        self.run, self.normalize = run, normalize
        self.directory = run.dir / "samples"

    def write(self, name: str, images, epoch: int, nrow: Optional[int] = None):
        path = self.directory / f"{name}_epoch{epoch + 1:04d}.png"
        self.run.logger.image_grid(f"samples/{name}", to_unit_range(images, self.normalize), epoch + 1, nrow=nrow,
                                   path=path, value_range=(0.0, 1.0))
        return path

    def gif(self, name: str, fps: int = 4):
        frames = sorted(self.directory.glob(f"{name}_epoch*.png"))
        return save_gif(frames, self.directory / f"{name}.gif", fps=fps) if frames else None

    def still(self, name: str, images, nrow: Optional[int] = None):
        """One grid written once (latent interpolations)."""
        path = self.directory / f"{name}.png"
        self.run.logger.image_grid(f"samples/{name}", to_unit_range(images, self.normalize), self.run.logger.last_step,
                                   nrow=nrow, path=path, value_range=(0.0, 1.0))
        return path


def interpolate(start: core.Tensor, end: core.Tensor, steps: int) -> core.Tensor:
    """Rows of `steps` points on the straight line from each start code to the matching end code (codes of
    any shape): (n, ...), (n, ...) -> (n·steps, ...), so a grid with nrow=steps shows one path per row."""
    n, shape = start.shape[0], start.shape[1:]
    weights = core.tensor(np.linspace(0.0, 1.0, steps, dtype=np.float32).reshape(1, steps, 1), device=start.device)
    path = start.reshape(n, 1, -1) * (1 - weights) + end.reshape(n, 1, -1) * weights
    return path.reshape(n * steps, *shape)


def originals_over_reconstructions(originals: np.ndarray, reconstructions: core.Tensor, nrow: int = 8):
    """Rows of `nrow` originals, each followed by the row of their reconstructions (one grid)."""
    rows = []
    for start in range(0, len(originals), nrow):
        rows += [core.tensor(originals[start:start + nrow], device=reconstructions.device),
                 reconstructions[start:start + nrow]]
    return core.cat(rows, axis=0)
