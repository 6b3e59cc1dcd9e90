"""gpugrad.nn: Parameter, Module mechanics, containers, layers, init, loss modules; parity with PyTorch."""

import copy
import math
from collections import OrderedDict

import numpy as np
import optional
import pytest

import gpugrad as gg
import gpugrad.nn as nn
import gpugrad.nn.functional as F
from gpugrad import backend
from gpugrad.nn import init
from gpugrad.testing import assert_close

try:
    import torch
except ImportError:
    torch = None

needs_torch = optional.needs("torch")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(gg.ones(3))
        self.fc = nn.Linear(3, 3)
        self.register_buffer("count", gg.tensor([0]))
        self.register_buffer("scratch", gg.zeros(2), persistent=False)

    def forward(self, x):
        return self.fc(x) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 3)
        self.block = Block()
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(3, 2))
        self.temperature = nn.Parameter(gg.tensor(1.0))

    def forward(self, x):
        return self.head(self.block(self.first(x))) / self.temperature


NET_PARAMS = ["temperature", "first.weight", "first.bias", "block.scale", "block.fc.weight",
              "block.fc.bias", "head.1.weight", "head.1.bias"]


# ----------------------------------------------------------------------------- Parameter


def test_parameter_is_a_leaf_tensor_that_requires_grad():
    p = nn.Parameter(gg.zeros(2, 3))
    assert isinstance(p, gg.Tensor) and p.requires_grad and p.is_leaf
    assert not nn.Parameter(gg.zeros(2), requires_grad=False).requires_grad
    y = gg.exp(p).sum() + gg.matmul(p, gg.ones(3)).sum() + p[0, 1] + gg.where(p > 0, p, 0.0).sum()
    assert type(y) is gg.Tensor
    y.backward()
    assert type(p.grad) is gg.Tensor and p.grad.shape == (2, 3)


def test_parameter_shares_data_and_repr():
    t = gg.tensor([1.0, 2.0])
    p = nn.Parameter(t)
    assert p.data is t.data
    assert repr(p) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    assert nn.Parameter().shape == (0,)
    with pytest.raises(TypeError, match="floating-point"):
        nn.Parameter(gg.tensor([1, 2]))


@needs_torch
def test_parameter_repr_matches_torch():
    assert repr(nn.Parameter(gg.tensor([[1.0, 2.0]]))) == repr(torch.nn.Parameter(torch.tensor([[1.0, 2.0]])))


# ----------------------------------------------------------------------------- registration and walking


def test_named_parameters_order_and_names():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == NET_PARAMS
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["temperature"]
    assert [n for n, _ in net.block.named_parameters(prefix="block")] == NET_PARAMS[3:6]
    assert list(net.parameters())[1] is net.first.weight
    assert net.num_parameters() == 1 + 15 + 3 + 12 + 8


def test_children_modules_and_buffers():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["first", "block", "head"]
    assert list(net.children())[2] is net.head
    assert [n for n, _ in net.named_modules()] == ["", "first", "block", "block.fc", "head", "head.0",
                                                   "head.1"]
    assert [n for n, _ in net.named_buffers()] == ["block.count", "block.scratch"]
    assert net.get_submodule("head.1") is net.head[1]
    with pytest.raises(AttributeError, match="has no submodule 'nope'"):
        net.get_submodule("block.nope")


def test_shared_parameters_and_modules_are_listed_once():
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(seq.parameters())) == 2
    assert [n for n, _ in seq.named_modules()] == ["", "0", "1"]
    tied = nn.Module()
    tied.a = nn.Linear(2, 2)
    tied.b = nn.Linear(2, 2)
    tied.b.weight = tied.a.weight
    assert [n for n, _ in tied.named_parameters()] == ["a.weight", "a.bias", "b.bias"]
    assert list(tied.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]     # as PyTorch


def test_attribute_assignment_rules():
    m = nn.Linear(2, 3)
    with pytest.raises(TypeError, match="cannot assign .* as parameter 'weight'"):
        m.weight = gg.zeros(3, 2)
    m.bias = None
    assert m.bias is None and "bias" not in dict(m.named_parameters())
    assert m(gg.ones(1, 2)).shape == (1, 3)
    m.extra = nn.ReLU()
    assert "extra" in dict(m.named_children())
    del m.extra
    assert "extra" not in dict(m.named_children())
    with pytest.raises(AttributeError, match="'Linear' object has no attribute 'nope'"):
        _ = m.nope
    m.plain = gg.zeros(2)                      # a plain tensor attribute is neither a parameter nor a buffer
    assert "plain" not in m.state_dict()
    with pytest.raises(TypeError, match="as buffer"):
        Block().count = 3


def test_assigning_before_init_is_an_error():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)
            super().__init__()

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Broken()


def test_reassigning_names_across_kinds_follows_torch():
    m = nn.Module()
    m.x = nn.Parameter(gg.zeros(1))
    with pytest.raises(TypeError, match="as parameter 'x'"):     # PyTorch refuses this too
        m.x = nn.ReLU()
    m.x = None
    m.y = nn.ReLU()
    m.y = nn.Parameter(gg.zeros(1))                            # a Parameter replaces a child module
    assert [n for n, _ in m.named_parameters()] == ["y"] and list(m.children()) == []


# ----------------------------------------------------------------------------- modes and bulk changes


def test_train_eval_propagate():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.head.train()
    assert net.head[0].training and not net.first.training
    with pytest.raises(ValueError, match="bool"):
        net.train("yes")


def test_train_calls_overridden_train_of_children():
    calls = []

    class Frozen(nn.Linear):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(False)

    seq = nn.Sequential(Frozen(2, 2), nn.Dropout())
    seq.train()
    assert calls == [True] and not seq[0].training and seq[1].training


def test_zero_grad_and_requires_grad_():
    net = Net()
    net(gg.randn(5, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.first.requires_grad_(False)
    net(gg.randn(5, 4)).sum().backward()
    assert net.first.weight.grad is None and net.block.fc.weight.grad is not None
    assert net.num_parameters(only_trainable=True) == net.num_parameters() - 15


def test_apply_visits_children_first():
    seen = []
    net = Net()
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Linear", "Linear", "Block", "ReLU", "Linear", "Sequential", "Net"]

    def init_weights(m):
        if isinstance(m, nn.Linear):
            init.zeros_(m.weight)
    net.apply(init_weights)
    assert not net.block.fc.weight.data.any() and not net.first.weight.data.any()


def test_to_dtype_is_in_place_and_casts_grads():
    net = Net()
    net(gg.randn(2, 4)).sum().backward()
    params = list(net.parameters())
    count = net.block.count
    assert net.to(gg.float64) is net
    assert [p is q for p, q in zip(params, net.parameters())] == [True] * len(params)
    assert all(p.dtype == gg.float64 and p.grad.dtype == gg.float64 for p in net.parameters())
    assert net.block.count is count and count.dtype == gg.int64        # integer buffers are not cast
    assert net.block.scratch.dtype == gg.float64
    net.float()
    assert net.first.weight.dtype == gg.float32
    assert net.to("float64").first.weight.dtype == gg.float64
    assert net.to(gg.zeros(1, dtype=gg.float32)).first.weight.dtype == gg.float32
    with pytest.raises(TypeError, match="floating-point"):
        net.to(gg.int64)
    assert net.to("cpu") is net and net.first.weight.device == "cpu"


def test_to_device_replaces_data_keeps_identity(monkeypatch):
    """The device path (CUDA is absent here): every array goes through backend.to_device, in place."""
    moved = []

    def fake_to_device(arr, device):
        moved.append(str(device))
        return arr.copy()

    net = Net()
    net(gg.randn(2, 4)).sum().backward()
    before = {n: (p, p.data, p.grad.data) for n, p in net.named_parameters()}
    monkeypatch.setattr(backend, "to_device", fake_to_device)
    assert net.to("cuda:1") is net
    for n, p in net.named_parameters():
        param, data, grad = before[n]
        assert p is param and p.data is not data and p.grad.data is not grad
        assert_close(p.data, data, rtol=0, atol=0)
    n_tensors = len(NET_PARAMS) * 2 + 2          # parameters, their grads, and two buffers
    assert moved == ["cuda:1"] * n_tensors


# ----------------------------------------------------------------------------- state_dict


def test_state_dict_keys_values_and_sharing():
    net = Net()
    sd = net.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == ["temperature", "first.weight", "first.bias", "block.scale", "block.count",
                        "block.fc.weight", "block.fc.bias", "head.1.weight", "head.1.bias"]
    assert all(type(v) is gg.Tensor and not v.requires_grad for v in sd.values())
    assert sd["first.weight"].data is net.first.weight.data            # shares memory
    assert net.state_dict(keep_vars=True)["first.weight"] is net.first.weight


def test_state_dict_round_trip():
    a, b = Net(), Net()
    x = gg.randn(3, 4)
    assert not np.allclose(a(x).detach().numpy(), b(x).detach().numpy())
    result = b.load_state_dict(a.state_dict())
    assert result == nn.IncompatibleKeys([], []) and result.missing_keys == []
    assert_close(a(x).detach().numpy(), b(x).detach().numpy(), rtol=0, atol=0)
    assert b.first.weight.data is not a.first.weight.data               # copied, not aliased
    weight = b.first.weight
    b.load_state_dict({k: v.numpy() for k, v in a.state_dict().items()})   # numpy arrays are accepted
    assert b.first.weight is weight


def test_load_state_dict_casts_to_the_parameter_dtype():
    a = nn.Linear(3, 2).double()
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert b.weight.dtype == gg.float32
    assert_close(b.weight.data, a.weight.data.astype(np.float32))


def test_load_state_dict_errors_list_every_problem_and_load_nothing():
    net = Net()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    good = Net().state_dict()
    bad = dict(good)
    del bad["block.fc.bias"]
    bad["extra.weight"] = gg.zeros(1)
    bad["first.weight"] = gg.zeros(4, 3)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(bad)
    msg = str(info.value)
    assert "Error(s) in loading state_dict for Net" in msg
    assert 'Missing key(s) in state_dict: "block.fc.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in msg
    assert 'size mismatch for "first.weight"' in msg and "(4, 3)" in msg and "(3, 4)" in msg
    for k, v in net.state_dict().items():                               # nothing partly loaded
        assert_close(v.numpy(), before[k], rtol=0, atol=0)


def test_load_state_dict_not_strict():
    net = Net()
    sd = Net().state_dict()
    del sd["temperature"]
    sd["junk"] = gg.zeros(1)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["temperature"] and result.unexpected_keys == ["junk"]
    assert_close(net.first.weight.data, sd["first.weight"].data, rtol=0, atol=0)
    sd["first.weight"] = gg.zeros(1)
    with pytest.raises(RuntimeError, match="size mismatch"):           # shapes are checked even so
        net.load_state_dict(sd, strict=False)
    with pytest.raises(RuntimeError, match="not a tensor"):
        net.load_state_dict({**Net().state_dict(), "temperature": "hot"})


def test_deepcopy_copies_parameters_and_keeps_ties():
    m = nn.Module()
    m.a = nn.Linear(2, 2)
    m.b = nn.Linear(2, 2)
    m.b.weight = m.a.weight
    c = copy.deepcopy(m)
    assert c.a.weight is c.b.weight and c.a.weight is not m.a.weight
    assert isinstance(c.a.weight, nn.Parameter) and c.a.weight.requires_grad
    assert_close(c.a.weight.data, m.a.weight.data, rtol=0, atol=0)


def test_pickle_round_trip():
    import pickle
    net = Net()
    net.eval()
    clone = pickle.loads(pickle.dumps(net))
    assert not clone.training and [n for n, _ in clone.named_parameters()] == NET_PARAMS
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in clone.parameters())
    x = gg.randn(2, 4)
    assert_close(clone(x).detach().numpy(), net(x).detach().numpy(), rtol=0, atol=0)


# ----------------------------------------------------------------------------- repr


def test_repr_nested():
    net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Sequential(nn.Dropout(0.1), nn.LayerNorm(8)))
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=8, bias=True)\n"
        "  (1): GELU(approximate='none')\n"
        "  (2): Sequential(\n"
        "    (0): Dropout(p=0.1, inplace=False)\n"
        "    (1): LayerNorm((8,), eps=1e-05, elementwise_affine=True, bias=True)\n"
        "  )\n"
        ")")
    assert repr(nn.Module()) == "Module()"


@needs_torch
def test_repr_matches_torch():
    def build(lib):
        return lib.Sequential(
            lib.Linear(4, 8, bias=False), lib.ReLU(), lib.LeakyReLU(0.2), lib.GELU(approximate="tanh"),
            lib.Sequential(lib.Tanh(), lib.Sigmoid(), lib.Identity(), lib.Flatten(), lib.Dropout(0.25)),
            lib.Embedding(10, 4, padding_idx=1), lib.LayerNorm((2, 4), elementwise_affine=False),
            lib.ModuleList([lib.SiLU(), lib.Softmax(dim=1)]), lib.CrossEntropyLoss(), lib.MSELoss())
    assert repr(build(nn)) == repr(build(torch.nn))


# ----------------------------------------------------------------------------- containers


def test_sequential_indexing_and_editing():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    x = gg.randn(4, 2)
    assert_close(seq(x).detach().numpy(), c(b(a(x))).detach().numpy(), rtol=0, atol=0)
    d = nn.Tanh()
    seq.append(d)
    assert seq[3] is d and [n for n, _ in seq.named_children()] == ["0", "1", "2", "3"]
    del seq[1]
    assert list(seq) == [a, c, d] and [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    seq.insert(1, b)
    assert list(seq) == [a, b, c, d]
    seq[3] = nn.Identity()
    assert isinstance(seq[3], nn.Identity)
    with pytest.raises(IndexError, match="index 7 is out of range"):
        seq[7]
    named = nn.Sequential(OrderedDict([("fc", a), ("act", b)]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"] and named.fc is a
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(lambda x: x)


def test_module_list_and_dict_register_parameters():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and len(list(layers.parameters())) == 6
    layers.append(nn.Linear(2, 1))
    assert [n for n, _ in layers.named_parameters()][-2:] == ["3.weight", "3.bias"]
    del layers[0]
    assert [n for n, _ in layers.named_children()] == ["0", "1", "2"]
    heads = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.ReLU()})
    assert "a" in heads and list(heads) == ["a", "b"] and len(list(heads.parameters())) == 2
    heads["c"] = nn.Linear(2, 1)
    assert [n for n, _ in heads.named_parameters()] == ["a.weight", "a.bias", "c.weight", "c.bias"]


# ----------------------------------------------------------------------------- layers


def test_linear_forward_and_shapes():
    m = nn.Linear(3, 2)
    assert m.weight.shape == (2, 3) and m.bias.shape == (2,)
    x = gg.randn(4, 3)
    expected = x.numpy() @ m.weight.detach().numpy().T + m.bias.detach().numpy()
    assert_close(m(x).detach().numpy(), expected, rtol=1e-6)
    assert m(gg.randn(5, 4, 3)).shape == (5, 4, 2)
    assert nn.Linear(3, 2, bias=False).bias is None
    assert nn.Linear(3, 2, dtype=gg.float64).weight.dtype == gg.float64
    with pytest.raises(ValueError, match=r"Linear\(in_features=3, out_features=2\): input of shape \(4, 5\)"):
        m(gg.randn(4, 5))


def test_linear_init_bounds():
    gg.manual_seed(0)
    m = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.99 * bound                               # fills the whole interval
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound          # U(-b, b) has std b / sqrt(3)
    assert abs(w.mean()) < 0.01 * bound


@needs_torch
def test_linear_init_distribution_matches_torch():
    torch.manual_seed(0)
    gg.manual_seed(0)
    for fan_in, fan_out in [(10, 500), (256, 128)]:
        tw = torch.nn.Linear(fan_in, fan_out).weight.detach().numpy()
        gw = nn.Linear(fan_in, fan_out).weight.detach().numpy()
        assert abs(np.abs(tw).max() - np.abs(gw).max()) < 0.01 / math.sqrt(fan_in)
        assert abs(tw.std() - gw.std()) < 0.03 * tw.std()


@needs_torch
def test_mlp_matches_torch_through_state_dict():
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.GELU(), torch.nn.LayerNorm(8),
                                 torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    model = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    model.load_state_dict({k: v.numpy() for k, v in tmodel.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(6, 5))
    y = np.array([0, 2, 1, 1, 0, 2])
    tloss = torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(y), label_smoothing=0.1)
    tloss.backward()
    loss = F.cross_entropy(model(gg.tensor(x)), gg.tensor(y), label_smoothing=0.1)
    loss.backward()
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-12)
    tgrads = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        assert_close(p.grad.numpy(), tgrads[name].grad.numpy(), rtol=1e-10, atol=1e-14)


def test_activation_modules_match_functional():
    x = gg.randn(3, 4)
    pairs = [(nn.ReLU(), F.relu(x)), (nn.LeakyReLU(0.2), F.leaky_relu(x, 0.2)), (nn.GELU(), F.gelu(x)),
             (nn.GELU("tanh"), F.gelu(x, "tanh")), (nn.Tanh(), F.tanh(x)), (nn.Sigmoid(), F.sigmoid(x)),
             (nn.SiLU(), F.silu(x)), (nn.Softmax(0), F.softmax(x, 0)),
             (nn.LogSoftmax(1), F.log_softmax(x, 1))]
    for module, expected in pairs:
        assert_close(module(x).numpy(), expected.numpy(), rtol=0, atol=0)
    assert nn.Identity(3, key="ignored")(x) is x
    with pytest.raises(ValueError, match="GELU: approximate"):
        nn.GELU("fast")


def test_dropout_module_train_and_eval():
    gg.manual_seed(0)
    d = nn.Dropout(0.25)
    x = gg.ones(100_000)
    y = d(x).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.01 and np.allclose(y[y != 0], 1 / 0.75)
    d.eval()
    assert d(x) is x
    with pytest.raises(ValueError, match="Dropout: probability"):
        nn.Dropout(-0.1)


def test_flatten():
    x = gg.randn(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Flatten(-2)(x).shape == (2, 3, 20)


@needs_torch
def test_layer_norm_module_matches_torch():
    x = np.random.default_rng(0).normal(size=(3, 2, 4))
    ln = nn.LayerNorm((2, 4)).double()
    tln = torch.nn.LayerNorm((2, 4)).double()
    assert (ln.weight.data == 1).all() and (ln.bias.data == 0).all()
    with gg.no_grad():
        init.normal_(ln.weight)
        init.normal_(ln.bias)
    tln.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ln.state_dict().items()})
    w = np.linspace(-1, 1, x.size).reshape(x.shape)
    xg = gg.tensor(x, requires_grad=True)
    (ln(xg) * gg.tensor(w)).sum().backward()
    xt = torch.tensor(x, requires_grad=True)
    (tln(xt) * torch.tensor(w)).sum().backward()
    assert_close(xg.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    assert_close(ln.weight.grad.numpy(), tln.weight.grad.numpy(), rtol=1e-10)
    assert_close(ln.bias.grad.numpy(), tln.bias.grad.numpy(), rtol=1e-10)
    assert nn.LayerNorm(4, elementwise_affine=False).weight is None
    assert [n for n, _ in nn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]


def test_embedding_lookup_init_and_repeated_index_gradient():
    gg.manual_seed(0)
    emb = nn.Embedding(1000, 64)
    w = emb.weight.detach().numpy()
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1) < 0.01           # N(0, 1)
    emb = nn.Embedding(5, 3)
    idx = gg.tensor([[1, 3, 1], [1, 0, 4]])
    out = emb(idx)
    assert out.shape == (2, 3, 3)
    assert_close(out[1, 2].detach().numpy(), emb.weight[4].detach().numpy(), rtol=0, atol=0)
    upstream = np.arange(18.0).reshape(2, 3, 3)
    (out * gg.tensor(upstream, dtype=gg.float32)).sum().backward()
    expected = np.zeros((5, 3), np.float32)
    np.add.at(expected, idx.numpy(), upstream)
    assert_close(emb.weight.grad, expected)
    assert (emb.weight.grad.numpy()[1] == upstream[0, 0] + upstream[0, 2] + upstream[1, 0]).all()
    assert not emb.weight.grad.numpy()[2].any()                        # an unused row gets zero


def test_embedding_padding_idx_and_errors():
    emb = nn.Embedding(4, 2, padding_idx=0)
    assert not emb.weight.data[0].any()
    emb(gg.tensor([0, 2, 0])).sum().backward()
    assert not emb.weight.grad.numpy()[0].any() and (emb.weight.grad.numpy()[2] == 1).all()
    with pytest.raises(IndexError, match="index 4 is out of range for 4 embeddings"):
        emb(gg.tensor([4]))
    with pytest.raises(TypeError, match="integer"):
        emb(gg.tensor([1.0]))
    frozen = nn.Embedding.from_pretrained(gg.eye(3))
    assert not frozen.weight.requires_grad and frozen(gg.tensor([2])).numpy().tolist() == [[0, 0, 1]]


@needs_torch
def test_embedding_gradient_matches_torch():
    idx = np.array([[1, 3, 1, 1], [0, 3, 2, 1]])
    weight = np.random.default_rng(0).normal(size=(5, 3))
    emb = nn.Embedding.from_pretrained(gg.tensor(weight), freeze=False, padding_idx=3)
    temb = torch.nn.Embedding.from_pretrained(torch.tensor(weight), freeze=False, padding_idx=3)
    up = np.random.default_rng(1).normal(size=(2, 4, 3))
    (emb(gg.tensor(idx)) * gg.tensor(up)).sum().backward()
    (temb(torch.tensor(idx)) * torch.tensor(up)).sum().backward()
    assert_close(emb.weight.grad.numpy(), temb.weight.grad.numpy(), rtol=1e-12)


def test_mlp_structure_and_activations():
    mlp = nn.MLP([64, 128, 64, 10])
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert mlp(gg.randn(7, 64)).shape == (7, 10)
    with_dropout = nn.MLP([4, 8, 8, 2], activation="gelu", dropout=0.2)
    assert [type(m).__name__ for m in with_dropout] == ["Linear", "GELU", "Dropout", "Linear", "GELU",
                                                        "Dropout", "Linear"]
    assert isinstance(nn.MLP([2, 3, 1], activation=nn.Tanh)[1], nn.Tanh)
    leaky = nn.MLP([2, 3, 3, 1], activation=lambda: nn.LeakyReLU(0.3))
    assert leaky[1].negative_slope == 0.3 and leaky[1] is not leaky[3]
    inst = nn.MLP([2, 3, 3, 1], activation=nn.GELU("tanh"))
    assert inst[1].approximate == "tanh" and inst[1] is not inst[3]
    assert len(nn.MLP([3, 1])) == 1
    assert nn.MLP([2, 3], bias=False)[0].bias is None
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        nn.MLP([2, 3, 1], activation="swishy")
    with pytest.raises(ValueError, match="at least an input and an output"):
        nn.MLP([3])


def _node_names(t):
    from gpugrad.engine import iter_graph
    return sorted(n.op.name for n in iter_graph(t._node))


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_mlp_runs_linear_and_activation_as_one_node_with_the_same_result(activation):
    gg.manual_seed(3)
    mlp = nn.MLP([5, 7, 6, 3], activation=activation, dtype=gg.float64)
    x = gg.randn(4, 5, dtype=gg.float64)
    fused = mlp(x)
    assert _node_names(fused) == ["linear", "linear_activation", "linear_activation"]
    unfused = x
    for layer in mlp:                                  # the same modules, one at a time
        unfused = layer(unfused)
    assert "linear_activation" not in _node_names(unfused)
    assert_close(fused.detach().numpy(), unfused.detach().numpy(), rtol=0, atol=0)
    fused.sum().backward()
    grads = [p.grad.numpy().copy() for p in mlp.parameters()]
    mlp.zero_grad()
    unfused.sum().backward()
    for g, p in zip(grads, mlp.parameters()):
        assert_close(g, p.grad.numpy(), rtol=1e-14, atol=1e-15)


def test_mlp_fuses_only_exact_activation_types_and_layers_with_a_bias():
    class LoudReLU(nn.ReLU):                           # a subclass may change forward: not fused
        def forward(self, x):
            return super().forward(x) * 2

    x = gg.randn(3, 4)
    assert "linear_activation" not in _node_names(nn.MLP([4, 5, 2], activation=LoudReLU)(x))
    assert "linear_activation" not in _node_names(nn.MLP([4, 5, 2], activation="gelu")(x))
    assert "linear_activation" not in _node_names(nn.MLP([4, 5, 2], bias=False)(x))
    assert _node_names(nn.MLP([4, 5, 2], dropout=0.5)(x)).count("linear_activation") == 1


def test_linear_activation_function():
    gg.manual_seed(0)
    x, w, b = gg.randn(3, 4), gg.randn(2, 4), gg.randn(2)
    for act in ("relu", "tanh", "sigmoid"):
        assert_close(F.linear_activation(x, w, b, act).detach().numpy(),
                                   getattr(F, act)(F.linear(x, w, b)).numpy(), rtol=1e-6)
        assert_close(F.linear_activation(x, w, None, act).numpy(),   # no bias: composed
                                   getattr(F, act)(F.linear(x, w)).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="linear_activation: activation must be one of relu, tanh, sigmoid"):
        F.linear_activation(x, w, b, "gelu")
    with pytest.raises(ValueError, match=r"linear_activation: input of shape \(3, 4\) has 4 features"):
        F.linear_activation(x, gg.randn(2, 5), b, "relu")


def test_mlp_learns():
    gg.manual_seed(0)
    x = gg.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = gg.tensor([0, 1, 1, 0])
    model = nn.MLP([2, 16, 2], activation="tanh")
    first = None
    for _ in range(300):
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        model.zero_grad()
        loss.backward()
        with gg.no_grad():
            for p in model.parameters():
                p.sub_(0.5 * p.grad)
    assert loss.item() < 0.05 < first
    assert (model(x).argmax(axis=1).numpy() == y.numpy()).all()


def test_loss_modules():
    x, t = gg.randn(4, 3), gg.tensor([0, 2, 1, 2])
    w = gg.tensor([1.0, 2.0, 0.5])
    ce = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)
    assert ce(x, t).item() == F.cross_entropy(x, t, weight=w, label_smoothing=0.1).item()
    assert list(ce.state_dict()) == ["weight"]
    assert nn.NLLLoss(reduction="sum")(x, t).item() == F.nll_loss(x, t, reduction="sum").item()
    y = gg.randn(4, 3)
    assert nn.MSELoss()(x, y).item() == F.mse_loss(x, y).item()
    assert nn.L1Loss(reduction="sum")(x, y).item() == F.l1_loss(x, y, reduction="sum").item()
    pw = gg.tensor([1.0, 2.0, 3.0])
    bce = nn.BCEWithLogitsLoss(pos_weight=pw)
    probs = gg.rand(4, 3)
    assert bce(x, probs).item() == F.binary_cross_entropy_with_logits(x, probs, pos_weight=pw).item()
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")


# ----------------------------------------------------------------------------- init


def test_init_is_seeded_and_in_place():
    t = gg.zeros(50, 40)
    data = t.data
    gg.manual_seed(3)
    init.kaiming_normal_(t)
    first = t.numpy().copy()
    assert t.data is data
    gg.manual_seed(3)
    init.kaiming_normal_(t)
    assert_close(t.numpy(), first, rtol=0, atol=0)
    gg.manual_seed(3)
    a, b = nn.Linear(8, 4), nn.Linear(8, 4)
    gg.manual_seed(3)
    c = nn.Linear(8, 4)
    assert_close(a.weight.data, c.weight.data, rtol=0, atol=0)
    assert not np.array_equal(a.weight.data, b.weight.data)


def test_init_works_on_parameters_that_require_grad_and_keeps_dtype():
    p = nn.Parameter(gg.zeros(3, 4, dtype=gg.float64))
    assert init.xavier_uniform_(p) is p and p.dtype == gg.float64 and p.requires_grad and p.data.any()
    for fn in (init.zeros_, init.ones_):
        fn(p)
    assert (p.data == 1).all()
    init.constant_(p, 0.5)
    assert (p.data == 0.5).all()
    init.eye_(p)
    assert_close(p.data, np.eye(3, 4), rtol=0, atol=0)


@needs_torch
def test_calculate_gain_and_fans_match_torch():
    from torch.nn import init as tinit
    for name, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None), ("conv2d", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(tinit.calculate_gain(name, param), rel=1e-15)
    for shape in [(5, 3), (6, 4, 3, 3), (2, 7, 5)]:
        assert init._calculate_fan_in_and_fan_out(gg.zeros(*shape)) == \
            tinit._calculate_fan_in_and_fan_out(torch.zeros(*shape))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("softsign")


@pytest.mark.parametrize("fn,std", [
    (lambda t: init.xavier_uniform_(t, gain=2.0), 2.0 * math.sqrt(2 / (300 + 200))),
    (lambda t: init.xavier_normal_(t), math.sqrt(2 / (300 + 200))),
    (lambda t: init.kaiming_uniform_(t, nonlinearity="relu"), math.sqrt(2) / math.sqrt(300)),
    (lambda t: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), math.sqrt(2) / math.sqrt(200)),
    (lambda t: init.kaiming_uniform_(t, a=math.sqrt(5)), 1 / math.sqrt(300) / math.sqrt(3)),
    (lambda t: init.normal_(t, 2.0, 0.5), 0.5),
    (lambda t: init.uniform_(t, -3.0, 1.0), 4 / math.sqrt(12)),
])
def test_init_standard_deviations(fn, std):
    t = gg.zeros(200, 300)          # fan_in 300, fan_out 200
    fn(t)
    assert abs(t.numpy().std() - std) < 0.02 * std


def test_init_errors():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(gg.zeros(3))
    with pytest.raises(ValueError, match="mode 'fan_avg'"):
        init.kaiming_uniform_(gg.zeros(3, 3), mode="fan_avg")
    with pytest.raises(TypeError, match="floating-point"):
        init.normal_(gg.zeros(3, dtype=gg.int64))
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_uniform_(gg.zeros(0, 3))
