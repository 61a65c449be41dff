"""Pieces every generative trainer shares: configs, data, layers and optimizers by name, the epochs of
shuffled batches they train on inside the run session (core.runtime.session), sample grids and their
GIF, latent interpolation, and restoring a trained model from a checkpoint for the `sample`/`evaluate`
hooks.

The session's unit is the epoch: `checkpoint_every` counts epochs (default 1, 0: only at the end and
on Ctrl-C) and the metrics report `train/epochs`; the progress bar, the TensorBoard x-axis and the
checkpoint file numbers count update steps (`train/steps`). A checkpoint holds each network and
optimizer under its trainer's name ("generator", "g_optimizer", ...), the data's order and the place
in the current epoch ("data"), and the session's counters and random streams ("session"), so a run
stopped inside an epoch resumes bitwise as the uninterrupted one.

A trainer receives the whole composed run config (`cfg.model` holds its Config fields, `cfg.dataset`,
`cfg.optim`, `cfg.seed`, `cfg.checkpoint_every`) and reads top to bottom like this (see gans/vae.py):

    args, data, nets = setup(Config, build, cfg, run)   # its Config, the data, the networks on the device
    model = nets["vae"]
    opt = make_optimizer(cfg.optim, args, model.parameters(), args.lr)
    session, batches = epoch_session(run, cfg, args, data, "vae", generate, model)
    session.track(vae=model, optimizer=opt, data=batches)   # restored here when resuming
    for epoch in batches.epochs():            # from the resumed epoch on; counts each completed one
        for index in batches:                 # the rest of the epoch; ends early after Ctrl-C
            ... one training step ...
            batches.log({"losses/loss": loss})
        grids.write("samples", decoder(fixed_z), epoch)
    return session.finish(batches.losses())   # last checkpoint, final losses + sample quality
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional

import numpy as np

import core
from core import nn, optim
from core.data import DataLoader
from core.runtime.choices import Choice
from core.runtime.config import config_object, plain
from core.runtime.logger import save_gif
from core.runtime.errors import ConfigError
from gans.datasets import CLASS_NAMES, DatasetError, Normalize, load_dataset
from gans.quality import QualityConfig, evaluate_quality, get_classifier, to_unit_range

ACTIVATIONS = ("linear", "relu", "leaky_relu", "selu", "elu", "tanh", "sigmoid")
# the model configs' types
Activation = Choice("Activation", ACTIVATIONS)
Optimizer = Choice("Optimizer", "adam rmsprop sgd")
Norm = Choice("Norm", "none layer batch")  # see norm_layer


# ----- configuration -----
@dataclass
class TrainConfig:
    """Settings every generative model has; each model's Config extends it and sets its own defaults."""

    epochs: int = 10
    batch_size: int = 64
    # the pixel range the model trains in; it wins over dataset.normalize (null: the dataset's)
    normalize: Optional[Normalize] = None
    log_every: int = 10  # steps between TensorBoard scalars
    grid_size: int = 64  # images in the fixed-noise / reconstruction grids
    # the optimizer of every network when the run has no `optim` group (see make_optimizer)
    optimizer: Optimizer = Optimizer.adam
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    eps: float = 1e-7
    rho: float = 0.9  # rmsprop's decay
    quality: QualityConfig = field(default_factory=QualityConfig)
    # not a setting: why the model needs pixels in [0, 1] ("": it trains in either range)
    unit_pixels: ClassVar[str] = ""

    def validate(self):
        positive(self, "epochs", "batch_size", "log_every", "grid_size")
        if self.unit_pixels and self.normalize == "tanh":
            raise ValueError(f"{self.unit_pixels}; set model.normalize=01")
        self.quality.validate()


def positive(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ValueError(f"model.{name} must be positive, got {value}")


def setup(config_cls, build: Callable, cfg, run):
    """What every generative trainer starts with: (its Config from `cfg.model`, the run's data in the
    model's pixel range, the networks of `build` on the run's device, by name), the global random
    stream seeded with the run's seed before the networks are made."""
    args = config_object(config_cls, cfg.model)
    data = load_data(cfg.dataset, args.normalize)
    if config_cls.unit_pixels and data.normalize != "01":
        raise ConfigError(f"{config_cls.unit_pixels}; set model.normalize=01")
    core.manual_seed(run.seed)
    nets = build(args, data.shape, data.n_classes, data.normalize)
    return args, data, {name: net.to(run.device) for name, net in nets.items()}


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

    @property
    def repeat(self) -> int:
        """Passes over the images in one epoch (`dataset.repeat`, default 1)."""
        return self.dataset.get("repeat") or 1

    def __len__(self):
        return len(self.images)


def value_range(normalize: Optional[str], dataset) -> str:
    """The model's pixel range: its own `normalize` when set, else the dataset's."""
    value = normalize or dataset["normalize"]
    if value is None:
        raise ConfigError("dataset.normalize is null (raw 0..255 pixels) and so is model.normalize; generative "
                          "models need 01 or tanh: set one of them")
    return value


def load_data(dataset, normalize: Optional[str] = None) -> Data:
    """The images of the run's dataset config, in the model's value range (see `value_range`)."""
    dataset = plain(dataset)
    normalize = value_range(normalize, dataset)
    # a missing or corrupt file is a DatasetError, a ConfigError whose line says what to do
    images, labels = load_dataset(dataset["name"], root=dataset.get("root"), split=dataset.get("split", "train"),
                                  normalize=normalize, classes=dataset.get("classes"),
                                  image_size=dataset.get("image_size"), limit=dataset.get("limit"),
                                  download=dataset.get("download", True))
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


def make_optimizer(optim_cfg, args, params, lr: float):
    """The optimizer of one network. With an `optim=<name>` group in the run config, that optimizer and its
    settings (its own lr included) serve every network of the model; otherwise the model's `optimizer`
    with learning rate `lr` and its betas/eps (Adam) or rho/eps (RMSprop, no momentum), Keras' style."""
    params = list(params)
    if optim_cfg is not None:
        try:
            return optim.create(params, **plain(optim_cfg))
        except ValueError as e:
            raise ConfigError(f"optim: {e}") from None
    options = {"adam": {"betas": args.betas, "eps": args.eps}, "rmsprop": {"alpha": args.rho, "eps": args.eps}}
    return optim.create(params, args.optimizer, lr=lr, **options.get(args.optimizer, {}))


# ----- the training session -----
CHECKPOINT_EVERY = 1  # epochs between checkpoints unless the run's checkpoint_every says otherwise


def steps_per_epoch(n_items: int, batch_size: int, repeat: int = 1) -> int:
    """Full batches in an epoch of `repeat` passes over the data (at least one a pass)."""
    return max(n_items // batch_size, 1) * repeat


@contextlib.contextmanager
def eval_mode(module: nn.Module, enabled: bool = True):
    """Run `module` in eval mode inside (batch norm with its moving statistics), then restore its mode."""
    was_training = module.training
    if enabled:
        module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def epoch_session(run, cfg, args, data: Data, name: str, generate: Callable, model, conditional: bool = False):
    """(session, batches) of an image model: a run session in epochs (`checkpoint_every` default 1)
    whose bar counts update steps, and the shuffled batches of `data` (see `Batches`), which the
    trainer tracks as "data" with its networks and optimizers.

    The session's evaluation (every `quality_every(args)` epochs and at the end unless stopped early) is the
    sample quality of `generate(n, rng)` with `model` in eval mode (see gans.quality.evaluate_quality),
    logged under quality/* and shown in the line each epoch prints. The quality classifier is trained or
    loaded here, before training, so that a missing file stops the run at once."""
    classifier = None
    if args.quality.enabled:
        try:
            classifier = get_classifier(data.dataset, args.quality, data.shape, run.device, run.logger.console)
        except DatasetError as e:
            raise ConfigError(f"the quality classifier cannot be trained: {e} (or set "
                              "model.quality.enabled=false)") from None

    def evaluate():
        with eval_mode(model):
            quality = evaluate_quality(generate, data, args.quality, run.device, run.seed, conditional, classifier)
        session.log({tag: float(value) for tag, value in quality.items()})
        return quality

    session = run.session(name, "epochs", args.epochs, checkpoint_every=cfg.get("checkpoint_every"),
                          checkpoint_default=CHECKPOINT_EVERY, evaluate=evaluate if args.quality.enabled else None,
                          eval_every=quality_every(args) if args.quality.enabled else 0,
                          steps_per_unit=steps_per_epoch(len(data), args.batch_size, data.repeat))
    return session, Batches(session, data, args.batch_size, args.log_every)


def quality_every(args):
    """Epochs between quality evaluations: `quality.every`, or about 10 per run (every epoch of the
    short CPU defaults, every 62nd of a 616-epoch book preset, where scoring every epoch would cost
    more than the training), as the agents' eval_every."""
    return args.quality.every if args.quality.every is not None else math.ceil(args.epochs / 10)


# the losses the per-epoch console line shows, and their names there (the critic's real/fake parts stay in TensorBoard)
EPOCH_LINE_LOSSES = {"d": "D loss", "g": "G loss", "critic": "critic loss", "wasserstein": "W distance", "gp": "GP",
                     "loss": "loss", "recon": "recon", "kl": "KL", "sparsity": "sparsity"}


def epoch_line(epoch: int, epochs, means: dict, quality: Optional[dict], n_classes: int) -> str:
    """`[epoch e/E] D loss 1.2345, G loss 0.8765 | quality score 7.12 (real 9.60), 10/10 classes, FD 3.21`:
    the epoch's mean losses and, when it was just measured, the sample quality."""
    losses = [f"{EPOCH_LINE_LOSSES[tag.split('/')[-1]]} {value:.4f}" for tag, value in means.items()
              if tag.split("/")[-1] in EPOCH_LINE_LOSSES]
    line = f"[epoch {epoch}/{epochs}] " + ", ".join(losses)
    if quality:
        line += (f" | quality score {quality['quality/score']:.2f} (real {quality['quality/score_real']:.2f}), "
                 f"{quality['quality/classes_covered']}/{n_classes} classes, "
                 f"FD {quality['quality/frechet_distance']:.2f}")
    return line


class Batches:
    """The training data's shuffled batches, epoch after epoch (full batches only, as the books'
    `drop_remainder`), and the place reached in the current epoch. Tracked by the session as "data",
    so a run stopped inside an epoch resumes with the very batches it would have had next. An epoch is
    `data.repeat` passes over the images one after another, each in a fresh order (tf.data's
    `shuffle().repeat(n)`): a small dataset then gives an epoch as many updates as a large one.

        for epoch in batches.epochs():    # the session counts each completed epoch (checkpoints, evaluation)
            for index in batches:         # the rest of this epoch's batches; ends early after Ctrl-C
                ... one update ...
                batches.log(losses)       # counts the step; losses stay on the device until read
        session.finish(batches.losses())

    The losses of the steps are read to the host only every `log_every` steps and when an epoch's
    batches end (one wait for a GPU there, not one per step), and checked in order: a non-finite one
    stops the run naming its step, before any sample grid or checkpoint of the bad state. After each
    completed epoch the console gets its mean losses and the quality just measured (see `epoch_line`).
    """

    def __init__(self, session, data: Data, batch_size: int, log_every: int = 1):
        self.session, self.log_every = session, log_every
        self._unread = []  # (step, losses) not yet read to the host
        self._last = {}  # the newest losses read, as numbers
        self._sums, self._counted = {}, 0  # this epoch's losses read so far, for its console line
        self.n_items, self.shape, self.n_classes = len(data), tuple(data.shape), data.n_classes
        self.per_epoch = steps_per_epoch(self.n_items, batch_size, data.repeat)
        self.rng = np.random.default_rng([session.run.seed, 1])  # orders the data, draws the critics' batches
        # the lab's one batcher, over the images' indices: it draws an epoch's order at its first batch
        self.loader = DataLoader(np.arange(self.n_items), batch_size=min(batch_size, self.n_items), shuffle=True,
                                 drop_last=True, generator=self.rng)
        self.position = 0  # steps done in the current epoch

    def epochs(self):
        """The current epoch's number (from 0) while the session runs; after each epoch done whole the
        session counts it, then checkpoints and evaluates when due. Ends early after Ctrl-C / SIGTERM."""
        while self.session.running():
            yield self.session.progress
            if self.position < self.per_epoch:  # stopped inside the epoch: the session's finish saves it
                return
            self.position = 0
            self._read()
            self.session.advance(1)  # evaluates the quality when due
            self._epoch_line()

    def steps(self):
        """Step numbers within the current epoch (`per_epoch` of them), from where it stands; ends
        early after Ctrl-C / SIGTERM."""
        while self.position < self.per_epoch and self.session.running():
            yield self.position
            self.position += 1

    def __iter__(self):
        """Index arrays of the rest of the current epoch's batches."""
        batches = self._passes()
        for _ in self.steps():
            yield next(batches)
        self._read()

    def _passes(self):
        """The loader's batches pass after pass; it continues a pass left unfinished (a resumed run)."""
        while True:
            for (index,) in self.loader:
                yield index

    def log(self, losses: dict):
        """Count one update step with its losses (Tensors or numbers): every `log_every` steps (and at
        the first) they are read, checked and go to TensorBoard and beside the bar."""
        self.session.step()
        self._unread.append((self.session.global_step, {tag: v.detach() if isinstance(v, core.Tensor) else v
                                                        for tag, v in losses.items()}))
        if self.session.steps % self.log_every == 0 or self.session.steps == 1:
            self._read()
            self.session.log(self._last)
            self.session.show(**{tag.split("/")[-1]: v for tag, v in self._last.items()})

    def losses(self) -> dict:
        """The newest step's losses as numbers (all earlier ones read and checked)."""
        self._read()
        return dict(self._last)

    def _read(self):
        for step, losses in self._unread:
            values = {tag: float(v.item() if isinstance(v, core.Tensor) else v) for tag, v in losses.items()}
            for tag, value in values.items():
                self.session.run.check_finite(tag, value, step)
                self._sums[tag] = self._sums.get(tag, 0.0) + value
            self._counted += 1
            self._last = values
        self._unread = []

    def _epoch_line(self):
        session = self.session
        evaluation = session.evaluation
        quality = evaluation[1] if evaluation and evaluation[0] == session.progress else None
        means = {tag: total / self._counted for tag, total in self._sums.items()} if self._counted else {}
        session.console(epoch_line(session.progress, session.total, means, quality, self.n_classes))
        self._sums, self._counted = {}, 0

    def random_batch(self, size: int) -> np.ndarray:
        """Indices of a random batch (no repeats inside it), for trainers that draw several batches per
        step (WGAN critics); drawn from the data stream, so resume reproduces them."""
        return self.rng.choice(self.n_items, min(size, self.n_items), replace=False)

    def state_dict(self) -> dict:
        return {"shape": self.shape, "items": self.n_items, "position": self.position,
                "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict):
        if tuple(state["shape"]) != self.shape or state["items"] != self.n_items:
            raise ValueError(f"it was trained on {state['items']} images of shape {tuple(state['shape'])}, the "
                             f"dataset gives {self.n_items} of shape {self.shape}; use the same dataset to resume it")
        self.position = state["position"]
        self.loader.load_state_dict(state["loader"])


def restore(config_cls, build: Callable, cfg, state: dict, device="cpu"):
    """(model Config, modules by name, pixel range) of a checkpoint of the run config `cfg`:
    `build(args, image_shape, n_classes, normalize)` makes the networks, which get the checkpoint's
    weights (saved under the same names) and are put in eval mode."""
    args = config_object(config_cls, cfg.model)
    dataset = plain(cfg.dataset)
    normalize = value_range(args.normalize, dataset)
    modules = build(args, tuple(state["data"]["shape"]), len(CLASS_NAMES[dataset["name"]]), normalize)
    for name, module in modules.items():
        module.load_state_dict(state[name])
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
    """Image grids as PNG files under `samples/` and as TensorBoard images under `samples/<name>`, at the
    session's update step like the losses; `gif(name)` animates the PNGs of one name (one per epoch)
    into `samples/<name>.gif`. Small images are enlarged by nearest-neighbour pixel repetition to at
    least `VIEW_PIXELS` per side, so 28×28 (or 8×8) digits are visible in TensorBoard and image viewers."""

    VIEW_PIXELS = 84

    def __init__(self, session, normalize: str):
        self.session, self.normalize = session, normalize
        self.directory = session.run.dir / "samples"

    def write(self, name: str, images, epoch: int, nrow: Optional[int] = None):
        return self._grid(name, images, self.directory / f"{name}_epoch{epoch + 1:04d}.png", nrow)

    def gif(self, name: str, fps: int = 4):
        frames = sorted(self.directory.glob(f"{name}_epoch*.png"))
        return save_gif(frames, self.directory / f"{name}.gif", fps=fps) if frames else None

    def still(self, name: str, images, nrow: Optional[int] = None):
        """One grid written once (latent interpolations)."""
        return self._grid(name, images, self.directory / f"{name}.png", nrow)

    def _grid(self, name, images, path, nrow):
        self.session.run.logger.image_grid(f"samples/{name}", enlarge(to_unit_range(images, self.normalize),
                                                                      self.VIEW_PIXELS),
                                           self.session.global_step, nrow=nrow, path=path, value_range=(0.0, 1.0))
        return path


def enlarge(images: np.ndarray, pixels: int) -> np.ndarray:
    """NCHW images with each pixel repeated so the larger side has at least `pixels` pixels (nearest neighbour)."""
    factor = max(1, -(-pixels // max(images.shape[2:])))
    return images.repeat(factor, axis=2).repeat(factor, axis=3)


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
