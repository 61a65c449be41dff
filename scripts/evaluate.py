"""Evaluate a trained run from its checkpoint.

    python scripts/evaluate.py RUN [episodes=N] [greedy=true|false] [seed=S] [record=gif|mp4] [fps=F] [samples=N]

RUN is a run directory (its checkpoints/last.ckpt is used) or a checkpoint file. The run's config
comes from the checkpoint itself. Options are key=value pairs:

- agents: `episodes` evaluation episodes (default: the run's eval_episodes) with the greedy policy
  (`greedy=false`: actions sampled from the policy), episode k reset with seed `seed + k`
  (default seed: the run's seed + agents.EVAL_SEED_OFFSET, i.e. the run's own final evaluation);
  `record=gif` (or `mp4`, which needs imageio with ffmpeg) renders the first episode headlessly
  into `<run>/samples/eval_<step>.gif`;
- generative models: the model module's `evaluate(cfg, state, run_dir)` hook gives the metrics
  and its `sample(cfg, state, n)` hook a grid of `samples` images (default 64) written to
  `<run>/samples/eval_<step>.png`.

The metrics are printed and written to `<run>/eval.json` (next to the checkpoints' run directory,
or next to a checkpoint file that lies elsewhere). Bad arguments print one line and exit 2.
"""
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/evaluate.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core  # noqa: E402
from core.runtime.logger import make_grid, save_gif, save_png  # noqa: E402
from core.runtime.run import resolve_resume, run_dir_of_checkpoint  # noqa: E402
from core.serialization import CheckpointError, atomic_write  # noqa: E402

OPTIONS = {"episodes": int, "greedy": "bool", "seed": int, "record": ("gif", "mp4"), "fps": int, "samples": int}


class UsageError(ValueError):
    pass


def parse_options(pairs):
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in OPTIONS:
            raise UsageError(f"unknown option {pair!r}; allowed: {', '.join(f'{k}=...' for k in OPTIONS)}")
        kind = OPTIONS[key]
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                raise UsageError(f"{key} must be true or false, got {text!r}")
            options[key] = text.lower() == "true"
        elif isinstance(kind, tuple):
            if text not in kind:
                raise UsageError(f"{key} must be one of {', '.join(kind)}, got {text!r}")
            options[key] = text
        else:
            try:
                options[key] = kind(text)
            except ValueError:
                raise UsageError(f"{key} must be an integer, got {text!r}") from None
            if options[key] < (0 if key == "seed" else 1):
                raise UsageError(f"{key} must be {'>= 0' if key == 'seed' else '>= 1'}, got {text}")
    return options


def registered(registry, name, kind):
    if name not in registry:
        raise UsageError(f"the run's {kind} {name!r} is not registered here "
                         f"(registered: {', '.join(registry) or 'none'})")
    return registry[name]


def evaluate_agent(name, cfg, state, run_dir, options):
    import agents
    module = registered(agents.REGISTRY, name, "agent")
    record = options.get("record")
    render_mode = "rgb_array" if record else None
    if record:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # rgb_array frames need no display (headless machines)
        if record == "mp4":
            video_writer()  # fail before the episodes run
    if hasattr(module, "make_env"):
        env = module.make_env(cfg.env, render_mode=render_mode)
    else:
        from envs.factory import make_env
        env = make_env(cfg.env.id, render_mode=render_mode, **agents.wrapper_options(cfg.env))
    seed = options.get("seed", cfg.seed + agents.EVAL_SEED_OFFSET)
    greedy = options.get("greedy", True)
    act = module.make_policy(cfg, state, env, greedy=greedy, generator=core.Generator(seed))
    episodes = options.get("episodes", cfg.eval_episodes)
    result = agents.evaluate_policy(env, act, episodes, seed, record=bool(record))
    metrics = {**agents.summarize_returns(result["returns"], result["lengths"]), "eval/greedy": greedy,
               "eval/seed": seed, "eval/returns": result["returns"]}
    if record:
        path = run_dir / "samples" / f"eval_{state['step']}.{record}"
        write_video(result["frames"], path, options.get("fps", 30))
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
    import gans
    module = registered(gans.REGISTRY, name, "model")
    if not (hasattr(module, "evaluate") or hasattr(module, "sample")):
        raise UsageError(f"model {name!r} has neither an evaluate(cfg, state, run_dir) nor a sample(cfg, state, n) "
                         "hook to evaluate it with")
    metrics = dict(module.evaluate(cfg, state, run_dir)) if hasattr(module, "evaluate") else {}
    if hasattr(module, "sample"):
        images = module.sample(cfg, state, options.get("samples", 64))
        path = run_dir / "samples" / f"eval_{state['step']}.png"
        save_png(make_grid(images), path)
        metrics["eval/samples"] = str(path)
    return metrics


def evaluate(path, options):
    """Evaluate the run or checkpoint at `path`; returns the metrics written to eval.json."""
    from omegaconf import OmegaConf
    try:
        checkpoint = resolve_resume(path)
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
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        metrics = evaluate(argv[0], parse_options(argv[1:]))
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
