"""GAN training speed: one DCGAN epoch and one WGAN-GP generator iteration, ours vs PyTorch CPU eager, one
BLAS/OpenMP thread on both sides. Run it where torch is installed (the benchmark venv):

    PYTHONPATH=. .bench/venv/bin/python scripts/bench_gan.py [--write] [--steps 5] [--repeat 3]

Rows (MNIST-sized data, 1×28×28 images in [−1, 1]; the pixel values do not change the work):
- DCGAN epoch: `model=dcgan`'s networks (the TensorFlow DCGAN tutorial of MTF ch. 10: G 2,330,944 and
  D 212,865 parameters), batch 128, the tutorial's training step (both losses from one forward pass, one
  Adam step each: `gans.gan.simultaneous_step`). The time of `steps` consecutive steps, best of `repeat`
  blocks, is scaled to an epoch of 60,000 images, i.e. 60,000 / 128 = 468.75 steps.
- WGAN-GP generator iteration: `model=wgan_gp`'s networks (MTF's WGAN networks, width 64, no batch norm
  in the critic), batch 64: 5 critic steps with the gradient penalty (double backprop) and 1 generator
  step (`gans.wgan.critic_step` / `generator_step`), best of `repeat` iterations.
The PyTorch side builds the same layers (Keras' "same" padding becomes the symmetric padding that gives
the same output size: k5 → 2 (+ output_padding 1 when transposed, stride 2), k4 → 1, k7 → 3) and takes
the same steps with torch.autograd. Ours and PyTorch's blocks alternate, so load from other processes on
a shared machine hits both alike. Target (issue 7): ≤ 1.5× PyTorch's time.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)) + "/..")
from scripts.benchutil import bench_parser, interleaved_best, machine, publish, ratio, single_thread  # noqa: E402

torch = single_thread()
import core  # noqa: E402
from gans import gan, wgan  # noqa: E402
from gans.common import make_optimizer  # noqa: E402

EPOCH_IMAGES = 60_000
DCGAN_BATCH, WGAN_BATCH, LATENT = 128, 64, 100


def _real_images(batch):
    """A fixed batch of MNIST-sized images in [-1, 1] (the same on both sides)."""
    return np.random.default_rng(0).uniform(-1, 1, (batch, 1, 28, 28)).astype(np.float32)


# ----- ours (on `device`: the GPU rows of scripts/bench_gpu.py use these too) -----
def _our_nets(family, opponent, device):
    """`family`'s default config, its generator and `opponent` network on `device`, and an optimizer each."""
    args = family.Config()
    nets = family.build(args, (1, 28, 28), 10, "tanh")
    G, D = nets["generator"].to(device), nets[opponent].to(device)
    return args, G, D, *(make_optimizer(None, args, net.parameters(), 1e-4) for net in (G, D))


def our_dcgan(device="cpu"):
    _, G, D, opt_g, opt_d = _our_nets(gan, "discriminator", device)  # model=dcgan: arch dcgan_tf, Adam(1e-4)
    real = core.tensor(_real_images(DCGAN_BATCH), device=device)

    def step():
        gan.simultaneous_step(G, D, opt_g, opt_d, real, None, core.randn(DCGAN_BATCH, LATENT, device=device), None)
    return step


def our_wgan_gp(device="cpu"):
    # model=wgan_gp: MTF networks without critic BN, λ 10, 5 critic steps, Adam(1e-4, (0, 0.9))
    args, G, C, opt_g, opt_c = _our_nets(wgan, "critic", device)
    real = core.tensor(_real_images(WGAN_BATCH), device=device)

    def iteration():
        for _ in range(args.n_critic):
            with core.no_grad():
                fake = G(core.randn(WGAN_BATCH, LATENT, device=device))
            wgan.critic_step(C, opt_c, real, fake, args)
        wgan.generator_step(G, C, opt_g, core.randn(WGAN_BATCH, LATENT, device=device))
    return iteration


# ----- PyTorch (on a torch device: "cpu" or "cuda") -----
def torch_dcgan_nets():
    """The TF tutorial's generator and discriminator in PyTorch (scripts/bench_gan_quality.py uses them too)."""
    nn = torch.nn
    bn = lambda c, cls=nn.BatchNorm2d: cls(c, momentum=0.01, eps=1e-3)  # noqa: E731  (Keras' BN)
    G = nn.Sequential(
        nn.Linear(LATENT, 256 * 7 * 7, bias=False), bn(256 * 7 * 7, nn.BatchNorm1d), nn.LeakyReLU(0.3),
        nn.Unflatten(1, (256, 7, 7)),
        nn.ConvTranspose2d(256, 128, 5, 1, padding=2, bias=False), bn(128), nn.LeakyReLU(0.3),
        nn.ConvTranspose2d(128, 64, 5, 2, padding=2, output_padding=1, bias=False), bn(64), nn.LeakyReLU(0.3),
        nn.ConvTranspose2d(64, 1, 5, 2, padding=2, output_padding=1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 5, 2, padding=2), nn.LeakyReLU(0.3), nn.Dropout(0.3),
        nn.Conv2d(64, 128, 5, 2, padding=2), nn.LeakyReLU(0.3), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 1))
    return G, D


def torch_dcgan(device="cpu"):
    G, D = (net.to(device) for net in torch_dcgan_nets())
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, eps=1e-7)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, eps=1e-7)
    real = torch.tensor(_real_images(DCGAN_BATCH), device=device)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step():
        fake = G(torch.randn(DCGAN_BATCH, LATENT, device=device))
        d_real, d_fake = D(real), D(fake)
        d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        g_loss = bce(d_fake, torch.ones_like(d_fake))
        d_grads = torch.autograd.grad(d_loss, list(D.parameters()), retain_graph=True)
        g_grads = torch.autograd.grad(g_loss, list(G.parameters()))
        for p, g in zip(list(D.parameters()) + list(G.parameters()), d_grads + g_grads):
            p.grad = g
        opt_d.step()
        opt_g.step()
    return step


def torch_wgan_gp(device="cpu"):
    nn = torch.nn
    C = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(64, 64, 4, 2, padding=1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1))
    G = nn.Sequential(
        nn.Linear(LATENT, 128 * 7 * 7), nn.LeakyReLU(0.2), nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 128, 4, 2, padding=1), nn.BatchNorm2d(128, momentum=0.01, eps=1e-3), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(128, 128, 4, 2, padding=1), nn.BatchNorm2d(128, momentum=0.01, eps=1e-3), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 1, 7, 1, padding=3), nn.Tanh())
    G, C = G.to(device), C.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.9), eps=1e-7)
    opt_c = torch.optim.Adam(C.parameters(), lr=1e-4, betas=(0.0, 0.9), eps=1e-7)
    real = torch.tensor(_real_images(WGAN_BATCH), device=device)

    def iteration():
        for _ in range(5):
            with torch.no_grad():
                fake = G(torch.randn(WGAN_BATCH, LATENT, device=device))
            t = torch.rand(WGAN_BATCH, 1, 1, 1, device=device)
            mixed = (t * real + (1 - t) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(C(mixed).sum(), mixed, create_graph=True)
            norm = ((grad * grad).reshape(WGAN_BATCH, -1).sum(1) + 1e-12).sqrt()
            loss = -C(real).mean() + C(fake).mean() + 10 * ((norm - 1) ** 2).mean()
            opt_c.zero_grad()
            loss.backward()
            opt_c.step()
        C.requires_grad_(False)
        g_loss = -C(G(torch.randn(WGAN_BATCH, LATENT, device=device))).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        C.requires_grad_(True)
    return iteration


# ----- the table -----
def table(steps, repeat):
    core.manual_seed(0)
    rows = []
    for label, ours, theirs, calls, scale in [
        (f"DCGAN epoch (MTF/TF tutorial nets, batch {DCGAN_BATCH}, 60,000 images)", our_dcgan, torch_dcgan, steps,
         EPOCH_IMAGES / DCGAN_BATCH / steps),
        (f"WGAN-GP generator iteration (5 critic steps with GP + 1 G step, batch {WGAN_BATCH})", our_wgan_gp,
         torch_wgan_gp, 1, 1.0),
    ]:
        fns = [ours()] + ([theirs()] if torch is not None else [])
        times = [t * scale for t in interleaved_best(fns, repeat, calls)]
        rows.append((label, times[0], times[1] if torch is not None else None))
        print(rows[-1], flush=True)
    seconds = lambda t: "n/a" if t is None else f"{t:.2f}"  # noqa: E731
    lines = [f"float32, one thread; {machine()}. Seconds (best of {repeat}; the DCGAN epoch scales {steps} timed "
             f"steps to {EPOCH_IMAGES / DCGAN_BATCH:g}).", "",
             "| row | ours (s) | PyTorch CPU eager (s) | ratio | target ≤ 1.5x |", "|---|---|---|---|---|"]
    verdict = lambda ours, theirs: "n/a" if theirs is None else ("met" if ours <= 1.5 * theirs else "missed")  # noqa: E731
    lines += [f"| {label} | {seconds(ours)} | {seconds(theirs)} | {ratio(ours, theirs) if theirs else 'n/a'} "
              f"| {verdict(ours, theirs)} |" for label, ours, theirs in rows]
    return "\n".join(lines)


def main():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="DCGAN steps per timed block")
    parser.add_argument("--repeat", type=int, default=3, help="timed blocks per row (the best is reported)")
    args = parser.parse_args()
    publish(args, "bench_gan", "## GAN training (MNIST-sized)", table(args.steps, args.repeat))


if __name__ == "__main__":
    main()
