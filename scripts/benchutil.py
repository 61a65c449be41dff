"""Shared pieces of the benchmark scripts: timing, thread limits, machine description, the driver of the
RL comparisons with Stable-Baselines3, and writing a result table into a named section of docs/benchmarks.md.

Only the standard library is imported at the top: the RL scripts import this module in the SB3 interpreter
too, which need not have the lab's packages.
"""
import argparse
import importlib
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def single_thread():
    """One BLAS/OpenMP thread for us and for torch, so ratios compare the libraries, not thread counts."""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    torch = load_torch()
    if torch is not None:
        torch.set_num_threads(1)
    return torch


def load_torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def best_time(fn, number=None, repeat=7, min_seconds=0.2):
    """Seconds per call: the minimum over `repeat` runs of `number` calls (auto-sized to ~min_seconds)."""
    fn()
    if number is None:
        number = 1
        while (elapsed := timeit.timeit(fn, number=number)) < 0.05:
            number *= 2
        number = max(1, int(number * min_seconds / elapsed))
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def interleaved_best(fns, repeat, calls=1, clock=time.perf_counter):
    """Best seconds per block of `calls` calls of each fn, taking the fns in turn so that load from other
    processes on a shared machine hits all of them alike."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = clock()
            for _ in range(calls):
                fn()
            best[i] = min(best[i], clock() - start)
    return best


def load_note(own_processes=1):
    """A sentence for the tables when other jobs shared the machine during the last minutes (the
    5-minute load average above what the benchmark's own `own_processes` busy processes make, up
    to the core count), else ""."""
    if not hasattr(os, "getloadavg") or os.getloadavg()[1] <= min(own_processes, os.cpu_count()) + 0.5:
        return ""
    return (f" The machine was shared with other jobs (5-minute load average {os.getloadavg()[1]:.1f} at the end): "
            "wall-clock includes waiting for a CPU; the runs were interleaved so that every row saw the same "
            "load, and the ratios hold better than the times.")


def machine(load=True):
    """This machine in words; with `load`, the load average now (a run's start)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    torch = load_torch()
    peers = f", torch {torch.__version__}" if torch is not None else ""
    load = f", load average {os.getloadavg()[0]:.1f} at the start" if load and hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {numpy.__version__}{peers}{load}"


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def summary(values, unit="", digits=1):
    """The mean ± std of the values that are not None ("n/a" when none is)."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}{unit}"


def bench_parser(description):
    """A benchmark's command line with the `--write` they all have; `publish` reads it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    return parser


def publish(args, section, title, table):
    """Print the table under its title; with --write it also becomes the section `section` of docs/benchmarks.md."""
    text = f"{title}\n\n{table}"
    print(f"\n{text}")
    if args.write:
        write_section(section, text)


# ----- the RL benchmarks: comparisons with Stable-Baselines3 (bench_dqn, bench_ppo), lab runs (and bench_a3c) -----
def rl_parser(description, kinds):
    """Their command line; `--one KIND` is the child process that `measure` starts."""
    parser = bench_parser(description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sb3-python", default=str(ROOT / ".bench" / "venv" / "bin" / "python"))
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--one", choices=tuple(kinds), help=argparse.SUPPRESS)
    return parser


def rl_main(script, description, runs, tables, section, title):
    """A whole RL comparison: `runs` maps each kind ("sb3" and the lab's) to a function of the seed that
    returns its result dict. As the child process (`--one KIND`) it prints that one result as JSON;
    otherwise it measures every kind for every seed and publishes `tables(results, seeds)`."""
    args = rl_parser(description, runs).parse_args()
    if args.one:
        print(json.dumps(runs[args.one](args.seeds[0])))
        return
    results = measure_all(script, [kind for kind in runs if kind != "sb3"], args)
    publish(args, section, title, tables(results, args.seeds))


def measure(script, kind, seed, python=sys.executable, extra=()):
    """One measurement in a fresh single-threaded process (`script --one kind` with the `extra` arguments,
    which prints its result dict as JSON on its last line); returns that dict."""
    env = {**os.environ, **{name: "1" for name in THREAD_VARS}}
    result = subprocess.run([python, str(pathlib.Path(script).resolve()), "--one", kind, "--seeds", str(seed), *extra],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} seed {seed} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_all(script, lab_kinds, args):
    """{kind: one result dict per seed} for the lab's kinds, and for "sb3" first when its interpreter exists
    and --skip-sb3 is off. Seeds are interleaved: every kind sees the machine's load alike."""
    kinds = list(lab_kinds)
    if not args.skip_sb3 and pathlib.Path(args.sb3_python).exists():
        kinds.insert(0, "sb3")
    results = {kind: [] for kind in kinds}
    for seed in args.seeds:
        for kind in kinds:
            results[kind].append(measure(script, kind, seed, args.sb3_python if kind == "sb3" else sys.executable))
            print(kind, seed, results[kind][-1], flush=True)
    return results


def compose_config(preset, env="cartpole", seed=0, overrides=None, eval_episodes=10, device="cpu"):
    """The config `scripts/train.py agent=<preset> env=<env>` composes (the pair's conf/tuned values included),
    with `overrides` ({agent key: value}) on top and checkpoints only at the end."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from scripts.train import CONF_DIR, register_configs
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"agent={preset}", f"env={env}", f"seed={seed}", f"device={device}",
                                           f"eval_episodes={eval_episodes}", "checkpoint_every=0"])
    cfg.agent = OmegaConf.merge(cfg.agent, overrides or {})
    return cfg


def train_preset(agent, preset, seed, overrides=None, eval_episodes=10, device="cpu", env="cartpole"):
    """(metrics, CPU seconds of this process inside `agent.train`) of one run of `agent=<preset> env=<env>`
    with `overrides` on `device`, in a temporary run directory."""
    from omegaconf import OmegaConf

    from core.runtime.run import Run
    cfg = compose_config(preset, env, seed, overrides, eval_episodes, device)
    with tempfile.TemporaryDirectory() as run_dir, Run(run_dir, config=OmegaConf.to_container(cfg, enum_to_str=True),
                                                       device=device, quiet=True, tensorboard=False) as run:
        cpu = time.process_time()
        metrics = agent.train(cfg, run)
        cpu = time.process_time() - cpu
    return metrics, cpu


def lab_run(agent_name, preset, seed, vectorization=None, device="cpu", env="cartpole", overrides=None,
            eval_episodes=10):
    """The result dict of one lab run for the comparison tables (`vectorization` and `overrides` override the
    preset's and the tuned pair's values)."""
    agent = importlib.import_module(f"agents.{agent_name}")
    overrides = {**(overrides or {}), **({"vectorization": vectorization} if vectorization else {})}
    metrics, cpu = train_preset(agent, preset, seed, overrides, eval_episodes, device=device, env=env)
    return {"wall_s": metrics["time/wall_s"], "cpu_s": cpu, "return": metrics["eval/return_mean"],
            "to_target_s": metrics.get("time/to_target_s"), "to_target_steps": metrics.get("train/to_target_steps")}


def write_section(name, body, doc=DOC):
    """Replace (or append) the section `<!-- name -->...<!-- /name -->` of docs/benchmarks.md (or of `doc`)."""
    doc = pathlib.Path(doc)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
