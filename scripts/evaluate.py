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
- generative models: the model module's `evaluate(cfg, state, run_dir)` hook gives the metrics
  and its `sample(cfg, state, n)` hook a grid of `samples` images written to
  `<run>/samples/eval_<step>.png`.

The metrics are printed and written to `<run>/eval.json` (next to the checkpoints' run directory,
or next to a checkpoint file that lies elsewhere). Also installed as `lab-evaluate`. Bad arguments
print one line `error: ...` on stderr and exit with status 2.
"""
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Optional

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
    samples: int

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
    if not (hasattr(module, "evaluate") or hasattr(module, "sample")):
        raise UsageError(f"model {name!r} has neither an evaluate(cfg, state, run_dir) nor a sample(cfg, state, n) "
                         "hook to evaluate it with")
    metrics = dict(module.evaluate(cfg, state, run_dir)) if hasattr(module, "evaluate") else {}
    if hasattr(module, "sample"):
        images = module.sample(cfg, state, options.samples)
        path = run_dir / "samples" / f"eval_{state['step']}.png"
        save_png(make_grid(images), path)
        metrics["eval/samples"] = str(path)
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
    print(json.dumps(metrics, indent=2))
    return 0


def cli():
    """The `lab-evaluate` command."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
