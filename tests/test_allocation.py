"""Sensitivity-weighted bit allocation and the calibration probe."""

import doctest
import math
import os

import numpy as np
import pytest

import bslcodec
from bslcodec import calibrate
from bslcodec.pipeline import allocation


def _model():
    rng = np.random.default_rng(0)
    # y = x @ A + 20 * (x @ B): B matters 400x more per unit of error variance than A
    return {"A": rng.normal(0, 0.1, (64, 48)).astype(np.float32),
            "B": rng.normal(0, 0.1, (64, 48)).astype(np.float32)}, rng.normal(size=(32, 64))


def _forward(x):
    return lambda t: x @ t["A"].astype(np.float64) + 20 * (x @ t["B"].astype(np.float64))


def test_probe_measures_relative_sensitivity():
    w, x = _model()
    s = calibrate.sensitivity(_forward(x), w, repeats=4)
    assert 250 < s["B"] / s["A"] < 600


def test_doc_example():
    assert doctest.testmod(calibrate).failed == 0


def test_allocation_lowers_output_error_at_equal_size():
    w, x = _model()
    f = _forward(x)
    s = calibrate.sensitivity(f, w, repeats=2)
    ref = f(w)
    plain = bslcodec.save(w, bits=4.0)
    weighted = bslcodec.save(w, bits=4.0, sensitivity=s)
    assert abs(len(plain) - len(weighted)) <= 0.03 * len(plain)
    err_plain = ((f(bslcodec.load(plain)) - ref) ** 2).mean()
    err_weighted = ((f(bslcodec.load(weighted)) - ref) ** 2).mean()
    assert err_weighted < 0.8 * err_plain
    # steps follow sqrt(n / s): B (sensitive) gets the finer step
    src = bslcodec.files.api._Source(data=weighted)
    assert src.entry("B").params["step"] < src.entry("A").params["step"]


def test_sensitivity_errors():
    w, _ = _model()
    with pytest.raises(bslcodec.EncodeError, match="lacks"):
        bslcodec.save(w, sensitivity={"A": 1.0})
    with pytest.raises(bslcodec.EncodeError, match="positive"):
        bslcodec.save(w, sensitivity={"A": 1.0, "B": -2.0})
    with pytest.raises(bslcodec.EncodeError, match="max_error"):
        bslcodec.save(w, sensitivity={"A": 1.0, "B": 1.0}, max_error=1e-3)


def test_rel_step_keeps_its_average_meaning():
    w, x = _model()
    s = {"A": 1.0, "B": 400.0}
    src = bslcodec.files.api._Source(data=bslcodec.save(w, rel_step=0.1, sensitivity=s, quantizer="uniform"))
    ratios = [src.entry(n).params["step"] / (0.1 * float(w[n].astype(np.float64).std())) for n in "AB"]
    assert np.isclose(np.exp(np.mean(np.log(ratios))), 1.0, rtol=1e-3)  # geometric mean of step/(c*std) is 1
    assert np.isclose(ratios[0] / ratios[1], 20.0, rtol=1e-2)  # sqrt(400)


# ---------------------------------------------------------------- equal-slope allocation (bits=, the default)

def _sse(a, b):
    return sum(float(((b[k].astype(np.float64) - a[k].astype(np.float64)) ** 2).sum()) for k in a)


def _mixed(seed=0):
    rng = np.random.default_rng(seed)
    return {"big": rng.laplace(0, 1.0, (256, 256)).astype(np.float32),
            "mid": rng.normal(0, 0.2, (128, 256)).astype(np.float32),
            "small": rng.uniform(-0.05, 0.05, (64, 256)).astype(np.float32)}


def _match(make, size, lo, hi):
    """The file of ``make(x)`` whose size is closest to ``size`` for x in [lo, hi] (size falls with x)."""
    best = None
    for _ in range(14):
        x = (lo * hi) ** 0.5
        blob = make(x)
        if best is None or abs(len(blob) - size) < abs(len(best) - size):
            best = blob
        lo, hi = (x, hi) if len(blob) > size else (lo, x)
    return best


@pytest.mark.parametrize("bits", [1.5, 4.0])
def test_allocation_beats_one_global_step_and_rel_step(bits, monkeypatch):
    """At the same size the equal-slope allocation has less total squared error than one relative step
    (rel_step=) and, without the REL_CAP rule (which spends bits on the small tensor on purpose), no more
    than one step for all (max_error=): it is the MSE-optimal split of the bits (better at low rate)."""
    from bslcodec.pipeline import allocation

    real = allocation.weights  # one distortion weight per weight (the default weighs by 1 / size)
    monkeypatch.setattr(allocation, "weights", lambda lossy, sensitivity=None:
                        real(lossy, {n: float(t.x.size) for n, t in lossy.items()}))
    t = _mixed()
    alloc = bslcodec.save(t, bits=bits, quantizer="uniform")
    sse = _sse(t, bslcodec.load(alloc))
    rel = _match(lambda c: bslcodec.save(t, rel_step=c, quantizer="uniform"), len(alloc), 1e-3, 50.0)
    assert len(rel) >= 0.99 * len(alloc) and _sse(t, bslcodec.load(rel)) > 1.5 * sse
    monkeypatch.setattr(allocation, "REL_CAP", math.inf)
    alloc = bslcodec.save(t, bits=bits, quantizer="uniform")
    sse = _sse(t, bslcodec.load(alloc))
    glob = _match(lambda e: bslcodec.save(t, max_error=e), len(alloc), 1e-5, 10.0)
    assert len(glob) >= 0.995 * len(alloc)
    assert sse < (0.99 if bits < 2 else 1.0) * _sse(t, bslcodec.load(glob)), (len(alloc), len(glob))


def test_default_weighs_each_tensor_by_its_mean_squared_error():
    """Without sensitivity= the allocation minimises size + lambda * (sum of the tensors' mean squared
    errors): at high rate two tensors of the same distribution get steps in proportion to sqrt(size), and
    the small one's error costs the model less than one global step's would."""
    rng = np.random.default_rng(4)
    t = {"big": rng.normal(0, 0.1, (512, 256)).astype(np.float32),
         "small": rng.normal(0, 0.1, (128, 128)).astype(np.float32)}
    blob = bslcodec.save(t, bits=6.0, quantizer="uniform")
    src = bslcodec.files.api._Source(data=blob)
    ratio = src.entry("big").params["step"] / src.entry("small").params["step"]
    assert 0.85 * 8 ** 0.5 < ratio < 1.15 * 8 ** 0.5, ratio  # (the small one's frequency table bends its curve)
    back = bslcodec.load(blob)
    mse = {k: float(((back[k] - t[k].astype(np.float64)) ** 2).mean()) for k in t}
    glob = _match(lambda e: bslcodec.save(t, max_error=e), len(blob), 1e-5, 1.0)
    assert len(glob) >= 0.99 * len(blob)
    gb = bslcodec.load(glob)
    gmse = {k: float(((gb[k] - t[k].astype(np.float64)) ** 2).mean()) for k in t}
    assert mse["big"] + mse["small"] < 0.8 * (gmse["big"] + gmse["small"])


def test_default_meets_its_error_budget():
    from bslcodec.pipeline.allocation import REL_CAP
    from bslcodec.pipeline.codec import DEFAULT_REL_ERROR

    t = _mixed(1)
    t["tiny_scale"] = np.random.default_rng(2).normal(0, 1e-3, (64, 64)).astype(np.float32)
    blob = bslcodec.save(t)
    back = bslcodec.load(blob)
    # the budget: the root mean square over tensors of each tensor's relative L2 error
    rel2 = [float(((back[k] - v.astype(np.float64)) ** 2).sum()) / float((v.astype(np.float64) ** 2).sum())
            for k, v in t.items()]
    assert 0.85 * DEFAULT_REL_ERROR < float(np.mean(rel2)) ** 0.5 < 1.1 * DEFAULT_REL_ERROR
    # the cap is relative to the plain relative L2 error of all quantized weights
    total = (_sse(t, back) / sum(float((v.astype(np.float64) ** 2).sum()) for v in t.values())) ** 0.5
    src = bslcodec.files.api._Source(data=blob)
    for k, v in t.items():
        x = v.astype(np.float64)
        rel = (float(((back[k] - x) ** 2).sum()) / float((x ** 2).sum())) ** 0.5
        assert rel < 1.15 * REL_CAP * total, k  # no tensor far behind the rest (tiny_scale would be zeroed)
        e = src.entry(k)
        assert e.codec == "ans-dq" and np.abs(back[k] - x).max() <= 1.5 * e.params["step"] * (1 + 1e-6)


def test_too_few_bits_warn():
    import warnings

    t = _mixed()
    with pytest.warns(bslcodec.QualityWarning, match="relative L2 error"):
        bslcodec.save(t, bits=1.0, quantizer="uniform")
    with warnings.catch_warnings():
        warnings.simplefilter("error", bslcodec.QualityWarning)
        bslcodec.save(t, bits=6.0, quantizer="uniform")


def test_bits_encodes_each_tensor_once_and_corrects_a_quarter(monkeypatch):
    """bits= costs one encode plus, where the prediction misses, the largest tensors holding at most a
    quarter of the weights once more; the target is still met."""
    from bslcodec.pipeline import allocation, codec

    rng = np.random.default_rng(3)
    t = {f"w{i}": (rng.standard_t(4, (128, 256)) * 0.02).astype(np.float32) for i in range(8)}
    n = sum(v.size for v in t.values())
    seen = []
    real = codec.LossyTensor.encode
    monkeypatch.setattr(codec.LossyTensor, "encode", lambda self, *a, **k: seen.append(self.x.size) or
                        real(self, *a, **k))
    blob = bslcodec.save(t, bits=3.0, quantizer="uniform")
    assert n <= sum(seen) <= 1.25 * n and abs(8 * len(blob) / n - 3.0) <= 0.02 * 3.0
    seen.clear()
    monkeypatch.setattr(allocation, "dq_saving", lambda bpw: 0.4)  # a prediction 0.4 b/w too small
    blob = bslcodec.save(t, bits=3.0)
    assert n < sum(seen) <= 1.25 * n and abs(8 * len(blob) / n - 3.0) <= 0.02 * 3.0


def test_fisher_matches_the_noise_probe():
    torch = pytest.importorskip("torch")
    w, x = _model()

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(torch.from_numpy(w["A"]).double())
            self.B = torch.nn.Parameter(torch.from_numpy(w["B"]).double())

        def forward(self, x):
            return x @ self.A + 20 * (x @ self.B)

    xt = torch.from_numpy(x)
    s = calibrate.fisher(M(), lambda m: m(xt), names=["A", "B"], probes=64)
    probe = calibrate.sensitivity(_forward(x), w, repeats=4)
    assert 300 < s["B"] / s["A"] < 530
    for k in "AB":  # the same quantity: output MSE per unit of per-element weight error variance
        assert 0.6 < s[k] / probe[k] < 1.6, (k, s[k], probe[k])


def test_prepared_bf16_tensor_holds_no_float32_copy():
    """A prepared bf16 tensor keeps its own 2-byte values (a bits= search holds every tensor of a shard at
    once: a float32 copy each would be 2x the shard on top of it); the binary32 values are widened on use and
    equal numpy's cast."""
    import ml_dtypes

    from bslcodec.pipeline import codec

    a = (np.random.default_rng(3).laplace(size=(300, 700)) * 0.02).astype(ml_dtypes.bfloat16)
    lt = codec.LossyTensor("w", a, "BF16")
    held = [v for v in vars(lt).values() if isinstance(v, np.ndarray)]
    assert held and all(v.dtype.itemsize == 2 and v.nbytes <= a.nbytes for v in held)
    assert lt.n == a.size
    assert np.array_equal(lt.x, a.reshape(-1).astype(np.float32))


def test_batched_curve_points_equal_one_by_one():
    """The allocation's grid points of small tensors, evaluated in batches (``Allocation._each``), are the
    same (bits, MSE) floats as ``Curve._eval`` point by point, for plain and dq curves, a constant-ish tensor,
    tiny and sampled tensors, and points from too fine (stored exactly) to very coarse."""
    from bslcodec.pipeline.allocation import K_MAX, K_MIN, Allocation, Curve
    from bslcodec.pipeline.codec import LossyTensor

    rng = np.random.default_rng(4)
    arrs = {"a": rng.normal(0, 0.02, (64, 64)), "b": rng.laplace(0, 1e-3, 300), "c": rng.standard_t(2, 5000),
            "d": np.r_[np.zeros(50), 1e-6], "e": rng.normal(3, 0.5, 17), "big": rng.normal(0, 1, 70000)}
    lossy = {}
    for i, (n, a) in enumerate(arrs.items()):
        lt = LossyTensor(n, a.astype(np.float32), "F32")
        lt.quantizer = "dq" if i % 2 else "uniform"
        lossy[n] = lt
    alloc = Allocation(lossy)
    ks = list(range(K_MIN, K_MAX, 7)) + [K_MIN, K_MAX - 1, -3, 0, 2]
    for k in ks:
        got = alloc._each(lambda c, k=k: c.point(k))
        for n, c in alloc.curves.items():
            fresh = Curve(lossy[n], c.w)
            assert got[n] == fresh._eval(k), (n, k)


def _mixed_lossy(r, counts, near_constant: bool) -> dict:
    """F32 LossyTensors (~70 % dq) of mixed shapes (tiny, sampled) and values (Gaussian, Laplace, t-tailed,
    shifted; ``near_constant``: also 0.5 + 1e-9 noise), ``r.choice(counts)`` of them, for the lambda search
    tests. Every candidate array is drawn before one is picked (the rng's draws do not depend on the pick)."""
    from bslcodec.pipeline.codec import LossyTensor

    lossy = {}
    for i in range(int(r.choice(list(counts)))):
        shape = [(64, 64), (7, 3), (300, 20), (20000, 1), (100, 700)][int(r.integers(0, 5))]
        kinds = [r.normal(0, 0.02, shape), r.laplace(0, 1e-3, shape), r.standard_t(2, shape)]
        if near_constant:
            kinds.append(0.5 + r.normal(0, 1e-9, shape))
        kinds.append(r.normal(3, 0.5, shape))
        a = kinds[int(r.integers(0, len(kinds)))]
        lt = LossyTensor(f"t{i:02d}", a.astype(np.float32), "F32")
        lt.quantizer = "dq" if r.random() < 0.7 else "uniform"
        lossy[lt.name] = lt
    return lossy


def test_compiled_lambda_search_is_the_python_one(monkeypatch):
    """The lambda search's passes compiled (``lambda_search.py``, ``allocation.COMPILED``) give the Python
    methods' positions, predicted bits and errors as the same floats, for the default, a loose ``rel_error``
    and a ``bits=`` target over mixed tensors (plain and dq, tiny, sampled, near-constant, shifted), and the
    same file bytes through ``save``."""
    from bslcodec.pipeline import allocation
    from bslcodec.pipeline.allocation import K_MAX, K_MIN, Allocation

    for seed in range(6):
        lossy = _mixed_lossy(np.random.default_rng(40 + seed), (2, 9, 40), near_constant=True)
        n_all = sum(t.n for t in lossy.values())
        for kw in ({"rel_error": 2.0 ** -8}, {"rel_error": 0.05}, {"target_bits": 3.0 * n_all},
                   {"target_bits": 0.5 * n_all}):
            got = []
            for compiled in (False, True):
                monkeypatch.setattr(allocation, "COMPILED", compiled)
                alloc = Allocation(lossy)
                got.append((alloc.solve(**kw), alloc.totals({n: K_MAX for n in alloc.curves}),
                            alloc.totals({n: K_MIN for n in alloc.curves})))
            assert got[0] == got[1], (seed, kw)
    rng = np.random.default_rng(46)
    t = {f"w{i}": rng.normal(0, 0.02 * (i + 1), (48, 40 + i)).astype(np.float32) for i in range(12)}
    t["b"] = rng.normal(0, 1, 64).astype(np.float32)
    for kw in ({}, {"bits": 3}, {"rel_error": 0.01}):
        files = []
        for compiled in (False, True):
            monkeypatch.setattr(allocation, "COMPILED", compiled)
            files.append(bslcodec.save(t, **kw))
        assert files[0] == files[1], kw


def test_gallop_meets_the_criterion_of_the_whole_range_bisection(monkeypatch):
    """``Allocation.solve`` bracketing lambda outward from its high-rate guess (``allocation.GALLOP``) meets
    the stopping criterion the bisection of the whole range meets (bits within 1e-4 of a target; the error
    within 1e-4 of a ``rel_error``), at positions within a small fraction of a grid step of that search's,
    on mixed tensors (plain and dq, tiny, sampled, heavy-tailed) and hostile small ones; and evaluates fewer
    grid points at the default ``rel_error``, where the whole range's far ends were most of the work."""
    from bslcodec.pipeline import allocation
    from bslcodec.pipeline.allocation import Allocation

    fewer = 0
    for seed in range(5):
        lossy = _mixed_lossy(np.random.default_rng(60 + seed), (3, 12, 60), near_constant=False)
        for lossy_ in (lossy, _hostile_lossy(70 + seed)):
            n_all = sum(t.n for t in lossy_.values())
            for kw in ({"rel_error": 2.0 ** -8}, {"rel_error": 0.03}, {"target_bits": 4.0 * n_all},
                       {"target_bits": 2.0 * n_all}):
                got = []
                for gallop in (False, True):
                    monkeypatch.setattr(allocation, "GALLOP", gallop)
                    alloc = Allocation(lossy_)
                    pos, bits, err = alloc.solve(**kw)
                    got.append((pos, bits, err, int(alloc._H.sum())))
                (p0, b0, e0, h0), (p1, b1, e1, h1) = got
                if "target_bits" in kw:
                    ok0, ok1 = (abs(b - kw["target_bits"]) <= 1e-4 * kw["target_bits"] for b in (b0, b1))
                else:
                    ok0, ok1 = (abs(e - kw["rel_error"]) <= 1e-4 * kw["rel_error"] for e in (e0, e1))
                assert ok1 or not ok0, (seed, kw, b0, b1, e0, e1)
                if ok0 and ok1:
                    assert max(abs(p0[n] - p1[n]) for n in p0) < 0.05, (seed, kw)
                if kw == {"rel_error": 2.0 ** -8} and lossy_ is lossy:
                    fewer += h1 < h0
    assert fewer == 5


def _hostile_lossy(seed: int) -> dict:
    """Small tensors of every float dtype, odd sizes and values (denormal, huge, constant-ish, one element,
    heavy tails, shifted), plain and dq, and one sampled tensor, for the batched grid-point kernels."""
    import ml_dtypes  # noqa: F401  (numpy's "bfloat16")

    from bslcodec.pipeline.codec import LossyTensor

    r = np.random.default_rng(seed)
    vals = [lambda n: r.normal(0, 0.02, n), lambda n: r.laplace(0, 1e-3, n), lambda n: r.standard_t(1.5, n),
            lambda n: 0.5 + r.normal(0, 1e-9, n), lambda n: r.normal(3, 0.5, n),
            lambda n: r.normal(0, 1e-40, n), lambda n: r.normal(0, 1e30, n), lambda n: np.r_[np.zeros(n - 1), 1e-6],
            lambda n: r.integers(-3, 4, n).astype(np.float64), lambda n: r.normal(0, 1, n) ** 5]
    dts = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": "bfloat16"}
    lossy = {}
    for i in range(int(r.integers(5, 30))):
        n = int(r.choice([1, 2, 7, 64, 300, 4096, 5000, 16384, 20000]))
        dt = list(dts)[int(r.integers(0, 4))]
        with np.errstate(all="ignore"):
            a = vals[int(r.integers(0, len(vals)))](n).astype(dts[dt])
        if not np.isfinite(a.astype(np.float64)).all():
            continue
        lt = LossyTensor(f"t{i:02d}", a, dt)
        lt.quantizer = "dq" if r.random() < 0.6 else "uniform"
        lossy[lt.name] = lt
    return lossy


def test_grid_point_kernel_is_the_reference(monkeypatch):
    """``gridpoints.round_many`` (``allocation.BATCH_KERNEL``) gives every grid point, the solved positions,
    bits and errors as the same floats as ``_eval_batch_ref``, on hostile small tensors of every float dtype,
    and the same file bytes through ``save``."""
    from bslcodec.pipeline import allocation
    from bslcodec.pipeline.allocation import K_MAX, K_MIN, Allocation

    for seed in range(8):
        lossy = _hostile_lossy(60 + seed)
        n_all = sum(t.n for t in lossy.values())
        for kw in ({"rel_error": 2.0 ** -8}, {"rel_error": 0.05}, {"target_bits": 2.0 * n_all}):
            got = []
            # ref; round_many with the points as a (curve, k) list; round_many_fast with them as arrays
            for kernel, fast in ((False, False), (True, False), (True, True)):
                monkeypatch.setattr(allocation, "BATCH_KERNEL", kernel)
                monkeypatch.setattr(allocation, "FAST_ROUNDING", fast)
                monkeypatch.setattr(allocation, "ARRAY_POINTS", fast)
                alloc = Allocation(lossy)
                res = alloc.solve(**kw)
                for k in (K_MIN, K_MIN + 1, -37, -3, 0, 5, K_MAX - 1, K_MAX):
                    alloc._each(lambda c, k=k: c.point(k))
                got.append((res, alloc._B.copy(), alloc._D.copy(), alloc._H.copy()))
            for other in got[1:]:
                assert got[0][0] == other[0], (seed, kw)
                for a, b in zip(got[0][1:], other[1:]):
                    assert np.array_equal(a, b), (seed, kw)
    rng = np.random.default_rng(47)
    t = {f"w{i}": rng.normal(0, 0.02 * (i + 1), (48, 40 + i)).astype(np.float32) for i in range(12)}
    t["b"] = rng.normal(0, 1, 64).astype(np.float16)
    t["c"] = np.full((9, 9), 0.25, np.float32)
    for kw in ({}, {"bits": 3}, {"rel_error": 0.01}):
        files = []
        for kernel, fast in ((False, False), (True, False), (True, True)):
            monkeypatch.setattr(allocation, "BATCH_KERNEL", kernel)
            monkeypatch.setattr(allocation, "FAST_ROUNDING", fast)
            monkeypatch.setattr(allocation, "ARRAY_POINTS", fast)
            files.append(bslcodec.save(t, **kw))
        assert files[0] == files[1] == files[2], kw


def test_grid_point_steps_are_curve_steps():
    """``gridpoints.steps`` (the lambda search's missing points as arrays) is ``Curve.step``: the same
    floats for stds from denormal to huge and grid points past both ends of the grid."""
    from bslcodec.pipeline import gridpoints as gp
    from bslcodec.pipeline.allocation import GRID, K_MAX, K_MIN, Curve

    rng = np.random.default_rng(13)
    std = np.r_[10.0 ** rng.uniform(-310, 300, 3000), 1.0, 0.02, 5e-324, 1.7e308]
    ks = rng.integers(K_MIN - 40, K_MAX + 40, std.size).astype(np.int64)
    ks[:200] = np.arange(K_MIN - 50, K_MIN + 150)
    got = gp.steps(std, ks, 2.0, float(GRID))
    c = Curve.__new__(Curve)
    for j in range(std.size):
        c.std = float(std[j])
        assert got[j] == c.step(int(ks[j])) or (np.isnan(got[j]) and np.isnan(c.step(int(ks[j])))), j


def test_fast_rounding_is_round_many():
    """``gridpoints.round_many_fast`` gives ``round_many``'s numbers at every point it takes, and leaves the
    points it cannot take (a non-finite value, a symbol at or above 2^22, an empty sample); samples of
    mixed lengths (groups of up to four of one length), steps from denormal to huge, shifted samples."""
    from bslcodec.pipeline import gridpoints as gp

    rng = np.random.default_rng(8)
    samples = [rng.normal(0, 0.02, 4096), rng.standard_t(1.5, 4096), rng.normal(3, 0.5, 300), np.zeros(5),
               np.full(64, 0.5), rng.laplace(0, 1e-3, 1000), rng.normal(0, 1, 17), np.r_[np.zeros(99), 1e-6],
               np.r_[rng.normal(0, 1, 50), np.nan], np.r_[rng.normal(0, 1, 50), np.inf], np.zeros(0),
               rng.normal(0, 1e30, 64), rng.normal(0, 1e-300, 64), rng.normal(1e6, 1, 700)]
    xs = np.concatenate(samples)
    ends = np.cumsum([a.size for a in samples])
    lo_s, hi_s = ends - np.array([a.size for a in samples]), ends
    tab, off = gp.log_table([max(a.size, 1) for a in samples])
    toff_s = np.array([off[max(a.size, 1)] for a in samples], np.int64)
    s0_s = gp.sums(xs, lo_s, hi_s)
    xmin_s, xmax_s, ok_s = gp.extremes(xs, lo_s, hi_s)
    n_left = 0
    for trial in range(6):
        P = 400
        which = rng.integers(0, len(samples), P) if trial % 2 else np.repeat(rng.integers(0, len(samples), P // 4), 4)
        steps = 2.0 ** rng.uniform(-1000 if trial == 5 else -40, 40, P)
        args = [xs, lo_s[which], hi_s[which], steps, s0_s[which], tab, toff_s[which]]
        ref = np.empty(P), np.empty(P, np.int64), np.empty(P), np.empty(P), np.empty(P, np.int64)
        gp.round_many(*args, *ref)
        got = np.full(P, -1.0), np.full(P, -1, np.int64), np.full(P, -1.0), np.full(P, -1.0), np.full(P, -1, np.int64)
        done = np.empty(P, np.bool_)
        gp.round_many_fast(xs, lo_s[which], hi_s[which], xmin_s[which], xmax_s[which], ok_s[which], steps,
                           s0_s[which], tab, toff_s[which], *got, done)
        assert done.any()
        for a, b in zip(ref, got):
            assert np.array_equal(a[done], b[done]), trial
        # the samples as float32 (what the allocation passes where they are): the same numbers
        x32 = np.where(np.abs(xs) < 1e30, xs, 0.5).astype(np.float32).astype(np.float64)
        s0_32 = gp.sums(x32, lo_s, hi_s)
        xmin32, xmax32, ok32 = gp.extremes(x32, lo_s, hi_s)
        ref = np.empty(P), np.empty(P, np.int64), np.empty(P), np.empty(P), np.empty(P, np.int64)
        gp.round_many(x32, lo_s[which], hi_s[which], steps, s0_32[which], tab, toff_s[which], *ref)
        done32 = np.empty(P, np.bool_)
        gp.round_many_fast(x32.astype(np.float32), lo_s[which], hi_s[which], xmin32[which], xmax32[which],
                           ok32[which], steps, s0_32[which], tab, toff_s[which], *got, done32)
        for a, b in zip(ref, got):
            assert np.array_equal(a[done32], b[done32]), trial
        left = ~done
        n_left += int(left.sum())
        assert (~ok_s[which][left] | (ref[2][left] >= 2.0 ** 22) | (hi_s[which] == lo_s[which])[left]).all()
    assert n_left > 0


def test_grid_point_sums_and_logs_are_numpys():
    """``gridpoints.pairwise`` is numpy's pairwise sum (up to ``PAIRWISE_MAX`` terms) and ``log_table``
    numpy's log2 of each count's quotient, wherever the quotient sits in a larger array."""
    from bslcodec.pipeline import gridpoints

    rng = np.random.default_rng(5)
    for n in list(range(300)) + [511, 512, 905, 1793, 3569, 4304, gridpoints.PAIRWISE_MAX]:
        a = rng.normal(0, 1, n + 3) * 10.0 ** rng.integers(-5, 5, n + 3)
        assert gridpoints.pairwise(a, 3, n) == a[3:].sum(), n
    ms = [1, 2, 3, 64, 300, 4096, 16384]
    tab, off = gridpoints.log_table(ms)
    for m in ms:
        c = rng.integers(1, m + 1, 5000).astype(np.float64)
        pad = rng.integers(0, 9)
        got = np.log2(np.r_[np.ones(pad), c / m])[pad:]
        assert np.array_equal(tab[off[m] + c.astype(np.int64)], got), m


def test_compiled_totals_are_the_loops(monkeypatch):
    """``Allocation._totals``' sums compiled (``allocation.COMPILED_SUMS``: ``_sums``) are its Python loop's
    floats, at the grid's ends, the middle and fractional positions, and the solve's positions are the same."""
    from bslcodec.pipeline import allocation
    from bslcodec.pipeline.allocation import K_MAX, K_MIN, Allocation

    for seed in range(4):
        lossy = _mixed_lossy(np.random.default_rng(60 + seed), (3, 12, 40), near_constant=True)
        got = []
        for compiled in (False, True):
            monkeypatch.setattr(allocation, "COMPILED_SUMS", compiled)
            alloc = Allocation(lossy)
            r = np.random.default_rng(seed)
            totals = [alloc.totals({n: float(k) for n in alloc.curves}) for k in (K_MIN, -20, K_MAX)]
            totals.append(alloc.totals({n: float(r.uniform(K_MIN, K_MAX)) for n in alloc.curves}))
            got.append((totals, alloc.solve(rel_error=2.0 ** -8)))
        assert got[0] == got[1], seed


def test_fast_set_up_split_rounding_and_fused_steps_are_the_reference(monkeypatch):
    """``Allocation``'s set-up from arrays (``allocation.FAST_INIT``: the float32 buffer, ``sample_stats``'
    sums and extremes, no per-curve copies), the small curves' rounding split over two threads
    (``allocation.SPLIT``, ``SPLIT_MIN`` lowered so that these small files split) and a search step's passes in
    one compiled call (``allocation.FUSED``: ``lambda_search.look``) give the reference's grid
    points, positions, bits and errors as the same floats: F32, F16, BF16 and F64 tensors (these keep a float64
    buffer), released tensors (their kept float64 samples), and a curve's float64 sample asked for afterwards."""
    import ml_dtypes

    from bslcodec.pipeline import allocation
    from bslcodec.pipeline.allocation import Allocation
    from bslcodec.pipeline.codec import LossyTensor

    monkeypatch.setattr(allocation, "SPLIT_MIN", 1)
    for seed in range(5):
        r = np.random.default_rng(80 + seed)
        lossy = _mixed_lossy(r, (3, 12, 40), near_constant=True)
        for i, dt in enumerate((np.float16, ml_dtypes.bfloat16, np.float64)):
            a = r.normal(0, 0.1, int(r.integers(1, 5000))).astype(dt)
            lossy[f"d{i}"] = LossyTensor(f"d{i}", a, {np.float16: "F16", np.float64: "F64"}.get(dt, "BF16"))
        if seed >= 3:  # without the F64 one (the float32 buffer); the last: some released
            del lossy["d2"]
        if seed == 4:
            for i, (n, lt) in enumerate(sorted(lossy.items())):
                if i % 2:
                    lt.release(lambda lt=lt: lt.flat)
        got = []
        for fast, threads in ((False, 1), (True, 1), (True, 2)):
            monkeypatch.setattr(allocation, "FAST_INIT", fast)
            monkeypatch.setattr(allocation, "SPLIT", fast)
            monkeypatch.setattr(allocation, "FUSED", fast)
            alloc = Allocation(lossy, threads=threads)
            res = (alloc.solve(rel_error=2.0 ** -8), alloc.solve(target_bits=2.0 * sum(t.n for t in lossy.values())))
            xs = [alloc.curves[n].x.tolist() for n in alloc.curves]
            got.append((res, alloc._B.tolist(), alloc._D.tolist(), alloc._H.tolist(), xs,
                        alloc._rows.s0.tolist(), alloc._rows.xmin.tolist(), alloc._rows.ok.tolist()))
        assert got[0] == got[1] == got[2], seed
    # the float32 buffer of a finished Allocation is taken by the next (REUSE), never by one alive beside it
    lossy = _mixed_lossy(np.random.default_rng(90), (40,), near_constant=False)
    first = Allocation(lossy)
    buf = first._rows.xs_fast
    second = Allocation(lossy)
    assert not np.shares_memory(buf, second._rows.xs_fast)
    del first
    third = Allocation(lossy)
    assert np.shares_memory(buf, third._rows.xs_fast) and third.solve(rel_error=0.01) == second.solve(rel_error=0.01)


def test_sample_stats_are_gridpoints_sums_and_extremes():
    """``sample_stats.sums_extremes`` (four samples' chains side by side, finiteness from the sum) gives
    ``gridpoints.sums``' floats and ``gridpoints.extremes``' ``ok``, and its extremes (a zero's sign included)
    where ``ok``, on float64 and float32 samples of 0-8 elements with infinities, NaNs, signed zeros, 1e308."""
    from bslcodec.pipeline import gridpoints, sample_stats

    rng = np.random.default_rng(3)
    for trial in range(300):
        k = int(rng.integers(1, 12))
        size = int(rng.integers(0, 6)) if trial % 2 else None  # odd trials: samples of one length
        parts = [rng.normal(0, 1, size if size is not None else int(rng.integers(0, 9))) for _ in range(k)]
        for p in parts:
            if p.size and rng.random() < 0.3:
                p[int(rng.integers(0, p.size))] = rng.choice([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e308])
        lens = np.array([p.size for p in parts], np.int64)
        hi = np.cumsum(lens)
        lo = hi - lens
        x = np.concatenate(parts)
        with np.errstate(over="ignore"):
            x32 = x.astype(np.float32)
        for xs in (x, x32):
            got = [np.empty(k), np.empty(k), np.empty(k), np.empty(k, np.bool_)]
            with np.errstate(all="ignore"):
                sample_stats.sums_extremes(xs, lo, hi, *got)
            x64 = xs.astype(np.float64)
            ok = gridpoints.extremes(x64, lo, hi)[2]
            assert np.array_equal(got[0], gridpoints.sums(x64, lo, hi), equal_nan=True), trial
            assert np.array_equal(got[3], ok), trial
            for a, b in zip(got[1:3], gridpoints.extremes(x64, lo, hi)[:2]):
                assert np.array_equal(a[ok], b[ok]) and np.array_equal(np.signbit(a[ok]), np.signbit(b[ok])), trial


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_split_rounding_works_in_a_forked_child():
    """The split rounding's helper thread (allocation._EXECUTOR) made in this process does not exist in a
    forked child: the child makes its own instead of waiting forever on the parent's."""
    big = np.full(4, allocation.SPLIT_MIN)  # work enough to split
    allocation._split_call(lambda *a: None, (np.zeros(4),), (), big, 2)  # the executor exists now
    assert allocation._EXECUTOR is not None
    out = np.zeros(1 << 10)

    def fill(a):
        a += 1

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = allocation._EXECUTOR is None
        try:
            allocation._split_call(fill, (out,), (), np.full(out.size, allocation.SPLIT_MIN), 2)
            ok = ok and bool((out == 1).all())
        finally:
            os._exit(0 if ok else 1)
    import time

    t0 = time.monotonic()
    while (got := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    if got[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's split rounding hung (the parent's executor thread)")
    assert os.waitstatus_to_exitcode(got[1]) == 0
    assert allocation._EXECUTOR is not None  # the parent's own is untouched
