"""A network from a list of layer dicts, Keras-style: input shapes are inferred, so a layer names only
what it adds.

    model = nn.build([{"type": "flatten"}, {"type": "dense", "units": 100, "activation": "relu"},
                      {"type": "dense", "units": 10}], input_shape=(1, 28, 28))
    model.output_shape                 # (10,), per example
    loss = F.cross_entropy(model(x), y) + model.penalty()     # the layers' l2 and activity penalties

Each dict has a `type`; its other keys, with their defaults in brackets (Keras' defaults: glorot_uniform
kernels, zero biases):
- dense: units, activation [linear], init [glorot_uniform], init_std [0.05], bias [true], l2 [0],
  activity_l1 [0]. Applies to the last axis, so it also works per time step of a sequence.
- conv: filters, kernel, stride [1], padding [valid], activation, init, init_std, bias, l2.
- maxpool / avgpool: size [2], stride [size], padding [valid]. global_avgpool. flatten. reshape: shape
  (per example; -1 allowed). dropout: rate. batchnorm: momentum [0.99], eps [0.001] (Keras' values).
  activation: activation. scale: factor (Keras' Lambda(x * factor)). repeat_vector: n.
- simple_rnn / lstm / gru: units, return_sequences [false], bidirectional [false] (concatenated); input
  (N, T, features); Keras' initialisation and biases.
- residual: layers (a nested list), activation [relu] applied after the sum, shortcut [true]: the input is
  added to the output of `layers`, through a 1×1 conv with the matching stride and channels when the shapes
  differ (a ResNet's downsampling block); false gives the same block without the sum (a "plain" network).
Activations: linear, relu, elu, selu, tanh, sigmoid, leaky_relu (Keras' layer slope 0.3). There is no
softmax: leave the output layer linear and use a cross-entropy loss that takes logits.
Inits: glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal (Keras' truncated normals),
truncated_normal (N(0, init_std) cut at 2 std, TF's truncated_normal), zeros, bdl_numpy (the NumPy network of
Beginning Deep Learning ch. 7: kernel N(0, 1/units), bias U[0, 0.1)).
Penalties, which `Network.penalty()` sums as Keras sums a model's losses: l2 = λ·Σw² of the kernel;
activity_l1 = λ·Σ|output| divided by the batch size.

Anything unknown or missing in the list, or a layer that cannot take the shape before it, is a ValueError
of one line naming the layer (`layers[2]`, `layers[0].layers[1]` inside a residual block) and what is allowed.
"""
import math

from core.autograd import no_grad
from core.nn import init as initializers
from core.nn.activation import ELU, LeakyReLU, ReLU, SELU, Sigmoid, Tanh
from core.nn.conv import AvgPool2d, Conv2d, GlobalAvgPool2d, MaxPool2d
from core.nn.layers import Dropout, Flatten, Identity, Linear
from core.nn.module import Module, Sequential
from core.nn.norm import BatchNorm1d, BatchNorm2d
from core.nn.rnn import GRU, LSTM, Bidirectional, SimpleRNN
from core.ops import broadcast_to
from core.tensor import zeros

ACTIVATIONS = ("linear", "relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu")
INITS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal", "truncated_normal", "zeros",
         "bdl_numpy")
REQUIRED = object()
_KERNEL = {"activation": "linear", "init": "glorot_uniform", "init_std": 0.05, "bias": True, "l2": 0.0}
_RECURRENT = {"units": REQUIRED, "return_sequences": False, "bidirectional": False}
_POOL = {"size": 2, "stride": None, "padding": "valid"}
LAYER_KEYS = {
    "dense": {"units": REQUIRED, **_KERNEL, "activity_l1": 0.0},
    "conv": {"filters": REQUIRED, "kernel": REQUIRED, "stride": 1, "padding": "valid", **_KERNEL},
    "maxpool": _POOL, "avgpool": _POOL, "global_avgpool": {}, "flatten": {},
    "reshape": {"shape": REQUIRED}, "dropout": {"rate": REQUIRED}, "batchnorm": {"momentum": 0.99, "eps": 1e-3},
    "activation": {"activation": REQUIRED}, "scale": {"factor": REQUIRED}, "repeat_vector": {"n": REQUIRED},
    "simple_rnn": _RECURRENT, "lstm": _RECURRENT, "gru": _RECURRENT,
    "residual": {"layers": REQUIRED, "activation": "relu", "shortcut": True},
}
_RECURRENT_CLASSES = {"simple_rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}


def parse_layers(layers, where="layers") -> list[dict]:
    """The layer dicts with their defaults filled in; ValueError naming the layer for anything unknown.
    `where` is how the list is named in the messages (e.g. the config key that holds it)."""
    if not layers:
        raise ValueError(f"{where} is empty; give at least one layer")
    specs = []
    for i, layer in enumerate(layers):
        here = f"{where}[{i}]"
        layer = dict(layer)
        kind = layer.pop("type", None)
        if kind not in LAYER_KEYS:
            raise ValueError(f"{here}: type must be one of {', '.join(LAYER_KEYS)}; got {kind!r}")
        allowed = LAYER_KEYS[kind]
        unknown = sorted(set(layer) - set(allowed))
        if unknown:
            raise ValueError(f"{here}: unknown key {unknown[0]!r} for a {kind} layer; allowed: "
                             f"{', '.join(allowed) or 'none'}")
        spec = {"type": kind, **{k: v for k, v in allowed.items() if v is not REQUIRED}, **layer}
        missing = [k for k, v in allowed.items() if v is REQUIRED and k not in layer]
        if missing:
            raise ValueError(f"{here}: a {kind} layer needs {missing[0]!r}")
        if spec.get("activation") == "softmax":
            raise ValueError(f"{here}: leave the output layer linear (activation linear): the cross-entropy losses "
                             "apply the softmax to its logits")
        if "activation" in spec and spec["activation"] not in ACTIVATIONS:
            raise ValueError(f"{here}: activation must be one of {', '.join(ACTIVATIONS)}; got {spec['activation']!r}")
        if "init" in spec and spec["init"] not in INITS:
            raise ValueError(f"{here}: init must be one of {', '.join(INITS)}; got {spec['init']!r}")
        for key in ("units", "filters", "n"):
            if key in spec and not (isinstance(spec[key], int) and spec[key] > 0):
                raise ValueError(f"{here}: {key} must be a positive integer, got {spec[key]!r}")
        if kind == "dropout" and not 0 <= spec["rate"] < 1:
            raise ValueError(f"{here}: rate must be in [0, 1), got {spec['rate']}")
        if spec.get("padding", "valid") not in ("valid", "same"):
            raise ValueError(f"{here}: padding must be valid or same, got {spec['padding']!r}")
        if kind == "residual":
            spec["layers"] = parse_layers(spec["layers"], f"{here}.layers")
        specs.append(spec)
    return specs


class Block(Module):
    """A dense or conv layer with its activation and penalties; `penalty` holds the last forward's
    activity penalty (per example), `l2` weighs the kernel's Σw²."""

    def __init__(self, layer, activation, l2=0.0, activity_l1=0.0):
        super().__init__()
        self.layer, self.activation = layer, activation
        self.l2, self.activity_l1 = l2, activity_l1
        self.penalty = None

    def forward(self, x):
        out = self.activation(self.layer(x))
        if self.activity_l1:
            self.penalty = self.activity_l1 * out.abs().sum() / out.shape[0]
        return out


class Residual(Module):
    def __init__(self, body, shortcut, activation):
        super().__init__()
        self.body, self.shortcut, self.activation = body, shortcut, activation

    def forward(self, x):
        out = self.body(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.activation(out)


class Lambda(Module):
    """A parameter-free reshaping or scaling step."""

    def __init__(self, fn, description):
        super().__init__()
        self.fn, self.description = fn, description

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self):
        return self.description


class Network(Sequential):
    """The layers of a list, applied in order; `input_shape` and `output_shape` are per example."""

    def __init__(self, *layers, input_shape, output_shape):
        super().__init__(*layers)
        self.input_shape, self.output_shape = input_shape, output_shape

    def penalty(self):
        """The sum of the l2 and activity penalties of the last forward pass (0.0 when there are none)."""
        total = 0.0
        for block in self.modules():
            if isinstance(block, Block):
                if block.l2:
                    total = total + block.l2 * (block.layer.weight * block.layer.weight).sum()
                if block.penalty is not None:
                    total = total + block.penalty
        return total


def build(layers, input_shape, where="layers") -> Network:
    """The network of a layer list (see the module doc) for examples of `input_shape` (no batch axis)."""
    return _build(parse_layers(layers, where), tuple(input_shape), where)


def _build(specs, shape, where):
    input_shape, modules = shape, []
    for i, spec in enumerate(specs):
        here = f"{where}[{i}]"
        layer = _make_layer(spec, shape, here)
        try:
            shape = _output_shape(layer, shape)
        except ValueError as e:
            raise ValueError(f"{here} ({spec['type']}) cannot take examples of shape {shape}: "
                             f"{str(e).splitlines()[0]}") from None
        modules.append(layer)
    return Network(*modules, input_shape=input_shape, output_shape=shape)


def _output_shape(layer, shape):
    """The output shape per example of `layer` for examples of `shape`, from a dummy batch."""
    layer.eval()  # the probe must not touch batch-norm statistics
    with no_grad():
        out = tuple(layer(zeros(2, *shape)).shape[1:])
    layer.train()
    return out


def _activation(name):
    return {"linear": Identity, "relu": ReLU, "elu": ELU, "selu": SELU, "tanh": Tanh, "sigmoid": Sigmoid,
            "leaky_relu": lambda: LeakyReLU(0.3)}[name]()


def _init_kernel(layer, spec):
    weight, bias = layer.weight, layer.bias
    name = spec["init"]
    if name == "glorot_uniform":
        initializers.xavier_uniform_(weight)
    elif name == "glorot_normal":
        initializers.variance_scaling_(weight, 1.0, "fan_avg")
    elif name == "he_uniform":
        initializers.variance_scaling_(weight, 2.0, "fan_in", "uniform")
    elif name == "he_normal":
        initializers.variance_scaling_(weight, 2.0, "fan_in")
    elif name == "lecun_normal":
        initializers.variance_scaling_(weight, 1.0, "fan_in")
    elif name == "truncated_normal":
        std = spec["init_std"]
        initializers.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
    elif name == "zeros":
        initializers.zeros_(weight)
    else:  # bdl_numpy: np.random.randn(n_input, n_neurons) * sqrt(1 / n_neurons), bias rand(n_neurons) * 0.1
        initializers.normal_(weight, 0.0, math.sqrt(1.0 / weight.shape[0]))
        if bias is not None:
            initializers.uniform_(bias, 0.0, 0.1)
        return
    if bias is not None:
        initializers.zeros_(bias)


def _make_layer(spec, shape, here):
    """One module for `spec`, given the input shape of one example."""
    kind = spec["type"]
    if kind in ("dense", "conv"):
        if kind == "dense":
            layer = Linear(shape[-1], spec["units"], bias=spec["bias"])
        else:
            if len(shape) != 3:
                raise ValueError(f"{here}: a conv layer needs (C, H, W) examples, got shape {shape}; reshape first")
            layer = Conv2d(shape[0], spec["filters"], spec["kernel"], spec["stride"], padding=spec["padding"],
                           bias=spec["bias"])
        _init_kernel(layer, spec)
        return Block(layer, _activation(spec["activation"]), spec["l2"], spec.get("activity_l1", 0.0))
    if kind in ("maxpool", "avgpool"):
        pool = MaxPool2d if kind == "maxpool" else AvgPool2d
        return pool(spec["size"], spec["stride"], padding=spec["padding"])
    if kind == "global_avgpool":
        return GlobalAvgPool2d()
    if kind == "flatten":
        return Flatten()
    if kind == "reshape":
        target = tuple(spec["shape"])
        return Lambda(lambda x: x.reshape(x.shape[0], *target), f"shape={target}")
    if kind == "dropout":
        return Dropout(spec["rate"])
    if kind == "batchnorm":
        if len(shape) not in (1, 3):
            raise ValueError(f"{here}: batchnorm works on (features,) or (C, H, W) examples, got shape {shape}")
        norm = BatchNorm1d if len(shape) == 1 else BatchNorm2d
        return norm(shape[0], momentum=round(1 - spec["momentum"], 12), eps=spec["eps"])  # Keras: the decay
    if kind == "activation":
        return _activation(spec["activation"])
    if kind == "scale":
        factor = spec["factor"]
        return Lambda(lambda x: x * factor, f"factor={factor}")
    if kind == "repeat_vector":
        n = spec["n"]
        return Lambda(lambda x: broadcast_to(x.unsqueeze(1), (x.shape[0], n, x.shape[1])), f"n={n}")
    if kind in _RECURRENT_CLASSES:
        if len(shape) != 2:
            raise ValueError(f"{here}: a {kind} layer needs (time, features) examples, got shape {shape}; "
                             "reshape first")
        layer = _RECURRENT_CLASSES[kind](shape[-1], spec["units"], batch_first=True,
                                         return_sequences=spec["return_sequences"], init="keras")
        return Bidirectional(layer) if spec["bidirectional"] else layer  # Bidirectional concatenates
    # residual
    body = _build(spec["layers"], shape, f"{here}.layers")
    shortcut = None
    if spec["shortcut"]:
        if body.output_shape == shape:
            shortcut = Identity()
        elif len(shape) == 3 and len(body.output_shape) == 3:  # downsampling: a 1x1 conv with the block's stride
            shortcut = Conv2d(shape[0], body.output_shape[0], 1, max(round(shape[1] / body.output_shape[1]), 1),
                              init="keras")
        if shortcut is None or _output_shape(shortcut, shape) != body.output_shape:
            raise ValueError(f"{here}: a residual block maps {shape} to {body.output_shape}; its shortcut cannot "
                             "match that")
    return Residual(body, shortcut, _activation(spec["activation"]))
