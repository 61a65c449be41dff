"""Per-op overhead of the core and a small-MLP forward+backward, side by side with PyTorch CPU eager.

    python scripts/bench_core.py [--write]     # --write puts the table into docs/benchmarks.md

Target (issue 2): the 4->64->64->2 MLP forward+backward at batch 256 takes <= 0.7x PyTorch's time.
"""
import functools
import sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__) + "/..")
from scripts.benchutil import (  # noqa: E402
    bench_parser, best_time, interleaved_best, machine, publish, ratio, single_thread,
)

torch = single_thread()
import core  # noqa: E402

OPS = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "exp": (lambda a, b: a.exp(), lambda a, b: a.exp()),
    "tanh": (lambda a, b: a.tanh(), lambda a, b: a.tanh()),
    "relu": (lambda a, b: a.relu(), lambda a, b: a.relu()),
    "sum": (lambda a, b: a.sum(), lambda a, b: a.sum()),
    "matmul": (lambda a, b: a @ b, lambda a, b: a @ b),
}


def op_rows():
    rows = []
    for shape, label in (((), "scalar"), ((64, 64), "64x64")):
        x_np = np.random.default_rng(0).standard_normal(shape).astype(np.float32) if shape else np.float32(0.5)
        for name, (ours, theirs) in OPS.items():
            if name == "matmul" and not shape:
                continue
            a = core.tensor(x_np, requires_grad=True)
            b = core.tensor(x_np, requires_grad=True)
            fwd = best_time(lambda: ours(a, b))
            fb = best_time(lambda: ours(a, b).sum().backward())
            t_fwd = t_fb = None
            if torch is not None:
                ta = torch.tensor(x_np, requires_grad=True)
                tb = torch.tensor(x_np, requires_grad=True)
                t_fwd = best_time(lambda: theirs(ta, tb))
                t_fb = best_time(lambda: theirs(ta, tb).sum().backward())
            rows.append((f"{name} ({label})", fwd, t_fwd, fb, t_fb))
    return rows


def mlp_step(linear, mse_loss, x, target, params):
    """Forward+backward of the 4->64->64->2 ReLU MLP with `params` [w1, b1, w2, b2, w3, b3]; the same code
    runs on our tensors and on torch's, given each library's linear and mse_loss."""
    h = x
    for i in range(3):
        h = linear(h, params[2 * i], params[2 * i + 1])
        if i < 2:
            h = h.relu()
    mse_loss(h, target).backward()
    for p in params:
        p.grad = None


MLP_CALLS = 200


def mlp_row(batch=256):
    rng = np.random.default_rng(0)
    sizes = [(64, 4), (64, 64), (2, 64)]
    ws = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in sizes]
    bs = [np.zeros(s[0], np.float32) for s in sizes]
    x_np = rng.standard_normal((batch, 4)).astype(np.float32)
    t_np = rng.standard_normal((batch, 2)).astype(np.float32)

    params = [core.tensor(p, requires_grad=True) for pair in zip(ws, bs) for p in pair]
    steps = [functools.partial(mlp_step, core.linear, core.functional.mse_loss, core.tensor(x_np), core.tensor(t_np),
                               params)]
    if torch is not None:
        tparams = [torch.tensor(p, requires_grad=True) for pair in zip(ws, bs) for p in pair]
        F = torch.nn.functional
        steps.append(functools.partial(mlp_step, F.linear, F.mse_loss, torch.tensor(x_np), torch.tensor(t_np),
                                       tparams))
    # blocks of ours and PyTorch's steps in turn, so that a load change on the machine hits both alike
    best = [t / MLP_CALLS for t in interleaved_best(steps, repeat=15, calls=MLP_CALLS)]
    return best[0], (best[1] if torch is not None else None)


def us(v):
    return f"{v * 1e6:.1f}" if v is not None else "n/a"


def main():
    args = bench_parser(__doc__.splitlines()[0]).parse_args()
    lines = [f"Machine: {machine()}; one BLAS thread on both sides; minimum over 7 repeats (the MLP: best of 15 "
             f"interleaved blocks of {MLP_CALLS} steps).", "",
             "| op | ours fwd (µs) | torch fwd (µs) | ratio | ours fwd+bwd (µs) | torch fwd+bwd (µs) | ratio |",
             "|---|---|---|---|---|---|---|"]
    for name, f, tf, fb, tfb in op_rows():
        lines.append(f"| {name} | {us(f)} | {us(tf)} | {ratio(f, tf) if tf else 'n/a'} | {us(fb)} | {us(tfb)} | "
                     f"{ratio(fb, tfb) if tfb else 'n/a'} |")
    mine, theirs = mlp_row()
    verdict = "" if theirs is None else (" — target ≤ 0.70x: " + ("met" if mine / theirs <= 0.7 else "NOT met"))
    lines += ["", f"MLP 4→64→64→2, batch 256, forward+backward (MSE): ours {us(mine)} µs, torch {us(theirs)} µs, "
              f"ratio {ratio(mine, theirs) if theirs else 'n/a'}{verdict}"]
    publish(args, "bench_core", "## Core: per-op overhead and small-MLP forward+backward (`scripts/bench_core.py`)",
            "\n".join(lines))


if __name__ == "__main__":
    main()
