"""bslcodec.torch.RateLoss: the differentiable rate estimate against the real encoder."""

import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: one thread is fastest, and keeps the suite quick on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

import bslcodec  # noqa: E402
from bslcodec.codecs import golomb  # noqa: E402
from bslcodec.files.api import _Source  # noqa: E402
from bslcodec.torch import RateLoss, exact_lengths, save_trained, soft_bits  # noqa: E402


def payload_bits(blob, names):
    src = _Source(data=blob)
    try:
        return {e.name: 8 * e.length for e in src.index.entries if e.name in names}
    finally:
        src.close()


def exact_tolerance(blob):
    """Relative agreement to expect at a refresh: to the bit for eg payloads; an encoder that may choose
    another entropy coder reports that coder's size estimate (~0.2 %)."""
    src = _Source(data=blob)
    try:
        return 1e-4 if all(e.codec not in ("ans", "ans-dq") for e in src.index.entries) else 1e-2
    finally:
        src.close()


def mlp(seed=0, hidden=192):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 10))


def test_imports_stay_separate():
    code = ("import sys, bslcodec; assert 'torch' not in sys.modules, 'core imported torch'; "
            "import bslcodec.torch; assert 'bslcodec.gpu' not in sys.modules, 'bslcodec.torch imported gpu'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_exact_lengths_match_the_coder():
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.normal(0, 1, 5000).astype(np.float32))
    step, center = 0.05, 1
    for k in (0, 1, 3, 7):
        q = np.rint(w.double().numpy() / step).astype(np.int64) - center
        u = np.where(q >= 0, 2 * q, -2 * q - 1).astype(np.uint64)
        ref = np.array([golomb.code_length(int(x), k) for x in u])
        np.testing.assert_array_equal(exact_lengths(w, step, center, k).numpy(), ref)


@pytest.mark.parametrize("setting", [{"rel_step": 1 / 8}, {"rel_step": 1 / 64}, {"max_error": 2e-3},
                                     {"bits": 3.0}])
@pytest.mark.parametrize("fused", [True, False])
def test_estimate_equals_encoded_payload_at_refresh(setting, fused):
    m = mlp()
    rate = RateLoss(m, 0.1, fused=fused, **setting)
    with torch.no_grad():
        rate()  # first call refreshes
    est = rate.bits()
    blob = save_trained(m, rate=rate)
    real = payload_bits(blob, est)
    assert set(real) == {"0.weight", "2.weight"}
    for name in real:
        assert est[name] == pytest.approx(real[name], rel=exact_tolerance(blob)), name
    if "bits" in setting:
        assert rate.bits_per_weight == pytest.approx(3.0, rel=0.02)


def test_gg_calibration_close_to_payload():
    m = mlp()
    rate = RateLoss(m, 0.1, rel_step=1 / 8, calibrate="gg", quantizer="uniform")
    with torch.no_grad():
        rate()
    real = payload_bits(save_trained(m, rate=rate), rate.bits())
    assert rate.total_bits == pytest.approx(sum(real.values()), rel=0.05)


def naive_bits(w, rel, k, eps):
    """Independent float64 autograd version of the surrogate (step through the std)."""
    w = w.double()
    std = w.std(unbiased=False)
    step = rel * std
    center = torch.round(w.detach().mean() / step.detach())
    x = w / step - center
    a = torch.sqrt(x * x + eps * eps) - eps
    return (2 * torch.log2(2 * a + 2.0 ** k) - k + 1).sum()


@pytest.mark.parametrize("fused", [True, False])
def test_gradient_matches_naive_autograd(fused):
    m = mlp(1)
    rate = RateLoss(m, 1.0, rel_step=1 / 8, fused=fused, quantizer="uniform")
    rate().backward()
    w = m[0].weight
    st = rate.states[0]
    w64 = w.detach().double().requires_grad_(True)
    naive_bits(w64, rate.rel, st.k, rate.eps).backward()
    expect = w64.grad * (rate.lam / rate.n_weights)
    assert torch.allclose(w.grad.double(), expect, rtol=2e-3, atol=1e-4 * expect.abs().max().item())


@pytest.mark.parametrize("setting", [{"rel_step": 1 / 8}, {"max_error": 1e-3}])
def test_batched_kernels_match_the_torch_path(setting):
    """The batched CPU kernels (all tensors a call, work items of at most 32768 elements) give the same
    per-tensor bits and gradients as the plain torch path; a tensor the encoder stores exactly gets no
    gradient; the value computed without a graph is the same."""
    grads, bits = [], []
    for fused in (True, False):
        m = mlp(7, hidden=700)  # 44,800 weights: two work items
        with torch.no_grad():
            m[2].weight.zero_()  # with rel_step (step 0): stored exactly
        rate = RateLoss(m, 1.0, fused=fused, quantizer="uniform", **setting)
        rate().backward()
        if "rel_step" in setting:
            assert rate.states[1].lossless and m[2].weight.grad is None
        grads.append(m[0].weight.grad.clone())
        bits.append(rate.bits())
        with torch.no_grad():
            rate()
        assert rate.bits() == pytest.approx(bits[-1], rel=1e-6)
    assert bits[0] == pytest.approx(bits[1], rel=1e-4)
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4 * grads[1].abs().max().item())


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("setting", [{"rel_step": 1 / 8}, {"max_error": 1e-3}, {"rel_step": 1 / 8, "quantizer": "uniform"}])
def test_finite_gradient_at_zero_and_on_degenerate_tensors(fused, setting):
    m = mlp(2)
    with torch.no_grad():
        m[0].weight[:20] = 0.0  # exact zeros
        m[2].weight.zero_()  # a whole constant tensor: the encoder stores it exactly
    rate = RateLoss(m, 1.0, fused=fused, **setting)
    rate().backward()
    for p in (m[0].weight, m[2].weight):
        assert p.grad is None or torch.isfinite(p.grad).all()
    assert math.isfinite(rate.total_bits)
    w0 = torch.zeros(100, requires_grad=True)
    s = soft_bits(w0, 0.01, 0, 2)
    s.backward()
    assert float(s.detach()) == pytest.approx(100 * 3)  # k + 1 bits per zero
    assert torch.equal(w0.grad, torch.zeros(100))


def test_rel_step_rate_is_scale_invariant():
    m = mlp(3)
    rate = RateLoss(m, 1.0, rel_step=1 / 8, include=["0.weight"], quantizer="uniform")
    rate().backward()
    w, g = m[0].weight.detach(), m[0].weight.grad
    c = w - w.mean()
    assert abs(float((g * c).sum() / (g.norm() * c.norm()))) < 1e-3
    with torch.no_grad():
        before = float(rate.tensor_bits(rate.states[0]))
        m[0].weight.mul_(3.0)
        after = float(rate.tensor_bits(rate.states[0]))
    assert after == pytest.approx(before, rel=1e-4)


@pytest.mark.parametrize("fused,quantizer", [(True, "uniform"), (False, "uniform"), (True, "dq")])
def test_hook_mode_gives_the_loss_mode_gradient(fused, quantizer):
    x = torch.randn(16, 64)
    grads = []
    for mode in ("loss", "hook"):
        m = mlp(4)
        rate = RateLoss(m, 0.5, rel_step=1 / 8, refresh_every=2, fused=fused, quantizer=quantizer)
        if mode == "hook":
            rate.attach()
        for _ in range(3):
            m.zero_grad()
            loss = m(x).square().mean()
            (loss + rate() if mode == "loss" else loss).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
        rate.detach()
        assert rate.steps == 3
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)


def test_include_exclude_and_small_tensors():
    m = mlp()
    rate = RateLoss(m, 0.1, include=["*weight"], exclude=["2.*"])
    assert [s.name for s in rate.states] == ["0.weight"]  # biases: small 1-D, stored exactly anyway
    with pytest.raises(bslcodec.EncodeError):
        RateLoss(m, 0.1, include=["nothing*"])
    with pytest.raises(bslcodec.EncodeError):
        RateLoss(m, 0.1, rel_step=0.1, max_error=0.1)


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    return x[:1500], y[:1500], x[1500:], y[1500:]


@pytest.mark.parametrize("quantizer,calibrate", [("uniform", "exact"), ("uniform", "gg"), ("dq", "exact"),
                                                 ("dq", "hist")])
def test_estimate_tracks_real_size_at_end_of_training(quantizer, calibrate):
    """Train a classifier on a real data set with the rate loss; the running estimate at the last step
    (refreshed 29 steps earlier) is within 5 % of the encoded payload (the GG-only calibration, which
    never looks at the encoder, within 10 %), and the rate loss shrank the file. dq (the default codec):
    within 2 %."""
    pytest.importorskip("sklearn")
    xtr, ytr, xte, yte = digits()
    sizes, accs = {}, {}
    for lam in (0.0, 0.3):
        m = mlp(5)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        rate = RateLoss(m, lam, rel_step=1 / 8, refresh_every=30, calibrate=calibrate, quantizer=quantizer)
        g = torch.Generator().manual_seed(0)
        for step in range(180):
            i = torch.randint(0, xtr.shape[0], (64,), generator=g)
            loss = torch.nn.functional.cross_entropy(m(xtr[i]), ytr[i]) + rate()
            opt.zero_grad()
            loss.backward()
            opt.step()
        blob = save_trained(m, rate=rate)
        real = sum(payload_bits(blob, rate.bits()).values())
        tol = 0.02 if quantizer == "dq" else 0.05 if calibrate == "exact" else 0.10
        assert rate.total_bits == pytest.approx(real, rel=tol), (calibrate, lam, rate.total_bits, real)
        sizes[lam] = real
        back = mlp(6)
        back.load_state_dict(bslcodec.load(blob, framework="pt"))
        accs[lam] = float((back(xte).argmax(1) == yte).float().mean())
    assert sizes[0.3] < 0.9 * sizes[0.0]
    assert accs[0.3] > 0.85 and accs[0.0] > 0.85


def test_save_trained_settings_and_metadata(tmp_path):
    m = mlp()
    rate = RateLoss(m, 0.1, max_error=1e-3)
    path = tmp_path / "m.bsl"
    assert save_trained(m, path, rate=rate) is None
    back = bslcodec.load_file(path)
    for name, t in m.state_dict().items():
        assert np.abs(back[name] - t.numpy()).max() <= 1e-3
    with bslcodec.safe_open(path) as f:
        meta = f.metadata()
    assert "bslcodec.rate" in meta and '"max_error": 0.001' in meta["bslcodec.rate"]
    # same setting without the RateLoss object: the same bytes
    assert save_trained(m, max_error=1e-3) == save_trained(m, rate=RateLoss(m, 0.0, max_error=1e-3))
    # bits=: the whole file uses the rel_step the rate loss resolved
    blob = save_trained(m.state_dict(), bits=4.0)
    est = RateLoss(m, 0.0, bits=4.0)
    with torch.no_grad():
        est()
    assert sum(payload_bits(blob, est.bits()).values()) == pytest.approx(est.total_bits, rel=exact_tolerance(blob))


def test_refresh_keeps_torch_thread_count():
    """Numba's OpenMP layer shares the runtime with torch; a refresh must not change torch's threads."""
    code = ("import torch; torch.set_num_threads(1); from bslcodec.torch import RateLoss; "
            "m = torch.nn.Linear(300, 200); r = RateLoss(m, 1.0, rel_step=1/8); r().backward(); r.exact_bits(); "
            "assert torch.get_num_threads() == 1, torch.get_num_threads()")
    subprocess.run([sys.executable, "-c", code], check=True)
