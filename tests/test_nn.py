"""core.nn: module registration and state, layers (first and second order gradients), initializers,
parameter counts from the experiment catalogue (fixtures.md FX-PC), and the errors bad input gets."""
import copy
import math
import pickle

import numpy as np
import pytest

import core
import core.functional as F
from core import nn
from core.nn import init
from core.serialization import load, save

R = np.random.default_rng(7)


def leaf(*shape, away_from_zero=False):
    v = R.uniform(-2, 2, shape)
    if away_from_zero:
        v = np.where(np.abs(v) < 0.1, v + 0.3, v)
    return core.tensor(v, dtype=core.float64, requires_grad=True)


class Net(nn.Module):
    """Everything registration must find: nested Sequential, a list and a dict of modules, an own parameter,
    a persistent and a non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(core.ones(1))
        self.register_buffer("steps", core.zeros(1))
        self.register_buffer("cache", core.zeros(2), persistent=False)
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
        self.heads = [nn.Linear(4, 2), nn.Linear(4, 1)]
        self.extra = {"value": nn.Linear(4, 1)}
        self.history = []  # plain attributes stay plain

    def forward(self, x):
        h = self.body(x) * self.scale
        return core.cat([head(h) for head in self.heads] + [self.extra["value"](h)], axis=1)


NET_KEYS = ["scale", "steps", "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "body.1.running_mean",
            "body.1.running_var", "body.1.num_batches_tracked", "heads.0.weight", "heads.0.bias", "heads.1.weight",
            "heads.1.bias", "extra.value.weight", "extra.value.bias"]


# ----- registration -----
def test_registration_finds_nested_lists_dicts_and_buffers():
    net = Net()
    assert isinstance(net.heads, nn.ModuleList) and isinstance(net.extra, nn.ModuleDict)
    assert net.history == [] and type(net.history) is list
    names = [name for name, _ in net.named_parameters()]
    assert names == [k for k in NET_KEYS if k not in ("steps",) and "running" not in k and "num_batches" not in k]
    assert [name for name, _ in net.named_buffers()] == ["steps", "cache", "body.1.running_mean",
                                                         "body.1.running_var", "body.1.num_batches_tracked"]
    assert list(net.state_dict()) == NET_KEYS  # PyTorch's order; non-persistent buffers are not saved
    assert [name for name, _ in net.named_modules()] == ["", "body", "body.0", "body.1", "body.2", "heads",
                                                         "heads.0", "heads.1", "extra", "extra.value"]
    assert [type(m).__name__ for m in net.children()] == ["Sequential", "ModuleList", "ModuleDict"]
    assert net.num_parameters() == 1 + (12 + 4) + (4 + 4) + (8 + 2) + (4 + 1) + (4 + 1)
    assert net(core.randn(5, 3)).shape == (5, 4)


def test_lists_and_dicts_of_parameters_and_mixed_lists():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.ws = [nn.Parameter(core.ones(2)), nn.Parameter(core.zeros(3))]
            self.named = {"a": nn.Parameter(core.ones(1))}

    m = M()
    assert [n for n, _ in m.named_parameters()] == ["ws.0", "ws.1", "named.a"]
    assert isinstance(m.ws, nn.ParameterList) and len(m.ws) == 2 and m.named["a"].shape == (1,)
    with pytest.raises(TypeError, match="'bad' mixes Modules"):
        m.bad = [nn.Linear(1, 1), 3]


def test_shared_parameters_and_reassignment():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    assert len(list(model.parameters())) == 2  # shared weights appear once ...
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # ... but under every name
    lin = nn.Linear(2, 3)
    lin.weight = nn.Parameter(core.zeros(3, 2))  # reassigning keeps its place in the order
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    assert lin(core.ones(1, 2)).detach().numpy().tolist() == [[0.0, 0.0, 0.0]]
    with pytest.raises(TypeError, match="parameter 'weight'"):
        lin.weight = core.zeros(3, 2)  # a plain Tensor must be wrapped in Parameter
    del lin.weight
    assert list(lin.parameters()) == []


def test_assignment_before_init_says_what_to_do():
    class Forgot(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\) first"):
        Forgot()


def test_names_that_would_shadow_methods_are_refused():
    with pytest.raises(KeyError, match="'keys' is the name of an attribute or method of ModuleDict"):
        nn.ModuleDict({"keys": nn.Linear(1, 1)})
    net = nn.Sequential()
    with pytest.raises(KeyError, match="'training'"):
        net.register_buffer("training", core.zeros(1))
    with pytest.raises(KeyError, match="'forward'"):
        net.forward = nn.Linear(1, 1)
    with pytest.raises(KeyError, match="without '.'"):
        net.add_module("a.b", nn.Linear(1, 1))


def test_modules_pickle():
    net = Net()
    twin = pickle.loads(pickle.dumps(net))
    assert list(twin.state_dict()) == NET_KEYS and isinstance(twin.scale, nn.Parameter)
    x = core.randn(4, 3)
    np.testing.assert_array_equal(net.eval()(x).detach().numpy(), twin.eval()(x).detach().numpy())


def test_parameter_construction():
    p = nn.Parameter(core.tensor([1.0, 2.0]))
    assert isinstance(p, core.Tensor) and p.requires_grad and p.is_leaf
    a = np.arange(3.0)
    assert nn.Parameter(a).dtype == np.float64 and not nn.Parameter(a, requires_grad=False).requires_grad
    with pytest.raises(RuntimeError, match="floating-point"):
        nn.Parameter(np.arange(3))
    assert (p * 2).__class__ is core.Tensor  # ops give plain tensors


def test_sequential_and_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and isinstance(seq[1], nn.ReLU)
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head.state_dict()) == ["0.weight", "0.bias"]
    seq.append(nn.Sigmoid())
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear", "Sigmoid"]
    x = core.randn(4, 2)
    np.testing.assert_allclose(seq(x).detach().numpy(), core.sigmoid(seq[2](seq[1](seq[0](x)))).detach().numpy())
    named = nn.Sequential({"fc": nn.Linear(2, 2), "act": nn.Tanh()})
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"] and isinstance(named.act, nn.Tanh)

    layers = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 2), nn.Linear(2, 3)])
    del layers[0]
    layers.insert(0, nn.Identity())
    layers[1] = nn.Linear(1, 4)
    assert [type(m).__name__ for m in layers] == ["Identity", "Linear", "Linear"]
    assert list(layers.state_dict()) == ["1.weight", "1.bias", "2.weight", "2.bias"] and layers[1].out_features == 4
    heads = nn.ModuleDict({"pi": nn.Linear(2, 2)})
    heads["v"] = nn.Linear(2, 1)
    assert list(heads) == ["pi", "v"] and "v" in heads and len(heads) == 2
    del heads["pi"]
    assert list(heads.state_dict()) == ["v.weight", "v.bias"]


def test_train_eval_zero_grad_apply_and_repr():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net(core.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(not p.grad.detach().numpy().any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen[0] == "Linear"
    assert repr(nn.Sequential(nn.Linear(2, 3), nn.LeakyReLU(0.2))) == (
        "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): LeakyReLU(negative_slope=0.2)\n)")


def test_forward_hooks_cost_nothing_once_removed():
    lin = nn.Linear(2, 2)
    calls = []
    handle = lin.register_forward_hook(lambda m, args, out: calls.append((m, args[0].shape)) or out * 0)
    assert lin(core.ones(3, 2)).detach().numpy().tolist() == [[0.0, 0.0]] * 3 and calls == [(lin, (3, 2))]
    handle.remove()
    assert "forward" not in lin.__dict__  # back to the plain __call__ -> forward path
    assert lin(core.ones(1, 2)).detach().numpy().any()


# ----- state dict -----
def test_state_dict_round_trip_through_a_checkpoint(tmp_path):
    core.manual_seed(1)
    net = Net()
    net(core.randn(8, 3))  # moves the running statistics
    net.steps.data[...] = 5
    save({"model": net.state_dict()}, tmp_path / "ckpt")
    core.manual_seed(2)
    other = Net()
    assert other.load_state_dict(load(tmp_path / "ckpt")["model"]) == ([], [])
    for (k, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy(), err_msg=k)
    x = core.randn(5, 3)
    net.eval(), other.eval()
    np.testing.assert_array_equal(net(x).detach().numpy(), other(x).detach().numpy())


def test_state_dict_values_share_memory_until_copied():
    lin = nn.Linear(2, 2)
    state = lin.state_dict()
    assert not state["weight"].requires_grad
    with core.no_grad():
        lin.weight.add_(1.0)
    np.testing.assert_array_equal(state["weight"].detach().numpy(), lin.weight.detach().numpy())


def test_strict_loading_names_every_bad_key_and_changes_nothing():
    net = Net()
    before = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    state = {k: core.tensor(np.full(v.shape, 3.0)) for k, v in net.state_dict().items()}
    del state["body.0.bias"], state["heads.1.bias"]
    state["heads.1.weight"] = core.zeros(5, 4)
    state["body.1.running_std"] = core.zeros(4)
    state["tail.weight"] = core.zeros(1)
    with pytest.raises(RuntimeError) as err:
        net.load_state_dict(state)
    message = str(err.value)
    assert "\n" not in message
    for key in ("missing keys: body.0.bias, heads.1.bias", "unexpected keys: body.1.running_std, tail.weight",
                "heads.1.weight (checkpoint (5, 4), model (1, 4))"):
        assert key in message, message
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.detach().numpy(), before[k], err_msg=k)
    with pytest.raises(RuntimeError, match="mismatched: heads.1.weight"):  # shapes are checked even when not strict
        net.load_state_dict(state, strict=False)
    state["heads.1.weight"] = core.zeros(1, 4)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert missing == ["body.0.bias", "heads.1.bias"] and unexpected == ["body.1.running_std", "tail.weight"]
    assert (net.body[0].weight.detach().numpy() == 3).all() and (net.body[0].bias.detach().numpy() == before[
        "body.0.bias"]).all()
    assert int(net.body[1].num_batches_tracked.item()) == 3 and net.body[1].num_batches_tracked.dtype == np.int64


def test_load_state_dict_accepts_arrays_and_casts_dtype():
    lin = nn.Linear(2, 1)
    lin.load_state_dict({"weight": np.array([[1.0, 2.0]]), "bias": [0.5]})
    assert lin.weight.dtype == np.float32
    assert lin(core.tensor([[1.0, 1.0]])).item() == 3.5


# ----- copies, dtypes, devices, freezing -----
def test_deepcopy_is_independent():
    net = Net()
    target = net.copy()
    x = core.randn(4, 3)
    net.eval(), target.eval()
    np.testing.assert_array_equal(net(x).detach().numpy(), target(x).detach().numpy())
    ids = {id(t) for t in list(net.parameters()) + list(net.buffers())}
    assert not ids & {id(t) for t in list(target.parameters()) + list(target.buffers())}
    with core.no_grad():
        for p in net.parameters():
            p.mul_(0.0)
    assert target(x).detach().numpy().any() and not net(x).detach().numpy().any()
    assert isinstance(copy.deepcopy(net).heads, nn.ModuleList)


def test_deepcopy_keeps_hooks_bound_to_the_copy():
    lin = nn.Linear(1, 1)
    seen = []
    lin.register_forward_hook(lambda m, args, out: seen.append(m))
    twin = copy.deepcopy(lin)
    twin(core.ones(1, 1))
    assert seen == [twin]


def test_to_dtype_moves_in_place():
    net = Net()
    params = list(net.parameters())
    net(core.randn(3, 3)).sum().backward()
    assert net.to(core.float64) is net
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]  # optimizers keep their references
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())
    assert net.body[1].running_var.dtype == np.float64 and net.body[1].num_batches_tracked.dtype == np.int64
    assert net(core.randn(3, 3, dtype=core.float64)).dtype == np.float64
    assert net.float().scale.dtype == np.float32


@pytest.mark.skipif(core.cupy_available(), reason="checks the error raised without a GPU")
def test_to_missing_device_is_a_clear_error():
    lin = nn.Linear(1, 1)
    with pytest.raises(RuntimeError, match="cuda"):
        lin.to("cuda")
    assert lin.weight.device == "cpu"


@pytest.mark.gpu
def test_module_on_gpu_matches_cpu(gpu_device):
    net = Net()
    twin = net.copy().to(gpu_device)
    assert all(p.device == twin.body[0].weight.device != "cpu" for p in twin.parameters())
    x = core.randn(6, 3)
    out_cpu, out_gpu = net(x), twin(x.to(gpu_device))
    np.testing.assert_allclose(out_gpu.detach().cpu().detach().numpy(), out_cpu.detach().numpy(), rtol=1e-5, atol=1e-6)
    out_gpu.sum().backward()
    out_cpu.sum().backward()
    np.testing.assert_allclose(twin.body[0].weight.grad.cpu().numpy(), net.body[0].weight.grad.numpy(), rtol=1e-4)
    np.testing.assert_allclose(twin.body[1].running_mean.cpu().numpy(), net.body[1].running_mean.numpy(), rtol=1e-5)


def test_freezing_stops_gradients_and_counts_as_non_trainable():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    net(core.randn(2, 3)).sum().backward()
    assert net[0].weight.grad is None and net[2].weight.grad is not None
    assert net.num_parameters() == 26 and net.num_parameters(trainable_only=True) == 10
    assert net.parameter_counts() == {"total": 26, "trainable": 10, "non_trainable": 16}
    net.requires_grad_(True)
    assert net.num_parameters(trainable_only=True) == 26


# ----- summary and parameter counts (fixtures.md FX-PC) -----
def mlp(*sizes, flatten=False, **kwargs):
    layers = [nn.Flatten()] if flatten else []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b, **kwargs), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_summary_table_and_counts_fx_pc_2():
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(784), nn.Linear(784, 300), nn.ELU(), nn.BatchNorm1d(300),
                          nn.Linear(300, 100), nn.ELU(), nn.BatchNorm1d(100), nn.Linear(100, 10), nn.Softmax(-1))
    model.train()
    text = model.summary((28, 28), print_fn=None)
    lines = text.splitlines()
    assert lines[0] == 'Model: "Sequential"'
    assert any(line.split() == ["1", "(BatchNorm1d)", "(None,", "784)", "3,136"] for line in lines)
    assert any(line.split() == ["2", "(Linear)", "(None,", "300)", "235,500"] for line in lines)
    assert any(line.split() == ["9", "(Softmax)", "(None,", "10)", "0"] for line in lines)
    assert "Total params: 271,346" in lines and "Trainable params: 268,978" in lines
    assert "Non-trainable params: 2,368" in lines
    assert model.training and model[1].training  # summary runs in eval mode and restores the modes
    assert int(model[1].num_batches_tracked.item()) == 0  # ... so the running statistics did not move


class RepeatVector(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        return core.stack([x] * self.n, axis=1)


class TiedDecoder(nn.Module):
    """HOML's tied autoencoder: the decoder reuses the encoder's weight matrices, transposed, with own biases."""

    def __init__(self, encoder_layers):
        super().__init__()
        self.encoder = encoder_layers
        self.biases = [nn.Parameter(core.zeros(layer.in_features)) for layer in reversed(encoder_layers)]

    def forward(self, z):
        for layer, bias in zip(reversed(self.encoder), self.biases):
            z = core.linear(z, layer.weight.T, bias)
        return z


def test_parameter_counts_from_the_catalogue():
    assert mlp(784, 300, 100, 10, flatten=True).num_parameters() == 266_610  # FX-PC-1
    assert mlp(784, 256, 128, 64, 10).num_parameters() == 242_762  # FX-PC-4
    assert mlp(4, 3, 3).num_parameters() == 27  # FX-PC-5
    per_layer = [m.num_parameters() for m in mlp(784, 256, 256, 256, 10) if isinstance(m, nn.Linear)]
    assert per_layer == [200_960, 65_792, 65_792, 2_570]  # FX-PC-6
    assert mlp(100_800, 8, 9).num_parameters() == 806_489  # FX-PC-12 (Pac-Man MLP, 210x160x3 input)
    assert nn.GRU(10, 8).num_parameters() == 480  # FX-PC-9
    assert nn.GRU(10, 8, init="keras").num_parameters() == 480
    items, visitors = nn.Embedding(235_062, 5), nn.Embedding(1_407_581, 5)
    assert (items.num_parameters(), visitors.num_parameters()) == (1_175_310, 7_037_905)  # FX-PC-14
    assert mlp(784, 64, 784).num_parameters() == 101_200  # FX-PC-20
    assert mlp(784, 100, 30, 100, 784).num_parameters() == 163_814  # FX-PC-23 stacked AE
    encoder = nn.ModuleList([nn.Linear(784, 100), nn.Linear(100, 30)])
    assert nn.Sequential(*encoder, TiedDecoder(encoder)).num_parameters() == 82_414  # FX-PC-23 tied AE
    rnn_ae = nn.Sequential(nn.LSTM(28, 100, batch_first=True, init="keras"),
                           nn.LSTM(100, 30, batch_first=True, return_sequences=False, init="keras"),
                           RepeatVector(28), nn.LSTM(30, 100, batch_first=True, init="keras"), nn.Linear(100, 28))
    text = rnn_ae.summary((28, 28), print_fn=None)
    assert "Total params: 122,548" in text and "(None, 28, 28)" in text  # FX-PC-23 LSTM AE
    encoder = nn.ModuleDict({"body": mlp(784, 150, 100), "mu": nn.Linear(100, 10), "log_var": nn.Linear(100, 10)})
    assert encoder.num_parameters() == 134_870 and mlp(10, 100, 150, 784).num_parameters() == 134_634  # FX-PC-24
    assert mlp(30, 100, 150, 784).num_parameters() == 136_634  # FX-PC-25 G
    assert mlp(784, 150, 100, 1).num_parameters() == 132_951  # FX-PC-25 D
    assert mlp(29, 14, 7, 7, 29).num_parameters() == 813  # FX-PC-27
    assert mlp(784, 256, 128, 64, 32, 10).num_parameters() == 244_522  # FX-PC-34


def conv_block(conv, channels, act):
    return [conv, nn.BatchNorm2d(channels), act]


def counts(model):
    c = model.parameter_counts()
    return c["total"], c["trainable"], c["non_trainable"]


def test_parameter_counts_of_conv_models_from_the_catalogue():
    lenet = nn.Sequential(nn.Conv2d(1, 6, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(6, 16, 3), nn.MaxPool2d(2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                          nn.Linear(84, 10))
    assert [m.num_parameters() for m in lenet if m.num_parameters()] == [60, 880, 48_120, 10_164, 850]  # FX-PC-7
    assert "(None, 10)" in lenet.summary((1, 28, 28), print_fn=None)
    lrelu = nn.LeakyReLU(0.2)
    critic = nn.Sequential(*conv_block(nn.Conv2d(1, 64, 4, 2, "same"), 64, lrelu),
                           *conv_block(nn.Conv2d(64, 64, 4, 2, "same"), 64, lrelu), nn.Flatten(), nn.Linear(3136, 1))
    assert counts(critic) == (70_337, 70_081, 256)  # FX-PC-10
    generator = nn.Sequential(nn.Linear(50, 128 * 7 * 7), lrelu, nn.Unflatten(1, (128, 7, 7)),
                              *conv_block(nn.ConvTranspose2d(128, 128, 4, 2, "same"), 128, lrelu),
                              *conv_block(nn.ConvTranspose2d(128, 128, 4, 2, "same"), 128, lrelu),
                              nn.Conv2d(128, 1, 7, padding="same"), nn.Tanh())
    assert counts(generator) == (851_713, 851_201, 512)  # FX-PC-11
    assert "(None, 1, 28, 28)" in generator.summary((50,), print_fn=None).splitlines()[-6]  # the last layer's row
    dcgan_g = nn.Sequential(nn.Linear(100, 7 * 7 * 256, bias=False), nn.BatchNorm1d(7 * 7 * 256), lrelu,
                            nn.Unflatten(1, (256, 7, 7)),
                            *conv_block(nn.ConvTranspose2d(256, 128, 5, 1, "same", bias=False), 128, lrelu),
                            *conv_block(nn.ConvTranspose2d(128, 64, 5, 2, "same", bias=False), 64, lrelu),
                            nn.ConvTranspose2d(64, 1, 5, 2, "same", bias=False), nn.Tanh())
    dcgan_d = nn.Sequential(nn.Conv2d(1, 64, 5, 2, "same"), lrelu, nn.Dropout(0.3), nn.Conv2d(64, 128, 5, 2, "same"),
                            lrelu, nn.Dropout(0.3), nn.Flatten(), nn.Linear(7 * 7 * 128, 1))
    assert counts(dcgan_g) == (2_330_944, 2_305_472, 25_472) and counts(dcgan_d)[0] == 212_865  # FX-PC-22
    homl_g = nn.Sequential(nn.Linear(100, 7 * 7 * 128), nn.Unflatten(1, (128, 7, 7)), nn.BatchNorm2d(128),
                           nn.ConvTranspose2d(128, 64, 5, 2, "same"), nn.SELU(), nn.BatchNorm2d(64),
                           nn.ConvTranspose2d(64, 1, 5, 2, "same"), nn.Tanh())
    assert counts(homl_g) == (840_705, 840_321, 384)  # FX-PC-26
    conv_ae = nn.Sequential(nn.Conv2d(1, 16, 3, padding="same"), nn.SELU(), nn.MaxPool2d(2),
                            nn.Conv2d(16, 32, 3, padding="same"), nn.SELU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 64, 3, padding="same"), nn.SELU(), nn.MaxPool2d(2),
                            nn.ConvTranspose2d(64, 32, 3, 2, "valid"), nn.SELU(),
                            nn.ConvTranspose2d(32, 16, 3, 2, "same"), nn.SELU(),
                            nn.ConvTranspose2d(16, 1, 3, 2, "same"), nn.Sigmoid())
    text = conv_ae.summary((1, 28, 28), print_fn=None)
    assert "Total params: 46,529" in text and "(None, 64, 3, 3)" in text and "(None, 1, 28, 28)" in text  # FX-PC-23
    relu = nn.ReLU()
    anime_g = nn.Sequential(nn.Unflatten(1, (100, 1, 1)), relu,
                            *conv_block(nn.ConvTranspose2d(100, 512, 4, 1, "valid", bias=False), 512, relu),
                            *conv_block(nn.ConvTranspose2d(512, 256, 4, 2, "same", bias=False), 256, relu),
                            *conv_block(nn.ConvTranspose2d(256, 128, 4, 2, "same", bias=False), 128, relu),
                            *conv_block(nn.ConvTranspose2d(128, 64, 4, 2, "same", bias=False), 64, relu),
                            nn.ConvTranspose2d(64, 3, 4, 2, "same", bias=False), nn.Tanh())
    anime_d = nn.Sequential(*[layer for c_in, c_out, k, s in [(3, 64, 4, 2), (64, 128, 4, 2), (128, 256, 4, 2),
                                                              (256, 512, 3, 1), (512, 1024, 3, 1)]
                              for layer in conv_block(nn.Conv2d(c_in, c_out, k, s, bias=False), c_out, lrelu)],
                            nn.GlobalAvgPool2d(), nn.Linear(1024, 1))
    assert counts(anime_g) == (3_578_624, 3_576_704, 1_920)  # FX-PC-29
    assert counts(anime_d) == (6_565_633, 6_561_665, 3_968)
    assert "(None, 3, 64, 64)" in anime_g.summary((100,), print_fn=None)
    assert "(None, 1024, 2, 2)" in anime_d.summary((3, 64, 64), print_fn=None)
    dqn = nn.Sequential(nn.Conv2d(4, 32, 8, 4), relu, nn.Conv2d(32, 64, 4, 2), relu, nn.Conv2d(64, 64, 3, 1), relu,
                        nn.Flatten(), nn.Linear(3136, 512), relu, nn.Linear(512, 4))
    assert dqn.num_parameters() == 1_686_180 and "(None, 3136)" in dqn.summary((4, 84, 84), print_fn=None)  # FX-PC-30
    cnn = nn.Sequential(nn.Conv2d(1, 32, 3), relu, nn.Conv2d(32, 64, 3), relu, nn.MaxPool2d(2), nn.Dropout(0.25),
                        nn.Flatten(), nn.Linear(9216, 128), relu, nn.Dropout(0.5), nn.Linear(128, 10))
    assert cnn.num_parameters() == 1_199_882  # FX-PC-32
    same = lambda c_in, c_out, k=3: [nn.Conv2d(c_in, c_out, k, padding="same"), relu]  # noqa: E731
    fashion = nn.Sequential(*same(1, 64, 7), nn.MaxPool2d(2), *same(64, 128), *same(128, 128), nn.MaxPool2d(2),
                            *same(128, 256), *same(256, 256), nn.MaxPool2d(2), nn.Flatten(),
                            *mlp(2304, 128, 64, 10))
    assert fashion.num_parameters() == 1_413_834 and "(None, 256, 3, 3)" in fashion.summary((1, 28, 28),
                                                                                             print_fn=None)  # FX-PC-33
    small = nn.Sequential(nn.Conv2d(1, 12, 3), relu, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(13 * 13 * 12, 10))
    assert small.num_parameters() == 20_410  # FX-PC-15


# ----- layers: values and gradients -----
def test_linear_matches_formula_and_gradchecks():
    lin = nn.Linear(3, 2, dtype=core.float64)
    x = leaf(4, 3)
    np.testing.assert_allclose(lin(x).detach().numpy(),
                               x.detach().numpy() @ lin.weight.detach().numpy().T + lin.bias.detach().numpy())
    assert core.gradcheck(lambda x, w, b: lin(x), [x, lin.weight, lin.bias])
    assert core.gradgradcheck(lambda x, w, b: lin(x).tanh(), [x, lin.weight, lin.bias])
    assert lin(leaf(2, 5, 3)).shape == (2, 5, 2)  # any leading axes


ACTIVATIONS = [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    (nn.SELU(), lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x))),
    (nn.GELU(), lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    (nn.Tanh(), np.tanh),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.LogSigmoid(), lambda x: -np.log1p(np.exp(-x))),
    (nn.Softplus(2.0), lambda x: np.log1p(np.exp(2 * x)) / 2),
    (nn.SiLU(), lambda x: x / (1 + np.exp(-x))),
    (nn.Softmax(1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    (nn.LogSoftmax(-1), lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))),
    (nn.Identity(), lambda x: x),
]


@pytest.mark.parametrize("layer, reference", ACTIVATIONS, ids=[repr(a) for a, _ in ACTIVATIONS])
def test_activations_values_and_gradients(layer, reference):
    x = leaf(3, 4, away_from_zero=True)
    np.testing.assert_allclose(layer(x).detach().numpy(), reference(x.detach().numpy()), rtol=1e-10, atol=1e-12)
    assert core.gradcheck(layer, [x])
    assert core.gradgradcheck(layer, [x])


def test_activation_layers_take_pytorchs_arguments():
    import inspect
    assert str(inspect.signature(nn.LeakyReLU)) == "(negative_slope=0.01)" and str(inspect.signature(nn.ReLU)) == "()"
    assert repr(nn.ELU()) == "ELU(alpha=1.0)" and repr(nn.ELU(alpha=0.5)) == repr(nn.ELU(0.5)) == "ELU(alpha=0.5)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')" and repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"
    assert repr(nn.Tanh()) == "Tanh()" and isinstance(nn.Softplus(2.0), nn.Module)
    with pytest.raises(TypeError, match=r"^ReLU\(\): got an unexpected keyword argument 'inplace'$"):
        nn.ReLU(inplace=True)
    with pytest.raises(TypeError, match=r"^ELU\(alpha=1.0\): too many positional arguments$"):
        nn.ELU(1.0, 2.0)
    with pytest.raises(ValueError, match="GELU approximate must be 'none' or 'tanh', got 'erf'"):
        nn.GELU("erf")
    x = core.tensor([-1.0, 2.0])
    layer = nn.LeakyReLU(0.1)
    layer.negative_slope = 0.5  # read at every call, as in PyTorch
    assert layer(x).tolist() == [-0.5, 2.0]

    class Clipped(nn.ReLU):  # a user's subclass keeps the layer's op
        def forward(self, x):
            return super().forward(x).clip(max=1.0)
    assert Clipped()(x).tolist() == [0.0, 1.0] and repr(Clipped()) == "Clipped()"


@pytest.mark.parametrize("cls, shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 2)),
                                        (nn.BatchNorm2d, (3, 3, 2, 2))])
def test_batchnorm_train_mode_gradients_first_and_second_order(cls, shape):
    bn = cls(3, dtype=core.float64)
    with core.no_grad():
        bn.weight.copy_(R.uniform(0.5, 2, 3))
        bn.bias.copy_(R.uniform(-1, 1, 3))
    x = leaf(*shape)
    assert core.gradcheck(lambda x, w, b: bn(x), [x, bn.weight, bn.bias])
    assert core.gradgradcheck(lambda x, w, b: bn(x), [x, bn.weight, bn.bias])
    bn.eval()
    assert core.gradcheck(lambda x, w, b: bn(x), [x, bn.weight, bn.bias])


def test_batchnorm_running_statistics_match_numpy():
    bn = nn.BatchNorm2d(3, momentum=0.2, dtype=core.float64)
    mean, var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = R.normal(step, 1 + step, (4, 3, 2, 5))
        y = bn(core.tensor(x)).detach().numpy()
        batch_mean, batch_var = x.mean((0, 2, 3)), x.var((0, 2, 3))
        expected = (x - batch_mean[:, None, None]) / np.sqrt(batch_var[:, None, None] + 1e-5)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
        mean = 0.8 * mean + 0.2 * batch_mean
        var = 0.8 * var + 0.2 * x.var((0, 2, 3), ddof=1)  # running variance is unbiased, as PyTorch
    np.testing.assert_allclose(bn.running_mean.detach().numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.detach().numpy(), var, rtol=1e-12)
    assert bn.num_batches_tracked.item() == 3
    bn.eval()
    x = R.normal(size=(2, 3, 2, 2))
    expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    np.testing.assert_allclose(bn(core.tensor(x)).detach().numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(bn.running_mean.detach().numpy(), mean, rtol=1e-12)  # eval leaves the statistics alone


def test_batchnorm_cumulative_average_and_no_running_stats():
    bn = nn.BatchNorm1d(2, momentum=None, affine=False, dtype=core.float64)
    batches = [R.normal(size=(5, 2)) for _ in range(3)]
    for x in batches:
        bn(core.tensor(x))
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean([b.mean(0) for b in batches], 0), rtol=1e-12)
    assert list(bn.parameters()) == []
    free = nn.BatchNorm1d(2, track_running_stats=False, dtype=core.float64).eval()
    x = R.normal(size=(5, 2))
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(free(core.tensor(x)).detach().numpy(), expected, rtol=1e-10)
    assert list(free.state_dict()) == ["weight", "bias"]
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(2)(core.ones(1, 2))


def test_layernorm_values_and_gradients():
    ln = nn.LayerNorm((3, 4), dtype=core.float64)
    with core.no_grad():
        ln.weight.copy_(R.uniform(0.5, 2, (3, 4)))
        ln.bias.copy_(R.uniform(-1, 1, (3, 4)))
    x = leaf(2, 3, 4)
    xn = x.detach().numpy()
    normed = (xn - xn.mean((1, 2), keepdims=True)) / np.sqrt(xn.var((1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(ln(x).detach().numpy(), normed * ln.weight.detach().numpy() + ln.bias.detach().numpy(),
                               rtol=1e-10)
    assert core.gradcheck(lambda x, w, b: ln(x), [x, ln.weight, ln.bias])
    assert core.gradgradcheck(lambda x, w, b: ln(x), [x, ln.weight, ln.bias])
    assert [n for n, _ in nn.LayerNorm(5, elementwise_affine=False).named_parameters()] == []
    assert [n for n, _ in nn.LayerNorm(5, bias=False).named_parameters()] == ["weight"]


def test_dropout_is_seeded_scaled_and_identity_in_eval():
    drop = nn.Dropout(0.25)
    x = core.ones(200, 100)
    core.manual_seed(3)
    a = drop(x).detach().numpy()
    core.manual_seed(3)
    np.testing.assert_array_equal(a, drop(x).detach().numpy())
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.01
    g1, g2 = nn.Dropout(0.5, generator=core.Generator(1)), nn.Dropout(0.5, generator=core.Generator(1))
    np.testing.assert_array_equal(g1(x).detach().numpy(), g2(x).detach().numpy())
    drop.eval()
    assert drop(x) is x
    xg = leaf(4, 5)
    drop.train()
    y = drop(xg)
    y.sum().backward()
    np.testing.assert_allclose(xg.grad.detach().numpy(), (y.detach().numpy() != 0) / 0.75)
    assert not F.dropout(x, 1.0).detach().numpy().any() and F.dropout(x, 0.0) is x
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        nn.Dropout(1.5)


def test_embedding_lookup_gradients_and_padding():
    emb = nn.Embedding(5, 3, padding_idx=0, dtype=core.float64)
    assert not emb.weight.detach().numpy()[0].any()
    idx = core.tensor([[1, 0, 1], [4, 2, 1]])
    out = emb(idx)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.detach().numpy()[1, 0], emb.weight.detach().numpy()[4])
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[:, 0], [0, 3, 1, 0, 1])  # repeats add up; padding none
    vectors = np.arange(6.0).reshape(3, 2)
    frozen = nn.Embedding.from_pretrained(vectors)
    assert not frozen.weight.requires_grad and frozen(np.array([2])).detach().numpy().tolist() == [[4.0, 5.0]]
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 5\), got range \[1, 7\]"):
        emb(core.tensor([1, 7]))
    with pytest.raises(TypeError, match="integer indices"):
        emb(core.tensor([1.0]))


def test_flatten_unflatten():
    x = core.randn(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60) and nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Unflatten(1, (3, 20))(nn.Flatten()(x)).shape == (2, 3, 20)
    with pytest.raises(ValueError, match=r"Unflatten\(1, \(7, 7\)\) needs axis 1 of size 49"):
        nn.Unflatten(1, (7, 7))(core.randn(2, 50))
    with pytest.raises(ValueError, match="more than 1 dimensions"):
        nn.Flatten()(core.randn(3))


def test_wrong_input_shapes_say_what_was_expected():
    with pytest.raises(ValueError, match=r"Linear\(in_features=4, out_features=2, bias=True\) expected input of "
                                         r"shape \(\.\.\., 4\), got \(3, 5\)"):
        nn.Linear(4, 2)(core.randn(3, 5))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(8\) expected input of shape \(N, 8, H, W\), got \(2, 8, 5\)"):
        nn.BatchNorm2d(8)(core.randn(2, 8, 5))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(8\) expected .*\(N, 8\) or \(N, 8, L\), got \(2, 3\)"):
        nn.BatchNorm1d(8)(core.randn(2, 3))
    with pytest.raises(ValueError, match=r"layer_norm over \(4,\) needs input of shape \(\.\.\., 4\), got \(2, 3\)"):
        nn.LayerNorm(4)(core.randn(2, 3))


# ----- initializers -----
def stats(t):
    v = t.detach().numpy().astype(np.float64)
    return v.mean(), v.std(), v.min(), v.max()


def test_variance_scaling_initializers_statistics():
    w = core.empty(400, 300)
    fan_in, fan_out = 300, 400
    checks = [
        (lambda: init.xavier_uniform_(w), math.sqrt(6 / (fan_in + fan_out)), "uniform"),
        (lambda: init.glorot_uniform_(w, gain=2.0), 2 * math.sqrt(6 / (fan_in + fan_out)), "uniform"),
        (lambda: init.xavier_normal_(w), math.sqrt(2 / (fan_in + fan_out)), "normal"),
        (lambda: init.kaiming_uniform_(w), math.sqrt(6 / fan_in), "uniform"),
        (lambda: init.he_uniform_(w, mode="fan_out", nonlinearity="tanh"), 5 / 3 * math.sqrt(3 / fan_out), "uniform"),
        (lambda: init.kaiming_normal_(w), math.sqrt(2 / fan_in), "normal"),
        (lambda: init.he_normal_(w, a=0.2, nonlinearity="leaky_relu"), math.sqrt(2 / 1.04 / fan_in), "normal"),
        (lambda: init.lecun_uniform_(w), math.sqrt(3 / fan_in), "uniform"),
        (lambda: init.lecun_normal_(w), math.sqrt(1 / fan_in), "normal"),
        (lambda: init.variance_scaling_(w, 2.0, "fan_in", "uniform"), math.sqrt(6 / fan_in), "uniform"),
        (lambda: init.normal_(w, 0.0, 0.02), 0.02, "normal"),
    ]
    for fill, scale, kind in checks:
        assert fill() is w
        mean, std, lo, hi = stats(w)
        if kind == "uniform":  # scale is the bound
            assert -scale <= lo and hi <= scale and hi > 0.99 * scale and lo < -0.99 * scale
            assert abs(std - scale / math.sqrt(3)) < 0.01 * scale
        else:  # scale is the std
            assert abs(std - scale) < 0.01 * scale
        assert abs(mean) < 0.01 * scale


def test_truncated_normals_and_keras_variance_scaling():
    w = core.empty(500, 400, dtype=core.float64)
    init.trunc_normal_(w, mean=1.0, std=2.0, a=-3.0, b=5.0)
    mean, std, lo, hi = stats(w)
    assert -3.0 <= lo and hi <= 5.0 and abs(mean - 1.0) < 0.01 and abs(std - 2 * 0.87962566) < 0.01
    init.variance_scaling_(w, 2.0, "fan_in", "truncated_normal")  # Keras' he_normal
    mean, std, lo, hi = stats(w)
    target = math.sqrt(2 / 400)
    assert abs(std - target) < 0.01 * target and max(-lo, hi) <= 2 * target / 0.87962566 + 1e-12
    init.variance_scaling_(w, 1.0, "fan_avg", "untruncated_normal")
    assert abs(stats(w)[1] - math.sqrt(1 / 450)) < 0.01 * math.sqrt(1 / 450)
    with pytest.raises(ValueError, match="less than 0.1%"):
        init.trunc_normal_(w, 0.0, 1.0, 10.0, 11.0)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (16, 8, 3, 3)])
def test_orthogonal(shape):
    w = init.orthogonal_(core.empty(*shape, dtype=core.float64), gain=1.5)
    m = w.detach().numpy().reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, 2.25 * np.eye(gram.shape[0]), atol=1e-10)


def test_constants_gains_and_bad_shapes():
    b = core.empty(5)
    assert init.zeros_(b).detach().numpy().tolist() == [0] * 5 and init.ones_(b).detach().numpy().tolist() == [1] * 5
    assert init.constant_(b, 0.5).detach().numpy().tolist() == [0.5] * 5
    assert init.calculate_gain("relu") == math.sqrt(2) and init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04) and init.calculate_gain("selu") == 0.75
    assert init.calculate_fans(core.empty(64, 32, 5, 5)) == (800, 1600)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_uniform_(b)
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        init.calculate_gain("swish")


def test_initializers_follow_the_seed_on_any_dtype():
    core.manual_seed(11)
    a = init.xavier_uniform_(core.empty(4, 3)).detach().numpy()
    core.manual_seed(11)
    b = init.xavier_uniform_(core.empty(4, 3, dtype=core.float64)).detach().numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)
    c = init.normal_(core.empty(3, 3), generator=core.Generator(5)).detach().numpy()
    np.testing.assert_array_equal(c, init.normal_(core.empty(3, 3), generator=core.Generator(5)).detach().numpy())
    weights = []
    for _ in range(2):
        core.manual_seed(11)
        weights.append(nn.Linear(3, 4).weight.detach().numpy())
    np.testing.assert_array_equal(*weights)


def test_torch_and_keras_defaults():
    lin = nn.Linear(50, 40)
    bound = 1 / math.sqrt(50)
    for p in (lin.weight, lin.bias):
        assert np.abs(p.detach().numpy()).max() <= bound
    keras = nn.Linear(50, 40, init="keras")
    assert not keras.bias.detach().numpy().any()
    assert np.abs(keras.weight.detach().numpy()).max() <= math.sqrt(6 / 90)
    model = nn.Sequential(nn.Embedding(10, 4), nn.LSTM(4, 6), nn.Linear(6, 3), nn.BatchNorm1d(3))
    nn.keras_init_(model, generator=core.Generator(0))
    assert np.abs(model[0].weight.detach().numpy()).max() <= 0.05
    assert model[1].bias_ih.detach().numpy().tolist() == [0] * 6 + [1] * 6 + [0] * 12  # unit forget bias
    assert not model[2].bias.detach().numpy().any() and model[3].weight.detach().numpy().tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="init must be one of"):
        nn.Linear(2, 2, init="xavier")
