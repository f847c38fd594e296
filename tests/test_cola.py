"""bslcodec.torch CoLA layers: B σ(A x), conversion, CoLA-M, and .bsl round trips."""

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: one thread is fastest, and keeps the suite quick on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import bslcodec  # noqa: E402
from bslcodec.torch import CoLALinear, RateLoss, cola_spec, load_trained, save_trained, to_cola  # noqa: E402
from bslcodec.torch.cola import _CoLAM, set_memory_efficient  # noqa: E402


class Tiny(nn.Module):
    def __init__(self, d=48):
        super().__init__()
        self.emb = nn.Embedding(20, d)
        self.q, self.k = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, 20)

    def forward(self, idx):
        x = self.emb(idx)
        x = x + self.q(x) * torch.sigmoid(self.k(x))
        return self.head(x + self.fc2(F.gelu(self.fc1(x))))


def test_forward_is_b_sigma_a_x():
    torch.manual_seed(0)
    lay = CoLALinear(10, 7, 3, activation="silu")
    x = torch.randn(5, 10)
    ref = F.silu(x @ lay.cola_a.weight.t()) @ lay.cola_b.weight.t() + lay.cola_b.bias
    assert torch.allclose(lay(x), ref, atol=1e-6)
    assert sum(p.numel() for p in lay.parameters()) == 3 * (10 + 7) + 7
    assert lay.cola_a.weight.shape == (3, 10) and lay.cola_b.weight.shape == (7, 3)
    with pytest.raises(ValueError):
        CoLALinear(4, 4, 2, activation="nope")


@pytest.mark.parametrize("act", ["silu", "gelu", "identity"])
def test_cola_m_gradients_equal_plain(act):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    fn = CoLALinear(6, 5, 3, activation=act)._act
    assert torch.autograd.gradcheck(lambda *t: _CoLAM.apply(*t, fn), (x, a, b, bias))
    plain, mem = CoLALinear(6, 5, 3, act), CoLALinear(6, 5, 3, act, memory_efficient=True)
    mem.load_state_dict(plain.state_dict())
    xs = torch.randn(7, 6)
    grads = []
    for lay in (plain, mem):
        lay.zero_grad()
        x1 = xs.clone().requires_grad_(True)
        lay(x1).square().sum().backward()
        grads.append([x1.grad] + [p.grad for p in lay.parameters()])
    for g1, g2 in zip(*grads):
        assert torch.allclose(g1, g2, atol=1e-5)


def saved_activation_bytes(module, x):
    params = {p.data_ptr() for p in module.parameters()}
    seen = {}

    def pack(t):
        if t.data_ptr() not in params and t.data_ptr() != x.data_ptr():
            seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = module(x)
    y.sum().backward()
    return sum(seen.values())


def test_cola_m_keeps_no_rank_r_activations():
    torch.manual_seed(2)
    lay = CoLALinear(64, 64, 16)
    x = torch.randn(128, 64, requires_grad=True)
    plain = saved_activation_bytes(lay, x)
    set_memory_efficient(lay, True)
    mem = saved_activation_bytes(lay, x)
    assert plain >= 2 * 128 * 16 * 4  # A x and σ(A x)
    assert mem == 0  # only the input (and the weights) are kept


def test_to_cola_patterns_ranks_and_spec():
    torch.manual_seed(3)
    m = Tiny()
    n_dense = sum(p.numel() for p in m.parameters())
    to_cola(m, include=["q", "k", "fc*"], exclude=["k"], rank_ratio=0.25)
    assert isinstance(m.q, CoLALinear) and isinstance(m.fc1, CoLALinear) and isinstance(m.fc2, CoLALinear)
    assert type(m.k) is nn.Linear and type(m.head) is nn.Linear
    assert m.q.rank == 12 and m.fc1.rank == 12 and m.fc2.rank == 12  # round(0.25 * min(in, out))
    spec = cola_spec(m)
    assert set(spec["layers"]) == {"q", "fc1", "fc2"}
    assert spec["layers"]["fc2"] == {"in": 192, "out": 48, "rank": 12, "activation": "silu", "bias": True}
    assert sum(p.numel() for p in m.parameters()) < n_dense
    to_cola(m, include=["*"], rank=40)  # 40 * (48 + 48) > 48 * 48: k stays dense; nested layers untouched
    assert type(m.k) is nn.Linear and isinstance(m.q.cola_a, nn.Linear)
    assert m(torch.randint(0, 20, (2, 5))).shape == (2, 5, 20)


def test_svd_warm_start_is_exact_at_full_rank_without_activation():
    torch.manual_seed(4)
    lin = nn.Linear(12, 9)
    lay = CoLALinear.from_linear(lin, 9, activation="identity", init="svd")
    x = torch.randn(3, 12)
    assert torch.allclose(lay(x), lin(x), atol=1e-5)


def test_bsl_file_stores_a_cola_model_and_loads_into_a_dense_built_one(tmp_path):
    torch.manual_seed(5)
    m = to_cola(Tiny(), include=["q", "fc1", "fc2"], rank_ratio=0.25, memory_efficient=True)
    rate = RateLoss(m, 0.1, max_error=1e-4)
    names = [s.name for s in rate.states]
    assert "q.cola_a.weight" in names and "fc2.cola_b.weight" in names  # the factors are covered
    rate().backward()
    assert m.fc1.cola_a.weight.grad is not None and torch.isfinite(m.fc1.cola_a.weight.grad).all()
    src = tmp_path / "cola.bsl"
    blob = save_trained(m, rate=rate)
    save_trained(m, src, rate=rate)
    assert src.read_bytes() == blob
    load_trained(Tiny(), src)  # from a path
    fresh = Tiny()
    load_trained(fresh, blob)  # from bytes
    assert isinstance(fresh.fc1, CoLALinear) and fresh.fc1.rank == m.fc1.rank
    assert set(fresh.state_dict()) == set(m.state_dict())
    for k, v in m.state_dict().items():
        assert (fresh.state_dict()[k] - v).abs().max() <= 1e-4 + 1e-7, k
    idx = torch.randint(0, 20, (2, 6))
    assert torch.allclose(fresh(idx), m(idx), atol=1e-2)
    # a file of another layout is refused
    other = to_cola(Tiny(), include=["q"], rank=3)
    with pytest.raises(ValueError):
        load_trained(other, bslcodec.save({k: v.detach() for k, v in m.state_dict().items()},
                                          metadata={"bslcodec.cola": '{"layers": {"q": {"in": 48, "out": 48, '
                                                    '"rank": 12, "activation": "silu", "bias": false}}}'}))
