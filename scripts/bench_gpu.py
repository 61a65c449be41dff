"""The GPU rows of docs/benchmarks.md: PPO and DQN time to solve CartPole on the GPU, and a DCGAN epoch and a
WGAN-GP iteration against PyTorch eager on the same GPU (where torch sees it). scripts/gpu_check.sh runs it:

    python scripts/bench_gpu.py [--device cuda] [--seeds 0 1 2] [--steps 5] [--repeat 3] [--write [PATH]]

Rows:
- conf/agent/ppo_native.yaml and conf/agent/dqn_fast.yaml (native vectorized CartPole on the device, the
  networks and updates there too): wall-clock until a greedy evaluation first reaches the preset's target
  return, evaluations included; each seed in a fresh process (cupy's compiled kernels come from its disk
  cache, so a run before this one keeps compilation out of the times).
- scripts/bench_gan.py's DCGAN epoch (batch 128, scaled from `--steps` steps) and WGAN-GP generator iteration
  (batch 64), ours and PyTorch's alternating, each block ended by a device synchronisation.
--device emu rehearses the script on the CPU stand-in (its times mean nothing; write them elsewhere with
--write PATH). --write without a path updates the section bench_gpu of docs/benchmarks.md.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)) + "/..")
from scripts.benchutil import DOC, interleaved_best, lab_run, machine, measure, ratio, summary, write_section  # noqa: E402

PRESETS = {"ppo": ("ppo", "ppo_native"), "dqn": ("dqn", "dqn_fast")}


def rl_rows(device, seeds):
    lines = ["| preset | seed | time to target | env steps | eval return |", "|---|---:|---:|---:|---:|"]
    for kind, (agent, preset) in PRESETS.items():
        runs = [measure(__file__, kind, seed, extra=("--device", device)) for seed in seeds]
        for seed, r in zip(seeds, runs):
            print(kind, seed, r, flush=True)
            reached = r["to_target_s"] is not None
            time = f"{r['to_target_s']:.2f} s" if reached else "not reached"
            env_steps = f"{r['to_target_steps']:,}" if reached else ""
            lines.append(f"| {preset} | {seed} | {time} | {env_steps} | {r['return']:.1f} |")
        lines.append(f"| {preset} | mean | {summary([r['to_target_s'] for r in runs], ' s', 2)} | | |")
    return lines


def gan_rows(device, steps, repeat):
    from core.backend import array_module
    from scripts import bench_gan
    torch = bench_gan.torch
    peer = device if torch is not None and device.startswith("cuda") and torch.cuda.is_available() else None
    device_sync = array_module(device).cuda.Device().synchronize

    def blocks(fn, sync, calls):
        def block():
            for _ in range(calls):
                fn()
            sync()
        return block

    lines = [f"| row | ours (s) | {f'PyTorch {peer} eager' if peer else 'PyTorch (not installed)'} (s) | ratio |",
             "|---|---:|---:|---:|"]
    for label, ours, theirs, calls, scale in [
        (f"DCGAN epoch (batch {bench_gan.DCGAN_BATCH}, 60,000 images)", bench_gan.our_dcgan, bench_gan.torch_dcgan,
         steps, bench_gan.EPOCH_IMAGES / bench_gan.DCGAN_BATCH / steps),
        (f"WGAN-GP generator iteration (5 critic steps with GP + 1 G step, batch {bench_gan.WGAN_BATCH})",
         bench_gan.our_wgan_gp, bench_gan.torch_wgan_gp, 1, 1.0),
    ]:
        fns = [blocks(ours(device), device_sync, calls)]
        if peer:
            fns.append(blocks(theirs(peer), torch.cuda.synchronize, calls))
        times = [t * scale for t in interleaved_best(fns, repeat)]
        theirs_s = times[1] if peer else None
        print(label, times, flush=True)
        lines.append(f"| {label} | {times[0]:.2f} | {'n/a' if theirs_s is None else f'{theirs_s:.2f}'} | "
                     f"{ratio(times[0], theirs_s) if theirs_s else 'n/a'} |")
    return lines


def gpu_name(device):
    from core.backend import array_module
    if not device.startswith("cuda"):
        return f"the {device} stand-in (not a GPU: these times mean nothing)"
    cupy = array_module(device)
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return f"{props['name'].decode()}, cupy {cupy.__version__}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5, help="DCGAN steps per timed block")
    parser.add_argument("--repeat", type=int, default=3, help="timed blocks per GAN row (the best is reported)")
    parser.add_argument("--write", nargs="?", const=str(DOC), help="write the section into docs/benchmarks.md or PATH")
    parser.add_argument("--one", choices=tuple(PRESETS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a single RL measurement, in this (fresh) process
        agent, preset = PRESETS[args.one]
        print(json.dumps(lab_run(agent, preset, args.seeds[0], device=args.device)))
        return

    lines = [f"Device {args.device}: {gpu_name(args.device)}; host {machine()}.", "",
             "Time to solve CartPole-v1 (greedy evaluations of 10 episodes while training; the run stops at the "
             "first that reaches the preset's target return):", "", *rl_rows(args.device, args.seeds), "",
             f"GAN training steps, float32 (best of {args.repeat}; the DCGAN epoch scales {args.steps} timed steps):",
             "", *gan_rows(args.device, args.steps, args.repeat)]
    text = "## GPU (`scripts/gpu_check.sh`)\n\n" + "\n".join(lines)
    print(text)
    if args.write:
        write_section("bench_gpu", text, args.write)


if __name__ == "__main__":
    main()
