"""Convolutions and pooling: values against naive loops, first and second order gradients, Keras' shape
rules, the FX-CV fixtures (shared/experiments/fixtures.md), layers and error messages."""
import math

import numpy as np
import pytest

import core
from core import nn
from core.nn.conv import (
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, Conv2d, ConvTranspose2d, GlobalAvgPool2d, GlobalMaxPool2d,
    MaxPool2d,
)
from core.ops import conv as conv_ops
from core.ops.conv import (
    adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, conv2d, conv_transpose2d, global_avg_pool2d,
    global_max_pool2d, max_pool2d,
)

R = np.random.default_rng(7)


def leaf(*shape, dtype=np.float64):
    return core.tensor(R.standard_normal(shape).astype(dtype), requires_grad=True)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ----- naive references: loops over output pixels (conv) and input pixels (transposed conv) -----
def same_pads(n, k_eff, s):
    total = max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def explicit_pads(padding, in_hw, kernel, stride, dilation):
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return tuple(same_pads(n, (k - 1) * d + 1, s) for n, k, s, d in zip(in_hw, kernel, stride, dilation))
    return tuple((p, p) for p in pair(padding))


def naive_conv2d(x, w, b, stride, pads, dilation, groups):
    (sh, sw), (dh, dw) = stride, dilation
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads))
    o, cg, kh, kw = w.shape
    oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((x.shape[0], o, oh, ow))
    for oc in range(o):
        g = oc // (o // groups)
        for i in range(oh):
            for j in range(ow):
                hs, ws = slice(i * sh, i * sh + (kh - 1) * dh + 1, dh), slice(j * sw, j * sw + (kw - 1) * dw + 1, dw)
                y[:, oc, i, j] = (xp[:, g * cg:(g + 1) * cg, hs, ws] * w[oc]).sum(axis=(1, 2, 3))
    return y if b is None else y + b[:, None, None]


def naive_conv_transpose2d(x, w, b, stride, pads, out_hw, dilation, groups):
    """Scatter-add of x[n, ic, i, j] * w[ic] at (i*stride, j*stride), then crop the padding."""
    (sh, sw), (dh, dw), ((top, bottom), (left, right)) = stride, dilation, pads
    n, cin, h, wd = x.shape
    _, og, kh, kw = w.shape
    out = np.zeros((n, og * groups, out_hw[0] + top + bottom, out_hw[1] + left + right))
    for ic in range(cin):
        g = ic // (cin // groups)
        for i in range(h):
            for j in range(wd):
                hs, ws = slice(i * sh, i * sh + (kh - 1) * dh + 1, dh), slice(j * sw, j * sw + (kw - 1) * dw + 1, dw)
                out[:, g * og:(g + 1) * og, hs, ws] += x[:, ic, i, j, None, None, None] * w[ic]
    out = out[:, :, top:top + out_hw[0], left:left + out_hw[1]]
    return out if b is None else out + b[:, None, None]


def naive_pool(x, kernel, stride, pads, reduce, pad_value, count_pad):
    (kh, kw), (sh, sw) = kernel, stride
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads), constant_values=pad_value)
    real = np.pad(np.ones(x.shape[2:]), pads)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            if reduce == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                count = kh * kw if count_pad else real[i * sh:i * sh + kh, j * sw:j * sw + kw].sum()
                y[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return y


# ----- conv2d -----
# (kernel, stride, padding, dilation, groups, bias)
CONV_CASES = [
    ((3, 3), 1, 0, 1, 1, True),
    ((3, 3), 2, 1, 1, 1, True),
    ((4, 4), 2, "same", 1, 1, False),
    ((5, 5), 2, "same", 1, 1, True),
    ((3, 2), 3, "same", 1, 1, True),
    ((3, 3), 1, "same", 2, 1, True),
    ((2, 3), 2, "valid", 1, 1, True),
    ((3, 3), (2, 1), (1, 2), (1, 2), 1, True),
    ((3, 3), 1, 1, 1, 2, True),
    ((3, 3), 2, "same", 1, 4, False),
]


@pytest.mark.parametrize("kernel,stride,padding,dilation,groups,bias", CONV_CASES, ids=str)
def test_conv2d_matches_naive_loops(kernel, stride, padding, dilation, groups, bias):
    x = R.standard_normal((2, 4, 7, 8))
    w = R.standard_normal((8, 4 // groups) + kernel)
    b = R.standard_normal(8) if bias else None
    pads = explicit_pads(padding, (7, 8), kernel, pair(stride), pair(dilation))
    want = naive_conv2d(x, w, b, pair(stride), pads, pair(dilation), groups)
    bias = None if b is None else core.tensor(b)
    got = conv2d(core.tensor(x), core.tensor(w), bias, stride, padding, dilation, groups)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    got32 = conv2d(core.tensor(x, dtype=core.float32), core.tensor(w, dtype=core.float32),
                   None if b is None else core.tensor(b, dtype=core.float32), stride, padding, dilation, groups)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32.numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,stride,padding,dilation,groups,bias", CONV_CASES, ids=str)
def test_conv2d_first_and_second_order(kernel, stride, padding, dilation, groups, bias):
    x, w = leaf(2, 4, 5, 6), leaf(4, 4 // groups, *kernel)
    inputs = (x, w, leaf(4)) if bias else (x, w)
    fn = lambda x, w, b=None: conv2d(x, w, b, stride, padding, dilation, groups)  # noqa: E731
    assert core.gradcheck(fn, inputs)
    assert core.gradgradcheck(fn, inputs)


# ----- conv_transpose2d -----
# (kernel, stride, padding, output_padding, dilation, groups, bias)
TRANSPOSED_CASES = [
    ((3, 3), 1, 0, 0, 1, 1, True),
    ((3, 3), 2, 1, 1, 1, 1, True),
    ((4, 4), 2, 1, 0, 1, 1, False),
    ((5, 5), 2, "same", 0, 1, 1, True),
    ((4, 3), 2, "same", 0, 1, 1, True),
    ((3, 3), 2, "valid", 0, 1, 1, True),
    ((2, 2), 3, "valid", 0, 1, 1, True),   # kernel < stride: Keras' H*stride, uncovered rows hold the bias
    ((3, 3), 2, "valid", 1, 1, 1, True),
    ((3, 3), 3, "same", 2, 1, 1, True),
    ((3, 3), (2, 1), (1, 0), (1, 0), (1, 2), 1, True),
    ((3, 3), 2, 1, 1, 1, 2, True),
]


def transposed_geometry(n_hw, kernel, stride, padding, output_padding, dilation):
    """Output size and the padding of the conv it inverts: PyTorch's rule for ints, Keras/TF for strings."""
    out, pads = [], []
    for n, k, s, p, a, d in zip(n_hw, kernel, pair(stride), pair(padding) if not isinstance(padding, str)
                                else (padding, padding), pair(output_padding), pair(dilation)):
        k = (k - 1) * d + 1
        if p == "same":
            o = n * s if a == 0 else (n - 1) * s + k % 2 + a
            total = max((n - 1) * s + k - o, 0)
            pads.append((total // 2, total - total // 2))
        elif p == "valid":
            o = n * s + max(k - s, 0) if a == 0 else (n - 1) * s + k + a
            pads.append((0, 0))
        else:
            o = (n - 1) * s - 2 * p + k + a
            pads.append((p, p))
        out.append(o)
    return tuple(out), tuple(pads)


@pytest.mark.parametrize("kernel,stride,padding,output_padding,dilation,groups,bias", TRANSPOSED_CASES, ids=str)
def test_conv_transpose2d_matches_naive_scatter(kernel, stride, padding, output_padding, dilation, groups, bias):
    x = R.standard_normal((2, 4, 5, 4))
    w = R.standard_normal((4, 6 // groups) + kernel)
    b = R.standard_normal(6) if bias else None
    out_hw, pads = transposed_geometry((5, 4), kernel, stride, padding, output_padding, dilation)
    want = naive_conv_transpose2d(x, w, b, pair(stride), pads, out_hw, pair(dilation), groups)
    got = conv_transpose2d(core.tensor(x), core.tensor(w), None if b is None else core.tensor(b), stride, padding,
                           output_padding, dilation, groups)
    assert got.shape == (2, 6) + out_hw
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding,output_padding,dilation,groups,bias", TRANSPOSED_CASES, ids=str)
def test_conv_transpose2d_first_and_second_order(kernel, stride, padding, output_padding, dilation, groups, bias):
    x, w = leaf(2, 2, 3, 4), leaf(2, 4 // groups, *kernel)
    inputs = (x, w, leaf(4)) if bias else (x, w)
    fn = lambda x, w, b=None: conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups)  # noqa: E731
    assert core.gradcheck(fn, inputs)
    assert core.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("batch,channels,kernel,stride,padding", [(4, 64, 5, 2, "same"), (2, 128, 4, 1, 1),
                                                                  (1, 2, 3, 1, "same")], ids=str)
def test_batch_sized_shapes_match_naive_and_are_adjoint(batch, channels, kernel, stride, padding):
    """Sizes where col2im adds per output pixel (much work per pixel) or per kernel tap (little), both checked;
    and <conv2d(x), y> = <x, conv_transpose2d(y)>, the identity the backward relies on."""
    x = R.standard_normal((batch, channels, 9, 8))
    w = R.standard_normal((3, channels, kernel, kernel))
    pads = explicit_pads(padding, (9, 8), (kernel, kernel), (stride, stride), (1, 1))
    y = conv2d(core.tensor(x), core.tensor(w), stride=stride, padding=padding)
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, w, None, (stride, stride), pads, (1, 1), 1), rtol=1e-10,
                               atol=1e-10)
    g = R.standard_normal(y.shape)
    x_t = core.tensor(x, requires_grad=True)
    conv2d(x_t, core.tensor(w), stride=stride, padding=padding).backward(core.tensor(g))
    want = naive_conv_transpose2d(g, w, None, (stride, stride), pads, (9, 8), (1, 1), 1)
    np.testing.assert_allclose(x_t.grad.numpy(), want, rtol=1e-10, atol=1e-10)
    if stride == 1 and not isinstance(padding, str):  # then conv_transpose2d maps straight back to 9x8
        gx = conv_transpose2d(core.tensor(g), core.tensor(w), stride=stride, padding=padding)
        np.testing.assert_allclose(gx.numpy(), want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose((y.numpy() * g).sum(), (x * want).sum(), rtol=1e-10)


def test_channels_last_outputs_feed_the_next_layer():
    """conv outputs are NCHW views of channels-last memory; chained ops must not care."""
    x = R.standard_normal((2, 3, 8, 8))
    w1, w2 = R.standard_normal((5, 3, 3, 3)), R.standard_normal((4, 5, 3, 3))
    h = core.leaky_relu(conv2d(core.tensor(x), core.tensor(w1), padding=1), 0.2)
    y = conv2d(h, core.tensor(w2), stride=2, padding="same")
    h_ref = naive_conv2d(x, w1, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    h_ref = np.where(h_ref > 0, h_ref, 0.2 * h_ref)
    np.testing.assert_allclose(y.numpy(), naive_conv2d(h_ref, w2, None, (2, 2), ((0, 1), (0, 1)), (1, 1), 1),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y.reshape(2, -1).numpy(), y.numpy().reshape(2, -1))


# ----- the conv paths (core/ops/conv.py header): taps and sub-pixel forced on small shapes -----
@pytest.fixture(params=["taps", "subpixel"])
def conv_path(request, monkeypatch):
    monkeypatch.setattr(conv_ops, "CONV_PATH", request.param)
    return request.param


# (kernel, stride, padding, dilation)
PATH_CASES = [
    ((4, 4), 2, "same", 1),          # kernel a whole number of phases, odd padding row at the bottom
    ((3, 3), (2, 1), (1, 2), 1),     # anisotropic: kernel zero-padded to whole phases along H only
    ((5, 5), 1, "same", 1),          # stride 1: one phase, every tap reaches into the padding
    ((2, 2), 3, "valid", 1),         # kernel < stride: input rows and columns no tap reads
    ((3, 3), 1, "same", (2, 1)),     # dilation (the sub-pixel input gradient falls back to col2im)
]


@pytest.mark.parametrize("kernel,stride,padding,dilation", PATH_CASES, ids=str)
def test_forced_paths_match_naive_loops(conv_path, kernel, stride, padding, dilation):
    """Output, input gradient and weight gradient of conv2d, and conv_transpose2d's output, against the naive
    loops (the weight gradient through <gy, conv(x, dw)> = <gw, dw>, conv being linear in w)."""
    x, w, b = R.standard_normal((3, 5, 8, 7)), R.standard_normal((2, 5) + kernel), R.standard_normal(2)
    pads = explicit_pads(padding, (8, 7), kernel, pair(stride), pair(dilation))
    want = naive_conv2d(x, w, b, pair(stride), pads, pair(dilation), 1)
    xt, wt = core.tensor(x, requires_grad=True), core.tensor(w, requires_grad=True)
    y = conv2d(xt, wt, core.tensor(b), stride, padding, dilation)
    assert y._ctx.geo.taps == (conv_path == "taps")
    assert y._ctx.geo.subpixel == (conv_path == "subpixel" and dilation == 1)
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    gy = R.standard_normal(y.shape)
    y.backward(core.tensor(gy))
    np.testing.assert_allclose(xt.grad.numpy(), naive_conv_transpose2d(gy, w, None, pair(stride), pads, (8, 7),
                                                                       pair(dilation), 1), rtol=1e-12, atol=1e-12)
    dw = R.standard_normal(w.shape)
    np.testing.assert_allclose((wt.grad.numpy() * dw).sum(),
                               (gy * naive_conv2d(x, dw, None, pair(stride), pads, pair(dilation), 1)).sum(),
                               rtol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding,output_padding", [((4, 4), 2, 1, 0), ((3, 3), 2, "same", 1),
                                                                  ((5, 5), 2, "valid", 0), ((2, 2), 3, "valid", 0)],
                         ids=str)
def test_forced_paths_conv_transpose2d_matches_naive_scatter(conv_path, kernel, stride, padding, output_padding):
    x, w, b = R.standard_normal((2, 3, 4, 5)), R.standard_normal((3, 4) + kernel), R.standard_normal(4)
    out_hw, pads = transposed_geometry((4, 5), kernel, stride, padding, output_padding, 1)
    got = conv_transpose2d(core.tensor(x), core.tensor(w), core.tensor(b), stride, padding, output_padding)
    np.testing.assert_allclose(got.numpy(), naive_conv_transpose2d(x, w, b, pair(stride), pads, out_hw, (1, 1), 1),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding,dilation", PATH_CASES, ids=str)
def test_forced_paths_first_and_second_order(conv_path, kernel, stride, padding, dilation):
    x, w, b = leaf(2, 3, 6, 5), leaf(2, 3, *kernel), leaf(2)
    assert core.gradcheck(lambda x, w, b: conv2d(x, w, b, stride, padding, dilation), (x, w, b))
    assert core.gradgradcheck(lambda x, w, b: conv2d(x, w, b, stride, padding, dilation), (x, w, b))
    y, wt = leaf(2, 2, 3, 4), leaf(2, 3, *kernel)
    fn = lambda y, w, b: conv_transpose2d(y, w, b, stride, padding, 0, dilation)  # noqa: E731
    assert core.gradcheck(fn, (y, wt, leaf(3)))
    assert core.gradgradcheck(fn, (y, wt, leaf(3)))


@pytest.mark.parametrize("op,c_in,c_out,size,kernel,stride,path", [
    ("conv", 128, 1, 28, 7, 1, "taps"),         # WGAN-GP generator's output layer: im2col would be 1.26 GB
    ("conv", 128, 8, 28, 4, 2, "taps"),
    ("conv", 64, 64, 14, 4, 2, "subpixel"),     # WGAN-GP critic
    ("convT", 128, 128, 14, 4, 2, "subpixel"),  # WGAN-GP generator
    ("conv", 64, 128, 14, 5, 2, "im2col"),      # DCGAN (TensorFlow tutorial) discriminator
    ("convT", 256, 128, 7, 5, 1, "im2col"),     # DCGAN generator
    ("convT", 64, 1, 14, 4, 2, "im2col"),       # 1-channel image out of a transposed conv: small columns
    ("conv", 1, 64, 28, 4, 2, "im2col"),
])
def test_cost_model_picks_the_measured_fastest_path(op, c_in, c_out, size, kernel, stride, path):
    """The choices of the header's measurements, made from the public ops' shapes (batch 1 costs the same per
    image; a transposed conv is the input gradient of a conv from c_out to c_in channels)."""
    x = core.zeros(1, c_in, size, size, requires_grad=True)
    if op == "conv":
        y = conv2d(x, core.zeros(c_out, c_in, kernel, kernel), stride=stride, padding="same")
    else:
        y = conv_transpose2d(x, core.zeros(c_in, c_out, kernel, kernel), stride=stride, padding="same")
    geo = y._ctx.geo
    assert ("taps" if geo.taps else "subpixel" if geo.subpixel else "im2col") == path
    dilated = conv2d(core.zeros(1, 64, 14, 14, requires_grad=True), core.zeros(64, 64, 4, 4), stride=2, dilation=2)
    assert not dilated._ctx.geo.subpixel  # the sub-pixel phases assume dilation 1


def test_gradient_penalty_through_the_taps_path():
    """WGAN-GP's double backprop through a few-output-channel conv (the generator's last layer in the generator
    step, here as a critic): d/dw of ||d critic(x) / dx||^2 with the taps path chosen by the cost model."""
    x = core.tensor(R.standard_normal((2, 6, 5, 5)))

    def penalty(w1, w2):
        with core.enable_grad():
            xi = x.detach().requires_grad_(True)
            h = conv2d(xi, w1, padding="same")
            assert h._ctx.geo.taps
            h = conv2d(core.tanh(h), w2, stride=2, padding="same")
            (g,) = core.grad(h.sum(), [xi], create_graph=True)
            return (((g * g).sum(axis=(1, 2, 3)) - 1.0) ** 2).sum()

    assert core.gradcheck(penalty, (leaf(1, 6, 3, 3), leaf(2, 1, 4, 4)))


# ----- pooling -----
# (kernel, stride, padding, count_include_pad)
POOL_CASES = [(2, None, 0, None), (3, 2, 1, None), (3, 2, 1, False), (3, 2, "same", None),
              ((2, 3), (1, 2), "valid", None), (2, 1, "same", None)]


@pytest.mark.parametrize("kernel,stride,padding,count_include_pad", POOL_CASES, ids=str)
def test_pools_match_naive_loops(kernel, stride, padding, count_include_pad):
    x = R.standard_normal((2, 3, 7, 6))
    kernel_hw = pair(kernel)
    stride_hw = kernel_hw if stride is None else pair(stride)
    pads = explicit_pads(padding, (7, 6), kernel_hw, stride_hw, (1, 1))
    got = max_pool2d(core.tensor(x), kernel, stride, padding).numpy()
    np.testing.assert_array_equal(got, naive_pool(x, kernel_hw, stride_hw, pads, "max", -np.inf, True))
    count_pad = not isinstance(padding, str) if count_include_pad is None else count_include_pad
    got = avg_pool2d(core.tensor(x), kernel, stride, padding, count_include_pad).numpy()
    np.testing.assert_allclose(got, naive_pool(x, kernel_hw, stride_hw, pads, "avg", 0.0, count_pad), rtol=1e-12)


def test_max_pool_gradient_goes_to_the_first_maximum():
    x = core.tensor([[[[1.0, 3.0, 3.0], [0.0, 2.0, 3.0], [1.0, 1.0, 1.0]]]], requires_grad=True)
    max_pool2d(x, 2, 1).sum().backward()
    # windows [1 3; 0 2] and [3 3; 2 3] both pick (0, 1), the first maximum in row-major order
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[0, 2, 0], [0, 1, 1], [0, 0, 0]])


POOL_FNS = {
    "max_2": lambda x: max_pool2d(x, 2),
    "max_3s2p1": lambda x: max_pool2d(x, 3, 2, 1),
    "max_same": lambda x: max_pool2d(x, 3, 2, "same"),
    "avg_2": lambda x: avg_pool2d(x, 2),
    "avg_3s2p1": lambda x: avg_pool2d(x, 3, 2, 1),
    "avg_same": lambda x: avg_pool2d(x, 3, 2, "same"),
    "avg_overlap": lambda x: avg_pool2d(x, (2, 3), 1),
    "global_avg": global_avg_pool2d,
    "global_max": lambda x: global_max_pool2d(x, keepdims=True),
    "adaptive_avg_1": lambda x: adaptive_avg_pool2d(x, 1),
    "adaptive_avg_uneven": lambda x: adaptive_avg_pool2d(x, (3, 2)),
    "adaptive_max_uneven": lambda x: adaptive_max_pool2d(x, (2, 3)),
}


@pytest.mark.parametrize("name", sorted(POOL_FNS))
def test_pools_first_and_second_order(name):
    x = leaf(2, 2, 5, 5)
    assert core.gradcheck(POOL_FNS[name], x)
    assert core.gradgradcheck(POOL_FNS[name], x)


def test_global_and_adaptive_pools_values():
    x = R.standard_normal((2, 3, 5, 7))
    t = core.tensor(x)
    np.testing.assert_allclose(global_avg_pool2d(t).numpy(), x.mean(axis=(2, 3)))
    np.testing.assert_array_equal(global_max_pool2d(t).numpy(), x.max(axis=(2, 3)))
    np.testing.assert_allclose(adaptive_avg_pool2d(t, 1).numpy(), x.mean(axis=(2, 3), keepdims=True))
    # PyTorch's uneven windows: 5 rows into 2 cells are [0, 3) and [2, 5)
    got = adaptive_avg_pool2d(t, (2, 1)).numpy()
    np.testing.assert_allclose(got[:, :, :, 0], np.stack([x[:, :, 0:3].mean(axis=(2, 3)),
                                                          x[:, :, 2:5].mean(axis=(2, 3))], axis=2))
    got = adaptive_max_pool2d(t, (1, 3)).numpy()
    np.testing.assert_array_equal(got[:, :, 0], np.stack([x[..., 0:3].max(axis=(2, 3)), x[..., 2:5].max(axis=(2, 3)),
                                                          x[..., 4:7].max(axis=(2, 3))], axis=2))
    np.testing.assert_allclose(adaptive_avg_pool2d(core.tensor(x[:, :, :4, :6]), (2, 3)).numpy(),
                               avg_pool2d(core.tensor(x[:, :, :4, :6]), 2).numpy())


def test_gradient_penalty_through_a_conv_critic():
    """WGAN-GP: d/dw of ||d critic(x) / dx||^2, a second-order gradient through Conv2d, LeakyReLU and pooling."""
    x = core.tensor(R.standard_normal((2, 1, 6, 6)))

    def penalty(w1, w2):
        with core.enable_grad():  # gradcheck's finite differences run under no_grad
            xi = x.detach().requires_grad_(True)
            h = core.leaky_relu(conv2d(xi, w1, stride=2, padding="same"), 0.2)
            h = conv_transpose2d(avg_pool2d(max_pool2d(h, 2, 1), 2, 1, "same"), w2, stride=2, padding=1)
            (g,) = core.grad(global_avg_pool2d(h).sum(), [xi], create_graph=True)
            return (((g * g).sum(axis=(1, 2, 3)) - 1.0) ** 2).sum()

    assert core.gradcheck(penalty, (leaf(3, 1, 3, 3), leaf(3, 2, 3, 3)))


# ----- Keras' output-shape rules and the FX-CV fixtures -----
@pytest.mark.parametrize("n", [5, 6, 7, 8, 13, 28])
def test_output_shapes_follow_keras_rules(n):
    x = core.zeros(1, 1, n, n + 1)
    for k in range(1, 6):
        w = core.zeros(1, 1, k, k)
        for s in (1, 2, 3):
            assert conv2d(x, w, stride=s, padding="same").shape[2:] == (math.ceil(n / s), math.ceil((n + 1) / s))
            if n >= k:
                assert conv2d(x, w, stride=s, padding="valid").shape[2:] == ((n - k) // s + 1, (n + 1 - k) // s + 1)
            assert conv_transpose2d(x, w, stride=s, padding="same").shape[2:] == (n * s, (n + 1) * s)
            assert conv_transpose2d(x, w, stride=s, padding="valid").shape[2:] == (
                n * s + max(k - s, 0), (n + 1) * s + max(k - s, 0))
            assert max_pool2d(x, k, s, "same").shape[2:] == (math.ceil(n / s), math.ceil((n + 1) / s))
            if n >= k:
                assert avg_pool2d(x, k, s, "valid").shape[2:] == ((n - k) // s + 1, (n + 1 - k) // s + 1)


@pytest.mark.parametrize("n,k,s,pads,out", [(28, 5, 2, (1, 2), 14), (28, 3, 2, (0, 1), 14), (28, 4, 2, (1, 1), 14),
                                            (64, 4, 2, (1, 1), 32), (7, 5, 1, (2, 2), 7), (13, 1, 5, (0, 0), 3),
                                            (13, 5, 5, (1, 1), 3)])
def test_same_padding_splits_fx_cv_4(n, k, s, pads, out):
    x, w = core.tensor(R.standard_normal((1, 2, n, n))), core.tensor(R.standard_normal((3, 2, k, k)))
    y = conv2d(x, w, stride=s, padding="same")
    assert y.shape[2:] == (out, out)
    explicit = conv2d(core.pad(x, ((0, 0), (0, 0), pads, pads)), w, stride=s)
    np.testing.assert_allclose(y.numpy(), explicit.numpy(), rtol=1e-12)


BOOK_KERNEL = np.array([[-1, 2, -3], [4, -5, 6], [-7, 8, -9]], np.float64)[None, None]  # [3,3,1,1] as (1,1,3,3)


def test_book_conv_and_transposed_conv_fx_cv_1_2():
    w = core.tensor(BOOK_KERNEL)
    y1 = conv2d(core.tensor(np.arange(1.0, 26).reshape(1, 1, 5, 5)), w, stride=2, padding="valid")
    np.testing.assert_array_equal(y1.numpy()[0, 0], [[-67, -77], [-117, -127]])
    back1 = conv_transpose2d(y1, w, stride=2, padding="valid")
    np.testing.assert_array_equal(back1.numpy()[0, 0], [
        [67, -134, 278, -154, 231], [-268, 335, -710, 385, -462], [586, -770, 1620, -870, 1074],
        [-468, 585, -1210, 635, -762], [819, -936, 1942, -1016, 1143]])
    y2 = conv2d(core.tensor(np.arange(1.0, 17).reshape(1, 1, 4, 4)), w, stride=1, padding="valid")
    np.testing.assert_array_equal(y2.numpy()[0, 0], [[-56, -61], [-76, -81]])
    back2 = conv_transpose2d(y2, w, stride=1, padding="valid")
    np.testing.assert_array_equal(back2.numpy()[0, 0], [[56, -51, 46, 183], [-148, -35, 35, -123],
                                                        [88, 35, -35, 63], [532, -41, 36, 729]])


def test_fx_cv_5_to_9_and_14_shapes():
    w3 = core.tensor(BOOK_KERNEL)
    assert conv2d(core.zeros(1, 1, 5, 5, dtype=core.float64), w3, stride=3, padding="same").shape == (1, 1, 2, 2)
    two = core.zeros(1, 1, 2, 2, dtype=core.float64)
    assert conv_transpose2d(two, w3, stride=1, padding="valid").shape == (1, 1, 4, 4)
    assert conv_transpose2d(two, w3, stride=3, padding="same").shape == (1, 1, 6, 6)
    assert conv2d(core.zeros(1, 1, 6, 6, dtype=core.float64), w3, stride=2).shape == (1, 1, 2, 2)
    assert conv_transpose2d(two, w3, stride=2, padding="valid").shape == (1, 1, 5, 5)
    assert conv_transpose2d(two, w3, stride=2, padding="valid", output_padding=1).shape == (1, 1, 6, 6)
    layer = Conv2d(3, 16, 3)
    assert layer(core.zeros(4, 3, 32, 32)).shape == (4, 16, 30, 30) and layer.weight.shape == (16, 3, 3, 3)
    assert conv2d(core.zeros(1, 1, 7, 7), core.zeros(1, 1, 3, 3), dilation=2).shape == (1, 1, 3, 3)
    assert MaxPool2d(2)(core.zeros(1, 1, 7, 7)).shape == (1, 1, 3, 3)
    assert MaxPool2d(2)(core.zeros(1, 1, 26, 26)).shape == (1, 1, 13, 13)
    assert MaxPool2d(3)(core.zeros(1, 1, 26, 26)).shape == (1, 1, 8, 8)


def chain(x, layers):
    sizes = [x.shape[2]]
    for layer in layers:
        x = layer(x)
        sizes.append(x.shape[2])
    return x, sizes


def test_network_shape_chains_fx_cv_13():
    with core.no_grad():
        _, sizes = chain(core.zeros(1, 3, 64, 64), [Conv2d(3, 1, 4, 2, "valid"), Conv2d(1, 1, 4, 2, "valid"),
                                                   Conv2d(1, 1, 4, 2, "valid"), Conv2d(1, 1, 3, 1, "valid"),
                                                   Conv2d(1, 1, 3, 1, "valid")])
        assert sizes == [64, 31, 14, 6, 4, 2]
        pad1 = lambda x: core.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))  # noqa: E731
        _, sizes = chain(core.zeros(1, 1, 600, 600), [Conv2d(1, 1, 4, 2, "same"), Conv2d(1, 1, 4, 2, "same"),
                                                     Conv2d(1, 1, 4, 2, "same"), pad1, Conv2d(1, 1, 4, 1, "valid"),
                                                     pad1, Conv2d(1, 1, 4, 1, "valid")])
        assert sizes == [600, 300, 150, 75, 77, 74, 76, 73]
        _, sizes = chain(core.zeros(2, 1, 28, 28), [
            Conv2d(1, 2, 3, padding="same"), MaxPool2d(2), Conv2d(2, 2, 3, padding="same"), MaxPool2d(2),
            Conv2d(2, 2, 3, padding="same"), MaxPool2d(2), ConvTranspose2d(2, 2, 3, 2, "valid"),
            ConvTranspose2d(2, 2, 3, 2, "same"), ConvTranspose2d(2, 1, 3, 2, "same")])
        assert sizes == [28, 28, 14, 14, 7, 7, 3, 7, 14, 28]
        x, sizes = chain(core.zeros(2, 4, 84, 84), [Conv2d(4, 32, 8, 4), Conv2d(32, 64, 4, 2), Conv2d(64, 64, 3, 1)])
        assert sizes == [84, 20, 9, 7] and x.flatten(1).shape == (2, 3136)
        x = MaxPool2d(2)(Conv2d(3, 1, 5)(core.zeros(1, 3, 210, 160)))
        assert x.shape == (1, 1, 103, 78)


# ----- layers -----
def test_layer_parameters_counts_and_default_init():
    conv = Conv2d(3, 200, 5)
    assert conv.num_parameters() == 15_200  # FX-PC-3
    bound = 1 / math.sqrt(3 * 25)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.9 * bound
    assert np.abs(conv.bias.data).max() <= bound
    assert Conv2d(3, 4, 3, bias=False).num_parameters() == 108  # FX-PC-16: standard vs depthwise-separable
    separable = nn.Sequential(Conv2d(3, 3, 3, groups=3, bias=False), Conv2d(3, 4, 1, bias=False))
    assert separable.num_parameters() == 39
    t = ConvTranspose2d(128, 64, 5, 2, "same", bias=False)
    assert t.weight.shape == (128, 64, 5, 5) and t.bias is None
    assert np.abs(t.weight.data).max() <= 1 / math.sqrt(64 * 25)  # PyTorch's fan_in of (in, out, k, k): out*k*k
    keras = Conv2d(3, 8, 3, init="keras")
    assert np.all(keras.bias.data == 0)
    assert np.abs(keras.weight.data).max() <= math.sqrt(6 / (27 + 72))
    assert repr(conv) == "Conv2d(3, 200, kernel_size=(5, 5), stride=(1, 1), padding=0)"
    assert "output_padding=(1, 1)" in repr(ConvTranspose2d(2, 2, 3, 2, 1, output_padding=1))


def test_layers_forward_and_backward():
    core.manual_seed(0)
    x = core.randn(2, 3, 8, 8, requires_grad=True)
    model = nn.Sequential(Conv2d(3, 4, 3, 2, "same"), ConvTranspose2d(4, 2, 4, 2, 1, groups=2), MaxPool2d(2),
                          AvgPool2d(3, 1, "same"), AdaptiveAvgPool2d(2), AdaptiveMaxPool2d(1), GlobalMaxPool2d())
    y = model(x)
    assert y.shape == (2, 2)
    (y * core.tensor([[1.0, -2.0]])).sum().backward()
    assert x.grad.shape == x.shape and all(p.grad is not None for p in model.parameters())
    assert GlobalAvgPool2d(keepdims=True)(x).shape == (2, 3, 1, 1)


def test_float32_matches_float64():
    x, w, b = R.standard_normal((3, 4, 9, 9)), R.standard_normal((6, 4, 3, 3)), R.standard_normal(6)
    outs = []
    for dtype in (core.float32, core.float64):
        xt, wt, bt = (core.tensor(a, dtype=dtype, requires_grad=True) for a in (x, w, b))
        y = conv_transpose2d(conv2d(xt, wt, bt, 2, "same"), wt, None, 2, "same")
        y.sum().backward()
        assert y.dtype == dtype and xt.grad.dtype == dtype
        outs.append([y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()])
    for a, b_ in zip(*outs):
        np.testing.assert_allclose(a, b_, rtol=1e-4, atol=1e-3)


# ----- bad input -----
def test_error_messages():
    x = core.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\), got \(2, 8, 8, 3\)"):
        Conv2d(3, 4, 3)(core.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\), got \(8, 8\)"):
        ConvTranspose2d(3, 4, 3)(core.zeros(8, 8))
    with pytest.raises(ValueError, match="input has 3 channels .* expects 4"):
        conv2d(x, core.zeros(4, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="input must be 4-D"):
        conv2d(core.zeros(3, 8, 8), core.zeros(4, 3, 3, 3))
    with pytest.raises(ValueError, match="input must be 4-D"):
        max_pool2d(core.zeros(3, 8, 8), 2)
    with pytest.raises(ValueError, match="bias must have shape"):
        conv2d(x, core.zeros(4, 3, 3, 3), core.zeros(3))
    with pytest.raises(ValueError, match="padding must be an int, a pair of ints, 'same' or 'valid', got 'full'"):
        conv2d(x, core.zeros(4, 3, 3, 3), padding="full")
    with pytest.raises(ValueError, match="padding must be an int, a pair of ints, 'same' or 'valid'"):
        Conv2d(3, 4, 3, padding="SAME ")
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        conv2d(x, core.zeros(4, 3, 3, 3), stride=0)
    with pytest.raises(ValueError, match="smaller than the .*kernel 9x9"):
        conv2d(x, core.zeros(4, 3, 9, 9))
    with pytest.raises(ValueError, match="out_channels=5 is not divisible by groups=3"):
        Conv2d(3, 5, 3, groups=3)
    with pytest.raises(ValueError, match=r"output_padding \(2, 2\) must be smaller than stride \(2, 2\)"):
        conv_transpose2d(x, core.zeros(3, 4, 3, 3), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="at most half the kernel size"):
        max_pool2d(x, 2, padding=2)


# ----- GPU -----
@pytest.mark.gpu
@pytest.mark.parametrize("path", ["auto", "im2col", "taps", "subpixel"])
def test_conv_and_pools_on_gpu_match_cpu(path, monkeypatch, gpu_device):
    monkeypatch.setattr(conv_ops, "CONV_PATH", path)
    x_np, w_np, wt_np = (R.standard_normal(shape) for shape in ((2, 4, 9, 9), (6, 2, 3, 3), (6, 3, 4, 4)))
    results = []
    for device in ("cpu", gpu_device):
        x, w, wt = (core.tensor(a, device=device, requires_grad=True) for a in (x_np, w_np, wt_np))
        h = conv2d(x, w, stride=2, padding="same", groups=2)
        h = conv_transpose2d(core.leaky_relu(h, 0.2), wt, stride=2, padding=1)
        h = avg_pool2d(max_pool2d(h, 3, 2, 1), 2, 1, "same")
        (g,) = core.grad(global_avg_pool2d(h).sum(), [x], create_graph=True)
        loss = (g * g).sum() + h.sum()
        loss.backward()
        results.append([loss.item(), x.grad.cpu().numpy(), w.grad.cpu().numpy(), wt.grad.cpu().numpy()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
