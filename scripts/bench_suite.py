"""The tuned suite: every conf/tuned pair (DQN, A2C, PPO on CartPole-v1, Acrobot-v1, MountainCar-v0,
LunarLander-v3; A2C, PPO on Pendulum-v1), the lab next to Stable-Baselines3 at the same hyperparameters.

    python scripts/bench_suite.py [--pairs ppo_cartpole dqn_acrobot ...] [--budget-scale 0.1] [--seeds 0 1 2]
                                  [--jobs 2] [--results runs.json [--table-only]] [--eval-episodes 10]
                                  [--sb3-python PYTHON] [--write]

The lab's settings are what `scripts/train.py agent=<algo> env=<env>` composes (conf/tuned/<algo>_<env>.yaml,
rl-baselines3-zoo's values); SB3 gets the same numbers, translated here (`sb3_settings`), including the
zoo's VecNormalize where the pair normalises. The budget is the zoo's (`--budget-scale` multiplies every
pair's total_timesteps; learning-rate and clip schedules span the scaled budget on both sides). Each run
is a fresh process with one BLAS / torch thread; seeds and implementations are interleaved so that load
from other processes hits both alike. Wall-clock is the training loop (SB3: `learn`) without start-up;
CPU time is that process's over the same span (steadier than wall-clock on a busy machine);
the return is the mean of 10 greedy (deterministic) evaluation episodes after training (--eval-episodes:
more of them, for a pair whose single-seed returns are mostly evaluation noise; such runs are stored apart).
--write puts the table into docs/benchmarks.md (section bench_suite), rewritten after every run, so that a
run cut short leaves the table of the runs done (seeds are the outer loop: every pair's first seed comes
before any pair's second). The targets are judged only at the zoo's budgets (--budget-scale 1).
--results keeps every finished run in a JSON file: run again with the same file, the runs already there
with the same settings are reused, so a cut benchmark continues and a change to one pair's lab config
reruns only that pair's lab runs. --table-only runs nothing: the table of the runs that file holds
(docs/benchmarks/suite_runs.json is the file behind the table in docs/benchmarks.md).
"""
import argparse
import hashlib
import json
import os
import pathlib
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.benchutil import load_note, machine, measure, publish, rl_parser, summary, write_section  # noqa: E402

TITLE = "## The tuned suite (DQN, A2C, PPO on five environments)"
ALGOS = ("dqn", "a2c", "ppo")
ENVS = ("cartpole", "acrobot", "mountaincar", "lunarlander")
PAIRS = [f"{algo}_{env}" for env in ENVS for algo in ALGOS] + ["a2c_pendulum", "ppo_pendulum"]


def lab_config(pair, scale):
    """(agent config, env config) as plain dicts: the composed `agent=<algo> env=<env>` with the scaled budget."""
    from omegaconf import OmegaConf

    from scripts.benchutil import compose_config
    algo, env = pair.split("_", 1)
    cfg = compose_config(algo, env)
    budget = max(1, round(cfg.agent.total_timesteps * scale))
    cfg.agent.total_timesteps = budget
    return (OmegaConf.to_container(cfg.agent, enum_to_str=True), OmegaConf.to_container(cfg.env, enum_to_str=True))


def sb3_settings(algo, agent, env):
    """Stable-Baselines3's constructor arguments for the lab's agent config (and the env's normalisation)."""
    net = {"net_arch": list(agent["hidden"])}
    if algo == "dqn":
        return {"learning_rate": agent["lr"], "batch_size": agent["batch_size"], "buffer_size": agent["buffer_size"],
                "learning_starts": agent["learning_starts"], "gamma": agent["gamma"], "tau": agent["tau"],
                "target_update_interval": agent["target_update_interval"], "train_freq": agent["train_freq"],
                "gradient_steps": agent["gradient_steps"], "exploration_fraction": agent["exploration_fraction"],
                "exploration_initial_eps": agent["epsilon_start"], "exploration_final_eps": agent["epsilon_end"],
                "max_grad_norm": agent["max_grad_norm"], "policy_kwargs": net}
    policy = {"net_arch": {"pi": list(agent["hidden"]), "vf": list(agent["hidden"])},
              "ortho_init": agent["init"] == "orthogonal", "log_std_init": agent["log_std_init"]}
    common = {"n_steps": agent["num_steps"], "gamma": agent["gamma"], "gae_lambda": agent["gae_lambda"],
              "ent_coef": agent["ent_coef"], "vf_coef": agent["vf_coef"], "max_grad_norm": agent["max_grad_norm"],
              "normalize_advantage": agent["normalize_advantage"], "policy_kwargs": policy}
    if algo == "a2c":
        return {**common, "use_rms_prop": agent["optimizer"] == "rmsprop", "rms_prop_eps": agent["rms_prop_eps"]}
    return {**common, "batch_size": agent["batch_size"], "n_epochs": agent["n_epochs"],
            "clip_range_vf": agent["clip_range_vf"], "target_kl": agent["target_kl"]}


def run_sb3(pair, spec, seed):
    """One SB3 run from `spec` (this runs in the SB3 interpreter: no lab imports)."""
    import time

    import gymnasium as gym
    import stable_baselines3
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    torch.set_num_threads(1)
    algo = pair.split("_", 1)[0]
    settings, lin = dict(spec["settings"]), spec["linear"]
    for key in lin:  # the zoo's lin_<x>: the value falls linearly to 0 over training
        settings[key] = (lambda start: lambda remaining: remaining * start)(settings[key])
    env = make_vec_env(spec["env_id"], n_envs=spec["n_envs"], seed=seed)
    eval_env = DummyVecEnv([lambda: Monitor(gym.make(spec["env_id"]))])
    if spec["normalize_obs"] or spec["normalize_reward"]:
        env = VecNormalize(env, norm_obs=spec["normalize_obs"], norm_reward=spec["normalize_reward"],
                           gamma=settings["gamma"])
        eval_env = VecNormalize(eval_env, norm_obs=spec["normalize_obs"], norm_reward=False, training=False)
    model = getattr(stable_baselines3, algo.upper())("MlpPolicy", env, seed=seed, device="cpu", **settings)
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(spec["total_timesteps"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if isinstance(eval_env, VecNormalize):
        eval_env.obs_rms = env.obs_rms  # the statistics training ended with, frozen
    eval_env.seed(seed + 10_000)
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=spec["eval_episodes"], deterministic=True,
                                 return_episode_rewards=True)
    return {"wall_s": wall, "cpu_s": cpu, "return": sum(returns) / len(returns),
            "versions": f"stable-baselines3 {stable_baselines3.__version__}, torch {torch.__version__}"}


def sb3_spec(pair, scale, eval_episodes=10):
    """What the SB3 child needs, as plain JSON (computed with the lab's config in the lab's interpreter)."""
    algo = pair.split("_", 1)[0]
    agent, env = lab_config(pair, scale)
    linear = [key for key, flag in (("learning_rate", agent.get("anneal_lr")), ("clip_range", agent.get("anneal_clip")))
              if flag]
    settings = {**sb3_settings(algo, agent, env), "learning_rate": agent["lr"]}
    if algo == "ppo":
        settings["clip_range"] = agent["clip_range"]
    return {"env_id": env["id"], "n_envs": agent.get("num_envs") or env["num_envs"],
            "total_timesteps": agent["total_timesteps"], "settings": settings, "linear": linear,
            "normalize_obs": env.get("normalize_obs", False), "normalize_reward": env.get("normalize_reward", False),
            "eval_episodes": eval_episodes}


def run_lab(pair, scale, seed, eval_episodes=10):
    from scripts.benchutil import lab_run
    algo, env = pair.split("_", 1)
    agent, _ = lab_config(pair, scale)
    # no evaluations during training: SB3's `learn` runs none, and they would count in the lab's time
    return lab_run(algo, algo, seed, env=env, overrides={"total_timesteps": agent["total_timesteps"], "eval_every": 0},
                   eval_episodes=eval_episodes)


def run_settings(pairs, scale, eval_episodes=10):
    """What makes a stored run reusable, per pair and side: the SB3 spec, or the lab's composed config,
    with the evaluation episodes."""
    return {pair: {"sb3": sb3_spec(pair, scale, eval_episodes),
                   "lab": {"config": lab_config(pair, scale), "eval_episodes": eval_episodes}} for pair in pairs}


class RunStore:
    """Finished runs in a JSON file, keyed by pair, side, seed and a hash of that side's settings: a
    benchmark cut short continues, and after a change to the lab's config only the lab's runs of the
    changed pairs run again. Without a path it keeps nothing."""

    def __init__(self, path, settings):
        self.path = pathlib.Path(path) if path else None
        self.digests = {(pair, kind): hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
                        for pair, sides in settings.items() for kind, value in sides.items()}
        self.runs = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}

    def key(self, seed, pair, kind):
        return f"{pair}/{kind}/seed{seed}/{self.digests[pair, kind]}"

    def get(self, seed, pair, kind):
        return self.runs.get(self.key(seed, pair, kind))

    def put(self, seed, pair, kind, result):
        if self.path:
            self.runs[self.key(seed, pair, kind)] = result
            partial = self.path.with_name(self.path.name + ".tmp")
            partial.write_text(json.dumps(self.runs, indent=1))
            os.replace(partial, self.path)
        return result


def table(results, args, budgets, started, done, total):
    versions = next((r["versions"] for rows in results.values() for r in rows.get("sb3", [])), "SB3 not run")
    full = args.budget_scale == 1
    scale = "the zoo's budgets" if full else f"{args.budget_scale:g} x the zoo's budgets"
    partial = "" if done == total else f" Partial: {done} of the {total} runs asked for were done when this was written."
    lines = [f"Each pair at conf/tuned/<algo>_<env>.yaml (rl-baselines3-zoo's hyperparameters) on both sides, "
             f"{scale}; seeds {args.seeds}, mean ± std over the seeds run (runs column: SB3 + lab); {started}, "
             f"{versions}; one thread each, runs interleaved, {args.jobs} at a time. Return: {args.eval_episodes} greedy "
             "episodes after training. Targets "
             "(judged at the zoo's budgets only): the lab's mean return within SB3's seed spread (at least SB3's "
             "mean minus its std) or better, at ≤ 0.5x SB3's wall-clock." + partial +
             ("" if args.table_only else load_note()), "",  # the load now says nothing of the stored runs'
             "The whole suite at the zoo's budgets, 3 seeds: `OMP_NUM_THREADS=1 PYTHONPATH=. python "
             "scripts/bench_suite.py --sb3-python <a Python with stable-baselines3 and Box2D> --jobs 2 "
             "--results docs/benchmarks/suite_runs.json --write` (the runs already in that file are reused).", "",
             "| pair | env steps | runs | SB3 return | lab return | SB3 wall-clock | lab wall-clock | lab vs SB3 | "
             "CPU time vs SB3 | targets |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for pair, rows in results.items():
        sb3, lab = rows.get("sb3"), rows["lab"]
        if not lab:
            continue
        runs = f"{len(sb3)} + {len(lab)}" if sb3 is not None else f"0 + {len(lab)}"
        lab_return = statistics.mean(r["return"] for r in lab)
        if sb3:
            sb3_returns = [r["return"] for r in sb3]
            spread = statistics.stdev(sb3_returns) if len(sb3_returns) > 1 else 0.0
            ratio = statistics.mean(r["wall_s"] for r in lab) / statistics.mean(r["wall_s"] for r in sb3)
            cpu = statistics.mean(r["cpu_s"] for r in lab) / statistics.mean(r["cpu_s"] for r in sb3)
            met = [lab_return >= statistics.mean(sb3_returns) - spread, ratio <= 0.5]
            verdict = f"not judged at {args.budget_scale:g}x budget" if not full else "both met" if all(met) else (
                "return met, time missed" if met[0] else "time met, return missed" if met[1] else "both missed")
            cells = [summary(sb3_returns), summary([r["return"] for r in lab]),
                     summary([r["wall_s"] for r in sb3], " s"), summary([r["wall_s"] for r in lab], " s"),
                     f"{ratio:.2f}x", f"{cpu:.2f}x", verdict]
        else:
            cells = ["n/a", summary([r["return"] for r in lab]), "n/a", summary([r["wall_s"] for r in lab], " s"),
                     "n/a", "n/a", "n/a"]
        lines.append(f"| {pair} | {budgets[pair]:,} | {runs} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main():
    parser = rl_parser(__doc__.splitlines()[0], ("sb3", "lab"))
    parser.add_argument("--pairs", nargs="+", choices=PAIRS, default=PAIRS, metavar="PAIR",
                        help=f"which pairs (default all): {', '.join(PAIRS)}")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every pair's zoo budget")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once (each one thread; 2 runs a pair's SB3 and lab runs side by side)")
    parser.add_argument("--results", metavar="JSON",
                        help="keep each finished run in this file; a run found there with the same settings "
                             "(seed, and the SB3 spec or the lab's composed config) is not run again")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: the table of the runs in --results (the machine line is this one's)")
    parser.add_argument("--eval-episodes", type=int, default=10,
                        help="greedy evaluation episodes after training, on both sides (default 10)")
    parser.add_argument("--spec", help=argparse.SUPPRESS)  # the child's SB3 settings
    args = parser.parse_args()
    if args.table_only and not args.results:
        parser.error("--table-only tabulates the runs of a --results file: name one")
    if args.eval_episodes < 1:
        parser.error(f"--eval-episodes must be at least 1, got {args.eval_episodes}")
    if args.one:  # a child process: one run, its result as JSON on the last line
        pair, seed = args.pairs[0], args.seeds[0]
        result = run_sb3(pair, json.loads(args.spec), seed) if args.one == "sb3" else \
            run_lab(pair, args.budget_scale, seed, args.eval_episodes)
        print(json.dumps(result))
        return
    sb3 = not args.skip_sb3 and (args.table_only or pathlib.Path(args.sb3_python).exists())
    specs = {pair: sb3_spec(pair, args.budget_scale, args.eval_episodes) for pair in args.pairs}
    budgets = {pair: spec["total_timesteps"] for pair, spec in specs.items()}
    results = {pair: {"sb3": [], "lab": []} if sb3 else {"lab": []} for pair in args.pairs}
    runs = [(seed, pair, kind) for seed in args.seeds for pair in args.pairs for kind in results[pair]]
    store = RunStore(args.results, run_settings(args.pairs, args.budget_scale, args.eval_episodes))
    asked = len(runs)
    if args.table_only:  # only the runs the file holds
        runs = [run for run in runs if store.get(*run)]
    started, done = machine(load=not args.table_only), 0
    with ThreadPoolExecutor(args.jobs) as pool:  # in this order: the jobs running at once share the load
        def launch(seed, pair, kind):
            return pool.submit(measure, __file__, kind, seed, args.sb3_python if kind == "sb3" else sys.executable,
                               ["--pairs", pair, "--budget-scale", str(args.budget_scale),
                                "--eval-episodes", str(args.eval_episodes), "--spec", json.dumps(specs[pair])])
        futures = [None if store.get(*run) else launch(*run) for run in runs]
        for (seed, pair, kind), future in zip(runs, futures):
            result = store.get(seed, pair, kind) or store.put(seed, pair, kind, future.result())
            results[pair][kind].append(result)
            done += 1
            print(pair, kind, seed, result, "(stored)" if future is None else "", flush=True)
            if args.write:  # the table so far: a run cut short still leaves one
                write_section("bench_suite", f"{TITLE}\n\n{table(results, args, budgets, started, done, asked)}")
    publish(args, "bench_suite", TITLE, table(results, args, budgets, started, done, asked))


if __name__ == "__main__":
    main()
