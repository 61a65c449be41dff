"""Recurrent layers: SimpleRNN (Keras' tanh RNN), LSTM and GRU, unrolled over time with differentiable ops,
and a Bidirectional wrapper.

Input is (T, N, features), or (N, T, features) with batch_first=True. `forward(x, state=None)` returns
the hidden state of every step (return_sequences=True, the default) or of the last step only, and with
return_state=True also the final state: h for SimpleRNN/GRU, (h, c) for LSTM, each (N, hidden_size).
`state` sets the initial state in the same form (zeros by default).

Parameters use PyTorch's layout: weight_ih (G*H, features), weight_hh (G*H, H), bias_ih and bias_hh (G*H),
with G gates stacked in PyTorch's order: LSTM i, f, g, o; GRU r, z, n with
n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), which is Keras' GRU with reset_after=True.
recurrent_bias=False drops bias_hh (Keras' LSTM and SimpleRNN have a single bias); by default it is kept
for init="torch" and dropped for init="keras", except for GRU, which has both biases either way.
"""
import copy
import math

from core.nn import init as initializers
from core.nn.module import Module, Parameter
from core.ops import concatenate, flip, linear, relu, sigmoid, stack, swapaxes, tanh
from core.tensor import Tensor, empty


def _unbind(x):
    """x[0], ..., x[T-1]. Under autodiff the gradient of each slice is an array of x's full size, so slicing
    T steps straight from x would cost O(T^2) in backward; halving recursively costs O(T log T)."""
    if not x.requires_grad:
        return [Tensor._make(a) for a in x.data]
    steps = []

    def halve(part):
        n = part.shape[0]
        if n <= 4:
            steps.extend(part[i] for i in range(n))
        else:
            halve(part[:n // 2])
            halve(part[n // 2:])

    halve(x)
    return steps


class _Recurrent(Module):
    num_gates = 1
    keras_recurrent_bias = False  # Keras' SimpleRNN and LSTM have one bias vector

    def __init__(self, input_size, hidden_size, bias=True, recurrent_bias=None, batch_first=False,
                 return_sequences=True, return_state=False, init="torch", dtype=None, device="cpu", generator=None):
        super().__init__()
        self.init = initializers.check_init(init)
        if recurrent_bias is None:
            recurrent_bias = init == "torch" or self.keras_recurrent_bias
        self.input_size, self.hidden_size = input_size, hidden_size
        self.batch_first, self.return_sequences, self.return_state = batch_first, return_sequences, return_state
        size = self.num_gates * hidden_size
        self.weight_ih = Parameter(empty(size, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(empty(size, hidden_size, dtype=dtype, device=device))
        self.bias_ih = Parameter(empty(size, dtype=dtype, device=device)) if bias else None
        self.bias_hh = Parameter(empty(size, dtype=dtype, device=device)) if bias and recurrent_bias else None
        self.reset_parameters(init, generator)

    def reset_parameters(self, init=None, generator=None):
        """"torch": everything U(+-1/sqrt(hidden_size)); "keras": glorot_uniform input weights, orthogonal
        recurrent weights, zero biases (and the LSTM forget-gate bias 1)."""
        self.init = initializers.check_init(init or self.init)
        biases = [b for b in (self.bias_ih, self.bias_hh) if b is not None]
        if self.init == "torch":
            bound = 1 / math.sqrt(self.hidden_size)
            for p in [self.weight_ih, self.weight_hh] + biases:
                initializers.uniform_(p, -bound, bound, generator)
            return
        initializers.xavier_uniform_(self.weight_ih, generator=generator)
        initializers.orthogonal_(self.weight_hh, generator=generator)
        for b in biases:
            initializers.zeros_(b)

    def forward(self, x, state=None):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = "(N, T, {})" if self.batch_first else "(T, N, {})"
            raise ValueError(f"{type(self).__name__}({self.input_size}, {self.hidden_size}) expected input of shape "
                             f"{layout.format(self.input_size)}, got {x.shape}")
        projected = linear(x, self.weight_ih, self.bias_ih)  # every step's input projection in one GEMM
        if self.batch_first:
            projected = swapaxes(projected, 0, 1)
        steps, batch = projected.shape[:2]
        if steps == 0:
            raise ValueError(f"{type(self).__name__} got an empty sequence (input shape {x.shape})")
        state = self._initial_state(batch, projected) if state is None else self._check_state(state, batch)
        outputs = []
        for projected_t in _unbind(projected):
            state = self._step(projected_t, state)
            if self.return_sequences:
                outputs.append(self._hidden(state))
        out = stack(outputs, 1 if self.batch_first else 0) if self.return_sequences else self._hidden(state)
        return (out, state) if self.return_state else out

    def _zeros(self, batch, like):
        return Tensor._make(like.xp.zeros((batch, self.hidden_size), dtype=like.dtype))

    def _initial_state(self, batch, like):
        return self._zeros(batch, like)

    def _check_state(self, state, batch):
        self._check_tensor(state, "h", batch)
        return state

    def _check_tensor(self, t, name, batch):
        if not isinstance(t, Tensor) or t.shape != (batch, self.hidden_size):
            got = t.shape if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{type(self).__name__} initial state {name} must have shape (N, hidden_size) = "
                             f"({batch}, {self.hidden_size}), got {got}")

    @staticmethod
    def _hidden(state):
        return state

    def extra_repr(self):
        flags = "".join(f", {name}=True" for name in ("batch_first", "return_state") if getattr(self, name))
        seq = "" if self.return_sequences else ", return_sequences=False"
        return f"{self.input_size}, {self.hidden_size}{seq}{flags}"


class SimpleRNN(_Recurrent):
    """h' = tanh(W_ih x + b_ih + W_hh h [+ b_hh]) (nonlinearity "tanh" or "relu"); other arguments as LSTM's."""

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"SimpleRNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, **kwargs)
        self.nonlinearity = nonlinearity
        self.activation = tanh if nonlinearity == "tanh" else relu

    def _step(self, projected, h):
        return self.activation(projected + linear(h, self.weight_hh, self.bias_hh))


class LSTM(_Recurrent):
    """i, f, o = sigmoid(.), g = tanh(.) of W_ih x + b_ih + W_hh h [+ b_hh]; c' = f c + i g; h' = o tanh(c')."""

    num_gates = 4

    def reset_parameters(self, init=None, generator=None):
        super().reset_parameters(init, generator)
        if self.init == "keras" and self.bias_ih is not None:  # Keras' unit_forget_bias
            h = self.hidden_size
            self.bias_ih.data[h:2 * h] = 1
            self.bias_ih._version += 1

    def _step(self, projected, state):
        h, c = state
        gates = projected + linear(h, self.weight_hh, self.bias_hh)
        n = self.hidden_size
        s = sigmoid(gates)
        c = s[:, n:2 * n] * c + s[:, :n] * tanh(gates[:, 2 * n:3 * n])
        return s[:, 3 * n:] * tanh(c), c

    def _initial_state(self, batch, like):
        return self._zeros(batch, like), self._zeros(batch, like)

    def _check_state(self, state, batch):
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(f"LSTM initial state must be a pair (h, c), got {type(state).__name__}")
        self._check_tensor(state[0], "h", batch)
        self._check_tensor(state[1], "c", batch)
        return tuple(state)

    @staticmethod
    def _hidden(state):
        return state[0]


class GRU(_Recurrent):
    """r, z = sigmoid(.); n = tanh(W_in x + b_in + r (W_hn h + b_hn)); h' = (1 - z) n + z h."""

    num_gates = 3
    keras_recurrent_bias = True  # Keras' GRU (reset_after=True) has an input and a recurrent bias

    def _step(self, projected, h):
        n = self.hidden_size
        hw = linear(h, self.weight_hh, self.bias_hh)
        rz = sigmoid(projected[:, :2 * n] + hw[:, :2 * n])
        candidate = tanh(projected[:, 2 * n:] + rz[:, :n] * hw[:, 2 * n:])
        return candidate + rz[:, n:] * (h - candidate)


class Bidirectional(Module):
    """Runs `layer` forward in time and a fresh copy of it (re-initialised) on the reversed sequence, and merges
    the outputs: merge_mode "concat" (features side by side), "sum", "mul" or "ave". With return_state the
    states come back as (forward_state, backward_state); `state` takes the same pair."""

    def __init__(self, layer, merge_mode="concat"):
        super().__init__()
        if merge_mode not in ("concat", "sum", "mul", "ave"):
            raise ValueError(f"merge_mode must be 'concat', 'sum', 'mul' or 'ave', got {merge_mode!r}")
        self.merge_mode = merge_mode
        self.forward_layer = layer
        self.backward_layer = copy.deepcopy(layer)
        self.backward_layer.reset_parameters()

    def forward(self, x, state=None):
        layer = self.forward_layer
        time_axis = 1 if layer.batch_first else 0
        state_f, state_b = (None, None) if state is None else state
        out_f = layer(x, state_f)
        out_b = self.backward_layer(flip(x, time_axis), state_b)
        if layer.return_state:
            (out_f, state_f), (out_b, state_b) = out_f, out_b
        if layer.return_sequences:
            out_b = flip(out_b, time_axis)
        if self.merge_mode == "concat":
            out = concatenate([out_f, out_b], -1)
        elif self.merge_mode == "sum":
            out = out_f + out_b
        elif self.merge_mode == "mul":
            out = out_f * out_b
        else:
            out = (out_f + out_b) * 0.5
        return (out, (state_f, state_b)) if layer.return_state else out

    def extra_repr(self):
        return f"merge_mode={self.merge_mode!r}"
