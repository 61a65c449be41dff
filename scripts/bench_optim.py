"""Optimizer and small-network training benchmarks, side by side with PyTorch CPU eager.

    python scripts/bench_optim.py [--write]     # --write puts the table into docs/benchmarks.md

Rows: an Adam step over a 100-tensor model (50 Linear(64, 64) layers), the RL-sized MLP training step
(4->64->64->2, forward + MSE + backward + Adam) at batch 64 and 256, and the acting path (a no-grad
forward of that MLP at batch 8). Single-threaded BLAS on both sides; each time is the minimum over
rounds in which ours and PyTorch alternate. Targets (issue 3): every row <= 0.5x PyTorch's time.
"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads its BLAS

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from scripts.benchutil import bench_parser, best_time, machine, publish, ratio, single_thread  # noqa: E402

torch = single_thread()
import core  # noqa: E402
import core.functional as F  # noqa: E402
from core import nn, optim  # noqa: E402

TARGET = 0.5
ROUNDS = 7


def compare(ours, theirs):
    """Minimum seconds per call of each, measured in alternating rounds so that a load change on the
    machine hits both sides alike; `theirs` may be None (no PyTorch)."""
    best_ours = best_theirs = float("inf")
    for _ in range(ROUNDS):
        best_ours = min(best_ours, best_time(ours, repeat=1))
        if theirs is not None:
            best_theirs = min(best_theirs, best_time(theirs, repeat=1))
    return best_ours, (best_theirs if theirs is not None else None)


def adam_100_tensors():
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(50)])
    params = list(model.parameters())
    grads = [np.random.default_rng(i).standard_normal(p.shape).astype(np.float32) for i, p in enumerate(params)]
    for p, g in zip(params, grads):
        p.grad = core.tensor(g)
    opt = optim.Adam(params, lr=1e-3)
    t_step = None
    if torch is not None:
        t_model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(50)])
        for p, g in zip(t_model.parameters(), grads):
            p.grad = torch.from_numpy(g.copy())
        t_step = torch.optim.Adam(t_model.parameters(), lr=1e-3).step
    return ("Adam step, 100 tensors (208k params)", *compare(opt.step, t_step))


def mlp_ours():
    return nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))


def mlp_torch():
    return torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 2))


def mlp_train_step(batch):
    rng = np.random.default_rng(batch)
    x_np = rng.standard_normal((batch, 4)).astype(np.float32)
    y_np = rng.standard_normal((batch, 2)).astype(np.float32)
    model = mlp_ours()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x, y = core.tensor(x_np), core.tensor(y_np)

    def step():
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_step = None
    if torch is not None:
        t_model = mlp_torch()
        t_opt = torch.optim.Adam(t_model.parameters(), lr=1e-3)
        tx, ty = torch.from_numpy(x_np), torch.from_numpy(y_np)

        def t_step():
            loss = torch.nn.functional.mse_loss(t_model(tx), ty)
            t_opt.zero_grad()
            loss.backward()
            t_opt.step()

    return (f"MLP 4-64-64-2 train step, batch {batch}", *compare(step, t_step))


def acting(batch=8):
    obs = np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)
    model = mlp_ours()
    x = core.tensor(obs)

    def act():
        with core.no_grad():
            return model(x)

    t_act = None
    if torch is not None:
        t_model = mlp_torch()
        tx = torch.from_numpy(obs)

        def t_act():
            with torch.no_grad():
                return t_model(tx)

    return (f"MLP acting forward (no grad), batch {batch}", *compare(act, t_act))


def table(rows):
    lines = [f"Machine: {machine()}; single-threaded BLAS on both sides; min of {ROUNDS} rounds, ours and "
             "PyTorch alternating.", "",
             "| benchmark | ours (µs) | PyTorch (µs) | ours / PyTorch | target ≤ 0.5x |", "|---|---|---|---|---|"]
    for name, ours, theirs in rows:
        met = "n/a" if theirs is None else ("met" if ours <= TARGET * theirs else "missed")
        peer = f"{theirs * 1e6:.1f}" if theirs is not None else "n/a"
        lines.append(f"| {name} | {ours * 1e6:.1f} | {peer} | {ratio(ours, theirs)} | {met} |")
    return "\n".join(lines)


def main():
    args = bench_parser(__doc__.splitlines()[0]).parse_args()
    rows = [adam_100_tensors(), mlp_train_step(64), mlp_train_step(256), acting()]
    publish(args, "bench_optim", "### Optimizer, MLP training step and acting path (CPU)", table(rows))


if __name__ == "__main__":
    main()
