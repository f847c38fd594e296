"""RateLoss for the default codec (dependent quantization, ``ans-dq``): the estimate against the bytes the
default encoder writes, the gradient against a float64 reference, and DDP / FSDP2 on 2 gloo ranks against
one process."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bslcodec
from bslcodec.files.api import _Source
from bslcodec.torch import RateLoss, save_trained
from bslcodec.torch.rate_dq import dq_reference_bits

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def entries(blob):
    src = _Source(data=blob)
    try:
        return {e.name: (8 * e.length, e.codec) for e in src.index.entries}
    finally:
        src.close()


def gg(nu, shape, seed):
    from scipy import stats

    rng = np.random.default_rng(seed)
    return torch.from_numpy((stats.gennorm.rvs(nu, size=shape, random_state=rng) * 0.02).astype(np.float32))


@pytest.mark.parametrize("calibrate", ["exact", "hist"])
@pytest.mark.parametrize("nu,shape", [(0.6, (300, 700)), (1.0, (1024, 1100)), (2.0, (70, 1000)),
                                      (1.0, (96, 768))])
def test_estimate_within_2_percent_of_the_default_file(nu, shape, calibrate):
    """The estimate (``hist``: the modelled index histogram only, no encoder run) is within 2 % of the
    payload ``save_file``'s default writes (ans-dq), at several steps; the file is the default codec."""
    p = torch.nn.Parameter(gg(nu, shape, seed=int(nu * 10) + shape[0]))
    for rel in (1 / 4, 1 / 8, 1 / 32):
        rate = RateLoss([("w", p)], 1.0, rel_step=rel, calibrate=calibrate)
        rate().backward()
        blob = save_trained({"w": p.detach()}, rate=rate)
        real, codec = entries(blob)["w"]
        assert codec == "ans-dq"
        assert entries(bslcodec.save({"w": p.detach().numpy()}, rel_step=rel))["w"] == (real, codec)
        tol = 0.002 if calibrate == "exact" else 0.02  # exact: the encoder's own ans estimate (~0.2 %)
        assert rate.total_bits == pytest.approx(real, rel=tol), (rel, rate.total_bits, real)


def _meta(blob, tmp_path):
    path = tmp_path / "m.bsl"
    path.write_bytes(blob)
    with bslcodec.safe_open(path) as f:
        return f.metadata()


def test_value_and_gradient_match_the_float64_reference():
    w = gg(1.0, (200, 300), seed=1)
    p = torch.nn.Parameter(w.clone())
    rate = RateLoss([("w", p)], 3.0, rel_step=1 / 8)
    rate().backward()
    eng = rate._dq
    w64 = w.double().requires_grad_(True)
    value, surrogate = dq_reference_bits(w64, 1 / 8, float(eng.bin[0]), float(eng.delta[0]))
    surrogate.backward()
    assert rate.total_bits == pytest.approx(value, rel=1e-5)
    expect = w64.grad * (3.0 / p.numel())
    # float32 vs float64 positions put a few elements on the other side of a bin edge
    assert float((p.grad.double() - expect).norm() / expect.norm()) < 0.01
    # the step follows the std: the gradient has no component along (w - mean) (scale invariance)
    c = (w - w.mean()).double()
    assert abs(float((p.grad.double() * c).sum() / (p.grad.double().norm() * c.norm()))) < 1e-3


def test_wide_tensors_get_wider_bins_and_finite_gradients():
    w = gg(0.5, (400, 500), seed=3)  # heavy tails: |y| far beyond the bins at width 1
    w[0, :10] = 0.0
    p = torch.nn.Parameter(w)
    rate = RateLoss([("w", p)], 1.0, rel_step=1 / 64)
    rate().backward()
    assert float(rate._dq.bin[0]) > 1
    assert torch.isfinite(p.grad).all()
    real, _ = entries(save_trained({"w": p.detach()}, rate=rate))["w"]
    assert rate.total_bits == pytest.approx(real, rel=0.002)


def test_save_trained_writes_the_default_codec(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(300, 400), torch.nn.Linear(400, 10))
    blob = save_trained(m, rel_step=1 / 16)
    assert entries(blob)["0.weight"][1] == "ans-dq"
    assert '"quantizer": "dq"' in _meta(blob, tmp_path)["bslcodec.rate"]
    uni = save_trained(m, rel_step=1 / 16, quantizer="uniform")
    assert entries(uni)["0.weight"][1] in ("ans", "eg")
    with pytest.raises(bslcodec.EncodeError):
        RateLoss(m, 1.0, max_error=1e-3, quantizer="dq")
    with pytest.raises(ValueError):
        RateLoss(m, 1.0, rel_step=1 / 8, calibrate="gg")  # the GG model is of plain rounding


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode,calibrate", [("ddp", "hist"), ("fsdp", "exact")])
def test_two_ranks_match_one_process(mode, calibrate, tmp_path):
    """2 gloo ranks (torchrun), each on half the batch: every rank's rate value and every whole gradient
    after 4 SGD steps equal one process on the whole batch; the drift trigger refreshes early (step 2, after
    the weights were reshaped) on every rank as in one process."""
    if not torch.distributed.is_available():
        pytest.skip("torch without distributed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    for attempt in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), os.path.join(HERE, "dist_rate_worker.py"), mode, str(tmp_path), calibrate]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
        # One more launch only for a C++ abort inside torch's gloo threads (seen once in CI on a loaded 2-core
        # box, not reproduced in 8 local runs); any other failure, or the same one twice, fails the test.
        if r.returncode == 0 or "terminate called without an active exception" not in r.stderr or attempt:
            break
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sys.path.insert(0, HERE)
    try:
        import dist_rate_worker as worker
    finally:
        sys.path.remove(HERE)
    ref = worker.reference(calibrate)
    assert [r["refreshes"] for r in ref] == [1, 1, 2, 2]  # the drift trigger, before refresh_every=3
    for rank in (0, 1):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(res) == len(ref) == worker.STEPS
        for got, want in zip(res, ref):
            assert got["rate"] == pytest.approx(want["rate"], rel=1e-5)
            assert got["bits"] == pytest.approx(want["bits"], rel=1e-5)
            assert got["refreshes"] == want["refreshes"]
            for name, g in want["grads"].items():
                scale = float(g.abs().max())
                assert torch.allclose(got["grads"][name], g, rtol=1e-4, atol=1e-5 * scale), (mode, name)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_drift_refreshes_early_and_the_estimate_comes_back(device):
    """Weights reshaped between steps (the small ones shrunk toward zero: a spike and tails) make the
    calibration stale; the drift trigger refreshes at the next step (CUDA: the one after, it reads the
    measure a step late), long before ``refresh_every``, and the estimate is back within 2 % of the
    encoder's payload. Without the trigger it stays off by more."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA")
    w = gg(1.0, (300, 400), seed=11).to(device)
    out = {}
    for drift in (float("inf"), None):
        p = torch.nn.Parameter(w.clone())
        rate = RateLoss([("w", p)], 1.0, expert={"rel_step": 1 / 8}, refresh_every=10**6)
        if drift is not None:
            rate.drift = drift
        with torch.no_grad():
            for _ in range(3):  # unchanged weights: no early refresh
                rate()
            assert rate.refreshes == 1
            small = p.abs() < p.abs().median()
            p.mul_(torch.where(small, 0.1, 1.0))
            for _ in range(2 if device == "cpu" else 3):
                rate()
        real, _ = entries(save_trained({"w": p.detach().cpu()}, rate=rate))["w"]
        out[drift] = (rate.refreshes, rate.total_bits / real - 1)
    assert out[float("inf")][0] == 1 and abs(out[float("inf")][1]) > 0.02, out
    assert out[None][0] == 2 and abs(out[None][1]) < 0.02, out


def _several():
    """Tensors of several shapes: smaller than a row, not a multiple of a row, 1-D beyond SMALL_1D, a
    nonzero mean (center != 0), heavy tails (bins wider than 1 at small steps), exact zeros."""
    ws = [gg(1.0, (200, 300), 1), gg(0.5, (400, 500), 3), gg(2.0, (70, 100), 4),
          gg(1.0, (5000, 70), 5) * 0.5 + 0.5, gg(0.8, (3, 4096), 6), gg(1.0, (70000,), 7)]
    ws[1][0, :10] = 0.0
    return ws


def _run_engine(ws, cls, rel, steps=1):
    ps = [torch.nn.Parameter(w.clone()) for w in ws]
    rate = RateLoss([(f"w{i}", p) for i, p in enumerate(ps)], 3.0, expert={"rel_step": rel}, calibrate="hist",
                    refresh_every=10**6)
    rate._dq_cls = cls
    out = []
    for _ in range(steps):
        for p in ps:
            p.grad = None
        r = rate()
        r.backward()
        out.append((float(r.detach()), [p.grad.clone() for p in ps], rate.bits()))
        with torch.no_grad():
            for p, g in zip(ps, out[-1][1]):
                p.sub_(g * (1e-3 / float(g.abs().max())))  # the same small move for both engines
    return out, rate


def _close(ga, gb):
    """Gradients equal but for weights that float32 rounding put on the other side of a bin edge."""
    for a, b in zip(ga, gb):
        differ = (a - b).abs() > 1e-5 * b.abs().max()
        assert int(differ.sum()) <= max(2, 1e-3 * b.numel()), (int(differ.sum()), b.numel())


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("rel", [1 / 8, 1 / 64])
def test_flat_engine_matches_the_per_tensor_reference(rel, backend, monkeypatch):
    """The flat-layout engine (rate_dq.DQRate: its Numba kernels, and eager torch) gives the per-tensor
    reference engine's values, per-tensor bits and gradients, over several steps, on tensors of many
    shapes."""
    from bslcodec.torch import rate_dq, rate_dq_ref

    monkeypatch.setattr(rate_dq, "BACKEND", backend)
    ws = _several()
    ref, rr = _run_engine(ws, rate_dq_ref.DQRateRef, rel, steps=3)
    new, rn = _run_engine(ws, rate_dq.DQRate, rel, steps=3)
    assert rn._dq.backend == backend and float(rn._dq.bin.max()) == float(rr._dq.bin.max())
    if rel == 1 / 64:
        assert float(rn._dq.bin.max()) > 1  # wide bins exercised
    for (va, ga, ba), (vb, gb, bb) in zip(ref, new):
        assert vb == pytest.approx(va, rel=1e-6)
        assert bb == pytest.approx(ba, rel=1e-6)
        _close(ga, gb)


def _counted_ops(rate):
    """Top-level aten calls of one rate() + backward that do work (views, reshapes and no-op casts left
    out; an operation's own inner calls, which depend on the sizes, not counted)."""
    from torch.profiler import ProfilerActivity, profile

    free = {"aten::view", "aten::reshape", "aten::detach", "aten::slice", "aten::as_strided", "aten::alias",
            "aten::to", "aten::_reshape_alias", "aten::lift_fresh", "aten::t", "aten::expand", "aten::unsqueeze",
            "aten::select", "aten::empty", "aten::empty_strided", "aten::result_type", "aten::is_nonzero",
            "aten::item", "aten::_local_scalar_dense"}
    for st in rate.states:
        st.param.grad = None
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rate().backward()

    def top(e):
        return e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")

    return sum(1 for e in prof.events() if e.name.startswith("aten::") and e.name not in free and top(e))


def test_flat_engine_op_count_does_not_grow_with_tensors(monkeypatch):
    """All covered tensors go through the same passes together: 4 or 16 tensors cost the same number of
    (non-view) torch operations a step (eager torch, the path of a GPU without Triton); the per-tensor
    reference's count grows."""
    from bslcodec.torch import rate_dq, rate_dq_ref

    monkeypatch.setattr(rate_dq, "BACKEND", "torch")

    def counts(k, cls=None):
        torch.manual_seed(k)
        ps = [torch.nn.Parameter(torch.randn(40 + 7 * i, 90) * 0.02) for i in range(k)]
        rate = RateLoss([(f"w{i}", p) for i, p in enumerate(ps)], 1.0, expert={"rel_step": 1 / 8}, calibrate="hist")
        if cls is not None:
            rate._dq_cls = cls
        rate().backward()
        return _counted_ops(rate)

    assert counts(4) == counts(16)
    assert counts(16, rate_dq_ref.DQRateRef) > counts(4, rate_dq_ref.DQRateRef) + 24


TRITON_CHECK = r"""
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
from bslcodec.torch import RateLoss, rate_dq, rate_dq_ref
torch.manual_seed(0)
ws = [torch.randn(70, 90) * 0.02, torch.randn(50, 100) * 0.01 + 0.3, torch.randn(3, 4096) * 0.05,
      torch.distributions.Laplace(0.0, 0.02).sample((90, 200))]
out = {}
for name in ("ref", "triton"):
    rate_dq.BACKEND = "triton" if name == "triton" else "torch"
    ps = [torch.nn.Parameter(w.clone()) for w in ws]
    r = RateLoss([(f"w{i}", p) for i, p in enumerate(ps)], 2.0, expert={"rel_step": float(sys.argv[1])},
                 calibrate="hist")
    if name == "ref":
        r._dq_cls = rate_dq_ref.DQRateRef
    v = r()
    v.backward()
    assert name == "ref" or r._dq.backend == "triton"
    out[name] = (float(v.detach()), [p.grad for p in ps], r.bits())
(va, ga, ba), (vb, gb, bb) = out["ref"], out["triton"]
assert abs(va - vb) <= 1e-6 * abs(va), (va, vb)
assert all(abs(ba[k] - bb[k]) <= 1e-6 * ba[k] for k in ba), (ba, bb)
for a, b in zip(ga, gb):
    differ = (a - b).abs() > 1e-5 * a.abs().max()
    assert int(differ.sum()) <= 2, int(differ.sum())
print("ok")
"""


@pytest.mark.parametrize("rel", ["0.125", "0.015625"])
def test_triton_kernels_match_the_reference_in_the_interpreter(rel):
    """The CUDA path's Triton kernels, run by Triton's CPU interpreter (TRITON_INTERPRET=1), give the
    reference engine's value, bits and gradients (skipped where Triton is not installed)."""
    pytest.importorskip("triton")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", TRITON_CHECK, rel], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_refresh_token_histogram_numba_equals_eager(monkeypatch):
    """calibrate="hist" refresh: the Numba token histogram gives the eager path's ans estimates exactly
    (rounding half to even, big tokens of a far outlier, a nonzero center, wide bins)."""
    from bslcodec.torch import rate_dq

    torch.manual_seed(0)
    ws = [torch.randn(300, 500) * 0.02, torch.distributions.Laplace(0.0, 0.02).sample((400, 300)),
          torch.randn(70, 90) * 0.01 + 0.3]
    ws[1][0, 0] = 5.0
    for rel in (1 / 8, 1 / 64):
        got = {}
        for backend in ("torch", "numba"):
            monkeypatch.setattr(rate_dq, "BACKEND", backend)
            ps = [torch.nn.Parameter(w.clone()) for w in ws]
            rate = RateLoss([(f"w{i}", p) for i, p in enumerate(ps)], 1.0, expert={"rel_step": rel},
                            calibrate="hist")
            rate.refresh()
            assert rate._dq.backend == backend
            got[backend] = rate._dq.hist_bits()
        assert got["numba"] == got["torch"]
