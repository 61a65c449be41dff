"""DQN on CartPole-v1: the lab next to Stable-Baselines3 with rl-baselines3-zoo's tuned settings, and
the lab's fastest DQN preset.

    .bench/venv/bin/python scripts/bench_dqn.py [--seeds 0 1 2] [--sb3-python PYTHON] [--skip-sb3] [--write]

Rows (each run in a fresh process with one BLAS / torch thread; seeds interleaved, so load from other
processes on a shared machine hits every row alike):
- zoo settings (conf/tuned/dqn_cartpole.yaml: one env, 50,000 steps, 128 updates of batch 64 every 256 steps,
  256-256 MLP, ...) on gymnasium's CartPole, as SB3 steps it;
- the same settings on the native vectorized CartPole (same states and rewards, cheaper steps);
- SB3 2.x DQN with the same settings (`--sb3-python`: an interpreter with stable-baselines3 and torch);
- conf/agent/dqn_fast.yaml: wall-clock until a greedy evaluation first reaches its target return,
  evaluations included.
Wall-clock is the training loop (SB3: `learn`) without start-up; CPU is that process's CPU time over
the same span. The evaluation return is the mean of 10 greedy (deterministic) episodes after training.
--write puts the tables into docs/benchmarks.md (section bench_dqn).
"""
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.benchutil import lab_run, load_note, machine, rl_main, summary  # noqa: E402

# rl-baselines3-zoo, hyperparams/dqn.yml, CartPole-v1
ZOO = dict(total_timesteps=50_000, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1_000,
           gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
           exploration_final_eps=0.04, net_arch=[256, 256])


def run_sb3(seed):
    """SB3's DQN with the zoo's settings (runs in the SB3 interpreter: no lab imports)."""
    import time

    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    torch.set_num_threads(1)
    settings = {k: v for k, v in ZOO.items() if k not in ("total_timesteps", "net_arch")}
    model = DQN("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=seed),
                policy_kwargs={"net_arch": ZOO["net_arch"]}, seed=seed, device="cpu", **settings)
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(ZOO["total_timesteps"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=seed + 10_000)
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True, return_episode_rewards=True)
    return {"wall_s": wall, "cpu_s": cpu, "return": sum(returns) / len(returns)}


RUNS = {"sb3": run_sb3, "zoo": lambda seed: lab_run("dqn", "dqn", seed, "sync"),
        "zoo-native": lambda seed: lab_run("dqn", "dqn", seed, "native"),
        "fast": lambda seed: lab_run("dqn", "dqn_fast", seed)}
NAMES = {"sb3": "Stable-Baselines3 DQN (DummyVecEnv of gymnasium CartPole)",
         "zoo": "lab DQN, gymnasium CartPole (SyncVectorEnv)", "zoo-native": "lab DQN, native vectorized CartPole"}


def tables(results, seeds):
    sb3 = results.get("sb3")
    lines = [f"DQN on CartPole-v1 with rl-baselines3-zoo's settings (one env, 50,000 steps, lr 2.3e-3, batch 64, "
             f"buffer 100,000, learning starts 1,000, γ 0.99, target update every 10 steps, 128 updates every 256 "
             f"steps, ε 1 → 0.04 over 16 %, 256-256 MLP); seeds {seeds}, mean ± std; {machine()}; "
             "one thread each." + load_note(), "",
             "| implementation | wall-clock | CPU time | wall vs SB3 | eval return per seed | mean eval return |",
             "|---|---:|---:|---:|---|---:|"]
    for kind in [k for k in ("sb3", "zoo", "zoo-native") if k in results]:
        walls = [r["wall_s"] for r in results[kind]]
        ratio = f"{statistics.mean(walls) / statistics.mean(r['wall_s'] for r in sb3):.2f}x" if sb3 else "n/a"
        returns = [r["return"] for r in results[kind]]
        lines.append(f"| {NAMES[kind]} | {summary(walls, ' s')} | {summary([r['cpu_s'] for r in results[kind]], ' s')} "
                     f"| {ratio} | {', '.join(f'{x:.0f}' for x in returns)} | {statistics.mean(returns):.1f} |")
    fast = results["fast"]
    reached = [r for r in fast if r["to_target_s"] is not None]
    lines += ["", "conf/agent/dqn_fast.yaml (the lab's fastest DQN preset, native vectorized CartPole; greedy "
                  "evaluations of 10 episodes while training, stop at the first that reaches the preset's target "
                  f"return): {len(reached)} of {len(fast)} seeds reached it.", "",
              "| seed | time to target | env steps | wall-clock | final eval return |", "|---:|---:|---:|---:|---:|"]
    for seed, r in zip(seeds, fast):
        target = f"{r['to_target_s']:.2f} s | {r['to_target_steps']:,}" if r["to_target_s"] is not None \
            else "not reached |"
        lines.append(f"| {seed} | {target} | {r['wall_s']:.2f} s | {r['return']:.1f} |")
    lines.append(f"| mean | {summary([r['to_target_s'] for r in reached], ' s', 2)} | | "
                 f"{summary([r['wall_s'] for r in fast], ' s', 2)} | "
                 f"{statistics.mean(r['return'] for r in fast):.1f} |")
    return "\n".join(lines)


def main():
    rl_main(__file__, __doc__.splitlines()[0], RUNS, tables, "bench_dqn", "## DQN on CartPole")


if __name__ == "__main__":
    main()
