"""Generative models, one module per family, plus datasets and the sample-quality metric.

A model module exposes, like an agent module (see agents/__init__.py):
- `@dataclass Config` with `validate()`, registered by scripts/trainers.py as `<module>_schema` in the
  Hydra group `model` (`conf/model/<name>.yaml` starts with `defaults: [<module>_schema, _self_]`: that
  line is the whole registration, and several model configs may share one module);
- `train(cfg, run) -> dict` of final metrics (final losses, `quality/frechet_distance`, ...), where
  `cfg` is the whole composed config (`cfg.model`, `cfg.dataset`, `cfg.optim`, `cfg.seed`, ...);
- optionally, for scripts/evaluate.py, `sample(cfg, state, n, seed=0) -> NCHW images` (values in [0, 1];
  a keyword `z` takes given latent codes, which gives the latent-interpolation GIF) and/or
  `evaluate(cfg, state, run_dir) -> dict` of metrics, from a checkpoint `state`;
- optionally `MAIN_METRIC`: the metrics key train.py returns to sweepers (a leading "-" negates it;
  default "-quality/frechet_distance").
"""

