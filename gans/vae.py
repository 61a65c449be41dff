"""Variational autoencoders, dense and convolutional.

    python scripts/train.py model=vae dataset=mnist

Trained in epochs (`checkpoint_every` counts epochs; the bar and the logs count update steps), see
gans/common.py.

The encoder gives μ and γ = log σ² of a diagonal Gaussian q(z | x); a code z = μ + exp(γ/2)·ε, ε ~ N(0, I)
(the reparameterisation, so gradients flow through μ and γ) is decoded into Bernoulli logits per pixel.
The loss is the negative ELBO: reconstruction = Σ_pixels BCE(logits, x) per image, plus
β·KL(q(z | x) ‖ N(0, I)) = −0.5·Σ_k (1 + γ_k − μ_k² − exp(γ_k)), both averaged over the batch.
β is `beta`, or with `beta_norm` set Higgins et al.'s (2017) normalised β: β = beta_norm·N/M for N = C·H·W
pixels and M = latent_size, so the KL weighs the same against the reconstruction whatever the image size
(β 3.9 on 28×28 MNIST, 0.32 on the 8×8 digits at the default 0.08 and latent 16). A β above 1 pulls the
codes of the training images towards the prior, so that codes drawn from the prior decode into digits;
a fixed β that suits 784 pixels makes the 64-pixel digits' posterior collapse (KL → 0, every sample the
mean image).
`recon_reduction` "sum" optimises that (BDL ch. 12); "mean" divides both terms by the number of pixels
(HOML ch. 17: Keras' per-pixel mean BCE and the KL / 784), the same objective on a 784× smaller scale.
`losses/recon`, `losses/kl` and `losses/loss` are logged on the scale that is optimised.

Architectures (`arch`):
- "dense": Flatten → Dense(hidden..., activation) → μ, γ = Dense(latent_size) each; decoder Dense(reversed
  hidden..., activation) → Dense(C·H·W). Presets vae_homl (HOML: 150-100, latent 10, selu, RMSprop) and
  vae_bdl (BDL: 128, latent 20, relu, Adam).
- "conv": Conv(c, 4, 2, same) → ReLU per entry of `conv_channels`, Dense to μ and γ; the decoder mirrors it
  with ConvT(4, 2, same) (height and width divisible by 2^depth). The default, and vae_conv (β 1).
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
    Activation, SampleGrids, TrainConfig, batch, dense_layers, epoch_session, interpolate, latent_tensor,
    load_data, make_optimizer, originals_over_reconstructions, positive, random_images, restore, setup,
)
from gans.datasets import Normalize
from gans.quality import evaluate_quality

# the config's types
Arch = Choice("Arch", "dense conv")
Reduction = Choice("Reduction", "sum mean")


@dataclass
class Config(TrainConfig):
    """Defaults: a convolutional β-VAE sized for a CPU (conv 32-64, latent 16, summed BCE, normalised β 0.08,
    Adam(1e-3), batch 64, 16 epochs: recognisable digits from the prior on MNIST and the 8×8 digits, see
    docs/running.md). HOML ch. 17's dense VAE is `model=vae_homl` (`homl17-vae-fashion`)."""

    # plus gans.common.TrainConfig's fields (documented there); the model's own defaults of some come first

    normalize: Optional[Normalize] = Normalize("01")
    epochs: int = 16
    arch: Arch = Arch.conv
    hidden: list[int] = field(default_factory=lambda: [150, 100])  # arch dense
    latent_size: int = 16
    activation: Activation = Activation.selu  # arch dense
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    recon_reduction: Reduction = Reduction.sum
    beta: float = 1.0
    beta_norm: Optional[float] = 0.08  # replaces beta (see the module doc); null: the KL weight is beta
    lr: float = 1e-3
    unit_pixels = "a VAE models pixels in [0, 1] as Bernoulli probabilities"

    def validate(self):
        super().validate()
        positive(self, "latent_size", "lr")
        if self.beta < 0:
            raise ValueError(f"model.beta must be >= 0, got {self.beta}")
        if self.beta_norm is not None:
            if self.beta_norm < 0:
                raise ValueError(f"model.beta_norm must be >= 0 or null, got {self.beta_norm}")
            if self.beta != 1.0:
                raise ValueError(f"model.beta={self.beta} and model.beta_norm={self.beta_norm} both set the KL weight; "
                                 f"set model.beta_norm=null to give beta itself")
        if self.arch == "conv" and not self.conv_channels:
            raise ValueError("model.arch=conv needs at least one entry in model.conv_channels")


# ----- networks -----
class VAE(nn.Module):
    """encode(x) -> (μ, log σ²); decode(z) -> logits (N, C, H, W); forward(x) -> (logits, μ, log σ²)."""

    def __init__(self, body: nn.Module, mu: nn.Module, logvar: nn.Module, decoder: nn.Module, latent_size: int):
        super().__init__()
        self.body, self.mu, self.logvar, self.decoder = body, mu, logvar, decoder
        self.latent_size = latent_size

    def encode(self, x):
        h = self.body(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + (0.5 * logvar).exp() * core.randn(*mu.shape, device=mu.device)
        return self.decode(z), mu, logvar


def build(cfg: Config, shape, n_classes: int = 0, normalize: str = "01") -> dict:
    """{"vae"} for images of `shape` (C, H, W), pixels in [0, 1] (n_classes and normalize complete the
    signature every model's `build` shares)."""
    c, h, w = shape
    if cfg.arch == "conv":
        factor = 2 ** len(cfg.conv_channels)
        if h % factor or w % factor:
            raise ConfigError(f"the conv VAE halves the image {len(cfg.conv_channels)} times, so height and width must "
                              f"be divisible by {factor}, got {h}×{w}; set dataset.image_size or change conv_channels")
        hs, ws, top = h // factor, w // factor, cfg.conv_channels[-1]
        enc, c_in = [], c
        for c_out in cfg.conv_channels:
            enc += [nn.Conv2d(c_in, c_out, 4, 2, padding="same"), nn.ReLU()]
            c_in = c_out
        body = nn.Sequential(*enc, nn.Flatten())
        features = top * hs * ws
        dec = [nn.Linear(cfg.latent_size, features), nn.ReLU(), nn.Unflatten(1, (top, hs, ws))]
        outs = list(reversed([c] + cfg.conv_channels[:-1]))
        for k, c_out in enumerate(outs):
            dec.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, padding="same"))
            if k < len(outs) - 1:
                dec.append(nn.ReLU())
            c_in = c_out
        decoder = nn.Sequential(*dec)
    else:
        acts = [cfg.activation] * len(cfg.hidden)
        enc, features = dense_layers(c * h * w, cfg.hidden, acts)
        body = nn.Sequential(nn.Flatten(), *enc)
        dec, width = dense_layers(cfg.latent_size, list(reversed(cfg.hidden)), acts)
        decoder = nn.Sequential(*dec, nn.Linear(width, c * h * w, init="keras"), nn.Unflatten(1, (c, h, w)))
    return {"vae": VAE(body, nn.Linear(features, cfg.latent_size, init="keras"),
                       nn.Linear(features, cfg.latent_size, init="keras"), decoder, cfg.latent_size)}


def kl_weight(args: Config, shape) -> float:
    """β: `beta`, or beta_norm·N/M (N pixels of `shape` (C, H, W), M = latent_size) when beta_norm is set."""
    if args.beta_norm is None:
        return args.beta
    return args.beta_norm * int(np.prod(shape)) / args.latent_size


def vae_loss(logits, x, mu, logvar, reduction: str = "sum", beta: float = 1.0):
    """(loss, reconstruction, KL), each averaged over the batch; with reduction "mean" all three are also
    divided by the number of pixels per image (see the module doc)."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").reshape(x.shape[0], -1).sum(axis=1).mean()
    kl = F.gaussian_kl(mu, logvar)
    if reduction == "mean":
        pixels = x.size // x.shape[0]
        recon, kl = recon / pixels, kl / pixels
    return recon + beta * kl, recon, kl


# ----- training -----
def train(cfg, run) -> dict:
    args, data, nets = setup(Config, build, cfg, run)
    model, device = nets["vae"], run.device
    opt = make_optimizer(cfg.optim, args, model.parameters(), args.lr)
    beta = kl_weight(args, data.shape)

    fixed_z = core.Generator(run.seed + 1).normal((args.grid_size, args.latent_size), device=device)
    shown = random_images(data.images, args.grid_size, run.seed)
    session, batches = epoch_session(run, cfg, args, data, "vae", decoder_sampler(model, device), model)
    session.track(vae=model, optimizer=opt, data=batches)
    grids = SampleGrids(session, data.normalize)

    for epoch in batches.epochs():
        for index in batches:
            x = batch(data.images, index, device)
            logits, mu, logvar = model(x)
            loss, recon, kl = vae_loss(logits, x, mu, logvar, args.recon_reduction, beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            batches.log({"losses/loss": loss, "losses/recon": recon, "losses/kl": kl})

        model.eval()
        with core.no_grad():
            grids.write("samples", model.decode(fixed_z).sigmoid(), epoch)
            mu, _ = model.encode(core.tensor(shown, device=device))  # reconstruct from the mean code
            grids.write("reconstructions", originals_over_reconstructions(shown, model.decode(mu).sigmoid()), epoch,
                        nrow=8)
        model.train()

    grids.gif("samples")
    grids.gif("reconstructions")
    model.eval()
    with core.no_grad():  # straight lines between the mean codes of pairs of the shown images
        pairs = min(8, len(shown) // 2)
        mu, _ = model.encode(core.tensor(shown[:2 * pairs], device=device))
        grids.still("latent_interpolation", model.decode(interpolate(mu[:pairs], mu[pairs:], 10)).sigmoid(), nrow=10)
    return session.finish(batches.losses())


def decoder_sampler(model: VAE, device="cpu"):
    """generate(n, rng) for the quality metric: decodings of n codes z ~ N(0, I) drawn with rng."""
    return lambda n, rng: model.decode(rng.normal((n, model.latent_size), device=device)).sigmoid()


# ----- hooks for scripts/evaluate.py -----
def sample(cfg, state: dict, n: int, seed: int = 0, z=None) -> np.ndarray:
    """n images in [0, 1], (n, C, H, W), decoded from z ~ N(0, I) (or the given `z`, (n, latent_size))."""
    args, nets, _ = restore(Config, build, cfg, state)
    z = core.Generator(seed).normal((n, args.latent_size)) if z is None else latent_tensor(z, args.latent_size)
    with core.no_grad():
        return nets["vae"].decode(z).sigmoid().numpy()


def evaluate(cfg, state: dict, run_dir=None) -> dict:
    """The sample-quality metrics of a checkpoint's decoder (see gans/quality.py)."""
    args, nets, _ = restore(Config, build, cfg, state)
    return evaluate_quality(decoder_sampler(nets["vae"]), load_data(cfg.dataset, args.normalize), args.quality,
                            seed=cfg.seed)
