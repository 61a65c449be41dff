"""Small networks shared by the agents.

    policy = mlp(4, [64, 64], 2, activation="tanh", init="orthogonal", out_gain=0.01)

init:
- "torch": PyTorch's Linear default, U(±1/sqrt(fan_in)) for weight and bias;
- "keras": Keras' Dense default, glorot_uniform weight and zero bias (what the books' code gets);
- "orthogonal": CleanRL's `layer_init`, orthogonal weights with gain sqrt(2) on hidden layers and
  `out_gain` on the output layer, zero biases (out_gain 0.01 for a policy head makes the first
  policy nearly uniform, 1.0 for a value head).
"""
import math

from core import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}
INITS = ("torch", "keras", "orthogonal")


def mlp(in_dim, hidden, out_dim, activation="tanh", init="torch", out_gain=1.0, generator=None):
    """Linear → activation → ... → Linear as an `nn.Sequential`; `hidden` lists the hidden widths
    (empty: a single linear layer). `generator` (a core.Generator) draws the initial weights."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    widths = [in_dim, *hidden, out_dim]
    if any(int(w) != w or w < 1 for w in widths):
        raise ValueError(f"layer widths must be positive integers, got in_dim={in_dim}, hidden={list(hidden)}, "
                         f"out_dim={out_dim}")
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        is_output = i == len(widths) - 2
        layer = nn.Linear(int(fan_in), int(fan_out), init="keras" if init == "keras" else "torch", generator=generator)
        if init == "orthogonal":
            nn.init.orthogonal_(layer.weight, out_gain if is_output else math.sqrt(2), generator=generator)
            nn.init.zeros_(layer.bias)
        layers.append(layer)
        if not is_output:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def linear_params(sequential):
    """(weight₁, bias₁, weight₂, bias₂, ...) of an `mlp`'s Linear layers: what core.functional.fused_mlp takes."""
    return [p for layer in sequential if isinstance(layer, nn.Linear) for p in (layer.weight, layer.bias)]
