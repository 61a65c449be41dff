"""Autoencoders: dense (stacked), tied-weight, convolutional; denoising and sparse variants.

    python scripts/train.py model=ae_stacked dataset=fashion_mnist

Trained in epochs (`checkpoint_every` counts epochs; the bar and the logs count update steps), see
gans/common.py.

Architectures (`arch`):
- "dense": Flatten → Dense(hidden..., activation) → Dense(code_size, code_activation) → Dense(reversed
  hidden..., activation) → Dense(C·H·W) → sigmoid. Presets: ae_mtf (MTF ch. 3: 784-64-784, relu, MSE, Adam),
  ae_stacked (HOML ch. 17: 784-100-30-100-784, selu, BCE, SGD 1.5), ae_bdl (BDL ch. 12: 256-128-20, relu, BCE).
- "tied": the dense encoder; the decoder reuses its weight matrices transposed (own biases), so both uses
  add up in one gradient (HOML ch. 17: 82,414 parameters instead of 163,814).
- "conv": Conv(c, 3, same, activation) → MaxPool(2) per entry of `conv_channels`, then as many
  ConvT(3, 2) back up (HOML ch. 17: 16-32-64, 28 → 14 → 7 → 3 → 7 → 14 → 28). Each ConvT uses "valid"
  (2s + 1) or "same" (2s) padding, whichever restores the size the matching pooling halved, so any image
  of at least 2^depth pixels works.

The decoder's last layer gives logits; the reconstruction is their sigmoid, so pixels must be in [0, 1].
`loss` "bce" is per-pixel binary cross-entropy (from the logits, stable); "mse" compares the sigmoid.

Variants:
- denoising (`noise`): "dropout" zeroes input pixels with probability `dropout` (HOML: 0.5), "gaussian"
  adds N(0, noise_std²); only while training, and the target stays the clean image.
- sparse (`sparsity`, on the code layer): "l1" adds weight·Σ|code| per image (batch mean), "kl" adds
  weight·Σ_j KL(target ‖ q_j) with q_j the batch-mean activation of code unit j (needs a sigmoid code).
  Keras applies activity penalties per example; so does this (GM-07).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import core
from core import nn
import core.functional as F
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError
from gans.common import (
    Activation, Optimizer, SampleGrids, TrainConfig, activation, batch, dense_layers, epoch_session, interpolate,
    load_data, make_optimizer, originals_over_reconstructions, positive, random_images, restore, setup,
)
from gans.datasets import Normalize
from gans.quality import evaluate_quality

# the config's types
Arch = Choice("Arch", "dense tied conv")
Loss = Choice("Loss", "bce mse")
Noise = Choice("Noise", "none dropout gaussian")
Sparsity = Choice("Sparsity", "none l1 kl")


@dataclass
class Config(TrainConfig):
    """Defaults: HOML ch. 17's stacked autoencoder (`homl17-stacked-ae-fashion`)."""

    # plus gans.common.TrainConfig's fields (documented there); the model's own defaults of some come first

    normalize: Optional[Normalize] = Normalize("01")
    optimizer: Optimizer = Optimizer.sgd
    batch_size: int = 32
    grid_size: int = 32
    arch: Arch = Arch.dense
    hidden: list[int] = field(default_factory=lambda: [100])
    code_size: int = 30
    activation: Activation = Activation.selu
    code_activation: Activation = Activation.selu
    conv_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    loss: Loss = Loss.bce
    noise: Noise = Noise.none
    dropout: float = 0.5
    noise_std: float = 0.1
    sparsity: Sparsity = Sparsity.none
    sparsity_weight: float = 1e-3
    sparsity_target: float = 0.1
    lr: float = 1.5
    unit_pixels = "autoencoders reconstruct pixels in [0, 1] through a sigmoid"

    def validate(self):
        super().validate()
        positive(self, "code_size", "lr", "noise_std")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.arch == "conv" and not self.conv_channels:
            raise ValueError("model.arch=conv needs at least one entry in model.conv_channels")
        if self.sparsity == "kl":
            if self.code_activation != "sigmoid":
                raise ValueError("model.sparsity=kl needs code activations in (0, 1); "
                                 "set model.code_activation=sigmoid")
            if not 0 < self.sparsity_target < 1:
                raise ValueError(f"model.sparsity_target must be in (0, 1), got {self.sparsity_target}")


# ----- networks -----
class GaussianNoise(nn.Module):
    """x + N(0, std²) while training; the identity in eval mode (Keras' GaussianNoise)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x):
        if not self.training:
            return x
        return x + core.randn(*x.shape, device=x.device) * self.std


def _corruption(cfg) -> nn.Module:
    if cfg.noise == "dropout":
        return nn.Dropout(cfg.dropout)
    if cfg.noise == "gaussian":
        return GaussianNoise(cfg.noise_std)
    return nn.Identity()


class Autoencoder(nn.Module):
    """encode(x) -> code; decode(code) -> logits (N, C, H, W); forward(x) -> (logits, code). The input
    corruption of a denoising autoencoder acts in `forward` only (training), not in `encode`."""

    def __init__(self, corruption: nn.Module, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.corruption, self.encoder, self.decoder = corruption, encoder, decoder

    def encode(self, x):
        return self.encoder(x)

    def decode(self, code):
        return self.decoder(code)

    def forward(self, x):
        code = self.encode(self.corruption(x))
        return self.decode(code), code


class TiedDecoder(nn.Module):
    """Decodes with the transposed weights of the encoder's Linear layers (in reverse order), each with its
    own bias; `activations` follow each layer but the last, which gives logits."""

    def __init__(self, linears, activations, shape):
        super().__init__()
        self.linears = list(reversed(linears))  # shared, so their weights are counted once
        self.biases = [nn.Parameter(core.zeros(lin.in_features)) for lin in self.linears]
        self.activations = activations
        self.shape = shape

    def forward(self, code):
        h = code
        for i, (lin, bias) in enumerate(zip(self.linears, self.biases)):
            h = core.linear(h, lin.weight.T, bias)
            if i < len(self.activations):
                h = self.activations[i](h)
        return h.reshape(h.shape[0], *self.shape)


def _conv_sizes(arch_depth, size):
    sizes = [size]
    for _ in range(arch_depth):
        sizes.append(sizes[-1] // 2)
    if sizes[-1] < 1:
        raise ConfigError(f"a conv autoencoder with {arch_depth} poolings needs images of at least {2 ** arch_depth} "
                          f"pixels per side, got {size}; use fewer conv_channels or set dataset.image_size")
    return sizes


def build(cfg: Config, shape, n_classes: int = 0, normalize: str = "01") -> dict:
    """{"autoencoder"} for images of `shape` (C, H, W), pixels in [0, 1] (n_classes and normalize complete
    the signature every model's `build` shares; an autoencoder needs neither)."""
    c, h, w = shape
    pixels = c * h * w
    if cfg.arch == "conv":
        if h != w:
            raise ConfigError(f"the conv autoencoder needs square images, got {h}×{w}; set dataset.image_size")
        sizes = _conv_sizes(len(cfg.conv_channels), h)
        enc, c_in = [], c
        for c_out in cfg.conv_channels:
            enc += [nn.Conv2d(c_in, c_out, 3, padding="same", init="keras"), activation(cfg.activation),
                    nn.MaxPool2d(2)]
            c_in = c_out
        dec = []
        outs = list(reversed([c] + cfg.conv_channels[:-1]))
        for k, (c_out, small, big) in enumerate(zip(outs, reversed(sizes[1:]), reversed(sizes[:-1]))):
            padding = "valid" if big == 2 * small + 1 else "same"
            dec.append(nn.ConvTranspose2d(c_in, c_out, 3, 2, padding=padding, init="keras"))
            if k < len(outs) - 1:
                dec.append(activation(cfg.activation))
            c_in = c_out
        return {"autoencoder": Autoencoder(_corruption(cfg), nn.Sequential(*enc), nn.Sequential(*dec))}

    acts = [cfg.activation] * len(cfg.hidden)
    enc_layers, _ = dense_layers(pixels, cfg.hidden + [cfg.code_size], acts + [cfg.code_activation])
    encoder = nn.Sequential(nn.Flatten(), *enc_layers)
    if cfg.arch == "tied":
        linears = [m for m in enc_layers if isinstance(m, nn.Linear)]
        decoder = TiedDecoder(linears, [activation(a) for a in acts], shape)
    else:
        dec_layers, width = dense_layers(cfg.code_size, list(reversed(cfg.hidden)), acts)
        decoder = nn.Sequential(*dec_layers, nn.Linear(width, pixels, init="keras"), nn.Unflatten(1, shape))
    return {"autoencoder": Autoencoder(_corruption(cfg), encoder, decoder)}


def reconstruction_loss(kind: str, logits, target):
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(logits.sigmoid(), target)


def sparsity_penalty(kind: str, code, target: float = 0.1):
    """Per-example activity penalty of the code layer (before its weight): "l1" the batch mean of Σ|code|,
    "kl" Σ_j KL(target ‖ q_j) over units j, q_j = the batch-mean activation of unit j."""
    if kind == "l1":
        return core.abs(code).sum(axis=1).mean()
    q = core.clip(code.mean(axis=0), 1e-7, 1 - 1e-7)
    return (target * core.log(target / q) + (1 - target) * core.log((1 - target) / (1 - q))).sum()


# ----- training -----
def train(cfg, run) -> dict:
    args, data, nets = setup(Config, build, cfg, run)
    model, device = nets["autoencoder"], run.device
    opt = make_optimizer(cfg.optim, args, model.parameters(), args.lr)

    # the same real images in every grid: originals over their reconstructions
    shown = random_images(data.images, args.grid_size, run.seed)
    session, batches = epoch_session(run, cfg, args, data, "autoencoder", reconstructor(model, data, device), model)
    session.track(autoencoder=model, optimizer=opt, data=batches)
    grids = SampleGrids(session, data.normalize)

    for epoch in batches.epochs():
        for index in batches:
            x = batch(data.images, index, device)
            logits, code = model(x)
            recon = reconstruction_loss(args.loss, logits, x)
            losses = {"losses/recon": recon}
            loss = recon
            if args.sparsity != "none":
                penalty = sparsity_penalty(args.sparsity, code, args.sparsity_target)
                loss = loss + args.sparsity_weight * penalty
                losses.update({"losses/sparsity": penalty, "losses/loss": loss})
            opt.zero_grad()
            loss.backward()
            opt.step()
            batches.log(losses)

        model.eval()
        with core.no_grad():
            grids.write("reconstructions", originals_over_reconstructions(shown, reconstruct(model, shown, device)),
                        epoch, nrow=8)
        model.train()

    grids.gif("reconstructions")
    model.eval()
    with core.no_grad():  # straight lines between the codes of pairs of the shown images
        pairs = min(8, len(shown) // 2)
        codes = model.encode(core.tensor(shown[:2 * pairs], device=device))
        grids.still("latent_interpolation", model.decode(interpolate(codes[:pairs], codes[pairs:], 10)).sigmoid(),
                    nrow=10)
    return session.finish(batches.losses())


def reconstruct(model: Autoencoder, images: np.ndarray, device="cpu") -> core.Tensor:
    """Reconstructions (in [0, 1]) of images, without the training-time corruption."""
    return model.decode(model.encode(core.tensor(images, device=device))).sigmoid()


def reconstructor(model: Autoencoder, data, device="cpu"):
    """generate(n, rng) for the quality metric: reconstructions of n images drawn at random with rng, so an
    autoencoder's score measures how much of the data's character its reconstructions keep."""
    return lambda n, rng: reconstruct(model, data.images[rng.integers(0, len(data), (n,)).numpy()], device)


# ----- hooks for scripts/evaluate.py -----
def sample(cfg, state: dict, n: int, seed: int = 0, images=None) -> np.ndarray:
    """Reconstructions in [0, 1] of `images` ((n, C, H, W) in [0, 1]), by default of n random images of the
    run's dataset: an autoencoder does not generate from noise."""
    args, nets, _ = restore(Config, build, cfg, state)
    if images is None:
        images = random_images(load_data(cfg.dataset, args.normalize).images, n, seed)
    with core.no_grad():
        return reconstruct(nets["autoencoder"], np.asarray(images, dtype=np.float32)).numpy()


def evaluate(cfg, state: dict, run_dir=None) -> dict:
    """The quality metrics of a checkpoint's reconstructions (see gans/quality.py)."""
    args, nets, _ = restore(Config, build, cfg, state)
    data = load_data(cfg.dataset, args.normalize)
    return evaluate_quality(reconstructor(nets["autoencoder"], data), data, args.quality, seed=cfg.seed)
