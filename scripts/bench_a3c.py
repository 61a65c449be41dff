"""A3C throughput on CartPole-v1: environment steps per second with 1, 2 and 4 worker processes, and
on a local Ray instance when Ray is installed.

    python scripts/bench_a3c.py [--workers 1 2 4] [--rounds 3] [--steps-per-worker 15000] [--no-ray] [--write]

Each run trains conf/agent/a3c.yaml's A3C (20-step rollouts, one env per worker) for
`steps-per-worker` x N env steps. Throughput is the env steps of all workers divided by the span
from the first update's start to the last update's end (worker start-up excluded); the scaling
column compares it with N x the single-worker rate (target >= 0.8 up to the number of cores).
Rounds are interleaved (1, 2, 4, Ray, 1, 2, 4, Ray, ...) so that load from other processes hits
every setting alike; the table shows the median over rounds. --write puts it into docs/benchmarks.md.
"""
import importlib.util
import os
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents import a3c  # noqa: E402
from scripts.benchutil import bench_parser, load_note, machine, publish, train_preset  # noqa: E402


def throughput(num_workers, steps_per_worker, backend, own_sessions=False):
    """(env steps per wall second from the first update to the last, env steps per worker CPU
    second, CPU cores used on average) of one A3C run."""
    overrides = {"num_workers": num_workers, "backend": backend, "own_sessions": own_sessions,
                 "total_timesteps": steps_per_worker * num_workers}
    metrics, _ = train_preset(a3c, "a3c", 0, overrides, eval_episodes=1)
    span = max(metrics["a3c/worker_last_update_s"]) - min(metrics["a3c/worker_first_update_s"])
    cpu = sum(metrics["a3c/worker_cpu_s"])
    return metrics["a3c/env_steps_per_s"], sum(metrics["a3c/worker_env_steps"]) / cpu, cpu / span


def main():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-worker", type=int, default=15_000)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    use_ray = not args.no_ray and importlib.util.find_spec("ray") is not None

    settings = [(backend, n) for backend in ("processes", "processes, own sessions") for n in args.workers]
    settings += [("ray", args.ray_workers)] if use_ray else []
    results = {setting: [] for setting in settings}
    for round_ in range(args.rounds):
        for backend, n in settings:
            results[(backend, n)].append(throughput(n, args.steps_per_worker, backend.split(",")[0],
                                                    own_sessions=backend.endswith("own sessions")))
            rate, cpu_rate, cores_used = results[(backend, n)][-1]
            print(f"round {round_}: {backend} x{n}: {rate:,.0f} env steps/s, {cpu_rate:,.0f} per CPU second, "
                  f"{cores_used:.2f} cores used", flush=True)

    def median(setting, column):
        return statistics.median(result[column] for result in results[setting])

    cores = os.cpu_count()
    lines = [f"A3C on CartPole-v1 (conf/agent/a3c.yaml: 20-step rollouts, one env per worker, shared Adam), "
             f"{args.steps_per_worker:,} env steps per worker; median of {args.rounds} interleaved rounds; "
             f"{machine()}. Env steps/s is over the span from the first update to the last; per CPU second "
             "divides by the CPU time the workers got, and cores used is that CPU time over the span. "
             "On a machine busy with other sessions, Linux's autogroup scheduling gives each session one share "
             "of the CPUs, so the workers of the trainer's session share about one share between them, while "
             "with agent.own_sessions=true (or on Ray) each worker is a session of its own."
             + load_note(own_processes=max(n for _, n in settings)), "",
             "| backend | workers | env steps/s | vs N x single | target (>= 0.8 up to the core count) "
             "| env steps per CPU s | cores used |", "|---|---:|---:|---:|---|---:|---:|"]
    for backend, n in settings:
        rate = median((backend, n), 0)
        base = (backend if backend != "ray" else "processes, own sessions", 1)
        single = median(base, 0) if base in results else None
        scaling = rate / (n * single) if single else float("nan")
        if n == 1:
            verdict = "(the reference)"
        elif backend != "ray" and n <= cores:
            verdict = "met" if scaling >= 0.8 else "missed"
        else:
            verdict = f"more workers than the {cores} cores" if backend != "ray" else \
                "Ray, local instance (vs one worker in its own session)"
        lines.append(f"| {backend} | {n} | {rate:,.0f} | {scaling:.2f} | {verdict} | "
                     f"{median((backend, n), 1):,.0f} | {median((backend, n), 2):.2f} |")
    publish(args, "bench_a3c", "## A3C throughput", "\n".join(lines))


if __name__ == "__main__":
    main()
