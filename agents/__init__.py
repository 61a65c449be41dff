"""RL agents, one module per algorithm, and what they share: config checks, seeds of the random streams,
one BLAS thread, env options and evaluation.

An agent module (CleanRL-style, read top to bottom) exposes:
- `@dataclass Config` with every hyperparameter, typed and with its default (a closed set of strings
  as a core.runtime.choices.Choice enum, checked when the config composes), and `validate()`
  raising ValueError with one clear line for values that cannot work. scripts/trainers.py registers
  it as the Hydra schema `<module>_schema` (group `agent`), so `conf/agent/<name>.yaml` starts with
  `defaults: [<module>_schema, _self_]`;
- `train(cfg, run) -> dict` of final metrics: `cfg` is the whole composed config (`cfg.agent` has
  the Config fields; `cfg.env`, `cfg.seed`, `cfg.device`, `cfg.eval_episodes`, `cfg.checkpoint_every`),
  `run` a `core.runtime.run.Run`; the loop runs inside `run.session(...)` (core/runtime/session.py),
  which owns checkpoints, resume, evaluation cadence, the bar and the final metrics;
- `make_policy(cfg, state, env, greedy=True, generator=None) -> act`, used by scripts/evaluate.py:
  the policy of checkpoint `state` as a function from one observation of `env` to one action
  (sampled with the core.Generator `generator` when not greedy);
- optionally `make_env(env_cfg, render_mode=None)`: the env the agent trains and evaluates on
  (scripts/evaluate.py falls back to `envs.factory.make_env(env_cfg.id, **wrapper_options(env_cfg))`);
- optionally `MAIN_METRIC`: the metrics key train.py returns to sweepers (default "eval/return_mean");
- `NORMALIZES_ENVS = True` when it honours env.normalize_obs / env.normalize_reward (its vector envs
  come from actor_critic.training_envs, the statistics are tracked as "normalization" and
  evaluation uses them frozen); scripts/train.py refuses those options for any other agent.

Evaluation episodes (while training, at the end and in scripts/evaluate.py) reset with seeds
`seed + EVAL_SEED_OFFSET + k`, so they never replay a training episode and evaluate.py
reproduces the final evaluation of a run. `eval_every` (env steps) defaults to None: about 10
evaluations over the budget (core.runtime.session.EVALUATIONS); the best one's policy is kept in
checkpoints/best.ckpt. With the run's `capture_video`, each evaluation's first episode is filmed
(`episode_recorder`).

Several configs may share one module (ppo and ppo_native both name `ppo_schema`).
"""
import contextlib
import functools
import os
import zlib

import numpy as np

EVAL_SEED_OFFSET = 10_000


def check_each(args, names, allowed, ok):
    """ValueError naming the first `agent.<name>` among `names` whose value fails `ok`."""
    for name in names:
        value = getattr(args, name)
        if not ok(value):
            raise ValueError(f"agent.{name} must be {allowed}, got {value}")


def check_evaluation(args):
    """The evaluation options an agent config shares: `eval_every` and `target_return`."""
    check_each(args, ("eval_every",), ">= 0 or null (about 10 evaluations per run)",
               lambda value: value is None or value >= 0)
    if args.target_return is not None and args.eval_every == 0:
        raise ValueError("agent.target_return needs agent.eval_every >= 1 or null (it is checked at the evaluations "
                         "while training)")


def derive_seed(seed, *keys):
    """An int seed for the random stream named by `keys` (e.g. ("actions",), ("worker", 3)),
    independent of the other streams of the same run seed."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


def one_blas_thread():
    """A context with one BLAS thread: RL batches are a few hundred rows of 64-wide layers, where
    OpenBLAS's threads only contend (3-10x slower on a busy 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def with_one_blas_thread(train):
    """`train(cfg, run)` run inside `one_blas_thread()` (a decorator for an agent's train)."""
    @functools.wraps(train)
    def wrapped(cfg, run):
        with one_blas_thread():
            return train(cfg, run)
    return wrapped


# the env config's normalisation options (envs/normalize.py), for make_vector_env only; null norm_gamma: the agent's
NORMALIZATION_OPTIONS = {"normalize_obs": False, "normalize_reward": False, "clip_obs": 10.0, "clip_reward": 10.0,
                         "norm_epsilon": 1e-8, "norm_gamma": None}


def wrapper_options(env_cfg):
    """The wrapper options of an env config (everything but id, num_envs, vectorization, native_dtype
    and the normalisation options), as keyword arguments for envs.factory.make_env / make_vector_env."""
    return {k: v for k, v in env_cfg.items()
            if k not in ("id", "num_envs", "vectorization", "native_dtype", *NORMALIZATION_OPTIONS)}


def normalization_options(env_cfg, gamma=None):
    """make_vector_env's normalisation keywords from an env config; the reward normaliser discounts
    with env.norm_gamma, else `gamma` (the agent's), else 0.99 as SB3's VecNormalize."""
    options = {key: env_cfg.get(key, default) for key, default in NORMALIZATION_OPTIONS.items()}
    if options["norm_gamma"] is None:
        options["norm_gamma"] = 0.99 if gamma is None else gamma
    return options


def policy_env(env_cfg, make_env=None, render_mode=None):
    """One env of `env_cfg` as an agent's policy sees it: the agent's `make_env` when it has one, else
    envs.factory.make_env with the config's wrapper options."""
    if make_env is not None:
        return make_env(env_cfg, render_mode=render_mode)
    from envs.factory import make_env as make_factory_env
    return make_factory_env(env_cfg.id, render_mode=render_mode, **wrapper_options(env_cfg))


def with_normalization(env, env_cfg, state):
    """`env` with the observations a run trained with env.normalize_obs saw: normalised with the
    checkpoint's statistics, frozen (rewards and returns stay raw)."""
    stats = (state.get("normalization") or {}).get("obs")
    if stats is None:
        return env
    from envs.normalize import NormalizeObservation
    options = normalization_options(env_cfg)
    return NormalizeObservation(env, stats, options["clip_obs"], options["norm_epsilon"])


def episode_recorder(cfg, make_policy, make_env=None):
    """With the run's `capture_video`: a function from a checkpoint-like state to (frames, fps) of one
    greedy episode of its policy, rendered headlessly (the first evaluation episode, as
    scripts/evaluate.py record=gif plays it); without: None."""
    if not cfg.get("capture_video"):
        return None
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # rgb_array frames need no display
    env = policy_env(cfg.env, make_env, render_mode="rgb_array")
    fps = env.metadata.get("render_fps") or 30

    def record(state):
        seen = with_normalization(env, cfg.env, state)  # the observations the policy was trained on
        act = make_policy(cfg, state, seen, greedy=True)
        return evaluate_policy(seen, act, 1, cfg.seed + EVAL_SEED_OFFSET, record=True)["frames"], fps
    return record


def evaluate_policy(env, act, episodes, seed, record=False):
    """Run `episodes` full episodes of `act` (one observation -> one action) on `env`, episode k
    reset with seed `seed + k`. Returns {"returns": [...], "lengths": [...], "frames": TxHxWxC
    uint8 array of the first episode (only when `record`, from `env.render()` in rgb_array mode)}.
    A return is the raw one of RecordEpisodeStatistics (before reward scaling) when the env has it."""
    returns, lengths, frames = [], [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, length, done = 0.0, 0, False
        while not done:
            if record and k == 0:
                frames.append(env.render())
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
        if record and k == 0:
            frames.append(env.render())
        returns.append(float(info["episode"]["r"]) if "episode" in info else total)
        lengths.append(length)
    result = {"returns": returns, "lengths": lengths}
    if record:
        result["frames"] = np.stack(frames)
    return result


def summarize_returns(returns, lengths):
    """The `eval/...` metrics of a list of episode returns and lengths (population std)."""
    return {"eval/return_mean": float(np.mean(returns)), "eval/return_std": float(np.std(returns)),
            "eval/length_mean": float(np.mean(lengths)), "eval/episodes": len(returns)}
