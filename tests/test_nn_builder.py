"""core.nn.build: a network from a list of layer dicts, shapes inferred; the books' parameter counts, residual
blocks, Keras' penalties, and one-line errors naming the layer."""
import numpy as np
import pytest

import core
from core import nn
from core.nn.builder import parse_layers


def layer(kind, **keys):
    return {"type": kind, **keys}


RELU = {"activation": "relu"}


def test_book_networks_have_the_books_parameter_counts():
    pool_relu = [layer("maxpool"), layer("activation", **RELU)]
    lenet = nn.build([layer("conv", filters=6, kernel=3), *pool_relu, layer("conv", filters=16, kernel=3), *pool_relu,
                      layer("flatten"), layer("dense", units=120, **RELU), layer("dense", units=84, **RELU),
                      layer("dense", units=10)], (1, 28, 28))
    per_layer = [sum(p.size for p in layer.parameters()) for layer in lenet if list(layer.parameters())]
    assert per_layer == [60, 880, 48120, 10164, 850]  # FX-PC-7
    rnn_ae = nn.build([layer("reshape", shape=[28, 28]), layer("lstm", units=100, return_sequences=True),
                       layer("lstm", units=30), layer("repeat_vector", n=28),
                       layer("lstm", units=100, return_sequences=True), layer("dense", units=28)], (1, 28, 28))
    assert rnn_ae.output_shape == (28, 28) and rnn_ae.input_shape == (1, 28, 28)
    assert rnn_ae.parameter_counts()["total"] == 122_548  # FX-PC-23, Keras' single-bias LSTM
    fraud = nn.build([layer("dense", units=14, activation="tanh", activity_l1=1e-4), layer("dense", units=7, **RELU),
                      layer("dense", units=7, activation="tanh"), layer("dense", units=29, **RELU)], (29,))
    assert fraud.parameter_counts()["total"] == 813  # FX-PC-27
    quant = nn.build([layer("conv", filters=12, kernel=3, **RELU), layer("maxpool"), layer("flatten"),
                      layer("dense", units=10)], (1, 28, 28))
    assert quant.parameter_counts()["trainable"] == 20_410  # FX-PC-15


def test_output_shapes_follow_keras_padding_and_recurrent_rules():
    model = nn.build([layer("conv", filters=5, kernel=3, stride=2, padding="same"), layer("avgpool", padding="same"),
                      layer("reshape", shape=[5, -1]), layer("gru", units=4, bidirectional=True)], (2, 9, 9))
    assert model.output_shape == (8,)  # same: ceil(9 / 2) = 5, then ceil(5 / 2) = 3; 3 x 3 = 9 steps; 2 x 4 units
    with core.no_grad():
        assert model(core.randn(3, 2, 9, 9)).shape == (3, 8)


def test_residual_blocks_add_their_input_or_a_strided_projection():
    block = layer("residual", layers=[layer("conv", filters=8, kernel=3, stride=2, padding="same"), layer("batchnorm")])
    model = nn.build([block], (4, 15, 15))
    assert model.output_shape == (8, 8, 8) and model[0].shortcut.stride == (2, 2)  # a ResNet's 1x1 downsample
    zero_conv = layer("conv", filters=4, kernel=3, padding="same", init="zeros")
    same = nn.build([layer("residual", activation="linear", layers=[zero_conv])], (4, 5, 5))
    plain = nn.build([layer("residual", shortcut=False, activation="linear", layers=[zero_conv])], (4, 5, 5))
    x = core.randn(2, 4, 5, 5)
    with core.no_grad():
        assert np.allclose(same(x).numpy(), x.numpy())  # zero body: the block is the identity
        assert np.allclose(plain(x).numpy(), 0)


def test_penalties_follow_keras():
    model = nn.build([layer("dense", units=3, l2=0.5, activity_l1=0.1, **RELU)], (2,))
    model[0].layer.weight.data[...] = [[1.0, 2.0], [0.0, 1.0], [-1.0, 0.0]]
    model[0].layer.bias.data[...] = 0.0
    model(core.tensor([[1.0, 1.0], [2.0, 0.0]]))
    # l2: 0.5 * sum(w^2) = 0.5 * 7; activity: 0.1 * sum|relu(xW^T)| / batch = 0.1 * (3 + 1 + 2) / 2
    assert model.penalty().item() == pytest.approx(3.5 + 0.3)


def test_parse_layers_fills_in_keras_defaults():
    dense, pool = parse_layers([layer("dense", units=3), layer("maxpool")])
    assert dense == {"type": "dense", "units": 3, "activation": "linear", "init": "glorot_uniform", "init_std": 0.05,
                     "bias": True, "l2": 0.0, "activity_l1": 0.0}
    assert pool == {"type": "maxpool", "size": 2, "stride": None, "padding": "valid"}


@pytest.mark.parametrize("layers,message", [
    ([], "model.layers is empty; give at least one layer"),
    ([{"type": "dens", "units": 3}], "model.layers[0]: type must be one of dense, conv, maxpool"),
    ([{"type": "dense", "unit": 3}], "model.layers[0]: unknown key 'unit' for a dense layer; allowed: units, "
                                     "activation, init"),
    ([{"type": "dense"}], "model.layers[0]: a dense layer needs 'units'"),
    ([{"type": "dense", "units": 10, "activation": "softmax"}], "model.layers[0]: leave the output layer linear"),
    ([{"type": "dense", "units": 3, "init": "orthogonal"}], "model.layers[0]: init must be one of glorot_uniform"),
    ([{"type": "flatten"}, {"type": "dropout", "rate": 1.0}], "model.layers[1]: rate must be in [0, 1), got 1.0"),
    ([{"type": "residual", "layers": [{"type": "conv", "filters": 2}]}],
     "model.layers[0].layers[0]: a conv layer needs 'kernel'"),
])
def test_bad_layer_lists_are_one_line_errors_naming_the_layer(layers, message):
    with pytest.raises(ValueError) as error:
        nn.build(layers, (1, 8, 8), where="model.layers")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("layers,shape,message", [
    ([layer("flatten"), layer("conv", filters=2, kernel=3)], (1, 8, 8),
     "layers[1]: a conv layer needs (C, H, W) examples, got shape (64,); reshape first"),
    ([layer("lstm", units=2)], (1, 8, 8), "layers[0]: a lstm layer needs (time, features) examples"),
    ([layer("conv", filters=2, kernel=9)], (1, 8, 8), "layers[0] (conv) cannot take examples of shape (1, 8, 8): "),
    ([layer("residual", layers=[layer("flatten")])], (1, 8, 8),
     "layers[0]: a residual block maps (1, 8, 8) to (64,); its shortcut cannot match that"),
])
def test_layers_that_cannot_take_their_input_shape_say_so(layers, shape, message):
    with pytest.raises(ValueError) as error:
        nn.build(layers, shape)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_shape_probe_leaves_batchnorm_statistics_and_the_mode_alone():
    model = nn.build([layer("flatten"), layer("batchnorm"), layer("dropout", rate=0.5)], (1, 2, 2))
    assert model.training and all(m.training for m in model.modules())
    np.testing.assert_array_equal(model[1].running_mean.numpy(), 0)
    np.testing.assert_array_equal(model[1].running_var.numpy(), 1)
