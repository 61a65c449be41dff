"""Generative models (gans/): parameter counts of the books' architectures, the gradient penalty, the VAE
and sparsity losses, learning on real MNIST (quality improves over the untrained model), resume,
divergence and bad-input errors. Models are built and trained from the composed Hydra configs."""
import itertools
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import core
from core import nn, optim
from core.ops.conv import conv2d
from core.runtime.run import ConfigError, NonFiniteError, Run
from scripts import trainers
from gans import autoencoders, gan, vae, wgan
from core.runtime.config import config_object, plain
from gans.common import Batches, load_data, value_range
from scripts.train import CONF_DIR, register_configs

register_configs()


def compose_config(name, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[f"model={name}", *overrides])


@pytest.fixture(scope="module")
def quality_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("quality_cache"))


@pytest.fixture
def mnist(mnist_root, quality_cache):
    """Overrides for the real MNIST test set, with a quality classifier trained on its first 3,000 images (the
    test split: the only one there)."""
    return ["dataset=mnist", f"dataset.root={mnist_root}", "dataset.split=test", "model.quality.samples=500",
            "model.quality.classifier_limit=3000",
            f"model.quality.cache_dir={quality_cache}"]


def train(name, run_dir, *overrides, resume=None):
    cfg = compose_config(name, *overrides)
    OmegaConf.to_object(cfg.model).validate()
    with Run(run_dir, config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), seed=cfg.seed, quiet=True,
             resume=resume) as run:
        return cfg, trainers.options("model")[name].train(cfg, run)


def built(name, shape=(1, 28, 28), *overrides):
    cfg = compose_config(name, "dataset=mnist", *overrides)
    module = trainers.options("model")[name]
    args = config_object(module.Config, cfg.model)
    return module.build(args, shape, 10, value_range(args.normalize, cfg.dataset))


def counts(module):
    c = module.parameter_counts()
    return c["total"], c["trainable"], c["non_trainable"]


def layer_counts(module):
    """Parameters (with BN moving statistics) of each layer that has any, in order."""
    out = []
    for m in module.modules():
        own = sum(p.size for p in m._parameters.values() if p is not None)
        own += sum(b.size for b in m._buffers.values() if b is not None and b.dtype.kind == "f")
        if own:
            out.append(own)
    return out


# ----- parameter counts (fixtures.md, FX-PC) -----
@pytest.mark.parametrize("name, expected", [
    ("ae_mtf", 101_200),        # FX-PC-20
    ("ae_stacked", 163_814),    # FX-PC-23
    ("ae_tied", 82_414),
    ("ae_conv", 46_529),
    ("ae_sparse_l1", 218_084),
    ("ae_sparse_kl", 218_084),
    ("ae_denoising", 163_814),
    ("ae_bdl", 473_636),        # FX-PC-28
    ("vae_bdl", 209_464),
])
def test_parameter_counts_of_single_network_presets(name, expected):
    (model,) = built(name).values()
    assert counts(model) == (expected, expected, 0)


def test_vae_bdl_repo_variant_with_latent_10():  # FX-PC-28, GM-13
    assert counts(built("vae_bdl", (1, 28, 28), "model.latent_size=10")["vae"])[0] == 205_604


def test_homl_vae_encoder_and_decoder_counts():  # FX-PC-24
    model = built("vae_homl")["vae"]
    encoder = sum(p.size for part in (model.body, model.mu, model.logvar) for p in part.parameters())
    assert (encoder, model.decoder.num_parameters()) == (134_870, 134_634)


@pytest.mark.parametrize("name, shape, generator, discriminator", [
    ("gan_mtf", (1, 28, 28), (274_052, 274_052, 0), (749_073, 749_073, 0)),                    # FX-PC-21
    ("gan_geron", (1, 28, 28), (136_634, 136_634, 0), (132_951, 132_951, 0)),                  # FX-PC-25
    ("dcgan_tf", (1, 28, 28), (2_330_944, 2_305_472, 25_472), (212_865, 212_865, 0)),          # FX-PC-22
    ("dcgan_geron", (1, 28, 28), (840_705, 840_321, 384), (212_865, 212_865, 0)),              # FX-PC-26
    ("dcgan_bdl", (3, 64, 64), (3_578_624, 3_576_704, 1_920), (6_565_633, 6_561_665, 3_968)),  # FX-PC-29
])
def test_parameter_counts_of_gans(name, shape, generator, discriminator):
    nets = built(name, shape)
    assert counts(nets["generator"]) == generator
    assert counts(nets["discriminator"]) == discriminator


def test_mtf_gan_discriminator_as_printed():  # FX-PC-21: the printed forward pass skips two Dense(128) blocks
    overrides = ("model.d_hidden=[784,128]", "model.d_activations=[linear,leaky_relu]")
    assert counts(built("gan_mtf", (1, 28, 28), *overrides)["discriminator"])[0] == 716_049


def test_mtf_wgan_per_layer_counts():  # FX-PC-10, FX-PC-11 (latent 50)
    nets = built("wgan_mtf")
    assert layer_counts(nets["critic"]) == [1_088, 256, 65_600, 256, 3_137]
    assert counts(nets["critic"]) == (70_337, 70_081, 256)
    assert layer_counts(nets["generator"]) == [319_872, 262_272, 512, 262_272, 512, 6_273]
    assert counts(nets["generator"]) == (851_713, 851_201, 512)


@pytest.mark.parametrize("name, expected", [
    ("dcgan", {"epochs": 5, "width": 32, "batch_size": 64, "lr_g": 2e-4}),
    ("gan", {"epochs": 10, "arch": "mlp", "batch_size": 64}),
    ("wgan_gp", {"epochs": 3, "width": 16, "n_critic": 5, "lr_c": 5e-4, "penalty": "gp"}),
    ("wgan", {"epochs": 4, "width": 16, "n_critic": 5, "penalty": "clip", "clip_value": 0.01, "clip_scope": "all",
              "critic_norm": "batch", "bn_eval": False, "optimizer": "rmsprop", "lr_g": 1e-3, "lr_c": 5e-4,
              "n_critic_warmup": 100}),
])
def test_cpu_defaults_are_the_measured_ones(name, expected):
    """The defaults whose time to the quality bar docs/running.md measures on MNIST and the digits."""
    model = compose_config(name).model
    assert {key: model[key] for key in expected} == expected



def test_wgan_critic_warmup_follows_the_papers_schedule():
    args = wgan.Config(penalty="clip", n_critic=5, n_critic_warmup=100)
    assert [wgan.critic_steps(args, g) for g in (0, 24, 25, 499, 500, 501, 1000)] == [100, 100, 5, 5, 100, 5, 100]
    assert {wgan.critic_steps(wgan.Config(n_critic=5), g) for g in (0, 24, 500)} == {5}


def test_wgan_critic_warmup_takes_its_steps_and_survives_resume(tmp_path, monkeypatch):
    """32 generator steps of 4 digits each, the first 25 after 3 critic steps, the rest after 1; a run stopped
    after 16 and resumed takes the same 82 critic steps and ends bitwise like the uninterrupted one."""
    calls = []
    step = wgan.critic_step
    monkeypatch.setattr(wgan, "critic_step", lambda *a, **k: calls.append(1) or step(*a, **k))
    overrides = ["dataset=digits", "dataset.limit=32", "dataset.repeat=1", "model.batch_size=4", "model.width=4",
                 "model.n_critic=1", "model.n_critic_warmup=3", "model.quality.enabled=false"]
    _, whole = train("wgan", tmp_path / "whole", *overrides, "model.epochs=4")
    assert (whole["train/steps"], len(calls)) == (32, 25 * 3 + 7)
    calls.clear()
    train("wgan", tmp_path / "part", *overrides, "model.epochs=2")
    assert len(calls) == 16 * 3
    train("wgan", tmp_path / "part", *overrides, "model.epochs=4", resume=tmp_path / "part")
    assert len(calls) == 25 * 3 + 7
    ends = [core.load(tmp_path / d / "checkpoints" / "last.ckpt") for d in ("whole", "part")]
    for net in ("generator", "critic"):
        for key, value in ends[0][net].items():
            np.testing.assert_array_equal(ends[1][net][key].numpy(), value.numpy(), err_msg=f"{net}.{key}")

def test_tied_decoder_shares_the_encoder_weights():
    model = built("ae_tied")["autoencoder"]
    (first, second) = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    assert model.decoder.linears[0] is second and model.decoder.linears[1] is first
    x = core.rand(3, 1, 28, 28)
    logits, _ = model(x)
    logits.sum().backward()
    # the encoder's first weight gets gradient from both of its uses: check against finite differences
    w = first.weight
    i, j, eps = 5, 300, 1e-2
    with core.no_grad():
        w.data[i, j] += eps
        up = model(x)[0].sum().item()
        w.data[i, j] -= 2 * eps
        down = model(x)[0].sum().item()
        w.data[i, j] += eps
    assert w.grad.data[i, j] == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=1e-3)


@pytest.mark.parametrize("size, shapes", [(28, [(16, 14), (32, 7), (64, 3), (32, 7), (16, 14), (1, 28)]),
                                          (32, [(16, 16), (32, 8), (64, 4), (32, 8), (16, 16), (1, 32)])])
def test_conv_autoencoder_shape_chain(size, shapes):  # FX-CV-13: 28 -> 14 -> 7 -> 3 -> 7 -> 14 -> 28
    model = built("ae_conv", (1, size, size))["autoencoder"]
    x = core.zeros(2, 1, size, size)
    seen = []
    for layer in list(model.encoder) + list(model.decoder):
        x = layer(x)
        if isinstance(layer, (nn.MaxPool2d, nn.ConvTranspose2d)):
            seen.append((x.shape[1], x.shape[2]))
    assert seen == shapes


# ----- losses -----
def test_gradient_penalty_matches_the_hand_computed_double_backprop():  # FX-AD-12
    w = core.tensor([1.0, 2.0], dtype=core.float64, requires_grad=True)
    point = core.tensor([[1.0, 1.0]], dtype=core.float64)  # real = fake: every t gives x̂ = (1, 1)
    gp = wgan.gradient_penalty(lambda x: (x * x * w).sum(axis=1), point, point)
    assert gp.item() == pytest.approx(12.055728090000843, rel=1e-9)
    gp.backward()
    assert w.grad.numpy() == pytest.approx([6.21114562, 12.42229124], rel=1e-8)


def test_gradient_penalty_gradcheck_wrt_critic_weights():
    rng = np.random.default_rng(0)
    real = core.tensor(rng.uniform(-1, 1, (3, 1, 5, 5)))
    fake = core.tensor(rng.uniform(-1, 1, (3, 1, 5, 5)))
    t = core.tensor(rng.uniform(0, 1, (3, 1, 1, 1)))
    weights = [core.tensor(rng.normal(0, 0.5, shape), requires_grad=True)
               for shape in [(2, 1, 3, 3), (2,), (1, 18), (1,)]]

    def penalty(conv_w, conv_b, lin_w, lin_b):
        def critic(x):  # Conv2d(1→2, 3×3, stride 2, same) → LeakyReLU(0.2) → Linear(18 → 1)
            h = core.leaky_relu(conv2d(x, conv_w, conv_b, stride=2, padding="same"), 0.2)
            return core.linear(core.flatten(h, 1), lin_w, lin_b)
        return wgan.gradient_penalty(critic, real, fake, t)

    assert core.gradcheck(penalty, weights)


def test_gradient_penalty_of_a_one_lipschitz_linear_critic_is_zero():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    real, fake = core.randn(8, 1, 4, 4), core.randn(8, 1, 4, 4)
    with core.no_grad():
        critic[1].weight.data /= np.linalg.norm(critic[1].weight.data)
    assert wgan.gradient_penalty(critic, real, fake).item() < 1e-10
    with core.no_grad():
        critic[1].weight.data *= 3  # gradient norm 3 everywhere: (3 − 1)² = 4
    assert wgan.gradient_penalty(critic, real, fake).item() == pytest.approx(4.0, rel=1e-5)


def test_vae_loss_by_hand():
    # image 1: logits 0 (p = 1/2) on 4 pixels → 4·log 2 whatever x; μ = (1, 0), log σ² = (0, log 2)
    #   KL = 0.5·(1²) + 0.5·(2 − 1 − log 2) = 0.5 + 0.1534264097 (FX-LS-6)
    # image 2: logits log 3 (p = 3/4) on pixels that are 1 → 4·(−log 3/4); μ = 0, log σ² = 0: KL = 0
    logits = core.tensor(np.array([[0.0] * 4, [math.log(3)] * 4]).reshape(2, 1, 2, 2))
    x = core.tensor(np.array([[0.0, 0.25, 0.5, 1.0], [1.0] * 4]).reshape(2, 1, 2, 2))
    mu = core.tensor(np.array([[1.0, 0.0], [0.0, 0.0]]))
    logvar = core.tensor(np.array([[0.0, math.log(2)], [0.0, 0.0]]))
    recon = (4 * math.log(2) + 4 * -math.log(0.75)) / 2
    kl = (0.5 + 0.5 * (2 - 1 - math.log(2))) / 2
    loss, r, k = vae.vae_loss(logits, x, mu, logvar, "sum")
    assert (loss.item(), r.item(), k.item()) == pytest.approx((recon + kl, recon, kl), rel=1e-12)
    loss, r, k = vae.vae_loss(logits, x, mu, logvar, "mean", beta=2.0)  # HOML scale: everything / 4 pixels
    assert (loss.item(), r.item(), k.item()) == pytest.approx(((recon + 2 * kl) / 4, recon / 4, kl / 4), rel=1e-12)


def test_the_normalised_beta_weighs_the_kl_by_pixels_per_latent_dimension():
    default = OmegaConf.to_object(compose_config("vae", "dataset=mnist").model)
    assert vae.kl_weight(default, (1, 28, 28)) == pytest.approx(0.08 * 784 / 16)  # Higgins et al.'s β_norm
    assert vae.kl_weight(default, (3, 8, 8)) == pytest.approx(0.08 * 192 / 16)
    homl = OmegaConf.to_object(compose_config("vae_homl", "dataset=mnist", "model.beta=2").model)
    assert vae.kl_weight(homl, (1, 28, 28)) == 2


def test_sparsity_penalties():
    code = core.tensor(np.array([[0.1, 0.5], [0.3, 0.5]]))  # batch means 0.2 and 0.5
    kl_unit = lambda q: 0.1 * math.log(0.1 / q) + 0.9 * math.log(0.9 / (1 - q))  # noqa: E731
    assert kl_unit(0.2) == pytest.approx(0.036690014, rel=1e-7)  # FX-LS-7
    assert autoencoders.sparsity_penalty("kl", code, 0.1).item() == pytest.approx(kl_unit(0.2) + kl_unit(0.5))
    signed = core.tensor(np.array([[-1.0, 2.0], [0.5, 0.5]]))
    assert autoencoders.sparsity_penalty("l1", signed).item() == pytest.approx((3.0 + 1.0) / 2)


def test_simultaneous_step_gives_each_network_the_gradient_of_its_own_loss():
    """The detached-fake trick of gan.simultaneous_step equals differentiating each loss through the whole
    graph at the weights before the step (SGD with lr 1: the update is minus the gradient)."""
    cfg = compose_config("gan_geron", "dataset=mnist", "model.g_hidden=[8]", "model.g_activations=[selu]",
                         "model.d_hidden=[8]", "model.d_activations=[selu]", "model.latent_size=4")
    nets = gan.build(config_object(gan.Config, cfg.model), (1, 4, 4), 10, "01")
    G, D = nets["generator"], nets["discriminator"]
    z, real = core.randn(6, 4), core.rand(6, 1, 4, 4)
    fake = G(z)
    d_loss = gan.bce(D(real), 0.9) + gan.bce(D(fake), 0.0)
    g_loss = gan.bce(D(fake), 1.0)
    params = list(D.parameters()) + list(G.parameters())
    expected = core.grad(d_loss, list(D.parameters()), retain_graph=True) + core.grad(g_loss, list(G.parameters()))
    before = [p.detach().numpy().copy() for p in params]

    losses = gan.simultaneous_step(G, D, optim.SGD(G.parameters(), lr=1.0), optim.SGD(D.parameters(), lr=1.0),
                                   real, None, z, None, real_label=0.9)
    assert [loss.item() for loss in losses] == pytest.approx([d_loss.item(), g_loss.item()], rel=1e-6)
    for p, old, want in zip(params, before, expected):
        np.testing.assert_allclose(old - p.detach().numpy(), want.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["wgan", "dcgan_geron"])
@pytest.mark.parametrize("eval_fakes", [False, True])
def test_eval_fakes_makes_the_discriminators_fakes_with_moving_statistics(name, eval_fakes, mnist, tmp_path,
                                                                          monkeypatch):
    """Keras code that makes D's fakes with generator.predict (MTF's WGAN) or generator(z) outside fit
    (HOML's DCGAN) runs G's batch norm in inference mode there; G's own step still trains with batch stats."""
    modes = {"fakes": set(), "g_step": set()}
    forward = gan.Generator.forward

    def recording(self, z, labels=None):
        modes["g_step" if core.is_grad_enabled() else "fakes"].add(self.training)
        return forward(self, z, labels)

    monkeypatch.setattr(gan.Generator, "forward", recording)
    train(name, tmp_path / "run", *mnist, "dataset.limit=64", "dataset.image_size=16", "model.width=4",
          "model.epochs=1", "model.batch_size=32", "model.quality.enabled=false",
          f"model.eval_fakes={str(eval_fakes).lower()}")
    assert modes["g_step"] == {True}
    # the shape check and the sample grids always run G in eval mode, so only a train-mode call tells
    assert (True in modes["fakes"]) is not eval_fakes


# ----- resume, divergence, bad input -----
def ctrl_c_during_generator_step(monkeypatch, n):
    """A real SIGINT (what Ctrl-C sends) while the n-th generator step runs."""
    calls = itertools.count(1)
    step = gan.generator_step

    def interrupted(*args):
        if next(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return step(*args)

    monkeypatch.setattr(gan, "generator_step", interrupted)


def assert_same_gan(whole_dir, part_dir):
    """The last checkpoints of two GAN runs hold bitwise equal networks."""
    whole, part = (core.load(d / "checkpoints" / "last.ckpt") for d in (whole_dir, part_dir))
    for net in ("generator", "discriminator"):
        for key, value in whole[net].items():
            np.testing.assert_array_equal(part[net][key].numpy(), value.numpy(), err_msg=f"{net}.{key}")


def test_resume_after_a_stop_ends_bitwise_like_an_uninterrupted_run(mnist, tmp_path, monkeypatch):
    # dropout in D, BN in G, a third epoch's shuffle after the resume: every random stream must be restored
    overrides = [*mnist, "dataset.limit=160", "dataset.image_size=16", "model.width=4", "model.epochs=3",
                 "model.batch_size=32", "model.quality.enabled=false"]
    train("dcgan_geron", tmp_path / "whole", *overrides)
    with monkeypatch.context() as patch:
        ctrl_c_during_generator_step(patch, 7)
        _, stopped = train("dcgan_geron", tmp_path / "part", *overrides)
    assert (stopped["train/steps"], stopped["train/epochs"]) == (7, 1)  # mid-way through the second epoch of 5
    saved = core.load(tmp_path / "part" / "checkpoints" / "last.ckpt")
    assert (saved["step"], saved["session"]["progress"], saved["data"]["position"]) == (7, 1, 2)
    _, resumed = train("dcgan_geron", tmp_path / "part", *overrides, resume=tmp_path / "part")
    assert (resumed["train/steps"], resumed["train/epochs"]) == (15, 3)
    assert_same_gan(tmp_path / "whole", tmp_path / "part")


def test_an_epoch_of_repeated_data_is_that_many_fresh_passes(tmp_path):
    """dataset.repeat=3: one epoch is three passes over the 160 images, each a new order with every image once."""
    data = load_data({"name": "digits", "split": "train", "normalize": "01", "image_size": 8, "limit": 160,
                      "repeat": 3})
    with Run(tmp_path / "run", quiet=True) as run:
        session = run.session("vae", "epochs", 1)
        batches = Batches(session, data, 32)
        session.track(data=batches)
        seen = []
        for _ in batches.epochs():
            for index in batches:
                seen.append(index)
                batches.log({})
    assert (batches.per_epoch, len(seen)) == (15, 15)
    passes = [np.concatenate(seen[i:i + 5]) for i in range(0, 15, 5)]
    for order in passes:
        np.testing.assert_array_equal(np.sort(order), np.arange(160))
    assert not np.array_equal(passes[0], passes[1])


def test_resume_inside_a_repeated_epoch_ends_bitwise_like_an_uninterrupted_run(tmp_path, monkeypatch, quality_cache):
    # 5 batches a pass, 3 passes an epoch: stopped at step 22, in the second pass of the second epoch
    overrides = ["dataset=digits", "dataset.image_size=8", "dataset.limit=160", "dataset.repeat=3",
                 "model.width=4", "model.epochs=2", "model.batch_size=32", "model.quality.enabled=false"]
    train("dcgan_geron", tmp_path / "whole", *overrides)
    with monkeypatch.context() as patch:
        ctrl_c_during_generator_step(patch, 22)
        _, stopped = train("dcgan_geron", tmp_path / "part", *overrides)
    assert (stopped["train/steps"], stopped["train/epochs"]) == (22, 1)
    saved = core.load(tmp_path / "part" / "checkpoints" / "last.ckpt")
    assert (saved["data"]["position"], saved["data"]["loader"]["next"]) == (7, 2)
    _, resumed = train("dcgan_geron", tmp_path / "part", *overrides, resume=tmp_path / "part")
    assert (resumed["train/steps"], resumed["train/epochs"]) == (30, 2)
    assert_same_gan(tmp_path / "whole", tmp_path / "part")
    with pytest.raises(ConfigError, match=r"resume cannot change dataset.repeat=3->2"):
        train("dcgan_geron", tmp_path / "part", *overrides, "dataset.repeat=2", resume=tmp_path / "part")


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(mnist, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = autoencoders.reconstruction_loss

    def diverging(kind, logits, target):  # finite for the first 6 steps (past the epoch-1 checkpoint), then NaN
        calls["n"] += 1
        loss = real_loss(kind, logits, target)
        return loss if calls["n"] <= 6 else loss * float("nan")

    monkeypatch.setattr(autoencoders, "reconstruction_loss", diverging)
    with pytest.raises(NonFiniteError, match="losses/recon is nan at step 7"):
        train("ae_stacked", tmp_path / "run", *mnist, "dataset.limit=160", "model.epochs=3", "checkpoint_every=1")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("ckpt_*")) == ["ckpt_5.ckpt"]
    state = core.load(checkpoints / "last.ckpt")
    assert (state["session"]["progress"], state["session"]["steps"], state["data"]["position"]) == (1, 5, 0)
    assert all(np.isfinite(v.numpy()).all() for v in state["autoencoder"].values())


def test_resuming_with_another_latent_size_says_so(mnist, tmp_path):
    overrides = [*mnist, "dataset.limit=64", "model.epochs=1", "model.quality.enabled=false"]
    train("vae", tmp_path / "run", *overrides)
    with pytest.raises(ConfigError, match=r"resume cannot change model.latent_size=16->12"):
        train("vae", tmp_path / "run", *overrides, "model.latent_size=12", resume=tmp_path / "run")


def test_resume_refuses_the_data_order_of_other_data(mnist, tmp_path):
    """The batches' saved order fits only the data it shuffled (the dataset files may change under a run)."""
    cfg, _ = train("vae", tmp_path / "run", *mnist, "dataset.limit=64", "model.epochs=1", "model.quality.enabled=false")
    state = core.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    fewer = load_data({**plain(cfg.dataset), "limit": 32}, "01")
    with Run(tmp_path / "other", quiet=True) as run:
        batches = Batches(run.session("vae", "epochs", 1), fewer, 32)
        with pytest.raises(ValueError, match=r"trained on 64 images of shape \(1, 28, 28\), the dataset gives 32 of"):
            batches.load_state_dict(state["data"])


def test_sample_hooks_check_the_latent_size_and_give_unit_range_images(mnist, tmp_path):
    overrides = [*mnist, "dataset.limit=64", "model.epochs=1", "model.batch_size=32", "model.quality.enabled=false"]
    cfg, _ = train("gan_geron", tmp_path / "run", *overrides)
    state = core.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    images = gan.sample(cfg, state, 5)
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(gan.sample(cfg, state, 5), images)  # seeded
    with pytest.raises(ValueError, match=r"trained with latent_size=30, got latent vectors of shape \(5, 100\)"):
        gan.sample(cfg, state, 5, z=np.zeros((5, 100)))


@pytest.mark.parametrize("name, overrides, message", [
    ("dcgan_tf", ["dataset.image_size=30"], "arch 'dcgan_tf' needs image height and width divisible by 4, got 30×30"),
    ("dcgan_bdl", [], "arch 'dcgan_bdl' generates 64×64 images, the dataset has 28×28; set dataset.image_size=64"),
    ("dcgan", ["dataset.image_size=30"], "arch 'dcgan' needs image height and width divisible by 4, got 30×30"),
    ("wgan_gp_mtf", ["dataset.image_size=18"], "arch 'wgan_mtf' needs image height and width divisible by 4"),
    ("vae_conv", ["dataset.image_size=30"], "must be divisible by 4, got 30×30"),
    ("ae_conv", ["dataset.image_size=4"], "needs images of at least 8 pixels per side, got 4"),
    ("ae_stacked", ["dataset.normalize=null", "model.normalize=null"], "dataset.normalize is null"),
])
def test_image_size_and_range_errors_say_what_to_fix(name, overrides, message, mnist, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(name, tmp_path / "run", *mnist, "dataset.limit=64", *overrides)


def test_missing_data_files_stop_the_run_before_training(mnist, mnist_root, tmp_path):
    with pytest.raises(ConfigError, match=r"mnist: missing t10k-images-idx3-ubyte.gz, .* in .*empty/mnist"):
        train("vae", tmp_path / "run1", *mnist, f"dataset.root={tmp_path / 'empty'}")
    test_only = tmp_path / "test_only" / "mnist"  # the test split only: the classifier cannot learn from "train"
    test_only.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (test_only / name).symlink_to(Path(mnist_root) / "mnist" / name)
    with pytest.raises(ConfigError, match=r"quality classifier cannot be trained: mnist: missing train-images"):
        train("vae", tmp_path / "run2", *mnist, f"dataset.root={test_only.parent}", "model.quality.classifier_split=train")
    assert not (tmp_path / "run2" / "checkpoints").exists()


@pytest.mark.parametrize("name, override, message", [
    ("dcgan_tf", "model.d_steps=3", "update=simultaneous takes one D step per G step"),
    ("dcgan_tf", "model.eval_fakes=true", "model.eval_fakes needs model.update=alternating"),
    ("gan_mtf", "model.g_activations=[relu]", "g_hidden has 4 layers but model.g_activations has 1"),
    ("wgan_gp", "model.separate_real_fake=true", "goes with model.penalty=clip"),
    ("wgan", "model.n_critic_warmup=-1", "n_critic_warmup must be >= 0"),
    ("ae_sparse_kl", "model.code_activation=relu", "needs code activations in \\(0, 1\\)"),
    ("vae", "model.normalize=tanh", "set model.normalize=01"),
    ("vae", "model.beta=2", r"both set the KL weight; set model.beta_norm=null to give beta itself"),
    ("vae", "model.beta_norm=-1", "model.beta_norm must be >= 0 or null"),
])
def test_config_validation(name, override, message):
    args = OmegaConf.to_object(compose_config(name, "dataset=mnist", override).model)
    with pytest.raises(ValueError, match=message):
        args.validate()


@pytest.mark.parametrize("name, override, allowed", [
    ("dcgan", "model.arch=unet", "mlp, dcgan, dcgan_tf, dcgan_geron, dcgan_bdl"),
    ("wgan_gp", "model.critic_norm=group", "none, layer, batch"),
    ("ae_conv", "model.noise=salt", "none, dropout, gaussian"),
    ("vae", "model.recon_reduction=max", "sum, mean"),
])
def test_choices_are_checked_when_the_config_is_composed(name, override, allowed):
    with pytest.raises(ConfigCompositionException, match="Error merging override") as error:
        compose_config(name, "dataset=mnist", override)
    assert f"expected one of [{allowed}]" in str(error.value.__cause__)


def test_quality_is_scored_about_ten_times_a_run_unless_told():
    from gans.common import quality_every
    every = {epochs: quality_every(config_object(gan.Config, {"epochs": epochs})) for epochs in (5, 10, 50, 616)}
    assert every == {5: 1, 10: 1, 50: 5, 616: 62}  # the short CPU defaults every epoch, a book preset ~10 times
    told = config_object(gan.Config, {"epochs": 616, "quality": {"every": 0}})
    assert quality_every(told) == 0
    from gans.quality import QualityConfig
    with pytest.raises(ValueError, match=r"model.quality.every must be >= 0 .* or null"):
        QualityConfig(every=-1).validate()
