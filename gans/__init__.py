"""Generative models, one module per family, plus datasets and the sample-quality metric.

A model module exposes, like an agent module (see agents/__init__.py):
- `@dataclass Config` with `validate()`, registered by scripts/train.py as `<name>_schema` in the
  Hydra group `model` (`conf/model/<name>.yaml` starts with `defaults: [<name>_schema, _self_]`);
- `train(cfg, run) -> dict` of final metrics (final losses, `quality/frechet_distance`, ...), where
  `cfg` is the whole composed config (`cfg.model`, `cfg.dataset`, `cfg.optim`, `cfg.seed`, ...);
- optionally, for scripts/evaluate.py, `sample(cfg, state, n) -> NCHW images` (values in [0, 1] or
  [-1, 1]) and/or `evaluate(cfg, state, run_dir) -> dict` of metrics, from a checkpoint `state`;
- optionally `MAIN_METRIC`: the metrics key train.py returns to sweepers (a leading "-" negates it;
  default "-quality/frechet_distance").

REGISTRY maps the name used on the command line (`model=<name>`) to the module.
"""

from gans import autoencoders, gan, supervised, vae, wgan

# one entry per conf/model/<name>.yaml preset; presets of one family share its module
REGISTRY = {
    **{name: autoencoders for name in ("ae_mtf", "ae_stacked", "ae_tied", "ae_conv", "ae_denoising", "ae_sparse_l1",
                                        "ae_sparse_kl", "ae_bdl")},
    **{name: vae for name in ("vae", "vae_bdl", "vae_conv")},
    **{name: gan for name in ("gan_mtf", "gan_geron", "dcgan", "dcgan_geron", "dcgan_bdl", "dcgan_classic", "cgan")},
    **{name: wgan for name in ("wgan", "wgan_gp", "wgan_gp_bdl")},
    "supervised": supervised,  # not generative: the books' classification/regression experiments
}
