"""GANs: an MLP GAN and DCGANs with the books' architectures as presets, optionally class-conditional.

    python scripts/train.py model=dcgan dataset=mnist     # small, quick defaults; model=gan: the MLP GAN
    python scripts/train.py model=dcgan_tf dataset=mnist  # the TF DCGAN tutorial (MTF ch. 10)

Trained in epochs (`checkpoint_every` counts epochs; the bar and the logs count update steps), see
gans/common.py.

Architectures (`arch`):
- "mlp": dense generator and discriminator from `g_hidden`/`d_hidden` (units) and
  `g_activations`/`d_activations` (one per layer); presets gan_mtf (MTF ch. 10) and gan_geron (HOML ch. 17).
- "dcgan": the DCGAN paper's recipe sized by `width` (k): Dense(2k·h/4·w/4) → BN → ReLU → ConvT(k, 4, 2)
  → BN → ReLU → ConvT(C, 4, 2); discriminator Conv(k, 4, 2) → LReLU(0.2) → Conv(2k, 4, 2) → BN → LReLU →
  Dense(1); weights N(0, 0.02). Small and quick: the default (k = 32; dcgan_classic: k = 64).
- "dcgan_tf": the TensorFlow DCGAN tutorial (MTF ch. 10): Dense(256·h/4·w/4, no bias) → BN → LReLU(0.3) →
  ConvT(128, 5, 1) → BN → LReLU → ConvT(64, 5, 2) → BN → LReLU → ConvT(C, 5, 2); the discriminator is
  Conv(64, 5, 2) → LReLU(0.3) → Dropout(0.3) → Conv(128, 5, 2) → LReLU → Dropout → Dense(1).
- "dcgan_geron": HOML ch. 17: Dense(128·h/4·w/4) → BN → ConvT(64, 5, 2, selu) → BN → ConvT(C, 5, 2);
  discriminator as dcgan_tf with LReLU(0.2) and Dropout(0.4).
- "dcgan_bdl": BDL ch. 13, 64×64 images: ReLU(z) → ConvT(512, 4, 1, valid) → BN → ReLU → ConvT 256/128/64
  (4, 2, same) each with BN + ReLU → ConvT(C, 4, 2); discriminator Conv 64/128/256 (4, 2, valid) and
  512/1024 (3, 1, valid), each with BN + LReLU(0.2), global average pooling, Dense(1).
The dcgan/dcgan_tf/dcgan_geron shapes scale with the image (height and width divisible by 4), so they also
train on 32×32 CIFAR-10 or 8×8 digits. Layers use Keras' initialisation and BN settings, as the books.

The discriminator always outputs a logit and the losses are BCE-with-logits (Géron's sigmoid + BCE is
the same function, computed stably). The generator's last activation follows the data's value range:
tanh for [−1, 1], sigmoid for [0, 1].

Updates (`update`):
- "simultaneous" (TF tutorial, MTF): one noise batch per step; D's and G's gradients both come from the
  same forward pass (G's through the D of before this step's update), then one step each.
- "alternating" (Géron, BDL): a D step on a real batch and a fake batch from fresh noise; every `d_steps`
  D steps, a G step on fresh noise through the updated, frozen D.
`real_label` < 1 gives one-sided label smoothing (MTF's simple GAN uses 0.9).

Conditional (`conditional=true`, HOML ch. 17 exercise 11): the generator gets the one-hot class appended
to z; a convolutional discriminator sees it as constant one-hot planes stacked on the image channels, an
MLP discriminator appended to the flat pixels. Sample grids then show one class per column.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import core
from core import nn
import core.functional as F
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError
from gans.common import (
    Activation, SampleGrids, TrainConfig, batch, check_image_shape, dense_layers, epoch_session, eval_mode, interpolate,
    keras_batch_norm, latent_tensor, load_data, make_optimizer, norm_layer, output_activation, positive, restore, setup,
)
from gans.datasets import Normalize
from gans.quality import evaluate_quality, to_unit_range

# the config's types
Arch = Choice("Arch", "mlp dcgan dcgan_tf dcgan_geron dcgan_bdl")
Update = Choice("Update", "simultaneous alternating")
Noise = Choice("Noise", "normal uniform")


@dataclass
class Config(TrainConfig):
    """Defaults: a small DCGAN after the DCGAN paper and the PyTorch tutorial (arch "dcgan", width 32,
    Adam(2e-4, β1 0.5), alternating D and G steps, batch 64), sized so MNIST digits appear within minutes on
    two CPU cores (see docs/running.md); the books' networks are the named configs (dcgan_tf, ...)."""

    # plus gans.common.TrainConfig's fields (documented there); the model's own defaults of some come first

    normalize: Optional[Normalize] = Normalize.tanh
    epochs: int = 5
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    eps: float = 1e-8
    arch: Arch = Arch.dcgan
    latent_size: int = 100
    noise: Noise = Noise.normal  # "normal": N(0, 1); "uniform": U(−1, 1)
    conditional: bool = False
    width: int = 32  # arch "dcgan" only: channels of the first D conv / last G deconv (doubled in the next)
    g_hidden: list[int] = field(default_factory=lambda: [256, 512])  # arch "mlp" only
    g_activations: list[Activation] = field(default_factory=lambda: [Activation.leaky_relu] * 2)
    d_hidden: list[int] = field(default_factory=lambda: [512, 256])
    d_activations: list[Activation] = field(default_factory=lambda: [Activation.leaky_relu] * 2)
    leaky_slope: float = 0.2  # of "leaky_relu" in the mlp layers
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    real_label: float = 1.0
    update: Update = Update.alternating
    d_steps: int = 1
    # D's fakes come from G in inference mode (BN with its moving statistics), as in Keras code that makes
    # them with generator.predict(z) or generator(z) outside fit; update "alternating" only
    eval_fakes: bool = False

    def validate(self):
        super().validate()
        positive(self, "latent_size", "width", "lr_g", "lr_d", "d_steps")
        for side in ("g", "d"):
            hidden, acts = getattr(self, f"{side}_hidden"), getattr(self, f"{side}_activations")
            if len(hidden) != len(acts):
                raise ValueError(f"model.{side}_hidden has {len(hidden)} layers but model.{side}_activations has "
                                 f"{len(acts)}; give one activation per layer")
        if not 0 < self.real_label <= 1:
            raise ValueError(f"model.real_label must be in (0, 1], got {self.real_label}")
        if self.update == "simultaneous" and self.eval_fakes:
            raise ValueError("model.eval_fakes needs model.update=alternating: a simultaneous step trains G on "
                             "the same fakes D sees")
        if self.update == "simultaneous" and self.d_steps != 1:
            raise ValueError("model.update=simultaneous takes one D step per G step; set model.d_steps=1 or "
                             "model.update=alternating")


# ----- networks -----
class Generator(nn.Module):
    """z (plus a class label when conditional) -> images."""

    def __init__(self, net: nn.Module, latent_size: int, n_classes: int = 0):
        super().__init__()
        self.net, self.latent_size, self.n_classes = net, latent_size, n_classes

    def forward(self, z, labels=None):
        if self.n_classes:
            z = core.cat([z, F.one_hot(labels, self.n_classes)], axis=1)
        return self.net(z)


class Discriminator(nn.Module):
    """images (plus labels when conditional) -> one logit (or critic score) per image. `flat`: the body
    is dense and gets flattened pixels."""

    def __init__(self, net: nn.Module, n_classes: int = 0, flat: bool = False):
        super().__init__()
        self.net, self.n_classes, self.flat = net, n_classes, flat

    def forward(self, x, labels=None):
        if self.flat:
            x = core.flatten(x, 1)
        if self.n_classes:
            onehot = F.one_hot(labels, self.n_classes)
            if self.flat:
                x = core.cat([x, onehot], axis=1)
            else:  # constant planes, one per class
                planes = core.broadcast_to(onehot.reshape(*onehot.shape, 1, 1),
                                           (x.shape[0], self.n_classes, *x.shape[2:]))
                x = core.cat([x, planes], axis=1)
        return self.net(x)


def _quarter(arch, shape):
    c, h, w = shape
    if h % 4 or w % 4:
        raise ConfigError(f"arch {arch!r} needs image height and width divisible by 4, got {h}×{w}; "
                          "set dataset.image_size to e.g. 16, 28 or 32")
    return h // 4, w // 4


def _dcgan_init(module):
    """DCGAN paper initialisation: conv and dense weights N(0, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def generator_net(cfg, shape, z_size, out):
    """The generator body of `cfg.arch` for images of `shape` (C, H, W) from `z_size` inputs."""
    c, h, w = shape
    arch = cfg.arch
    if arch == "mlp":
        layers, width = dense_layers(z_size, cfg.g_hidden, cfg.g_activations, cfg.leaky_slope)
        return nn.Sequential(*layers, nn.Linear(width, c * h * w, init="keras"), out, nn.Unflatten(1, (c, h, w)))
    if arch == "dcgan":
        h4, w4 = _quarter(arch, shape)
        k = cfg.width
        return _dcgan_init(nn.Sequential(
            nn.Linear(z_size, 2 * k * h4 * w4, bias=False), nn.BatchNorm1d(2 * k * h4 * w4), nn.ReLU(),
            nn.Unflatten(1, (2 * k, h4, w4)),
            nn.ConvTranspose2d(2 * k, k, 4, 2, padding="same", bias=False), nn.BatchNorm2d(k), nn.ReLU(),
            nn.ConvTranspose2d(k, c, 4, 2, padding="same"), out))
    if arch == "dcgan_tf":
        h4, w4 = _quarter(arch, shape)
        return nn.Sequential(
            nn.Linear(z_size, 256 * h4 * w4, bias=False, init="keras"), keras_batch_norm(256 * h4 * w4, rank=1),
            nn.LeakyReLU(0.3), nn.Unflatten(1, (256, h4, w4)),
            nn.ConvTranspose2d(256, 128, 5, 1, padding="same", bias=False, init="keras"), keras_batch_norm(128),
            nn.LeakyReLU(0.3),
            nn.ConvTranspose2d(128, 64, 5, 2, padding="same", bias=False, init="keras"), keras_batch_norm(64),
            nn.LeakyReLU(0.3),
            nn.ConvTranspose2d(64, c, 5, 2, padding="same", bias=False, init="keras"), out)
    if arch == "dcgan_geron":
        h4, w4 = _quarter(arch, shape)
        return nn.Sequential(
            nn.Linear(z_size, 128 * h4 * w4, init="keras"), nn.Unflatten(1, (128, h4, w4)), keras_batch_norm(128),
            nn.ConvTranspose2d(128, 64, 5, 2, padding="same", init="keras"), nn.SELU(), keras_batch_norm(64),
            nn.ConvTranspose2d(64, c, 5, 2, padding="same", init="keras"), out)
    if arch == "dcgan_bdl":
        if (h, w) != (64, 64):
            raise ConfigError(f"arch 'dcgan_bdl' generates 64×64 images, the dataset has {h}×{w}; "
                              "set dataset.image_size=64")
        layers = [nn.Unflatten(1, (z_size, 1, 1)), nn.ReLU(),  # ReLU on z as printed (GM-14)
                  nn.ConvTranspose2d(z_size, 512, 4, 1, padding="valid", bias=False, init="keras"),
                  keras_batch_norm(512), nn.ReLU()]
        for c_in, c_out in ((512, 256), (256, 128), (128, 64)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, padding="same", bias=False, init="keras"),
                       keras_batch_norm(c_out), nn.ReLU()]
        return nn.Sequential(*layers, nn.ConvTranspose2d(64, c, 4, 2, padding="same", bias=False, init="keras"), out)
    raise ValueError(f"unknown arch {arch!r} for a GAN generator")


def discriminator_net(cfg, shape, cond, norm="batch"):
    """The discriminator (or critic) body of `cfg.arch`; `cond` extra input channels (or features) carry
    the label. `norm` ("batch", "layer" or "none") replaces the batch norms of dcgan and dcgan_bdl (WGAN-GP
    critics avoid batch norm)."""
    c, h, w = shape
    arch = cfg.arch
    if arch == "mlp":
        layers, width = dense_layers(c * h * w + cond, cfg.d_hidden, cfg.d_activations, cfg.leaky_slope)
        return nn.Sequential(*layers, nn.Linear(width, 1, init="keras"))
    if arch == "dcgan":
        h4, w4 = _quarter(arch, shape)
        k = cfg.width
        return _dcgan_init(nn.Sequential(
            nn.Conv2d(c + cond, k, 4, 2, padding="same"), nn.LeakyReLU(0.2),
            nn.Conv2d(k, 2 * k, 4, 2, padding="same", bias=norm == "none"), norm_layer(norm, 2 * k, (h4, w4)),
            nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(2 * k * h4 * w4, 1)))
    if arch in ("dcgan_tf", "dcgan_geron"):
        h4, w4 = _quarter(arch, shape)
        slope, drop = (0.3, 0.3) if arch == "dcgan_tf" else (0.2, 0.4)
        return nn.Sequential(
            nn.Conv2d(c + cond, 64, 5, 2, padding="same", init="keras"), nn.LeakyReLU(slope), nn.Dropout(drop),
            nn.Conv2d(64, 128, 5, 2, padding="same", init="keras"), nn.LeakyReLU(slope), nn.Dropout(drop),
            nn.Flatten(), nn.Linear(128 * h4 * w4, 1, init="keras"))
    if arch == "dcgan_bdl":
        layers, c_in, size = [], c + cond, h
        for c_out, k, s in ((64, 4, 2), (128, 4, 2), (256, 4, 2), (512, 3, 1), (1024, 3, 1)):
            size = (size - k) // s + 1
            layers += [nn.Conv2d(c_in, c_out, k, s, padding="valid", bias=False, init="keras"),
                       norm_layer(norm, c_out, (size, size), keras=True), nn.LeakyReLU(0.2)]
            c_in = c_out
        return nn.Sequential(*layers, nn.GlobalAvgPool2d(), nn.Linear(1024, 1, init="keras"))
    raise ValueError(f"unknown arch {arch!r} for a GAN discriminator")


def build(cfg: Config, shape, n_classes: int, normalize: str) -> dict:
    """{"generator", "discriminator"} for images of `shape` (C, H, W) with pixels in range `normalize`."""
    cond = n_classes if cfg.conditional else 0
    generator = Generator(generator_net(cfg, shape, cfg.latent_size + cond, output_activation(normalize)),
                          cfg.latent_size, cond)
    check_generator(generator, shape, cfg.arch)
    discriminator = Discriminator(discriminator_net(cfg, shape, cond), cond, flat=cfg.arch == "mlp")
    return {"generator": generator, "discriminator": discriminator}


def draw_noise(kind: str, n: int, latent_size: int, rng=None, device="cpu") -> core.Tensor:
    rng = rng or core.random.default_generator
    if kind == "uniform":
        return rng.uniform((n, latent_size), -1.0, 1.0, device=device)
    return rng.normal((n, latent_size), device=device)


def draw_labels(n: int, n_classes: int, rng=None, device="cpu"):
    """Random class labels for conditional fakes (None for unconditional models)."""
    if not n_classes:
        return None
    return (rng or core.random.default_generator).integers(0, n_classes, (n,), device=device)


@contextlib.contextmanager
def frozen(module: nn.Module):
    """No parameter of `module` gets a gradient inside (Keras' trainable=False in a stacked G → D model);
    backward then skips its weight gradients."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def bce(logits, target: float):
    """Binary cross-entropy of logits against a constant target (1 real, 0 fake, 0.9 smoothed)."""
    return F.binary_cross_entropy_with_logits(logits, core.full_like(logits, target))


def simultaneous_step(G, D, opt_g, opt_d, real, real_labels, z, fake_labels, real_label=1.0):
    """One step of each network from one forward pass (the TF tutorial's train_step): both gradients are
    taken at the current weights. Returns (d_loss, g_loss)."""
    fake = G(z, fake_labels)
    # D sees a detached copy of the fakes, so its backward stops there; G's gradient is the gradient of
    # G's loss w.r.t. those fakes (through D, frozen so its weight gradients are skipped), pushed into G
    fake_leaf = fake.detach().requires_grad_(True)
    d_fake = D(fake_leaf, fake_labels)
    d_loss = bce(D(real, real_labels), real_label) + bce(d_fake, 0.0)
    g_loss = bce(d_fake, 1.0)
    opt_d.zero_grad()
    opt_g.zero_grad()
    d_loss.backward(retain_graph=True)
    with frozen(D):
        (fake_grad,) = core.grad(g_loss, [fake_leaf])
    fake.backward(fake_grad)
    opt_d.step()
    opt_g.step()
    return d_loss, g_loss


def discriminator_step(D, opt_d, real, real_labels, fake, fake_labels, real_label=1.0):
    """One D step on a real and a fake batch; returns its loss."""
    d_loss = bce(D(real, real_labels), real_label) + bce(D(fake, fake_labels), 0.0)
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    return d_loss


def generator_step(G, D, opt_g, z, labels=None):
    """One G step through the frozen D (non-saturating loss: fakes labelled real); returns its loss."""
    with frozen(D):
        g_loss = bce(D(G(z, labels), labels), 1.0)
        opt_g.zero_grad()
        g_loss.backward()
    opt_g.step()
    return g_loss


def check_generator(generator, shape, arch, device="cpu"):
    """Run a dummy batch through the generator: its images must have the data's shape (`build` does, so
    a wrong shape stops a run before training)."""
    generator.eval()
    with core.no_grad():
        labels = core.zeros(2, dtype=core.int64, device=device) if generator.n_classes else None
        out = generator(core.zeros(2, generator.latent_size, device=device), labels)
    generator.train()
    check_image_shape(f"arch {arch!r}", out.shape[1:], shape,
                      "choose an arch for this image size or set dataset.image_size")


# ----- training -----
def train(cfg, run) -> dict:
    args, data, nets = setup(Config, build, cfg, run)
    G, D = nets["generator"], nets["discriminator"]
    opt_g = make_optimizer(cfg.optim, args, G.parameters(), args.lr_g)
    opt_d = make_optimizer(cfg.optim, args, D.parameters(), args.lr_d)
    device, n_classes = run.device, G.n_classes

    # the fixed noise of the sample grids: its own stream, so it is the same in every run with this seed
    fixed_z = draw_noise(args.noise, args.grid_size, args.latent_size, core.Generator(run.seed + 1), device)
    fixed_labels = core.tensor(np.arange(args.grid_size) % n_classes, device=device) if n_classes else None

    session, batches = epoch_session(run, cfg, args, data, "gan", generator_sampler(G, args.noise, device), G,
                                     conditional=bool(n_classes))
    session.track(generator=G, discriminator=D, g_optimizer=opt_g, d_optimizer=opt_d, data=batches)
    grids = SampleGrids(session, data.normalize)
    size = min(args.batch_size, len(data))
    g_loss = None  # until the first G step (alternating with d_steps > 1)

    for epoch in batches.epochs():
        for index in batches:
            real = batch(data.images, index, device)
            real_labels = batch(data.labels, index, device) if n_classes else None
            z = draw_noise(args.noise, size, args.latent_size, device=device)
            fake_labels = draw_labels(size, n_classes, device=device)

            if args.update == "simultaneous":
                d_loss, g_loss = simultaneous_step(G, D, opt_g, opt_d, real, real_labels, z, fake_labels,
                                                   args.real_label)
            else:
                with core.no_grad(), eval_mode(G, args.eval_fakes):
                    fake = G(z, fake_labels)
                d_loss = discriminator_step(D, opt_d, real, real_labels, fake, fake_labels, args.real_label)
                if batches.position % args.d_steps == args.d_steps - 1:
                    z = draw_noise(args.noise, size, args.latent_size, device=device)
                    g_loss = generator_step(G, D, opt_g, z, draw_labels(size, n_classes, device=device))
            losses = {"losses/d": d_loss} if g_loss is None else {"losses/d": d_loss, "losses/g": g_loss}
            batches.log(losses)

        G.eval()  # grids with BN's moving statistics, as the TF tutorial's generate_and_save_images
        with core.no_grad():
            grids.write("fixed_noise", G(fixed_z, fixed_labels), epoch, nrow=n_classes or None)
        G.train()

    grids.gif("fixed_noise")
    G.eval()
    with core.no_grad():  # latent interpolation between pairs of the fixed noise vectors, one path per row
        pairs = min(8, args.grid_size // 2)
        path_labels = core.tensor(np.repeat(np.arange(pairs) % n_classes, 10), device=device) if n_classes else None
        grids.still("latent_interpolation", G(interpolate(fixed_z[:pairs], fixed_z[pairs:2 * pairs], 10), path_labels),
                    nrow=10)
    return session.finish(batches.losses())


def generator_sampler(G: Generator, noise: str, device="cpu"):
    """generate(n, rng) for the quality metric: n images from noise drawn with rng (and random labels
    for a conditional G, returned with them)."""
    def generate(n, rng):
        labels = draw_labels(n, G.n_classes, rng, device)
        images = G(draw_noise(noise, n, G.latent_size, rng, device), labels)
        return (images, labels.numpy()) if G.n_classes else images
    return generate


# ----- hooks for scripts/evaluate.py -----
def sample(cfg, state: dict, n: int, seed: int = 0, z=None, labels=None) -> np.ndarray:
    """n images in [0, 1], (n, C, H, W), from a checkpoint's generator. `z` (n, latent_size) replaces the
    noise; `labels` picks the classes of a conditional model (default: 0, 1, 2, ... cycling)."""
    args, nets, normalize = restore(Config, build, cfg, state)
    G = nets["generator"]
    if z is None:
        z = draw_noise(args.noise, n, args.latent_size, core.Generator(seed))
    else:
        z = latent_tensor(z, args.latent_size)
    if G.n_classes:
        labels = core.tensor(np.asarray(np.arange(len(z)) % G.n_classes if labels is None else labels, dtype=np.int64))
    with core.no_grad():
        return to_unit_range(G(z, labels), normalize)


def evaluate(cfg, state: dict, run_dir=None) -> dict:
    """The sample-quality metrics of a checkpoint's generator (see gans/quality.py)."""
    args, nets, _ = restore(Config, build, cfg, state)
    data = load_data(cfg.dataset, args.normalize)
    G = nets["generator"]
    return evaluate_quality(generator_sampler(G, args.noise), data, args.quality, seed=cfg.seed,
                            conditional=bool(G.n_classes))
