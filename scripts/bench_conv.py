"""conv2d and conv_transpose2d forward and forward+backward at DCGAN-on-MNIST sizes (batch 128), side by
side with PyTorch CPU eager, one BLAS/OpenMP thread on both sides.

    python scripts/bench_conv.py [--write]     # --write puts the table into docs/benchmarks.md

Rows are the layers of the two usual MNIST DCGANs: TensorFlow's tutorial (k5 s2 "same") and the PyTorch
style (k4 s2 padding 1). PyTorch has no strided "same", so its rows use the symmetric padding that gives
the same output size and the same work (2 for k5; the transposed conv adds output_padding 1). The input
requires grad in every row (as in a GAN, where the critic's input gradient flows into the generator).
Target (issue 3): a DCGAN training step <= 1.5x PyTorch's time.
"""
import argparse
import sys
import time

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__) + "/..")
from scripts.benchutil import machine, ratio, single_thread, write_section  # noqa: E402

torch = single_thread()
import core  # noqa: E402
from core.ops.conv import conv2d, conv_transpose2d  # noqa: E402

BATCH = 128
# (label, transposed, in channels, out channels, input size, kernel, stride, our padding, torch padding, output_padding)
LAYERS = [
    ("D conv 1->64, 28->14, k5 s2 same", False, 1, 64, 28, 5, 2, "same", 2, 0),
    ("D conv 64->128, 14->7, k5 s2 same", False, 64, 128, 14, 5, 2, "same", 2, 0),
    ("G convT 256->128, 7->7, k5 s1 same", True, 256, 128, 7, 5, 1, "same", 2, 0),
    ("G convT 128->64, 7->14, k5 s2 same", True, 128, 64, 7, 5, 2, "same", 2, 1),
    ("G convT 64->1, 14->28, k5 s2 same", True, 64, 1, 14, 5, 2, "same", 2, 1),
    ("D conv 1->64, 28->14, k4 s2 p1", False, 1, 64, 28, 4, 2, 1, 1, 0),
    ("D conv 64->128, 14->7, k4 s2 p1", False, 64, 128, 14, 4, 2, 1, 1, 0),
    ("G convT 128->64, 7->14, k4 s2 p1", True, 128, 64, 7, 4, 2, 1, 1, 0),
    ("G convT 64->1, 14->28, k4 s2 p1", True, 64, 1, 14, 4, 2, 1, 1, 0),
]


def interleaved_best(fns, repeat):
    """Best single-call seconds of each fn, calling them in turn so that load from other processes on a
    shared machine hits all of them alike."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def measure(transposed, c_in, c_out, size, k, stride, padding, torch_padding, output_padding, repeat):
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((BATCH, c_in, size, size)).astype(np.float32)
    w_np = (rng.standard_normal((c_in, c_out, k, k) if transposed else (c_out, c_in, k, k)) * 0.05).astype(np.float32)
    b_np = np.zeros(c_out, np.float32)

    x, w, b = (core.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    if transposed:
        ours = lambda: conv_transpose2d(x, w, b, stride, padding)  # noqa: E731
    else:
        ours = lambda: conv2d(x, w, b, stride, padding)  # noqa: E731
    gy = core.tensor(rng.standard_normal(ours().shape).astype(np.float32))

    def ours_fwd():
        with core.no_grad():
            ours()

    def ours_fb():
        x.grad = w.grad = b.grad = None
        ours().backward(gy)

    if torch is None:
        return interleaved_best([ours_fwd, ours_fb], repeat) + [None, None]
    import torch.nn.functional as tf
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    if transposed:
        theirs = lambda: tf.conv_transpose2d(tx, tw, tb, stride, torch_padding, output_padding)  # noqa: E731
    else:
        theirs = lambda: tf.conv2d(tx, tw, tb, stride, torch_padding)  # noqa: E731
    tgy = torch.tensor(gy.numpy())
    assert tuple(theirs().shape) == gy.shape

    def theirs_fwd():
        with torch.no_grad():
            theirs()

    def theirs_fb():
        tx.grad = tw.grad = tb.grad = None
        theirs().backward(tgy)

    fwd, fb, t_fwd, t_fb = interleaved_best([ours_fwd, ours_fb, theirs_fwd, theirs_fb], repeat)
    return fwd, fb, t_fwd, t_fb


def table(repeat):
    ms = lambda t: "n/a" if t is None else f"{t * 1e3:.1f}"  # noqa: E731
    lines = [f"Batch {BATCH}, float32, one thread; {machine()}. Times in ms (best of {repeat}).", "",
             "| layer | ours fwd | torch fwd | ratio | ours fwd+bwd | torch fwd+bwd | ratio |",
             "|---|---|---|---|---|---|---|"]
    total = [0.0, 0.0]
    for label, *spec in LAYERS:
        fwd, fb, t_fwd, t_fb = measure(*spec, repeat=repeat)
        lines.append(f"| {label} | {ms(fwd)} | {ms(t_fwd)} | {ratio(fwd, t_fwd)} | {ms(fb)} | {ms(t_fb)} | "
                     f"{ratio(fb, t_fb)} |")
        total[0] += fb
        total[1] += t_fb or 0.0
        print(lines[-1], flush=True)
    lines.append(f"| **all layers, fwd+bwd** | | | | {ms(total[0])} | {ms(total[1] or None)} | "
                 f"{ratio(total[0], total[1])} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per row (the best is reported)")
    args = parser.parse_args()
    text = "## Convolutions (DCGAN on MNIST)\n\n" + table(args.repeat)
    print()
    print(text)
    if args.write:
        write_section("bench_conv", text)


if __name__ == "__main__":
    main()
