"""GAN quality and end-to-end speed against PyTorch: the lab's DCGAN and WGAN-GP trained through the real
trainers (gans/gan.py, gans/wgan.py in a Run, with their TensorBoard scalars, sample grids, GIF and
checkpoints) next to the same networks trained by a plain PyTorch CPU loop that does the equivalent
logging, sample and checkpoint work; same architecture, hyperparameters, data (the MNIST test split,
loaded by gans/datasets.py) and number of updates, over 3 seeds, one thread each side. Both generators are
scored by the lab's quality metric (gans/quality.py: Fréchet distance on its classifier's features and the
class coverage exp(entropy of the predicted classes)); the PyTorch samples go through the same function as
numpy arrays. Run it in the benchmark environment (torch is never a dependency of the lab):

    OMP_NUM_THREADS=1 PYTHONPATH=. /work/benchenv/bin/python scripts/bench_gan_quality.py [--write] [--quick]

Rows, each with its architecture pinned here (not the configs' defaults):
- timing: the TensorFlow DCGAN tutorial (arch dcgan_tf, MTF ch. 10) at batch 256, simultaneous updates,
  Adam(1e-4); 2 epochs of 10 updates on the first 2,560 test images (a grid and a checkpoint per epoch).
  Its updates are too few for quality, so only its time per update is compared.
- DCGAN quality: the DCGAN paper's recipe (arch dcgan, width 32), batch 64, Adam(2e-4, β1 0.5), simultaneous
  updates, 4 epochs of the 10,000 test images (156 updates each: 624).
- WGAN-GP quality: MTF's WGAN networks (arch wgan_mtf, width 16, no critic norm), batch 64, λ 10, 5 critic
  steps per generator step, Adam(1e-4, β (0, 0.9)); 1 epoch (156 generator updates, 780 critic steps).
Time per update is the wall clock of the whole training call (set-up, data, logging, grids, checkpoints;
the quality scoring afterwards excluded on both sides) over its generator updates. Each run is a fresh
process; the lab's and PyTorch's runs alternate, so load from other processes hits both alike.
"""
import argparse
import json
import math
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)) + "/..")
from scripts.benchutil import bench_parser, load_note, machine, measure, publish, ratio, single_thread  # noqa: E402

DATA_ROOT = str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
LATENT = 100
EPOCHS_DCGAN, EPOCHS_WGAN = 4, 1

# Each row's settings, as the lab's Hydra overrides; the PyTorch side reads the same numbers from ROWS.
ROWS = {
    "timing": {"model": "dcgan", "arch": "dcgan_tf", "batch_size": 256, "lr": 1e-4, "betas": [0.9, 0.999],
               "epochs": 2, "limit": 2560},
    "dcgan": {"model": "dcgan", "arch": "dcgan", "width": 32, "batch_size": 64, "lr": 2e-4, "betas": [0.5, 0.999],
              "epochs": EPOCHS_DCGAN, "limit": None},
    "wgan_gp": {"model": "wgan_gp", "arch": "wgan_mtf", "width": 16, "batch_size": 64, "lr": 1e-4,
                "betas": [0.0, 0.9], "epochs": EPOCHS_WGAN, "limit": None, "n_critic": 5, "gp_weight": 10.0},
}
QUICK = {"timing": {"epochs": 1, "limit": 512}, "dcgan": {"epochs": 1, "limit": 640},
         "wgan_gp": {"epochs": 1, "limit": 320}}
COMMON = {"eps": 1e-7, "grid_size": 16, "log_every": 10}
QUALITY = {"samples": 2000, "classifier_split": "test"}


def row_settings(row, quick):
    return {**ROWS[row], **COMMON, **(QUICK[row] if quick else {})}


def dataset_config(s):
    return {"name": "mnist", "root": os.environ.get("LAB_DATA_DIR", DATA_ROOT), "split": "test", "normalize": "tanh",
            "classes": None, "image_size": None, "limit": s["limit"], "download": False}


def quality_config(quick):
    from gans.quality import QualityConfig
    return QualityConfig(samples=500 if quick else QUALITY["samples"], classifier_split=QUALITY["classifier_split"],
                         classifier_limit=3000 if quick else None)


def score(generate, s, seed, quick):
    """The lab's quality metric of `generate(n, rng)` against the full test split (whatever the row trained on)."""
    from gans.common import load_data
    from gans.quality import evaluate_quality
    data = load_data({**dataset_config(s), "limit": None}, "tanh")
    metrics = evaluate_quality(generate, data, quality_config(quick), seed=seed)
    return {"frechet": metrics["quality/frechet_distance"], "coverage": math.exp(metrics["quality/class_entropy"])}


# ----- the lab: the real trainer in a Run -----
def lab_overrides(row, s, run_quality=False):
    over = [f"model={s['model']}", f"model.arch={s['arch']}", f"model.batch_size={s['batch_size']}",
            f"model.epochs={s['epochs']}", f"model.latent_size={LATENT}", f"model.betas=[{s['betas'][0]},{s['betas'][1]}]",
            f"model.eps={s['eps']}", f"model.grid_size={s['grid_size']}", f"model.log_every={s['log_every']}",
            "model.normalize=tanh", f"model.quality.enabled={run_quality}", "model.optimizer=adam"]
    if "width" in s:
        over.append(f"model.width={s['width']}")
    if s["model"] == "dcgan":
        over += [f"model.lr_g={s['lr']}", f"model.lr_d={s['lr']}", "model.update=simultaneous", "model.noise=normal",
                 "model.conditional=false"]
    else:
        over += [f"model.lr_g={s['lr']}", f"model.lr_c={s['lr']}", "model.penalty=gp", "model.critic_norm=none",
                 f"model.n_critic={s['n_critic']}", f"model.gp_weight={s['gp_weight']}"]
    dataset = dataset_config(s)
    over += ["dataset=mnist"] + [f"dataset.{k}={'null' if v is None else v}" for k, v in dataset.items() if k != "name"]
    return over


def lab_run(row, seed, quick):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import core
    from core.runtime.run import Run
    from scripts import trainers
    from scripts.train import CONF_DIR, register_configs
    import tensorboardX  # noqa: F401  (imports torch where it is installed: before the clock, as on the PyTorch side)
    s = row_settings(row, quick)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=lab_overrides(row, s) + [f"seed={seed}"])
    trainer = trainers.options("model")[s["model"]]
    with tempfile.TemporaryDirectory() as run_dir:
        with Run(run_dir, config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), seed=seed,
                 quiet=True) as run:
            start, cpu = time.perf_counter(), time.process_time()
            metrics = trainer.train(cfg, run)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        state = core.load(pathlib.Path(run_dir) / "checkpoints" / "last.ckpt")
    updates = int(metrics["train/steps"])
    result = {"seconds": seconds, "cpu_seconds": cpu, "updates": updates}
    if row != "timing":
        args, nets, _ = trainer.restore(trainer.Config, trainer.build, cfg, state)
        result.update(score(trainer.generator_sampler(nets["generator"], "normal"), s, seed, quick))
    return result


# ----- PyTorch: the same networks and steps in a plain loop -----
def torch_nets(torch, row, s):
    """(G, D) of the row's architecture with the lab's initialisation: Keras' glorot-uniform and zero biases
    where the lab says init="keras", N(0, 0.02) kernels where its arch does (DCGAN paper, MTF's WGAN)."""
    nn = torch.nn
    keras_bn = lambda c, cls=nn.BatchNorm2d: cls(c, momentum=0.01, eps=1e-3)  # noqa: E731
    if row == "timing":
        from scripts.bench_gan import torch_dcgan_nets
        G, D = torch_dcgan_nets()
    elif row == "dcgan":  # k4 s2 "same" is padding 1
        k = s["width"]
        G = nn.Sequential(
            nn.Linear(LATENT, 2 * k * 49, bias=False), nn.BatchNorm1d(2 * k * 49), nn.ReLU(), nn.Unflatten(1, (2 * k, 7, 7)),
            nn.ConvTranspose2d(2 * k, k, 4, 2, padding=1, bias=False), nn.BatchNorm2d(k), nn.ReLU(),
            nn.ConvTranspose2d(k, 1, 4, 2, padding=1), nn.Tanh())
        D = nn.Sequential(
            nn.Conv2d(1, k, 4, 2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(k, 2 * k, 4, 2, padding=1, bias=False), nn.BatchNorm2d(2 * k), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * k * 49, 1))
    else:  # wgan_mtf, no critic norm; k7 s1 "same" is padding 3
        k = s["width"]
        G = nn.Sequential(
            nn.Linear(LATENT, 2 * k * 49), nn.LeakyReLU(0.2), nn.Unflatten(1, (2 * k, 7, 7)),
            nn.ConvTranspose2d(2 * k, 2 * k, 4, 2, padding=1), keras_bn(2 * k), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * k, 2 * k, 4, 2, padding=1), keras_bn(2 * k), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * k, 1, 7, 1, padding=3), nn.Tanh())
        D = nn.Sequential(
            nn.Conv2d(1, k, 4, 2, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(k, k, 4, 2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(k * 49, 1))
    for m in list(G.modules()) + list(D.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            # dcgan: every kernel N(0, 0.02); wgan_mtf: all but the critic's output layer; dcgan_tf: none
            if row == "dcgan" or row == "wgan_gp" and getattr(m, "out_features", 2) > 1:
                nn.init.normal_(m.weight, 0.0, 0.02)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return G, D


def torch_run(row, seed, quick):
    torch = single_thread()
    from PIL import Image
    from tensorboardX import SummaryWriter

    from core.runtime.logger import make_grid
    from gans.common import load_data
    s = row_settings(row, quick)
    torch.manual_seed(seed)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    with tempfile.TemporaryDirectory() as run_dir:
        start, cpu = time.perf_counter(), time.process_time()
        images = load_data(dataset_config(s), "tanh").images
        G, D = torch_nets(torch, row, s)
        opt_g = torch.optim.Adam(G.parameters(), lr=s["lr"], betas=tuple(s["betas"]), eps=s["eps"])
        opt_d = torch.optim.Adam(D.parameters(), lr=s["lr"], betas=tuple(s["betas"]), eps=s["eps"])
        writer = SummaryWriter(run_dir)
        rng = np.random.default_rng([seed, 1])
        fixed_z = torch.randn(s["grid_size"], LATENT, generator=torch.Generator().manual_seed(seed + 1))
        batch, step, frames = s["batch_size"], 0, []

        def dcgan_step(real):
            fake = G(torch.randn(batch, LATENT))
            fake_leaf = fake.detach().requires_grad_(True)
            d_fake = D(fake_leaf)
            d_real = D(real)
            d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
            g_loss = bce(d_fake, torch.ones_like(d_fake))
            opt_d.zero_grad()
            opt_g.zero_grad()
            d_loss.backward(retain_graph=True)
            D.requires_grad_(False)
            (fake_grad,) = torch.autograd.grad(g_loss, [fake_leaf])
            D.requires_grad_(True)
            fake.backward(fake_grad)
            opt_d.step()
            opt_g.step()
            return {"losses/d": d_loss.detach(), "losses/g": g_loss.detach()}

        def wgan_step():
            total = torch.zeros(())
            for _ in range(s["n_critic"]):
                real = torch.from_numpy(images[rng.choice(len(images), batch, replace=False)])
                with torch.no_grad():
                    fake = G(torch.randn(batch, LATENT))
                t = torch.rand(batch, 1, 1, 1)
                mixed = (t * real + (1 - t) * fake).requires_grad_(True)
                (grad,) = torch.autograd.grad(D(mixed).sum(), mixed, create_graph=True)
                gp = (((grad * grad).reshape(batch, -1).sum(1) + 1e-12).sqrt() - 1).pow(2).mean()
                loss = -D(real).mean() + D(fake).mean() + s["gp_weight"] * gp
                opt_d.zero_grad()
                loss.backward()
                opt_d.step()
                total += loss.detach() / s["n_critic"]
            D.requires_grad_(False)
            g_loss = -D(G(torch.randn(batch, LATENT))).mean()
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            D.requires_grad_(True)
            return {"losses/critic": total, "losses/g": g_loss.detach()}

        def grid(name, z, nrow=None):
            G.eval()
            with torch.no_grad():
                tiles = make_grid((G(z).numpy() + 1) / 2, nrow=nrow, value_range=(0.0, 1.0))
            G.train()
            Image.fromarray(tiles[:, :, 0]).save(f"{run_dir}/{name}.png")
            writer.add_image(f"samples/{name}", tiles, step, dataformats="HWC")
            return tiles

        per_epoch = len(images) // batch
        for epoch in range(s["epochs"]):
            order = rng.permutation(len(images))
            for i in range(per_epoch):
                if row == "wgan_gp":
                    losses = wgan_step()
                else:
                    losses = dcgan_step(torch.from_numpy(images[order[i * batch:(i + 1) * batch]]))
                step += 1
                if step % s["log_every"] == 0 or step == 1:
                    for tag, value in losses.items():
                        value = value.item()
                        if not math.isfinite(value):
                            raise RuntimeError(f"{tag} is {value} at step {step}")
                        writer.add_scalar(tag, value, step)
            frames.append(Image.fromarray(grid(f"fixed_noise_epoch{epoch + 1:04d}", fixed_z)[:, :, 0]))
            state = {"generator": G.state_dict(), "discriminator": D.state_dict(), "g_optimizer": opt_g.state_dict(),
                     "d_optimizer": opt_d.state_dict(), "step": step, "rng": torch.get_rng_state()}
            torch.save(state, f"{run_dir}/ckpt.tmp")
            os.replace(f"{run_dir}/ckpt.tmp", f"{run_dir}/ckpt_{step}.ckpt")
        frames[0].save(f"{run_dir}/fixed_noise.gif", save_all=True, append_images=frames[1:], duration=250, loop=0)
        pairs = min(8, s["grid_size"] // 2)
        w = torch.linspace(0, 1, 10).reshape(1, 10, 1)
        path = fixed_z[:pairs, None] * (1 - w) + fixed_z[pairs:2 * pairs, None] * w
        grid("latent_interpolation", path.reshape(-1, LATENT), nrow=10)
        writer.close()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = {"seconds": seconds, "cpu_seconds": cpu, "updates": step}
    if row != "timing":
        G.eval()

        def generate(n, rng):  # the metric's rng seeds torch's own noise
            with torch.no_grad():
                z = torch.randn(n, LATENT, generator=torch.Generator().manual_seed(int(rng.integers(0, 2 ** 31).item())))
                return G(z).numpy()
        result.update(score(generate, s, seed, quick))
    return result


# ----- the table -----
def table(results, rows, seeds, quick):
    def mean_std(values, digits):
        spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.{digits}f}{spread}"

    def per_update(runs, clock):
        return [r[clock] / r["updates"] for r in runs]

    lines = [f"float32, one thread each side, seeds {seeds}; {machine()}.{load_note()}", "",
             "| row | updates | lab s/update | PyTorch s/update | wall ratio | CPU-time ratio | target ≤ 1.3x | "
             "lab Fréchet ↓ | PyTorch Fréchet ↓ | lab class coverage | PyTorch class coverage | quality target |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    labels = {"timing": "TF-tutorial DCGAN, batch 256 (timing only)", "dcgan": "DCGAN (paper recipe, width 32), batch 64",
              "wgan_gp": "WGAN-GP (MTF nets, width 16), batch 64, 5 critic steps"}
    for row in rows:
        lab, peer = results[f"lab-{row}"], results[f"torch-{row}"]
        wall = [statistics.mean(per_update(runs, "seconds")) for runs in (lab, peer)]
        cpu = [statistics.mean(per_update(runs, "cpu_seconds")) for runs in (lab, peer)]
        cells = [labels[row], str(lab[0]["updates"]), mean_std(per_update(lab, "seconds"), 3),
                 mean_std(per_update(peer, "seconds"), 3), ratio(*wall), ratio(*cpu),
                 "met" if cpu[0] <= 1.3 * cpu[1] else "missed"]
        if row == "timing":
            cells += [""] * 5
        else:
            fd_lab, fd_peer = [r["frechet"] for r in lab], [r["frechet"] for r in peer]
            spread = statistics.stdev(fd_peer) if len(fd_peer) > 1 else 0.0
            met = statistics.mean(fd_lab) <= statistics.mean(fd_peer) + spread
            cells += [mean_std(fd_lab, 2), mean_std(fd_peer, 2), mean_std([r["coverage"] for r in lab], 2),
                      mean_std([r["coverage"] for r in peer], 2), "met" if met else "missed"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Quality: the lab's metric (gans/quality.py) on 2,000 samples against 2,000 test images; Fréchet "
              "distance on its classifier's features (lower is better, not comparable with Inception FID), class "
              "coverage exp(entropy of the predicted classes) out of 10. Quality target: the lab's mean Fréchet "
              "distance at most PyTorch's mean plus its seed standard deviation. Time: wall clock of the whole "
              "training call over its generator updates (a WGAN-GP update is 5 critic steps and one generator "
              "step), mean ± std over seeds (wall clock); the ratios are of the means, by wall clock and by the "
              "process's CPU time, which leaves out waiting for a core on a shared machine: the target is judged "
              "on CPU time."]
    if quick:
        lines.insert(0, "(--quick: a smoke test, too few updates for meaningful numbers)\n")
    return "\n".join(lines)


def main():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="a smoke test: one seed, a few updates per row")
    parser.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process of `measure`: one run, its result as JSON on the last line
        side, row = args.one.split("-", 1)
        print(json.dumps((lab_run if side == "lab" else torch_run)(row, args.seeds[0], args.quick)))
        return
    if args.quick:
        args.seeds = args.seeds[:1]
    from gans.quality import get_classifier
    get_classifier(dataset_config(row_settings("dcgan", args.quick)), quality_config(args.quick), (1, 28, 28))
    results = {}
    for seed in args.seeds:  # interleaved: lab, PyTorch, lab, PyTorch, ...
        for row in args.rows:
            for side in ("lab", "torch"):
                kind = f"{side}-{row}"
                extra = ["--quick"] if args.quick else []
                results.setdefault(kind, []).append(measure(__file__, kind, seed, extra=extra))
                print(kind, seed, results[kind][-1], flush=True)
    publish(args, "bench_gan_quality", "## GAN quality and end-to-end speed against PyTorch",
            table(results, args.rows, args.seeds, args.quick))


if __name__ == "__main__":
    main()
