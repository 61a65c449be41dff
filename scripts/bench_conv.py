"""conv2d and conv_transpose2d forward, forward+backward and second order at the GAN-on-MNIST sizes, side by
side with PyTorch CPU eager, one BLAS/OpenMP thread on both sides.

    python scripts/bench_conv.py [--write] [--cpu-time]   # --write puts the table into docs/benchmarks.md

Rows are the layers of the two usual MNIST DCGANs at batch 128: TensorFlow's tutorial (k5 s2 "same") and
the PyTorch style (k4 s2 padding 1); then those of `model=wgan_gp` (gans/wgan.py's MTF networks, width 64)
at batch 64, the WGAN-GP row of scripts/bench_gan.py. PyTorch has no strided "same", so its rows use the
symmetric padding that gives the same output size and the same work (2 for k5, 1 for k4, 3 for k7; the
transposed k5 s2 conv adds output_padding 1). The input requires grad in every row (as in a GAN, where the
critic's input gradient flows into the generator). "2nd order" is the gradient penalty's pattern: the input
gradient with create_graph, then the backward of its squared norm to the input and the weight.
--cpu-time times by this process's CPU time instead of the wall clock: on a loaded shared machine it leaves
out the time spent waiting for a core, which the wall clock counts for whichever side was unlucky.
Targets: a DCGAN training step <= 1.5x PyTorch's time (issue 3), a WGAN-GP iteration too (issue 7).
"""
import sys
import time

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__) + "/..")
from scripts.benchutil import bench_parser, interleaved_best, machine, publish, ratio, single_thread  # noqa: E402

torch = single_thread()
import core  # noqa: E402
from core.ops.conv import conv2d, conv_transpose2d  # noqa: E402

# (label, batch, transposed, in channels, out channels, input size, kernel, stride, our padding, torch padding,
#  output_padding)
LAYERS = [
    ("D conv 1->64, 28->14, k5 s2 same", 128, False, 1, 64, 28, 5, 2, "same", 2, 0),
    ("D conv 64->128, 14->7, k5 s2 same", 128, False, 64, 128, 14, 5, 2, "same", 2, 0),
    ("G convT 256->128, 7->7, k5 s1 same", 128, True, 256, 128, 7, 5, 1, "same", 2, 0),
    ("G convT 128->64, 7->14, k5 s2 same", 128, True, 128, 64, 7, 5, 2, "same", 2, 1),
    ("G convT 64->1, 14->28, k5 s2 same", 128, True, 64, 1, 14, 5, 2, "same", 2, 1),
    ("D conv 1->64, 28->14, k4 s2 p1", 128, False, 1, 64, 28, 4, 2, 1, 1, 0),
    ("D conv 64->128, 14->7, k4 s2 p1", 128, False, 64, 128, 14, 4, 2, 1, 1, 0),
    ("G convT 128->64, 7->14, k4 s2 p1", 128, True, 128, 64, 7, 4, 2, 1, 1, 0),
    ("G convT 64->1, 14->28, k4 s2 p1", 128, True, 64, 1, 14, 4, 2, 1, 1, 0),
    ("WGAN-GP C conv 1->64, 28->14, k4 s2 same", 64, False, 1, 64, 28, 4, 2, "same", 1, 0),
    ("WGAN-GP C conv 64->64, 14->7, k4 s2 same", 64, False, 64, 64, 14, 4, 2, "same", 1, 0),
    ("WGAN-GP G convT 128->128, 7->14, k4 s2 same", 64, True, 128, 128, 7, 4, 2, "same", 1, 0),
    ("WGAN-GP G convT 128->128, 14->28, k4 s2 same", 64, True, 128, 128, 14, 4, 2, "same", 1, 0),
    ("WGAN-GP G conv 128->1, 28->28, k7 s1 same", 64, False, 128, 1, 28, 7, 1, "same", 3, 0),
]


def passes(forward, params, gy, no_grad, input_grad):
    """The three timed calls of one library: forward without a graph, forward+backward, and the
    gradient penalty's second order. `params` are (input, weight, bias); `input_grad(y, x)` is that
    library's gradient of y with respect to x with create_graph."""
    x = params[0]

    def fwd():
        with no_grad():
            forward()

    def fwd_bwd():
        for p in params:
            p.grad = None
        forward().backward(gy)

    def second_order():
        for p in params:
            p.grad = None
        (gx,) = input_grad((forward() * gy).sum(), x)
        (gx * gx).sum().backward()

    return [fwd, fwd_bwd, second_order]


def measure(batch, transposed, c_in, c_out, size, k, stride, padding, torch_padding, output_padding, repeat, clock):
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
    w_np = (rng.standard_normal((c_in, c_out, k, k) if transposed else (c_out, c_in, k, k)) * 0.05).astype(np.float32)
    b_np = np.zeros(c_out, np.float32)

    x, w, b = (core.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    if transposed:
        ours = lambda: conv_transpose2d(x, w, b, stride, padding)  # noqa: E731
    else:
        ours = lambda: conv2d(x, w, b, stride, padding)  # noqa: E731
    gy = core.tensor(rng.standard_normal(ours().shape).astype(np.float32))
    fns = passes(ours, (x, w, b), gy, core.no_grad, lambda y, x: core.grad(y, [x], create_graph=True))
    if torch is None:
        return interleaved_best(fns, repeat, clock=clock) + [None, None, None]
    import torch.nn.functional as tf
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    if transposed:
        theirs = lambda: tf.conv_transpose2d(tx, tw, tb, stride, torch_padding, output_padding)  # noqa: E731
    else:
        theirs = lambda: tf.conv2d(tx, tw, tb, stride, torch_padding)  # noqa: E731
    tgy = torch.tensor(gy.numpy())
    assert tuple(theirs().shape) == gy.shape
    fns += passes(theirs, (tx, tw, tb), tgy, torch.no_grad,
                  lambda y, x: torch.autograd.grad(y, x, create_graph=True))
    return interleaved_best(fns, repeat, clock=clock)


def table(repeat, clock):
    ms = lambda t: "n/a" if t is None else f"{t * 1e3:.1f}"  # noqa: E731
    clock_name = "CPU time" if clock is time.process_time else "wall clock"
    lines = [f"float32, one thread; {machine()}. Times in ms ({clock_name}, best of {repeat}).", "",
             "| layer | batch | ours fwd | torch fwd | ratio | ours fwd+bwd | torch fwd+bwd | ratio | ours 2nd order | "
             "torch 2nd order | ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    total = [0.0, 0.0]
    for label, *spec in LAYERS:
        fwd, fb, second, t_fwd, t_fb, t_second = measure(*spec, repeat=repeat, clock=clock)
        lines.append(f"| {label} | {spec[0]} | {ms(fwd)} | {ms(t_fwd)} | {ratio(fwd, t_fwd)} | {ms(fb)} | {ms(t_fb)} | "
                     f"{ratio(fb, t_fb)} | {ms(second)} | {ms(t_second)} | {ratio(second, t_second)} |")
        total[0] += fb
        total[1] += t_fb or 0.0
        print(lines[-1], flush=True)
    lines.append(f"| **all layers, fwd+bwd** | | | | | {ms(total[0])} | {ms(total[1] or None)} | "
                 f"{ratio(total[0], total[1])} | | | |")
    return "\n".join(lines)


def main():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per row (the best is reported)")
    parser.add_argument("--cpu-time", action="store_true", help="time by process CPU time, not the wall clock")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    publish(args, "bench_conv", "## Convolutions (GANs on MNIST)", table(args.repeat, clock))


if __name__ == "__main__":
    main()
