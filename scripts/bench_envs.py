"""Env-steps per second of the native vectorized CartPole, next to gymnasium's own CartPoleVectorEnv.

    python scripts/bench_envs.py [--device cpu|cuda] [--num-envs 8 1024 65536] [--write]

Random actions (drawn up front, not timed), so episodes are short and resets are frequent. The
native env runs in float64 (gymnasium's numbers, bit for bit) and in float32 (env.native_dtype=float32).
Target (issue 5): >= 50 million env steps/s at 65,536 envs. --write puts the table into docs/benchmarks.md.
"""
import itertools
import sys

import gymnasium as gym
import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__) + "/..")
from envs.cartpole import NativeCartPoleVectorEnv  # noqa: E402
from scripts.benchutil import bench_parser, best_time, machine, publish  # noqa: E402


def steps_per_second(env, num_envs, xp, sync=lambda: None):
    """Best-of-repeats rate of env.step over a cycle of pre-drawn random actions."""
    rng = np.random.default_rng(0)
    actions = [xp.asarray(rng.integers(0, 2, num_envs)) for _ in range(64)]
    env.reset(seed=0)
    calls = itertools.count()

    def step():
        env.step(actions[next(calls) % len(actions)])
        sync()

    return num_envs / best_time(step, repeat=5, min_seconds=0.3)


def main():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8, 1024, 65536])
    args = parser.parse_args()

    variants = [(mode, dtype) for dtype in ("float64", "float32") for mode in ("next_step", "same_step")]
    lines = [f"Env-steps/s of CartPole-v1 on {args.device} ({machine()}); random actions.", "",
             "| envs | " + " | ".join(f"native {mode.replace('_', '-')} {dtype}" for mode, dtype in variants)
             + " | gymnasium CartPoleVectorEnv |", "|---:" * (len(variants) + 2) + "|"]
    largest = 0.0
    for num_envs in args.num_envs:
        cells = []
        for mode, dtype in variants:
            env = NativeCartPoleVectorEnv(num_envs, device=args.device, autoreset_mode=mode, dtype=dtype)
            sync = (lambda: env.xp.cuda.Device().synchronize()) if env.xp is not np else (lambda: None)
            cells.append(steps_per_second(env, num_envs, env.xp, sync))
        if num_envs == max(args.num_envs):
            largest = max(cells)
        reference = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="vector_entry_point")
        cells.append(steps_per_second(reference, num_envs, np))
        lines.append(f"| {num_envs:,} | " + " | ".join(f"{rate / 1e6:,.2f} M" for rate in cells) + " |")
    verdict = "met" if largest >= 50e6 else "missed"
    lines += ["", f"Target: >= 50 M env steps/s at {max(args.num_envs):,} envs: {verdict} "
                  f"(best {largest / 1e6:.1f} M)."]
    publish(args, "envs", "## Native vectorized environments", "\n".join(lines))


if __name__ == "__main__":
    main()
