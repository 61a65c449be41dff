"""Wasserstein GANs: WGAN with weight clipping (MTF ch. 10) and WGAN-GP (BDL ch. 13; Gulrajani et al.).

    python scripts/train.py model=wgan_gp dataset=mnist   # small, quick defaults
    python scripts/train.py model=wgan_mtf dataset=mnist dataset.classes=[7]   # MTF ch. 10's WGAN

Trained in epochs (`checkpoint_every` counts epochs; the bar and the logs count update steps), see
gans/common.py.

The critic outputs an unbounded score C(x). Per generator step the critic is updated `n_critic` times on
random real batches and fresh fakes; its loss is mean C(fake) − mean C(real) (MTF writes it as mean(y·C(x))
with labels −1 for real and +1 for fake: the same thing), and the generator's is −mean C(G(z)).

- penalty "clip" (WGAN): after every critic update the critic's weights are clipped to ±`clip_value`;
  `clip_scope` "conv" clips only the conv kernels, as MTF does (GM-03), "all" every critic parameter.
  `separate_real_fake` reproduces MTF's schedule: each critic iteration is one update on half a batch
  of reals and a second update on half a batch of fakes. RMSprop(5e-5) in the preset. `n_critic_warmup`
  (the default `wgan` config: 100) is the paper's warm-up of the critic: that many critic steps for the
  first 25 generator steps and every 500th.
- penalty "gp" (WGAN-GP, the default): loss + λ·mean((‖∇C(x̂)‖₂ − 1)²) at random points x̂ between real and
  fake images; the critic's update differentiates through that input gradient (double backprop). λ = 10,
  5 critic steps and no batch norm in the critic (`critic_norm` "none" or "layer"); the paper's Adam(1e-4,
  β = (0, 0.9)) in wgan_gp_mtf, Adam(5e-4, β = (0.5, 0.9)) by default.

Architectures (`arch`):
- "wgan_mtf" (MTF ch. 10, sized by `width` k, the book's k = 64): critic Conv(k, 4, 2) → norm → LReLU(0.2) →
  Conv(k, 4, 2) → norm → LReLU(0.2) → Dense(1); generator Dense(2k·h/4·w/4) → LReLU(0.2) → ConvT(2k, 4, 2) →
  BN → LReLU → ConvT(2k, 4, 2) → BN → LReLU → Conv(C, 7, 1, same) → tanh. Kernels N(0, 0.02). The book's
  critic norm is batch norm.
- "dcgan", "dcgan_bdl": the networks of gans/gan.py (BDL's WGAN-GP reuses its DCGAN), with `critic_norm`
  in place of the critic's batch norms.

Batch norm in a critic (MTF, BDL): with `bn_eval` (default) its layers use their moving statistics
while the generator trains through the frozen critic (Keras' frozen-BN behaviour, GM-04) and inside
the gradient penalty (BDL's text, GM-15). With `eval_fakes` the critic's fakes come from the generator
with its own BN moving statistics, as MTF's generator.predict makes them; with batch statistics MTF's
critic scores stall near a third of the book's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import core
from core import nn
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError
from gans.common import (
    Norm, SampleGrids, TrainConfig, batch, epoch_session, eval_mode, interpolate, keras_batch_norm, latent_tensor,
    load_data, make_optimizer, norm_layer, output_activation, positive, restore, setup,
)
from gans.datasets import Normalize
from gans.gan import (
    Discriminator, Generator, check_generator, discriminator_net, draw_noise, frozen, generator_net,
    generator_sampler,
)
from gans.quality import evaluate_quality, to_unit_range

# the config's types
Arch = Choice("Arch", "wgan_mtf dcgan dcgan_bdl")
Penalty = Choice("Penalty", "gp clip")
ClipScope = Choice("ClipScope", "conv all")


@dataclass
class Config(TrainConfig):
    """Defaults: WGAN-GP (λ 10, 5 critic steps, no batch norm in the critic) with the small DCGAN networks of
    gans/gan.py at width 16, Adam(5e-4, β = (0.5, 0.9)), batch 64, sized so MNIST digits appear within
    minutes on two CPU cores (see docs/running.md); the books' networks are the named configs (wgan_gp_mtf,
    wgan_mtf, wgan_gp_bdl)."""

    # plus gans.common.TrainConfig's fields (documented there); the model's own defaults of some come first

    epochs: int = 3  # MNIST's 60,000 images: the bar at about 1.3 epochs, the whole run within ~10 CPU minutes
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    eps: float = 1e-8
    normalize: Optional[Normalize] = Normalize.tanh
    arch: Arch = Arch.dcgan
    latent_size: int = 100
    width: int = 16
    critic_norm: Norm = Norm.none
    penalty: Penalty = Penalty.gp
    gp_weight: float = 10.0
    clip_value: float = 0.01
    clip_scope: ClipScope = ClipScope.conv  # "conv": conv kernels only (MTF); "all": every critic parameter
    n_critic: int = 5
    # the WGAN paper's critic warm-up: this many critic steps for each of the first WARMUP_G_STEPS generator
    # steps and for every WARMUP_EVERY-th one (the paper: 100), so the critic catches up with the generator;
    # 0: always n_critic
    n_critic_warmup: int = 0
    separate_real_fake: bool = False
    bn_eval: bool = True
    eval_fakes: bool = False  # the critic's fakes from G in inference mode (Keras' generator.predict, MTF)
    lr_g: float = 5e-4
    lr_c: float = 5e-4

    def validate(self):
        super().validate()
        positive(self, "latent_size", "width", "n_critic", "lr_g", "lr_c", "clip_value")
        if self.n_critic_warmup < 0:
            raise ValueError(f"model.n_critic_warmup must be >= 0 (0: no warm-up), got {self.n_critic_warmup}")
        if self.gp_weight < 0:
            raise ValueError(f"model.gp_weight must be >= 0, got {self.gp_weight}")
        if self.penalty == "gp" and self.critic_norm == "batch" and not self.bn_eval:
            raise ValueError("a batch-norm critic in training mode mixes the images of a batch, which breaks the "
                             "per-image gradient penalty; set model.bn_eval=true or model.critic_norm=none/layer")
        if self.separate_real_fake and self.penalty != "clip":
            raise ValueError("model.separate_real_fake (MTF's schedule) goes with model.penalty=clip")
        if self.separate_real_fake and self.batch_size < 4:
            raise ValueError("model.separate_real_fake updates on half batches; model.batch_size must be at least 4")


# ----- networks -----
def _normal_init(module):
    """MTF's RandomNormal(stddev=0.02) kernels (biases stay 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or (isinstance(m, nn.Linear) and m.out_features > 1):
            nn.init.normal_(m.weight, 0.0, 0.02)
    return module


def _mtf_nets(cfg, shape, normalize):
    c, h, w = shape
    if h % 4 or w % 4:
        raise ConfigError(f"arch 'wgan_mtf' needs image height and width divisible by 4, got {h}×{w}; "
                          "set dataset.image_size to e.g. 16, 28 or 32")
    h4, w4, k = h // 4, w // 4, cfg.width
    critic = nn.Sequential(
        nn.Conv2d(c, k, 4, 2, padding="same", init="keras"),
        norm_layer(cfg.critic_norm, k, (h // 2, w // 2), keras=True), nn.LeakyReLU(0.2),
        nn.Conv2d(k, k, 4, 2, padding="same", init="keras"), norm_layer(cfg.critic_norm, k, (h4, w4), keras=True),
        nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(k * h4 * w4, 1, init="keras"))
    generator = nn.Sequential(
        nn.Linear(cfg.latent_size, 2 * k * h4 * w4, init="keras"), nn.LeakyReLU(0.2), nn.Unflatten(1, (2 * k, h4, w4)),
        nn.ConvTranspose2d(2 * k, 2 * k, 4, 2, padding="same", init="keras"), keras_batch_norm(2 * k),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(2 * k, 2 * k, 4, 2, padding="same", init="keras"), keras_batch_norm(2 * k),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * k, c, 7, 1, padding="same", init="keras"), output_activation(normalize))
    return _normal_init(generator), _normal_init(critic)


def build(cfg: Config, shape, n_classes: int, normalize: str) -> dict:
    """{"generator", "critic"} for images of `shape` (C, H, W) with pixels in range `normalize`."""
    if cfg.arch == "wgan_mtf":
        g_net, c_net = _mtf_nets(cfg, shape, normalize)
    else:
        g_net = generator_net(cfg, shape, cfg.latent_size, output_activation(normalize))
        c_net = discriminator_net(cfg, shape, 0, norm=cfg.critic_norm)
    generator = Generator(g_net, cfg.latent_size)
    check_generator(generator, shape, cfg.arch)
    return {"generator": generator, "critic": Discriminator(c_net)}


def gradient_penalty(critic, real, fake, t=None) -> core.Tensor:
    """mean over the batch of (‖∇ₓ C(x̂)‖₂ − 1)² at x̂ = t·real + (1 − t)·fake, with t ~ U[0, 1] per image
    unless given. The result is differentiable w.r.t. the critic's weights (create_graph=True)."""
    if t is None:
        t = core.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device)
    mixed = (t * real.detach() + (1 - t) * fake.detach()).detach().requires_grad_(True)
    with core.enable_grad():  # the penalty is made of a gradient, even where the caller records no graph
        (grad,) = core.grad(critic(mixed).sum(), [mixed], create_graph=True)
        # the tiny constant keeps the norm differentiable where the gradient vanishes (sqrt'(0) = inf)
        norm = ((grad * grad).reshape(real.shape[0], -1).sum(axis=1) + 1e-12).sqrt()
        return ((norm - 1) ** 2).mean()


def clipped_parameters(critic: nn.Module, scope: str) -> list:
    if scope == "all":
        return list(critic.parameters())
    return [m.weight for m in critic.modules() if isinstance(m, nn.Conv2d)]


def clip_(params, value: float):
    for p in params:
        p.xp.clip(p.data, -value, value, out=p.data)
        p._version += 1


def critic_update(C, opt_c, loss, to_clip=(), clip_value=0.01):
    """One critic optimizer step on `loss`, then weight clipping of `to_clip`; returns the loss."""
    opt_c.zero_grad()
    loss.backward()
    opt_c.step()
    clip_(to_clip, clip_value)
    return loss


def critic_step(C, opt_c, real, fake, args, to_clip=(), bn_eval=False):
    """One critic step on mean C(fake) − mean C(real) (+ λ·gradient penalty when args.penalty is "gp").
    Returns (−mean C(real), mean C(fake), penalty or None)."""
    real_loss, fake_loss = -C(real).mean(), C(fake).mean()
    loss, gp = real_loss + fake_loss, None
    if args.penalty == "gp":
        with eval_mode(C, bn_eval):
            gp = gradient_penalty(C, real, fake)
        loss = loss + args.gp_weight * gp
    critic_update(C, opt_c, loss, to_clip, args.clip_value)
    return real_loss, fake_loss, gp


def generator_step(G, C, opt_g, z, bn_eval=False):
    """One generator step on −mean C(G(z)) through the frozen critic; returns that loss."""
    with frozen(C), eval_mode(C, bn_eval):
        g_loss = -C(G(z)).mean()
        opt_g.zero_grad()
        g_loss.backward()
    opt_g.step()
    return g_loss


# ----- training -----
WARMUP_G_STEPS, WARMUP_EVERY = 25, 500  # the schedule of the WGAN paper's reference code (Arjovsky et al.)


def critic_steps(args, g_step: int) -> int:
    """Critic steps before generator step `g_step` (counted from 0 over the whole run)."""
    if args.n_critic_warmup and (g_step < WARMUP_G_STEPS or g_step % WARMUP_EVERY == 0):
        return args.n_critic_warmup
    return args.n_critic


def train(cfg, run) -> dict:
    args, data, nets = setup(Config, build, cfg, run)
    G, C = nets["generator"], nets["critic"]
    opt_g = make_optimizer(cfg.optim, args, G.parameters(), args.lr_g)
    opt_c = make_optimizer(cfg.optim, args, C.parameters(), args.lr_c)
    to_clip = clipped_parameters(C, args.clip_scope) if args.penalty == "clip" else []
    bn_eval = args.bn_eval and args.critic_norm == "batch"
    device = run.device

    fixed_z = draw_noise("normal", args.grid_size, args.latent_size, core.Generator(run.seed + 1), device)
    session, batches = epoch_session(run, cfg, args, data, "wgan", generator_sampler(G, "normal", device), G)
    session.track(generator=G, critic=C, g_optimizer=opt_g, c_optimizer=opt_c, data=batches)
    grids = SampleGrids(session, data.normalize)
    size = min(args.batch_size, len(data))
    half = size // 2

    def fakes(n):
        with core.no_grad(), eval_mode(G, args.eval_fakes):
            return G(draw_noise("normal", n, args.latent_size, device=device))

    for epoch in batches.epochs():
        # one generator step per batch-sized share of the data; the critic draws its own random batches
        for _ in batches.steps():
            totals = {"losses/critic_real": 0.0, "losses/critic_fake": 0.0, "losses/gp": 0.0}
            n_critic = critic_steps(args, session.steps)  # the session's count is restored on resume
            for _ in range(n_critic):
                gp = None
                if args.separate_real_fake:  # MTF: an update on half a batch of reals, then one on fakes
                    real = batch(data.images, batches.random_batch(half), device)
                    real_loss = critic_update(C, opt_c, -C(real).mean(), to_clip, args.clip_value)
                    fake_loss = critic_update(C, opt_c, C(fakes(half)).mean(), to_clip, args.clip_value)
                else:
                    real = batch(data.images, batches.random_batch(size), device)
                    real_loss, fake_loss, gp = critic_step(C, opt_c, real, fakes(size), args, to_clip, bn_eval)
                # float64 sums where the losses are (on a GPU no critic step waits for the host)
                totals["losses/critic_real"] += real_loss.detach().double() / n_critic
                totals["losses/critic_fake"] += fake_loss.detach().double() / n_critic
                if gp is not None:
                    totals["losses/gp"] += gp.detach().double() / n_critic
            g_loss = generator_step(G, C, opt_g, draw_noise("normal", size, args.latent_size, device=device), bn_eval)

            critic_terms = totals["losses/critic_real"] + totals["losses/critic_fake"]
            losses = {"losses/critic": critic_terms + args.gp_weight * totals["losses/gp"], **totals,
                      "losses/g": g_loss,
                      # the critic's estimate of the Wasserstein distance (comparable only within a run)
                      "losses/wasserstein": -critic_terms}
            if args.penalty != "gp":
                del losses["losses/gp"]
            batches.log(losses)

        G.eval()
        with core.no_grad():
            grids.write("fixed_noise", G(fixed_z), epoch)
        G.train()

    grids.gif("fixed_noise")
    G.eval()
    with core.no_grad():
        pairs = min(8, args.grid_size // 2)
        grids.still("latent_interpolation", G(interpolate(fixed_z[:pairs], fixed_z[pairs:2 * pairs], 10)), nrow=10)
    return session.finish(batches.losses())


# ----- hooks for scripts/evaluate.py -----
def sample(cfg, state: dict, n: int, seed: int = 0, z=None) -> np.ndarray:
    """n images in [0, 1], (n, C, H, W), from a checkpoint's generator; `z` (n, latent_size) replaces the noise."""
    args, nets, normalize = restore(Config, build, cfg, state)
    if z is None:
        z = draw_noise("normal", n, args.latent_size, core.Generator(seed))
    else:
        z = latent_tensor(z, args.latent_size)
    with core.no_grad():
        return to_unit_range(nets["generator"](z), normalize)


def evaluate(cfg, state: dict, run_dir=None) -> dict:
    """The sample-quality metrics of a checkpoint's generator (see gans/quality.py)."""
    args, nets, _ = restore(Config, build, cfg, state)
    return evaluate_quality(generator_sampler(nets["generator"], "normal"), load_data(cfg.dataset, args.normalize),
                            args.quality, seed=cfg.seed)
