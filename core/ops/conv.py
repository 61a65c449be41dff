"""2-D convolution, transposed convolution and pooling on NCHW tensors (PyTorch semantics, plus Keras'
"same"/"valid" padding with TensorFlow's asymmetric split: the odd padding row/column goes bottom/right).

How a conv runs: one of three paths, picked per layer from its shapes by a cost model (`_choose_path`).

- im2col: the input is copied once into a zero-padded channels-last (NHWC) buffer; its sliding windows
  (N, Ho, Wo, kh, kw, C) are a strided view, copied in one go into the im2col matrix (N*Ho*Wo, kh*kw*C) and
  multiplied by the weight in ONE GEMM (a batched one over groups). The GEMM's rows are channels-last, so
  the result is handed back as an NCHW *view* of NHWC memory: elementwise ops keep that memory order, and
  the next conv finds its input channels-last already and skips the transposing copy. The input gradient
  multiplies the output gradient by the weight into columns and adds them back into their windows (col2im).
- im2col with a sub-pixel input gradient: with stride s the input pixels fall into s x s phases, and each
  phase is a stride-1 conv of the output gradient with a ceil(k/s) x ceil(k/s) slice of the kernel. All
  phases read the same (small) columns of the output gradient, so one GEMM makes them all and each result
  is copied once into place: no scatter-add into overlapping windows (dilation 1 only).
- taps, for few output channels: one GEMM multiplies every input pixel by every (tap, output channel), tap
  major (kh*kw*O, N*H*W) so that each tap is a stack of whole planes, and the output adds per tap a shifted
  slice of its plane. The gradients use the adjoint: the output gradient copied ("spread") to the input
  pixel under each tap, then one GEMM for the input and one for the weight. Nothing of im2col's size
  exists: for the WGAN-GP generator's last layer (128->1, 7x7 "same", 28x28, batch 64) the columns would be
  50,176 x 6,272 floats (1.26 GB) per call, the tap products are 50,176 x 49.

Cost model, in multiply-adds per image, MOVE_COST = 30 for each float written or read in one pass over a
buffer (k = kh*kw; each phase has t = ceil(kh/sh)*ceil(kw/sw) taps on a grid of
phase_pixels = (Ho + ceil(kh/sh) - 1) * (Wo + ceil(kw/sw) - 1)):
    im2col    out_pixels * k * C * (O + 2*MOVE)       columns written, then read by the GEMM
    taps      in_pixels * k * O * (C + 2*MOVE)        tap products written, then read by the tap sums
    col2im    out_pixels * k * C * (O + 3*MOVE)       ... and added into overlapping windows
    sub-pixel phase_pixels * (t*sh*sw*O*C + 2*MOVE*(t*O + sh*sw*C))
taps wins over im2col (at stride 1 "same" exactly when O < C); otherwise the input gradient is sub-pixel
where that beats col2im. Measured, ms of CPU time, one thread, float32 (forward / input gradient / weight
gradient; im2col's input gradient as col2im, sub-pixel):
    conv (batch)                    im2col path                  taps path           chosen
    128->1 k7 s1 same 28 (64)       246 / 761, 41 / 230          16 / 20 / 13        taps
    128->8 k4 s2 same 28 (64)       36 / 53, 16 / 35             26 / 27 / 24        taps
    128->64 k3 s1 same 28 (64)      146 / 180, 128 / 135         128 / 111 / 106     taps
    64->64 k4 s2 same 14 (64)       7.8 / 9.2, 7.8 / 7.7         35 / 32 / 32        sub-pixel
    128->128 k4 s2 same 28 (64)     102 / 112, 95 / 99           387 / 375 / 367     sub-pixel
    32->32 k3 s1 p1 28 (128)        51 / 83, 64 / 53             69 / 57 / 54        sub-pixel
    64->128 k5 s2 same 14 (128)     40 / 45, 79 / 39             221 / 191 / 191     col2im
    128->256 k5 s1 same 7 (128)     130 / 139, 372 / 135         231 / 177 / 178     col2im
    64->64 k3 s2 p1 14 (128)        10 / 13, 17 / 10             41 / 38 / 36        col2im
    1->64 k4 s2 same 28 (64)        0.9 / 1.2, 4.3 / 0.8         120 / 38 / 38       col2im
Of 21 measured layers the rule picked the fastest path for all but one near tie (64->128 k4 s2 p1 14,
batch 128: col2im 30.3 ms, sub-pixel 30.0 ms). (The gradients of the taps path were timed with the output
gradient in the memory order its forward makes; taps' input gradient and weight gradient are one GEMM each.)
Not taken: chunking im2col over the batch (4-8 images per GEMM) made a lone forward 10-18% faster, but the
weight gradient would then rebuild the columns; a GEMM per tap scattered into the padded input gradient
(no big columns) beat col2im only for 64->64 k4 s2 (8.4 vs 11 ms) and lost up to 20% elsewhere.

Why im2col copies the window view (measured, batch 128, float32, one BLAS thread, 64 channels 14x14, k5
s2): one copy of the NHWC window view took 5.5 ms, a loop over the 25 kernel taps 15 ms, and the same two on
NCHW (runs of strided W instead of contiguous C) 21 ms and 31 ms; the GEMM itself takes 33 ms. Same order
at 128 channels 7x7 k5 s1 (22 vs 33 ms).

The backward passes are three Functions that are each other's derivatives, so gradients of gradients
(WGAN-GP) work to any order, on every path: Conv2dOp (x, w -> y), ConvTranspose2dOp (y, w -> x; conv2d's
input gradient and conv_transpose2d's forward) and Conv2dWeightGrad (x, y -> w). Pooling is a weighted sum
over each window, _WindowSum, whose adjoint _WindowScatter is its backward and vice versa; average pooling
weighs by 1/count, max pooling by a one-hot choice of the first maximum.

On cupy the same code runs on the GPU: the window copies, the strided (scatter-)adds and the GEMMs (cuBLAS)
are all cupy array ops.
"""
from typing import NamedTuple

import numpy as np

from core.autograd import Function, is_grad_enabled
from core.ops._util import check_device, xp_of
from core.ops.reduce import Max, max as _max, mean
from core.ops.shape import concatenate, reshape
from core.tensor import Tensor


class ConvGeometry(NamedTuple):
    """Everything shape-related about one convolution (or pooling) of an input of spatial size in_hw."""

    in_hw: tuple      # (H, W) of the conv input, i.e. of the transposed conv's output
    kernel: tuple     # (kh, kw)
    stride: tuple
    dilation: tuple
    pads: tuple       # ((top, bottom), (left, right))
    groups: int
    taps: bool = False      # one GEMM on the input pixels, then a sum over kernel taps (see the header)
    subpixel: bool = False  # otherwise im2col, and the input gradient by phases instead of col2im

    @property
    def padded_hw(self):
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_hw, self.pads))

    @property
    def out_hw(self):
        return tuple((p - (k - 1) * d - 1) // s + 1
                     for p, k, s, d in zip(self.padded_hw, self.kernel, self.stride, self.dilation))


# ----- argument handling -----
def as_pair(value, name, low=1):
    """An int or a pair of ints (each >= low) as a pair; a clear error naming `name` otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low for v in value)):
        raise ValueError(f"{name} must be an int >= {low} or a pair of them, got {value!r}")
    return tuple(int(v) for v in value)


def _same_pads(n, k_eff, s):
    """TensorFlow's SAME: output ceil(n / s); the odd padding row goes after (bottom/right)."""
    total = max((-(-n // s) - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def _pads(padding, in_hw, k_eff, stride):
    if isinstance(padding, str):
        if padding == "same":
            return tuple(_same_pads(n, k, s) for n, k, s in zip(in_hw, k_eff, stride))
        if padding == "valid":
            return (0, 0), (0, 0)
        raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    ph, pw = as_pair(padding, "padding", low=0)
    return (ph, ph), (pw, pw)


def _conv_geometry(op, in_hw, kernel, stride, padding, dilation, groups):
    stride, dilation = as_pair(stride, f"{op} stride"), as_pair(dilation, f"{op} dilation")
    k_eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    geo = ConvGeometry(tuple(in_hw), tuple(kernel), stride, dilation, _pads(padding, in_hw, k_eff, stride), groups)
    if min(geo.out_hw) < 1:
        raise ValueError(f"{op}: input {in_hw[0]}x{in_hw[1]} padded by {geo.pads} is smaller than the "
                         f"(dilated) kernel {k_eff[0]}x{k_eff[1]}")
    return geo


def _transposed_size(n, k_eff, s, padding, extra):
    """Output length of a transposed conv: PyTorch's rule for int padding, Keras' for 'same'/'valid'."""
    if padding == "same":
        return n * s if extra == 0 else (n - 1) * s + k_eff % 2 + extra
    if padding == "valid":
        return n * s + max(k_eff - s, 0) if extra == 0 else (n - 1) * s + k_eff + extra
    return (n - 1) * s - 2 * padding + k_eff + extra


def _transpose_geometry(in_hw, kernel, stride, padding, output_padding, dilation, groups):
    """The conv whose input gradient the transposed conv is: its input is the transposed conv's output."""
    stride, dilation = as_pair(stride, "conv_transpose2d stride"), as_pair(dilation, "conv_transpose2d dilation")
    extra = as_pair(output_padding, "output_padding", low=0)
    if any(a >= s for a, s in zip(extra, stride)):
        raise ValueError(f"conv_transpose2d: output_padding {extra} must be smaller than stride {stride}")
    if isinstance(padding, str) and padding not in ("same", "valid"):
        raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    per_axis = (padding, padding) if isinstance(padding, str) else as_pair(padding, "padding", low=0)
    k_eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    out_hw = tuple(_transposed_size(n, k, s, p, a) for n, k, s, p, a in zip(in_hw, k_eff, stride, per_axis, extra))
    if min(out_hw) < 1:
        raise ValueError(f"conv_transpose2d: input {tuple(in_hw)} with padding {padding!r} gives an empty "
                         f"output {out_hw}")
    # TensorFlow pads like the forward conv of the output size; PyTorch pads `padding` on both sides. Either
    # way that conv maps out_hw back to in_hw (output_padding < stride only adds uncovered rows at the end).
    return ConvGeometry(out_hw, tuple(kernel), stride, dilation, _pads(padding, out_hw, k_eff, stride), groups)


def _check_conv(op, x, weight, bias, groups, transposed):
    """The operands as a tuple for the Function, after checking that their shapes fit together."""
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D, got shape {weight.shape}")
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"{op}: groups must be a positive int dividing weight.shape[0]={weight.shape[0]}, "
                         f"got {groups!r}")
    in_channels, out_channels = weight.shape[1] * groups, weight.shape[0]
    if transposed:
        in_channels, out_channels = out_channels, in_channels
    if x.shape[1] != in_channels:
        raise ValueError(f"{op}: input has {x.shape[1]} channels (shape {x.shape}) but weight of shape "
                         f"{weight.shape} with groups={groups} expects {in_channels}")
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"{op}: bias must have shape ({out_channels},), got {bias.shape}")
    args = (x, weight) if bias is None else (x, weight, bias)
    check_device(op, *args)
    return args


# ----- array kernels: channels-last windows, im2col, col2im -----
def _padded_nhwc(x, pads, value=0.0):
    """x (N, C, H, W) as a C-contiguous channels-last array with `pads` around it (no copy when the
    memory is channels-last already and there is nothing to pad)."""
    xp = xp_of(x)
    xh = x.transpose(0, 2, 3, 1)
    (top, bottom), (left, right) = pads
    if not (top or bottom or left or right):
        return xp.ascontiguousarray(xh)
    n, h, w, c = xh.shape
    out = xp.full((n, top + h + bottom, left + w + right, c), value, dtype=x.dtype)
    out[:, top:top + h, left:left + w] = xh
    return out


def _windows(buf, geo):
    """Strided view (N, Ho, Wo, kh, kw, C) of the sliding windows of a padded channels-last buffer."""
    sn, sh, sw, sc = buf.strides
    (oh, ow), (kh, kw), (th, tw), (dh, dw) = geo.out_hw, geo.kernel, geo.stride, geo.dilation
    return xp_of(buf).lib.stride_tricks.as_strided(
        buf, (buf.shape[0], oh, ow, kh, kw, buf.shape[3]), (sn, sh * th, sw * tw, sh * dh, sw * dw, sc))


def _scatter_windows(cols, geo):
    """col2im: add every window of cols (N, Ho, Wo, kh, kw, C) onto a zero padded buffer (N, Hp, Wp, C);
    the adjoint of `_windows`."""
    xp = xp_of(cols)
    n, oh, ow, kh, kw, c = cols.shape
    buf = xp.zeros((n,) + geo.padded_hw + (c,), dtype=cols.dtype)
    (th, tw), (dh, dw) = geo.stride, geo.dilation
    if th > (kh - 1) * dh and tw > (kw - 1) * dw:  # windows do not overlap: one strided assignment
        _windows(buf, geo)[...] = cols
    elif xp is np and n * kh * kw * c >= 4096:
        # One add per output pixel reads a contiguous (N, kh, kw, C) block of cols; one add per kernel tap
        # reads with a kh*kw*C stride. Measured at batch 128: 12 ms against 19 ms (64ch, 7x7 out, k5 s2) and
        # 48 ms against 113 ms (32ch, 28x28 out, k3 s1). With little work per pixel the loop overhead wins
        # instead (batch 1, 64ch, 74x74 out, k4: 18 ms against 6 ms), hence the threshold.
        for i in range(oh):
            for j in range(ow):
                hs, ws = slice(i * th, i * th + (kh - 1) * dh + 1, dh), slice(j * tw, j * tw + (kw - 1) * dw + 1, dw)
                buf[:, hs, ws] += cols[:, i, j]
    else:  # one add per kernel tap (also the GPU path: kh*kw kernel launches)
        for a in range(kh):
            for b in range(kw):
                hs, ws = slice(a * dh, a * dh + (oh - 1) * th + 1, th), slice(b * dw, b * dw + (ow - 1) * tw + 1, tw)
                buf[:, hs, ws] += cols[:, :, :, a, b]
    return buf


def _crop_nchw(buf, geo):
    """The unpadded part of a channels-last buffer, as an NCHW view."""
    (top, _), (left, _) = geo.pads
    h, w = geo.in_hw
    return buf[:, top:top + h, left:left + w].transpose(0, 3, 1, 2)


def _im2col(x, geo):
    """Conv input (N, C, H, W) -> columns (groups, N*Ho*Wo, kh*kw*C/groups), in one copy."""
    win = _windows(_padded_nhwc(x, geo.pads), geo)
    n, oh, ow, kh, kw, c = win.shape
    g = geo.groups
    win = win.reshape(n, oh, ow, kh, kw, g, c // g).transpose(5, 0, 1, 2, 3, 4, 6)
    return xp_of(x).ascontiguousarray(win).reshape(g, n * oh * ow, kh * kw * (c // g))


def _col2im(cols, geo, n):
    """Columns (groups, N*Ho*Wo, kh*kw*C/groups) -> the padded channels-last buffer they sum to."""
    g, _, k = cols.shape
    (oh, ow), (kh, kw) = geo.out_hw, geo.kernel
    cg = k // (kh * kw)
    c6 = cols.reshape(g, n, oh, ow, kh, kw, cg)
    c6 = c6[0] if g == 1 else xp_of(cols).ascontiguousarray(c6.transpose(1, 2, 3, 4, 5, 0, 6)).reshape(
        n, oh, ow, kh, kw, g * cg)
    return _scatter_windows(c6, geo)


def _weight_matrix(w, groups):
    """(O, C/g, kh, kw) -> (g, kh*kw*C/g, O/g), the row order of the im2col columns."""
    o, cg, kh, kw = w.shape
    w = w.reshape(groups, o // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    return w.reshape(groups, kh * kw * cg, o // groups)


def _rows(y, groups):
    """(N, O, Ho, Wo) -> (g, N*Ho*Wo, O/g) channels-last rows (no copy when y is channels-last already)."""
    o = y.shape[1]
    rows = xp_of(y).ascontiguousarray(y.transpose(0, 2, 3, 1)).reshape(-1, groups, o // groups)
    return rows.transpose(1, 0, 2)


# ----- the taps path (groups 1): products of every input pixel with every tap, then shifted sums -----
def _tap_weights(w):
    """(O, C, kh, kw) -> (kh*kw*O, C): one row per (tap, output channel)."""
    o, c, kh, kw = w.shape
    return w.transpose(2, 3, 0, 1).reshape(kh * kw * o, c)


def _overlaps(in_hw, out_hw, pads, stride, kernel, dilation):
    """(a, b, output region, input region) for each kernel tap (a, b) that reads real (unpadded) input: output
    pixel (i, j) of the region reads input pixel (i*sh + a*dh - top, j*sw + b*dw - left) of the input region."""
    per_axis = []
    for n_in, n_out, (lo, _), s, k, d in zip(in_hw, out_hw, pads, stride, kernel, dilation):
        regions = []
        for a in range(k):
            first = max(0, -((a * d - lo) // s))  # ceil((lo - a*d) / s): the first output not in the padding
            stop = min(n_out, (n_in - 1 + lo - a * d) // s + 1)
            start = first * s + a * d - lo
            regions.append((slice(first, stop), slice(start, start + (stop - first - 1) * s + 1, s))
                           if stop > first else None)
        per_axis.append(regions)
    return [(a, b, (rh[0], rw[0]), (rh[1], rw[1]))
            for a, rh in enumerate(per_axis[0]) if rh for b, rw in enumerate(per_axis[1]) if rw]


def _tap_overlaps(geo):
    return _overlaps(geo.in_hw, geo.out_hw, geo.pads, geo.stride, geo.kernel, geo.dilation)


def _tap_sum(products, geo):
    """Conv output (O, N, Ho, Wo) from the tap products (kh, kw, O, N, H, W): each output pixel adds what its
    window's taps made of the input pixels under them (shifted slices of whole planes: contiguous runs)."""
    kh, kw, o, n = products.shape[:4]
    y = xp_of(products).zeros((o, n) + geo.out_hw, dtype=products.dtype)
    for a, b, (oi, oj), (ii, ij) in _tap_overlaps(geo):
        y[:, :, oi, oj] += products[a, b, :, :, ii, ij]
    return y


def _tap_spread(y, geo):
    """The adjoint of _tap_sum: conv output (N, O, Ho, Wo) -> (kh*kw*O, N*H*W), each output pixel copied to the
    input pixel under each tap of its window (one tap never meets an input pixel twice: plain assignments)."""
    y = y.transpose(1, 0, 2, 3)
    o, n = y.shape[:2]
    spread = xp_of(y).zeros(geo.kernel + (o, n) + geo.in_hw, dtype=y.dtype)
    for a, b, (oi, oj), (ii, ij) in _tap_overlaps(geo):
        spread[a, b, :, :, ii, ij] = y[:, :, oi, oj]
    return spread.reshape(-1, n * geo.in_hw[0] * geo.in_hw[1])


def _pixel_rows(x):
    """(N, C, H, W) -> (N*H*W, C) channels-last rows (no copy when the memory is channels-last already)."""
    return xp_of(x).ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, x.shape[1])


def _taps_conv(x, w, geo):
    """conv2d on the taps path: (O, N, Ho, Wo)."""
    n, _, h, wd = x.shape
    kh, kw = geo.kernel
    products = xp_of(x).matmul(_tap_weights(w), _pixel_rows(x).T)  # (kh*kw*O, N*H*W)
    return _tap_sum(products.reshape(kh, kw, w.shape[0], n, h, wd), geo)


def _taps_input_grad(spread, w, n, geo):
    """conv2d's input gradient on the taps path, from the spread output gradient: (N, C, H, W), channels-last."""
    rows = xp_of(spread).matmul(spread.T, _tap_weights(w))  # (N*H*W, C)
    return rows.reshape((n,) + geo.in_hw + (w.shape[1],)).transpose(0, 3, 1, 2)


def _taps_weight_grad(x, spread, geo):
    """conv2d's weight gradient on the taps path, from the spread output gradient: (O, C, kh, kw)."""
    gw = xp_of(x).matmul(spread, _pixel_rows(x))  # (kh*kw*O, C)
    return gw.reshape(geo.kernel + (-1, x.shape[1])).transpose(2, 3, 0, 1)


# ----- the sub-pixel input gradient (groups 1, dilation 1) -----
def _subpixel_input_grad(y, w, geo):
    """conv2d's input gradient as one stride-1 conv of y with sh*sw output phases: input pixel
    (P*sh + p0 - top, Q*sw + q0 - left) gets phase (p0, q0) of phase-grid pixel (P, Q), whose th x tw window of
    y meets kernel rows (th-1-u)*sh + p0 (the kernel zero-padded to th*sh x tw*sw). No col2im scatter-add:
    the columns of y are small and each phase result is copied once into place. Returns (N, C, H, W)."""
    xp = xp_of(y)
    n, o = y.shape[:2]
    c, (sh, sw), (kh, kw) = w.shape[1], geo.stride, geo.kernel
    th, tw = -(-kh // sh), -(-kw // sw)  # taps per phase
    window_geo = ConvGeometry(y.shape[2:], (th, tw), (1, 1), (1, 1), ((th - 1, th - 1), (tw - 1, tw - 1)), 1)
    ph, pw = window_geo.out_hw
    padded = xp.zeros((o, c, th * sh, tw * sw), dtype=w.dtype)
    padded[:, :, :kh, :kw] = w
    phase_w = padded.reshape(o, c, th, sh, tw, sw)[:, :, ::-1, :, ::-1]  # (O, C, u, p0, v, q0)
    phase_w = phase_w.transpose(2, 4, 0, 3, 5, 1).reshape(th * tw * o, sh * sw * c)
    phases = xp.matmul(_im2col(y, window_geo)[0], phase_w).reshape(n, ph, pw, sh, sw, c)
    x = xp.zeros((n,) + geo.in_hw + (c,), dtype=y.dtype)
    for p0, q0, (pi, pj), (xi, xj) in _overlaps(geo.in_hw, (ph, pw), geo.pads, geo.stride, geo.stride, (1, 1)):
        x[:, xi, xj] = phases[:, pi, pj, p0, q0]
    return x.transpose(0, 3, 1, 2)


def _as_array(t):
    return t.data if isinstance(t, Tensor) else t


# Path choice: a cost in multiply-adds, plus MOVE_COST for each float written or read in a pass over a buffer
# (the header has the measurements behind the model and the constant).
MOVE_COST = 30
CONV_PATH = "auto"  # "im2col", "taps" or "subpixel" forces that path where it applies (tests, benchmarks)


def _choose_path(geo, in_channels, out_channels):
    """geo with the cheapest path marked: taps, or im2col with a sub-pixel or a col2im input gradient."""
    subpixel_applies = geo.dilation == (1, 1)
    if geo.groups > 1 or CONV_PATH == "im2col":
        return geo
    if CONV_PATH != "auto":
        return geo._replace(taps=CONV_PATH == "taps", subpixel=CONV_PATH == "subpixel" and subpixel_applies)
    c, o, move = in_channels, out_channels, MOVE_COST
    (oh, ow), (kh, kw), (sh, sw) = geo.out_hw, geo.kernel, geo.stride
    k, in_pixels, out_pixels = kh * kw, geo.in_hw[0] * geo.in_hw[1], oh * ow
    im2col = out_pixels * k * c * (o + 2 * move)  # columns written, then read by the GEMM
    taps = in_pixels * k * o * (c + 2 * move)     # tap products written, then read by the tap sums
    if taps < im2col:
        return geo._replace(taps=True)
    if not subpixel_applies:
        return geo
    th, tw = -(-kh // sh), -(-kw // sw)
    col2im = out_pixels * k * c * (o + 3 * move)  # columns written, read, and added into overlapping windows
    subpixel = (oh + th - 1) * (ow + tw - 1) * (th * tw * sh * sw * o * c + 2 * move * (th * tw * o + sh * sw * c))
    return geo._replace(subpixel=subpixel < col2im)


# ----- the three conv Functions (each one's backward is built from the others) -----
class _ConvFunction(Function):
    """A conv Function on geometry `geo`. It may be handed the expanded operand its path builds, when the caller
    has it already: `cols`, the im2col of the conv input (im2col path), or `spread`, the _tap_spread of the conv
    output (taps path). One it builds itself is kept while a graph is recorded: the backward needs it again."""

    def __init__(self, geo, cols=None, spread=None):
        self.geo, self.cols, self.spread = geo, cols, spread

    def _columns(self, x):
        cols = _im2col(x, self.geo) if self.cols is None else self.cols
        if is_grad_enabled():
            self.cols = cols
        return cols

    def _spread(self, y):
        spread = _tap_spread(y, self.geo) if self.spread is None else self.spread
        if is_grad_enabled():
            self.spread = spread
        return spread


class Conv2dOp(_ConvFunction):
    """y = conv2d(x, w) + b."""

    def forward(self, x, w, b=None):
        geo = self.geo
        if geo.taps:
            y = _taps_conv(x, w, geo)
            if b is not None:
                y += b[:, None, None, None]
            return y.transpose(1, 0, 2, 3)
        rows = xp_of(x).matmul(self._columns(x), _weight_matrix(w, geo.groups))  # (g, M, O/g)
        g, m, og = rows.shape
        rows = rows[0] if g == 1 else rows.transpose(1, 0, 2).reshape(m, g * og)
        if b is not None:
            rows += b
        oh, ow = geo.out_hw
        return rows.reshape(x.shape[0], oh, ow, g * og).transpose(0, 3, 1, 2)

    def backward(self, gy):
        x, w = self.args[:2]
        geo, need_x, need_w = self.geo, self.needs_grad(0), self.needs_grad(1)
        spread = None
        if geo.taps and need_x and need_w:  # both gradients start from the spread gy: built once
            spread = _tap_spread(_as_array(gy), geo)
        gx = ConvTranspose2dOp(geo, spread=spread)(gy, w) if need_x else None
        gw = Conv2dWeightGrad(geo, self.cols, spread)(x, gy) if need_w else None
        gb = gy.sum(axis=(0, 2, 3)) if len(self.inputs) == 3 and self.needs_grad(2) else None
        return gx, gw, gb


class ConvTranspose2dOp(_ConvFunction):
    """x = conv2d's input gradient for output gradient y (and weight w), plus b: conv_transpose2d."""

    def forward(self, y, w, b=None):
        geo = self.geo
        if geo.taps:
            out = _taps_input_grad(self._spread(y), w, y.shape[0], geo)
        elif geo.subpixel:
            out = _subpixel_input_grad(y, w, geo)
        else:
            cols = xp_of(y).matmul(_rows(y, geo.groups), _weight_matrix(w, geo.groups).transpose(0, 2, 1))
            out = _crop_nchw(_col2im(cols, geo, y.shape[0]), geo)
        if b is not None:
            out += b[:, None, None]
        return out

    def backward(self, gx):
        y, w = self.args[:2]
        geo, need_y, need_w = self.geo, self.needs_grad(0), self.needs_grad(1)
        cols = None
        if not geo.taps and need_y and need_w:  # both gradients convolve gx: its columns are built once
            cols = _im2col(_as_array(gx), geo)
        gy = Conv2dOp(geo, cols)(gx, w) if need_y else None
        gw = Conv2dWeightGrad(geo, cols, self.spread)(gx, y) if need_w else None
        gb = gx.sum(axis=(0, 2, 3)) if len(self.inputs) == 3 and self.needs_grad(2) else None
        return gy, gw, gb


class Conv2dWeightGrad(_ConvFunction):
    """w-gradient of conv2d for input x and output gradient y (linear in each of them)."""

    def forward(self, x, y):
        geo = self.geo
        if geo.taps:
            return _taps_weight_grad(x, self._spread(y), geo)
        gw = xp_of(x).matmul(self._columns(x).transpose(0, 2, 1), _rows(y, geo.groups))  # (g, kh*kw*C/g, O/g)
        g, k, og = gw.shape
        kh, kw = geo.kernel
        cg = k // (kh * kw)
        return gw.reshape(g, kh, kw, cg, og).transpose(0, 4, 3, 1, 2).reshape(g * og, cg, kh, kw)

    def backward(self, gw):
        x, y = self.args
        gx = ConvTranspose2dOp(self.geo, spread=self.spread)(y, gw) if self.needs_grad(0) else None
        gy = Conv2dOp(self.geo, self.cols)(x, gw) if self.needs_grad(1) else None
        return gx, gy


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of x (N, C, H, W) with weight (O, C/groups, kh, kw), PyTorch semantics.
    padding: int, (ph, pw), 'valid' (none) or 'same' (Keras: output ceil(H/stride), extra pad bottom/right)."""
    args = _check_conv("conv2d", x, weight, bias, groups, transposed=False)
    geo = _conv_geometry("conv2d", x.shape[2:], weight.shape[2:], stride, padding, dilation, groups)
    return Conv2dOp(_choose_path(geo, x.shape[1], weight.shape[0]))(*args)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed conv of x (N, C_in, H, W) with weight (C_in, C_out/groups, kh, kw): the gradient of conv2d
    w.r.t. its input. Int padding follows PyTorch (out = (H-1)*stride - 2*padding + k_eff + output_padding);
    'same' gives H*stride and 'valid' H*stride + max(k_eff - stride, 0), as Keras' Conv2DTranspose."""
    args = _check_conv("conv_transpose2d", x, weight, bias, groups, transposed=True)
    geo = _transpose_geometry(x.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation, groups)
    return ConvTranspose2dOp(_choose_path(geo, weight.shape[1] * groups, x.shape[1]))(*args)


# ----- pooling -----
def _taps(buf, geo):
    """One strided (N, Ho, Wo, C) view of a padded channels-last buffer per kernel tap, row-major. Pooling
    loops over taps with whole-array ops: 2-10x faster than reducing over the window axes of `_windows`."""
    win = _windows(buf, geo)
    return [win[:, :, :, a, b] for a in range(geo.kernel[0]) for b in range(geo.kernel[1])]


class _WindowSum(Function):
    """y[n, c, i, j] = sum over the taps t of window (i, j) of weights[t] * x. weights has shape
    (taps or 1, N or 1, Ho or 1, Wo or 1, C or 1); linear in x, its adjoint is _WindowScatter."""

    saves_inputs = False

    def __init__(self, geo, weights=None):  # MaxPool2dOp sets its weights in forward
        self.geo, self.weights = geo, weights

    def tap_weight(self, t):
        return self.weights[t if len(self.weights) > 1 else 0]

    def forward(self, x):
        taps = _taps(_padded_nhwc(x, self.geo.pads), self.geo)
        y = taps[0] * self.tap_weight(0)
        for t in range(1, len(taps)):
            y += taps[t] * self.tap_weight(t)
        return y.transpose(0, 3, 1, 2)

    def backward(self, gy):
        return _WindowScatter(self.geo, self.weights)(gy)


class _WindowScatter(_WindowSum):
    """The adjoint of _WindowSum: each gy[n, c, i, j] spread over window (i, j) with the weights, summed."""

    def forward(self, gy):
        g = gy.transpose(0, 2, 3, 1)
        buf = xp_of(gy).zeros((g.shape[0],) + self.geo.padded_hw + (g.shape[3],), dtype=gy.dtype)
        for t, tap in enumerate(_taps(buf, self.geo)):
            tap += g * self.tap_weight(t)
        return _crop_nchw(buf, self.geo)

    def backward(self, ggx):
        return _WindowSum(self.geo, self.weights)(ggx)


class MaxPool2dOp(_WindowSum):
    """Max over each window; the gradient goes to the first maximum of the window in row-major order (as in
    PyTorch). That one-hot choice is kept as the window weights, so the backward is a _WindowScatter."""

    def forward(self, x):
        xp = xp_of(x)
        taps = _taps(_padded_nhwc(x, self.geo.pads, -np.inf), self.geo)
        y = taps[0].copy()
        for tap in taps[1:]:
            xp.maximum(y, tap, out=y)
        self.weights = chosen = xp.empty((len(taps),) + y.shape, dtype=bool)
        free = xp.ones(y.shape, dtype=bool)
        for t, tap in enumerate(taps):
            xp.equal(tap, y, out=chosen[t])
            chosen[t] &= free
            free &= ~chosen[t]
        return y.transpose(0, 3, 1, 2)


def _check_4d(op, x):
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {x.shape}")


def _pool_geometry(op, x, kernel_size, stride, padding):
    _check_4d(op, x)
    kernel = as_pair(kernel_size, f"{op} kernel_size")
    stride = kernel if stride is None else stride
    if not isinstance(padding, str) and any(2 * p > k for p, k in zip(as_pair(padding, "padding", low=0), kernel)):
        raise ValueError(f"{op}: padding {padding!r} must be at most half the kernel size {kernel}")
    return _conv_geometry(op, x.shape[2:], kernel, stride, padding, 1, 1)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling; stride defaults to kernel_size; padding int (implicit -inf), 'valid' or 'same' (Keras)."""
    return MaxPool2dOp(_pool_geometry("max_pool2d", x, kernel_size, stride, padding))(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=None):
    """Average pooling. count_include_pad (whether zero padding counts in the divisor) defaults to True for
    int padding, as in PyTorch, and to False for 'same', as in Keras."""
    geo = _pool_geometry("avg_pool2d", x, kernel_size, stride, padding)
    if count_include_pad is None:
        count_include_pad = not isinstance(padding, str)
    xp = x.xp
    if count_include_pad or geo.padded_hw == geo.in_hw:
        weights = xp.full((1, 1, 1, 1, 1), 1.0 / (geo.kernel[0] * geo.kernel[1]), dtype=x.dtype)
    else:  # divide by the number of real (unpadded) inputs in each window
        counts = sum(_taps(_padded_nhwc(xp.ones((1, 1) + geo.in_hw, dtype=x.dtype), geo.pads), geo))
        weights = (1.0 / counts)[None]  # (1, 1, Ho, Wo, 1)
    return _WindowSum(geo, weights)(x)


def global_avg_pool2d(x, keepdims=False):
    """Mean over H and W: (N, C), or (N, C, 1, 1) with keepdims (Keras' GlobalAveragePooling2D)."""
    _check_4d("global_avg_pool2d", x)
    return mean(x, axis=(2, 3), keepdims=keepdims)


def global_max_pool2d(x, keepdims=False):
    """Max over H and W: (N, C), or (N, C, 1, 1) with keepdims (Keras' GlobalMaxPooling2D)."""
    _check_4d("global_max_pool2d", x)
    return _max(x, axis=(2, 3), keepdims=keepdims)


def _adaptive(op, x, output_size, reduce, pool):
    """Pooling to a fixed output size; `reduce(cell)` pools a whole (N, C, h, w) cell to (N, C, 1, 1)."""
    _check_4d(op, x)
    oh, ow = as_pair(output_size, f"{op} output_size")
    h, w = x.shape[2:]
    if (oh, ow) == (1, 1):
        return reduce(x)
    if h % oh == 0 and w % ow == 0:  # equal windows: an ordinary pooling
        return pool(x, (h // oh, w // ow))
    # PyTorch's uneven windows: cell i covers [floor(i*H/oh), ceil((i+1)*H/oh))
    cells = [reduce(x[:, :, i * h // oh:-(-(i + 1) * h // oh), j * w // ow:-(-(j + 1) * w // ow)])
             for i in range(oh) for j in range(ow)]
    return reshape(concatenate(cells, axis=2), x.shape[:2] + (oh, ow))


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size (PyTorch's window rule)."""
    return _adaptive("adaptive_avg_pool2d", x, output_size, lambda cell: mean(cell, axis=(2, 3), keepdims=True),
                     avg_pool2d)


def adaptive_max_pool2d(x, output_size):
    """Max pooling to a fixed output size (PyTorch's window rule). As in max_pool2d the gradient of a window
    goes to its first maximum in row-major order, whether the windows are even or not."""
    return _adaptive("adaptive_max_pool2d", x, output_size,
                     lambda cell: Max((2, 3), keepdims=True, first=True)(cell), max_pool2d)
