"""Convolution and pooling layers on NCHW input (the functional ops are in `core.ops.conv`).

`padding` is an int, a pair (ph, pw), or Keras' "same"/"valid"; "same" follows Keras' output-shape
rule with strides too (ceil(H / stride), the odd padding row/column at the bottom/right), and a
transposed conv with "same" gives H * stride. Weights are PyTorch-shaped: Conv2d (out, in/groups, kh, kw),
ConvTranspose2d (in, out/groups, kh, kw). init "torch" (default) or "keras": see `core.nn.init`.
"""
from core.nn.layers import _WeightBias
from core.nn.module import Module
from core.ops.conv import (
    adaptive_avg_pool2d, adaptive_max_pool2d, as_pair, avg_pool2d, conv2d, conv_transpose2d, global_avg_pool2d,
    global_max_pool2d, max_pool2d,
)


def _check_padding(padding):
    if not (isinstance(padding, str) and padding in ("same", "valid")):
        if isinstance(padding, str):
            raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
        as_pair(padding, "padding", low=0)
    return padding


class _ConvNd(_WeightBias):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, init, dtype,
                 device, generator, weight_shape):
        super().__init__()
        for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ValueError(f"{type(self).__name__}: {name}={channels} is not divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride, self.dilation = as_pair(stride, "stride"), as_pair(dilation, "dilation")
        self.padding = _check_padding(padding)
        self._create_parameters((*weight_shape, *self.kernel_size), out_channels if bias else None, init, dtype,
                                device, generator)

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}({self.extra_repr()}) expected input of shape "
                             f"(N, {self.in_channels}, H, W), got {x.shape}")

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}")
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if self.bias is not None else ", bias=False")


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation, as PyTorch and Keras) of (N, in_channels, H, W) input."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 init="torch", dtype=None, device="cpu", generator=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, init, dtype,
                         device, generator, (out_channels, in_channels // groups))

    def forward(self, x):
        self._check_input(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(_ConvNd):
    """Transposed convolution (the gradient of Conv2d w.r.t. its input). Output size: int padding
    (H-1)*stride - 2*padding + dilation*(k-1) + 1 + output_padding (PyTorch); "same" H*stride and
    "valid" H*stride + max(k_eff - stride, 0) (Keras' Conv2DTranspose)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, dilation=1,
                 groups=1, bias=True, init="torch", dtype=None, device="cpu", generator=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, init, dtype,
                         device, generator, (in_channels, out_channels // groups))
        self.output_padding = as_pair(output_padding, "output_padding", low=0)

    def forward(self, x):
        self._check_input(x)
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                self.dilation, self.groups)

    def extra_repr(self):
        extra = f", output_padding={self.output_padding}" if self.output_padding != (0, 0) else ""
        return super().extra_repr() + extra


class MaxPool2d(Module):
    """Max over kernel_size windows; stride defaults to kernel_size (Keras' pool_size)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = None if stride is None else as_pair(stride, "stride")
        self.padding = _check_padding(padding)

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding!r}"


class AvgPool2d(MaxPool2d):
    """Mean over windows; padding counts in the divisor for int padding (PyTorch) but not for "same" (Keras),
    unless count_include_pad says otherwise."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=None):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = count_include_pad

    def forward(self, x):
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)


class GlobalAvgPool2d(Module):
    """Mean over H and W: (N, C) like Keras' GlobalAveragePooling2D, or (N, C, 1, 1) with keepdims."""

    def __init__(self, keepdims=False):
        super().__init__()
        self.keepdims = keepdims

    def forward(self, x):
        return global_avg_pool2d(x, self.keepdims)

    def extra_repr(self):
        return "keepdims=True" if self.keepdims else ""


class GlobalMaxPool2d(GlobalAvgPool2d):
    """Max over H and W: (N, C) like Keras' GlobalMaxPooling2D, or (N, C, 1, 1) with keepdims."""

    def forward(self, x):
        return global_max_pool2d(x, self.keepdims)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed (N, C, *output_size) whatever the input size (PyTorch's windows)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = as_pair(output_size, "output_size")

    def forward(self, x):
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    """Max pooling to a fixed (N, C, *output_size) whatever the input size (PyTorch's windows)."""

    def forward(self, x):
        return adaptive_max_pool2d(x, self.output_size)
