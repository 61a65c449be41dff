"""Small networks shared by the agents, and Q-networks with their ε-greedy policies.

    policy = mlp(4, [64, 64], 2, activation="tanh", init="orthogonal", out_gain=0.01)
    q_net = QNetwork((4,), 2, dqn_config)                 # MLP or Nature CNN, plain or dueling head
    actions = select_actions(q_net, obs, epsilon, rng, 2)  # ε-greedy for a batch of observations

init:
- "torch": PyTorch's Linear default, U(±1/sqrt(fan_in)) for weight and bias;
- "keras": Keras' Dense default, glorot_uniform weight and zero bias (what the books' code gets);
- "orthogonal": CleanRL's `layer_init`, orthogonal weights with gain sqrt(2) on hidden layers and
  `out_gain` on the output layer, zero biases (out_gain 0.01 for a policy head makes the first
  policy nearly uniform, 1.0 for a value head).
"""
import functools
import math

import numpy as np

import core
import core.functional as F
from core import nn
from core.backend import device_of, get_array_module, to_device
from core.ops.linalg import MLP_ACTIVATIONS
from core.runtime.choices import Choice
from core.runtime.errors import ConfigError

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}
INITS = ("torch", "keras", "orthogonal")
# the agent configs' types
Activation = Choice("Activation", list(ACTIVATIONS))
Init = Choice("Init", INITS)
FUSED_ACTIVATIONS = tuple(MLP_ACTIVATIONS)  # what core.functional.fused_mlp computes


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


# ----- Q-networks -----
class QNetwork(nn.Module):
    """Observation -> one Q-value per action: an MLP or the Nature CNN (Mnih et al. 2015: conv 8x8/4
    32, 4x4/2 64, 3x3/1 64, dense 512, on uint8 frames scaled by 1/255), with a plain linear head or a
    dueling one (V and A heads on the last hidden layer). `args` has agents.dqn.Config's network
    fields. An MLP with relu or tanh runs as one fused graph node (core.functional.fused_mlp)."""

    def __init__(self, obs_shape, num_actions, args, generator=None):
        super().__init__()
        self.dueling, self.aggregation = args.dueling, args.dueling_aggregation
        self.activation = args.activation
        self.cnn = args.network == "nature_cnn"
        layer_init = "keras" if args.init == "keras" else "torch"
        if self.cnn:
            if len(obs_shape) != 3:
                raise ConfigError(f"network=nature_cnn needs image observations (channels, height, width), got "
                                  f"shape {tuple(obs_shape)}")
            self.features = nature_cnn(obs_shape, layer_init, generator)
            width = 512
        else:
            in_dim = int(np.prod(obs_shape))
            if args.dueling:  # hidden layers with the activation after the last, then the two heads
                self.features = mlp(in_dim, args.hidden[:-1], args.hidden[-1], args.activation, args.init,
                                    generator=generator)
                width = args.hidden[-1]
            else:
                self.features = mlp(in_dim, args.hidden, num_actions, args.activation, args.init, generator=generator)
        if args.dueling:
            self.value = nn.Linear(width, 1, init=layer_init, generator=generator)
            self.advantage = nn.Linear(width, num_actions, init=layer_init, generator=generator)
        elif self.cnn:
            self.head = nn.Linear(width, num_actions, init=layer_init, generator=generator)
        self.fused = not self.cnn and args.activation in FUSED_ACTIVATIONS

    @property
    def fused_mlp_params(self):
        """(weight₁, bias₁, ...) when the whole network is one fused MLP (relu or tanh, no dueling head, no
        CNN): what core.functional.fused_mlp_q_loss takes. None otherwise."""
        return linear_params(self.features) if self.fused and not self.dueling else None

    def forward(self, x):
        """Q-values (B, actions) of a float32 batch (B, *obs_shape); frames in 0..255."""
        if self.cnn:
            h = self.features(x * (1.0 / 255))
        else:
            x = flatten_rows(x)
            if self.fused:
                h = F.fused_mlp(x, linear_params(self.features), self.activation, activate_output=self.dueling)
            else:
                h = self.features(x)
                if self.dueling:
                    h = ACTIVATIONS[self.activation]()(h)
        if self.dueling:
            return dueling_q(self.value(h), self.advantage(h), self.aggregation)
        return self.head(h) if self.cnn else h

    def greedy(self, obs):
        """argmax_a Q(obs, a) for a batch of observations (an array on the network's device); no graph."""
        with core.no_grad():
            return self(as_input(obs)).data.argmax(axis=1)


def max_over_actions(q):
    """max_a Q(s, a) of a (B, actions) array. numpy reduces a short last axis row by row; column by column
    it is 1.5-12x faster for 18 actions down to 3 (1,024 x 3: 3 us against 38 us), with the same values."""
    if get_array_module(q) is not np:
        return q.max(axis=1)
    return functools.reduce(np.maximum, q.T)


def dueling_q(value, advantage, aggregation="mean"):
    """Q = V + (A − mean_a A), or V + (A − max_a A): V of shape (B, 1), A (B, actions)."""
    baseline = advantage.mean(axis=1, keepdims=True) if aggregation == "mean" else \
        advantage.max(axis=1, keepdims=True)
    return value + (advantage - baseline)


def nature_cnn(obs_shape, layer_init="torch", generator=None):
    channels, height, width = obs_shape
    layers = []
    for c_in, c_out, kernel, stride in ((channels, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)):
        layers += [nn.Conv2d(c_in, c_out, kernel, stride, init=layer_init, generator=generator), nn.ReLU()]
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    if height < 1 or width < 1:
        raise ConfigError(f"network=nature_cnn needs frames of at least 36x36, got {tuple(obs_shape[1:])}")
    return nn.Sequential(*layers, nn.Flatten(),
                         nn.Linear(64 * height * width, 512, init=layer_init, generator=generator), nn.ReLU())


def flatten_rows(x):
    """A batch (B, ...) as rows (B, features), as an MLP takes it."""
    return x if x.ndim == 2 else x.reshape(x.shape[0], -1)


def as_input(obs, device=None):
    """A float32 network input from an array of observations (uint8 frames too: the network scales them),
    on `device` (None: where the array is)."""
    return core.as_tensor(get_array_module(obs).asarray(obs, dtype=np.float32), device=device)


def forward_in_chunks(net, x, rows=2048):
    """net(x).data over row blocks: the hidden activations of a block stay in cache (20-25 % faster
    than one forward over the 8,192 next observations of a 128-update round)."""
    if len(x) <= rows:
        return net(x).data
    blocks = [net(x[first:first + rows]).data for first in range(0, len(x), rows)]
    return get_array_module(blocks[0]).concatenate(blocks)


# ----- ε-greedy policies of a Q-network -----
class EpsilonGreedy:
    """A Q-network's ε-greedy policy, in the interface agents.actor_critic.evaluate drives (`greedy`,
    and `act` whose first result is the actions, drawn with a core.Generator)."""

    def __init__(self, q_net, epsilon, num_actions):
        self.q_net, self.epsilon, self.num_actions = q_net, epsilon, num_actions

    def greedy(self, obs):
        return self.q_net.greedy(obs)

    def act(self, obs, generator):
        device, shape = device_of(obs), (len(obs),)
        explore = generator.uniform(shape, device=device).data < self.epsilon
        random = generator.integers(0, self.num_actions, shape, device=device).data
        return (get_array_module(obs).where(explore, random, self.q_net.greedy(obs)),)


def select_actions(q_net, obs, epsilon, rng, num_actions, device="cpu"):
    """ε-greedy actions (numpy ints) for a batch of observations, drawn with the numpy Generator `rng`.
    The random draws are the same whatever ε is (runs stay reproducible), and the network runs only
    when some env acts greedily."""
    explore, uniform = rng.random((2, len(obs)))
    actions = (uniform * num_actions).astype(np.int64)
    greedy = explore >= epsilon
    if np.count_nonzero(greedy):
        actions = np.where(greedy, to_device(q_net.greedy(to_device(obs, device)), "cpu"), actions)
    return actions
