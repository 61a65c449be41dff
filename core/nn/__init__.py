"""`core.nn`: modules, layers, initializers (`core.nn.init`) and `build`, a network from a list of layer
dicts (`core.nn.builder`).

Stateless counterparts of the layers (dropout, batch_norm, layer_norm, activations, losses) live in
`core.functional`.
"""
from core.nn import init  # noqa: F401
from core.nn.activation import (  # noqa: F401
    ELU, GELU, LeakyReLU, LogSigmoid, LogSoftmax, ReLU, SELU, SiLU, Sigmoid, Softmax, Softplus, Tanh,
)
from core.nn.conv import (  # noqa: F401
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, Conv2d, ConvTranspose2d, GlobalAvgPool2d, GlobalMaxPool2d,
    MaxPool2d,
)
from core.nn.init import keras_init_  # noqa: F401
from core.nn.layers import Dropout, Embedding, Flatten, Identity, Linear, Unflatten  # noqa: F401
from core.nn.module import (  # noqa: F401
    Module, ModuleDict, ModuleList, Parameter, ParameterDict, ParameterList, Sequential,
)
from core.nn.norm import BatchNorm1d, BatchNorm2d, LayerNorm  # noqa: F401
from core.nn.rnn import GRU, LSTM, Bidirectional, SimpleRNN  # noqa: F401
from core.nn.builder import build  # noqa: F401
