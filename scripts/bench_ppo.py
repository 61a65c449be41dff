"""PPO on CartPole-v1: the lab next to Stable-Baselines3 with rl-baselines3-zoo's tuned settings, and
the lab's fastest preset's time to a perfect evaluation.

    python scripts/bench_ppo.py [--seeds 0 1 2] [--sb3-python .bench/venv/bin/python] [--write]

Rows (each run in a fresh process, one BLAS/torch thread, seeds interleaved so that load from other
processes hits every row alike):
- zoo settings (conf/tuned/ppo_cartpole.yaml: 8 envs, 100,000 steps, n_steps 32, batch 256, 20 epochs, ...)
  with gymnasium's CartPole in a SyncVectorEnv, as SB3 steps it in a DummyVecEnv;
- the same settings on the native vectorized CartPole;
- SB3 2.x PPO with the same settings (`--sb3-python`: an interpreter with stable-baselines3 and torch);
- conf/agent/ppo_native.yaml: wall-clock until the greedy evaluation (10 episodes) first returns 500,
  evaluation time included.
Wall-clock is the training loop (SB3: `learn`), without start-up; the evaluation return is the mean
of 10 greedy (deterministic) episodes after training. --write puts the tables into docs/benchmarks.md.
"""
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.benchutil import lab_run, load_note, machine, rl_main, summary  # noqa: E402

ZOO = dict(n_envs=8, total_timesteps=100_000, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8,
           lr=1e-3, clip_range=0.2, ent_coef=0.0)


def run_sb3(seed):
    """SB3's PPO with the zoo's settings (this runs in the SB3 interpreter: no lab imports)."""
    import time

    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=ZOO["n_envs"], seed=seed)
    model = PPO("MlpPolicy", env, n_steps=ZOO["n_steps"], batch_size=ZOO["batch_size"], n_epochs=ZOO["n_epochs"],
                gamma=ZOO["gamma"], gae_lambda=ZOO["gae_lambda"], ent_coef=ZOO["ent_coef"],
                learning_rate=lambda remaining: remaining * ZOO["lr"],  # the zoo's lin_1e-3
                clip_range=lambda remaining: remaining * ZOO["clip_range"], seed=seed, device="cpu")
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(ZOO["total_timesteps"])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    returns, _ = evaluate_policy(model, gym.make("CartPole-v1"), n_eval_episodes=10, deterministic=True,
                                 return_episode_rewards=True)
    import stable_baselines3
    return {"wall_s": wall, "cpu_s": cpu, "return": sum(returns) / len(returns),
            "versions": f"stable-baselines3 {stable_baselines3.__version__}, torch {torch.__version__}"}


RUNS = {"sb3": run_sb3, "zoo": lambda seed: lab_run("ppo", "ppo", seed),
        "zoo-native": lambda seed: lab_run("ppo", "ppo", seed, "native"),
        "native": lambda seed: lab_run("ppo", "ppo_native", seed)}


def tables(results, seeds):
    sb3 = {key: statistics.mean(r[key] for r in results["sb3"]) for key in ("wall_s", "cpu_s")} if "sb3" in results \
        else None
    names = {"sb3": "Stable-Baselines3 PPO (DummyVecEnv of gymnasium CartPole)",
             "zoo": "lab PPO, gymnasium SyncVectorEnv", "zoo-native": "lab PPO, native vectorized CartPole"}
    lines = [f"PPO on CartPole-v1 with rl-baselines3-zoo's settings (8 envs, 100,000 steps, n_steps 32, batch 256, "
             f"20 epochs, γ 0.98, λ 0.8, lr lin_1e-3, clip lin_0.2); seeds {seeds}, mean ± std; "
             f"{machine()}" + (f", {results['sb3'][0]['versions']}" if sb3 else "")
             + "; one thread each; CPU time is the process's own." + load_note(), "",
             "| implementation | wall-clock | vs SB3 | CPU time | vs SB3 | eval return (10 greedy episodes) |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind in [k for k in ("sb3", "zoo", "zoo-native") if k in results]:
        cells = []
        for key in ("wall_s", "cpu_s"):
            values = [r[key] for r in results[kind]]
            ratio = f"{statistics.mean(values) / sb3[key]:.2f}x" if sb3 else "n/a"
            cells += [summary(values, " s"), ratio]
        lines.append(f"| {names[kind]} | {' | '.join(cells)} | {summary([r['return'] for r in results[kind]])} |")
    if sb3:
        best = min(statistics.mean(r["wall_s"] for r in results[k]) / sb3["wall_s"] for k in ("zoo", "zoo-native"))
        solved = all(r["return"] >= 475 for k in ("zoo", "zoo-native") for r in results[k])
        lines += ["", f"Target: at most 0.2x SB3's wall-clock with evaluation return 500: "
                      f"{'met' if best <= 0.2 and solved else 'missed'} (best {best:.2f}x)."]
    native = results["native"]
    reached = [r for r in native if r["to_target_s"] is not None]
    lines += ["", f"conf/agent/ppo_native.yaml (native CartPole, 32 envs x 64 steps, full-batch, 4 epochs, greedy "
                  f"evaluation after every iteration): wall-clock until the evaluation return first reaches 500, "
                  f"evaluations included; {len(reached)} of {len(native)} seeds reached it.", "",
              "| seed | time to 500 | env steps |", "|---:|---:|---:|"]
    lines += [f"| {seed} | {r['to_target_s']:.2f} s | {r['to_target_steps']:,} |" if r["to_target_s"] is not None
              else f"| {seed} | not reached | |" for seed, r in zip(seeds, native)]
    lines.append(f"| mean | {summary([r['to_target_s'] for r in reached], ' s', 2)} | |")
    under = len(reached) == len(native) and all(r["to_target_s"] < 5 for r in reached)
    lines += ["", "Target: under 5 s on this 2-core CPU (PureJaxRL needs about 7-8 s on an A100 GPU): "
                  + ("met for every seed." if under else "missed.")]
    return "\n".join(lines)


def main():
    rl_main(__file__, __doc__.splitlines()[0], RUNS, tables, "bench_ppo", "## PPO on CartPole")


if __name__ == "__main__":
    main()
