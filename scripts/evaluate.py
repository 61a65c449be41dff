"""Evaluate a trained run from its checkpoint.

    python scripts/evaluate.py RUN [checkpoint=last|best] [episodes=N] [greedy=true|false] [seed=S]
                               [record=gif|mp4] [fps=F] [samples=N]

RUN is a run directory or a checkpoint file, given first or as `run=RUN`. Of a run directory,
`checkpoint=last` (the default) takes its newest checkpoint, `checkpoint=best` its best.ckpt (the
policy of the best evaluation while training). The run's config comes from the checkpoint itself.
The options are Hydra overrides of conf/evaluate.yaml (where each is described), taken as train.py
takes its own:

- agents: `episodes` evaluation episodes (default: the run's eval_episodes) with the greedy policy
  (`greedy=false`: actions sampled from the policy), episode k reset with seed `seed + k`
  (default seed: the run's seed + agents.EVAL_SEED_OFFSET, i.e. the run's own final evaluation);
  a run trained with env.normalize_obs plays on observations normalised with its checkpoint's
  statistics (frozen; returns are raw rewards);
  `record=gif` (or `mp4`, which needs imageio with ffmpeg) renders the first episode headlessly
  into `<run>/samples/eval_<step>.gif` at `fps` frames per second;
- generative models (GAN, DCGAN, WGAN(-GP), VAE, autoencoders): the model module's
  `evaluate(cfg, state, run_dir)` hook gives the sample-quality metrics (gans/quality.py) and its
  `sample(cfg, state, n, seed)` hook `samples` images (default 64; an autoencoder's are reconstructions),
  written to `<run>/samples/eval_<step>/`: `samples.npy` (N, C, H, W) in [0, 1], `samples.png` (their
  grid, enlarged for viewing) and, for models that decode a latent code, `interpolation.gif` (frames
  of a grid of paths between pairs of random codes). One line sums it up: whether the samples pass
  the lab's quality bar (`gans.quality.quality_bar`: score, classes covered and relative Fréchet
  distance, each against the run's real images) and the Fréchet distance.

The metrics are printed (a generative run prints its one line instead) and written to
`<run>/eval.json` (next to the checkpoints' run directory, or next to a checkpoint file that lies
elsewhere). Also installed as `lab-evaluate`. Bad arguments
print one line `error: ...` on stderr and exit with status 2.
"""
import dataclasses
import inspect
import io
import json
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

if __package__ in (None, ""):  # run as `python scripts/evaluate.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.errors import ConfigCompositionException, OverrideParseException  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import core  # noqa: E402
from core.runtime.logger import make_grid, save_gif, save_png  # noqa: E402
from core.runtime.run import Checkpoints, resolve_resume, run_dir_of_checkpoint  # noqa: E402
from core.serialization import CheckpointError, atomic_write  # noqa: E402
from scripts.train import CONF_DIR, UsageError, describe_error  # noqa: E402

RECORD_FORMATS = ("gif", "mp4")
CHECKPOINTS = ("last", "best")
DEFAULT_SAMPLES = 64
VIEW_SIZE = 512  # sample grids are enlarged (nearest neighbour, by a whole factor) towards this many pixels
INTERPOLATION_PAIRS, INTERPOLATION_FRAMES = 4, 16


@dataclasses.dataclass
class EvaluateConfig:
    """The types of conf/evaluate.yaml's options (their defaults and meanings are there)."""
    run: Optional[str]
    checkpoint: str
    episodes: Optional[int]
    greedy: bool
    seed: Optional[int]
    record: Optional[str]
    fps: int
    samples: Optional[int]

    def validate(self):
        if self.run is None:
            raise UsageError("no run to evaluate: pass a run directory or checkpoint file first "
                             "(python scripts/evaluate.py RUN [key=value ...]) or as run=RUN")
        for name, low in (("episodes", 1), ("seed", 0), ("fps", 1), ("samples", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise UsageError(f"{name} must be >= {low}, got {value}")
        if self.checkpoint not in CHECKPOINTS:
            raise UsageError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {self.checkpoint!r}")
        if self.record is not None and self.record not in RECORD_FORMATS:
            raise UsageError(f"record must be one of {', '.join(RECORD_FORMATS)}, got {self.record!r}")


def parse_args(argv):
    """The options of a command line `[RUN] [key=value ...]`, checked."""
    run, overrides = (argv[0], argv[1:]) if argv and "=" not in argv[0] else (None, argv)
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose("evaluate", overrides=list(overrides))
    except (ConfigCompositionException, OverrideParseException) as e:
        raise UsageError(describe_error(e)) from None
    allowed = [f.name for f in dataclasses.fields(EvaluateConfig)]
    added = [key for key in cfg if key not in allowed]  # `+key=value` appends even to a schema: nothing would read it
    if added:
        raise UsageError(f"unknown key {added[0]!r}; allowed keys: {', '.join(allowed)}")
    options = OmegaConf.to_object(cfg)
    if run is not None:
        if options.run is not None:
            raise UsageError(f"two runs to evaluate: {run} and run={options.run}; pass one")
        options.run = run  # set after composing: a path needs no override quoting
    options.validate()
    return options


def registered(kind, name):
    from scripts import trainers
    registry = trainers.options(kind)
    if name not in registry:
        raise UsageError(f"the run's {kind} {name!r} is not registered here "
                         f"(registered: {', '.join(registry) or 'none'})")
    return registry[name]


def evaluate_agent(name, cfg, state, run_dir, options):
    import agents
    if options.samples is not None:
        raise UsageError(f"samples={options.samples} is for generative runs (GAN, VAE, autoencoder); {run_dir} is "
                         f"a run of agent {name!r}: evaluate it with episodes=N")
    module = registered("agent", name)
    if not hasattr(module, "make_policy"):
        raise UsageError(f"agent {name!r} has no policy to evaluate (no make_policy hook); its results are in "
                         f"{run_dir / 'metrics.json'}")
    record = options.record
    render_mode = "rgb_array" if record else None
    if record:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # rgb_array frames need no display (headless machines)
        if record == "mp4":
            video_writer()  # fail before the episodes run
    env = agents.policy_env(cfg.env, getattr(module, "make_env", None), render_mode)
    env = agents.with_normalization(env, cfg.env, state)
    seed = cfg.seed + agents.EVAL_SEED_OFFSET if options.seed is None else options.seed
    act = module.make_policy(cfg, state, env, greedy=options.greedy, generator=core.Generator(seed))
    episodes = cfg.eval_episodes if options.episodes is None else options.episodes
    result = agents.evaluate_policy(env, act, episodes, seed, record=bool(record))
    metrics = {**agents.summarize_returns(result["returns"], result["lengths"]), "eval/greedy": options.greedy,
               "eval/seed": seed, "eval/returns": result["returns"]}
    if record:
        path = run_dir / "samples" / f"eval_{state['step']}.{record}"
        write_video(result["frames"], path, options.fps)
        metrics["eval/video"] = str(path)
    return metrics


def video_writer():
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UsageError("record=mp4 needs imageio with ffmpeg: pip install 'imageio[ffmpeg]' (record=gif needs "
                         "nothing more)") from None
    return imageio


def write_video(frames, path, fps):
    if path.suffix == ".gif":
        save_gif(frames, path, fps=fps)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    video_writer().mimwrite(path, list(frames), fps=fps)


def evaluate_model(name, cfg, state, run_dir, options):
    module = registered("model", name)
    if options.samples is not None and not hasattr(module, "sample"):
        raise UsageError(f"samples={options.samples} is for generative runs (GAN, VAE, autoencoder); model {name!r} "
                         "generates no images (it has no sample hook)")
    if not (hasattr(module, "evaluate") or hasattr(module, "sample")):
        raise UsageError(f"model {name!r} has neither an evaluate(cfg, state, run_dir) nor a sample(cfg, state, n) "
                         "hook to evaluate it with")
    metrics = dict(module.evaluate(cfg, state, run_dir)) if hasattr(module, "evaluate") else {}
    if not hasattr(module, "sample"):
        return metrics
    n = DEFAULT_SAMPLES if options.samples is None else options.samples
    seed = cfg.seed if options.seed is None else options.seed
    out = run_dir / "samples" / f"eval_{state['step']}"
    images = np.asarray(module.sample(cfg, state, n, seed=seed), dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, images)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "samples.npy", buffer.getvalue())
    save_png(enlarged(make_grid(images, value_range=(0.0, 1.0))), out / "samples.png")
    metrics.update({"eval/samples": str(out / "samples.png"), "eval/samples_npy": str(out / "samples.npy")})
    gif = None
    if "z" in inspect.signature(module.sample).parameters:
        gif = save_gif(interpolation_frames(module, cfg, state, seed), out / "interpolation.gif", fps=options.fps)
        metrics["eval/interpolation"] = str(gif)
    metrics["eval/summary"] = summary_line(metrics, n, out, gif)
    return metrics


def checkpoint_file(run, which):
    """The checkpoint `run` (a run directory or a file) and `checkpoint=last|best` name."""
    path = Path(run).expanduser()
    if which == "last":
        return resolve_resume(path)
    if not path.is_dir():
        raise UsageError(f"checkpoint=best picks best.ckpt of a run directory; {path} is no run directory "
                         "(pass the directory, or a checkpoint file with checkpoint=last)")
    best = Checkpoints(path / "checkpoints").best_path
    if not best.is_file():
        raise UsageError(f"{path} has no best.ckpt (written at the run's evaluations); use checkpoint=last")
    return best


def enlarged(grid):
    """An HWC grid scaled up by the whole factor that brings its longer side nearest VIEW_SIZE from below."""
    factor = max(1, VIEW_SIZE // max(grid.shape[:2]))
    return grid.repeat(factor, axis=0).repeat(factor, axis=1)


def interpolation_frames(module, cfg, state, seed):
    """INTERPOLATION_FRAMES grids, frame t showing the t-th point of the straight paths between
    INTERPOLATION_PAIRS pairs of codes drawn from the model's noise (its noise stream after `seed`'s)."""
    from gans.common import config_object, interpolate
    from gans.gan import draw_noise  # N(0, 1) or U(-1, 1), the GANs' two priors
    args = config_object(module.Config, cfg.model)
    ends = draw_noise(getattr(args, "noise", "normal"), 2 * INTERPOLATION_PAIRS, args.latent_size,
                      core.Generator(seed + 1))
    paths = interpolate(ends[:INTERPOLATION_PAIRS], ends[INTERPOLATION_PAIRS:], INTERPOLATION_FRAMES).numpy()
    # path-major rows to frame-major, so each frame holds the t-th point of every path
    z = paths.reshape(INTERPOLATION_PAIRS, INTERPOLATION_FRAMES, -1).transpose(1, 0, 2).reshape(-1, args.latent_size)
    extra = {}
    if "labels" in inspect.signature(module.sample).parameters:  # a conditional model: one class per path
        from gans.datasets import CLASS_NAMES
        classes = np.arange(INTERPOLATION_PAIRS) % len(CLASS_NAMES[cfg.dataset.name])
        extra["labels"] = np.tile(classes, INTERPOLATION_FRAMES)
    images = np.asarray(module.sample(cfg, state, len(z), seed=seed, z=z, **extra))
    frames = images.reshape(INTERPOLATION_FRAMES, INTERPOLATION_PAIRS, *images.shape[1:])
    nrow = int(np.ceil(np.sqrt(INTERPOLATION_PAIRS)))
    return [enlarged(make_grid(frame, nrow=nrow, value_range=(0.0, 1.0))) for frame in frames]


def summary_line(metrics, n, out, gif):
    """One line: what was written where, the quality score and whether it passes the lab's quality bar."""
    from gans.quality import quality_bar
    wrote = f"{n} samples (samples.npy, samples.png" + (", interpolation.gif" if gif else "") + f") in {out}"
    if "quality/score" not in metrics:
        return wrote + "; no sample-quality score (the run's model.quality.enabled is false)"
    distance = metrics["quality/frechet_distance"]
    return f"{wrote}; {quality_bar(metrics)[1]}; Fréchet distance {distance:.4g}"


def evaluate(options):
    """Evaluate the run or checkpoint `options.run` (an EvaluateConfig from `parse_args`); returns
    the metrics written to eval.json."""
    try:
        checkpoint = checkpoint_file(options.run, options.checkpoint)
        state = core.load(checkpoint)
    except (OSError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    config = state.get("config") if isinstance(state, dict) else None
    if not config or "choices" not in config:
        raise UsageError(f"{checkpoint} holds no run config: only checkpoints written by scripts/train.py can be "
                         "evaluated")
    cfg = OmegaConf.create({k: v for k, v in config.items() if k != "choices"})
    choices = config["choices"]
    run_dir = run_dir_of_checkpoint(checkpoint) or checkpoint.parent
    if choices.get("agent"):
        metrics = evaluate_agent(choices["agent"], cfg, state, run_dir, options)
    else:
        metrics = evaluate_model(choices["model"], cfg, state, run_dir, options)
    metrics = {"checkpoint": str(checkpoint), "step": state["step"], **metrics}
    atomic_write(run_dir / "eval.json", (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    try:
        metrics = evaluate(parse_args(argv))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # a generative run's metrics are many numbers about images: its one line says what matters
    print(metrics["eval/summary"] if "eval/summary" in metrics else json.dumps(metrics, indent=2))
    return 0


def cli():
    """The `lab-evaluate` command."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
