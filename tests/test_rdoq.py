"""RDOQ (bslcodec.codecs.rdoq): bounds, determinism, round trips, and that it never costs bits on GG data."""

import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import float_arrays

import bslcodec
from bslcodec.codecs import rans, rdoq
from bslcodec.container.errors import EncodeError
from bslcodec.pipeline import codec
from bslcodec.quantize import quant


def _err(a, b):
    return np.abs(a.astype(np.float64) - b.astype(np.float64))


def _levels(u, center=0):
    u = u.astype(np.int64)
    return center + ((u >> 1) ^ -(u & 1))


def _gg(rng, nu, n):
    g = rng.gamma(1 / nu, 1.0, n) ** (1 / nu)
    return (g * rng.choice([-1.0, 1.0], n)).astype(np.float32)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=float_arrays(), rel=st.sampled_from([4.0, 1.0, 0.25, 1 / 16]), c=st.sampled_from([0.05, 0.12, 1.0, 50.0]))
def test_rel_step_bound_is_one_step(x, rel, c):
    """rel_step with RDOQ: every element within one step (plus the dtype's half-ulp) and within the
    max_abs_error the file records; the decoder reads the file as any other."""
    blob = bslcodec.save({"t": x}, rel_step=rel, rdoq=c, lossless=())
    back = bslcodec.load(blob)["t"]
    assert back.dtype == x.dtype and back.shape == x.shape
    with _open(blob) as f:
        e = f.entries()[0]
        if e.codec in ("eg", "ans"):
            step = e.params["step"]
            rel_ulp, ab = quant.ROUNDING[e.dtype]
            xs = x.astype(np.float64).reshape(-1)
            err = _err(back.reshape(-1), xs)
            assert np.all(err <= step + rel_ulp * (2 * np.abs(xs) + err) + ab)
            assert err.max() <= e.params["max_abs_error"]
            assert json.loads(f.metadata()["bslcodec.settings"])["rdoq"] == c
        else:
            assert back.tobytes() == x.tobytes()


class _open:
    """safe_open on bytes, through a temporary file."""

    def __init__(self, blob):
        import tempfile

        self.tmp = tempfile.NamedTemporaryFile(suffix=".bsl", delete=False)
        self.tmp.write(blob)
        self.tmp.close()

    def __enter__(self):
        self.f = bslcodec.safe_open(self.tmp.name)
        return self.f.__enter__()

    def __exit__(self, *a):
        import os

        self.f.__exit__(*a)
        os.unlink(self.tmp.name)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=float_arrays(), e=st.sampled_from([1e-4, 1e-2, 0.3]), c=st.sampled_from([0.12, 5.0, 1e6]))
def test_max_error_bound_holds_exactly_with_rdoq(x, e, c):
    back = bslcodec.load(bslcodec.save({"t": x}, max_error=e, rdoq=c))["t"]
    assert np.all(_err(back, x) <= e)


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F64"])
def test_refine_bound_and_direction(dtype):
    """Changed elements move exactly one level toward the center and stay within the bound."""
    rng = np.random.default_rng(3)
    x = _gg(rng, 0.8, 50_000) * 0.02 + 0.001
    npdt = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16, "F64": np.float64}[dtype]
    xd = x.astype(npdt)
    xf = xd.astype(np.float64 if dtype == "F64" else np.float32)
    step = quant.step_for_dtype(0.02 * 0.5, dtype)
    center = 0
    qr = quant.quantize(xf, step, center, dtype)
    r = rdoq.refine(xf, qr.u, step, center, dtype, c=2.0)
    q0, q1 = _levels(qr.u, center), _levels(r.u, center)
    ch = q0 != q1
    assert r.n_changed == int(ch.sum()) > 0
    assert np.all(np.abs(q1[ch] - center) == np.abs(q0[ch] - center) - 1)
    blob = bslcodec.save({"t": xd.reshape(500, 100)}, rel_step=0.5, rdoq=2.0, lossless=())
    back = bslcodec.load(blob)["t"].reshape(-1)
    rel_ulp, ab = quant.ROUNDING[dtype]
    with _open(blob) as f:
        s = f.entries()[0].params["step"]
        mae = f.entries()[0].params["max_abs_error"]
    xs = xd.astype(np.float64)
    err = _err(back, xs)
    assert np.all(err <= s + rel_ulp * (2 * np.abs(xs) + err) + ab)
    assert err.max() <= mae


def test_strict_bound_in_refine():
    """With a strict bound, no element is moved beyond it, however large λ is."""
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, 100_000).astype(np.float32)
    step = quant.step_for_dtype(0.3, "F32")
    qr = quant.quantize(x, step, 0, "F32")
    for bound in (0.15, 0.2, 0.29):
        r = rdoq.refine(x, qr.u, step, 0, "F32", c=1e9, bound=bound, strict=True)
        xh = (_levels(r.u).astype(np.float32) * np.float32(step)).astype(np.float64)
        assert np.all(np.abs(xh - x) <= bound)
        assert r.max_error == np.abs(xh - x).max()


def test_deterministic_across_threads():
    import numba

    rng = np.random.default_rng(5)
    t = {"a": rng.laplace(0, 0.02, (700, 300)).astype(np.float32)}
    ref = bslcodec.save(t, rel_step=0.3, rdoq=0.12)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert bslcodec.save(t, rel_step=0.3, rdoq=0.12) == ref
    finally:
        numba.set_num_threads(old)
    assert bslcodec.save(t, rel_step=0.3, rdoq=0.12) == ref
    assert bslcodec.save(t, rel_step=0.3, rdoq=0) != ref


@pytest.mark.parametrize("nu", [0.6, 1.0, 2.0])
@pytest.mark.parametrize("rel", [1.0, 0.25, 1 / 16])
def test_not_worse_than_plain_on_gg(nu, rel):
    """On GG data RDOQ does not lose: at its own error it needs no more bits than plain rounding does
    (plain interpolated, linear in log error, between steps around it; 0.2 % slack for the interpolation)."""
    rng = np.random.default_rng(int(nu * 10))
    x = _gg(rng, nu, 1 << 16)
    x /= x.std()

    def point(step, c):
        qr = quant.quantize(x, step, 0, "F32")
        u = rdoq.refine(x, qr.u, step, 0, "F32", c=c).u if c else qr.u
        bits = 8 * len(rans.encode(u, codec.ANS_LANE_SYMBOLS, rans.build_model(u)[0])) / x.size
        xh = (_levels(u).astype(np.float32) * np.float32(step)).astype(np.float64)
        return bits, float(np.linalg.norm(xh - x))

    step = quant.step_for_dtype(rel, "F32")
    b1, e1 = point(step, rdoq.DEFAULT_C)
    plain = np.array([point(quant.step_for_dtype(step * 2.0 ** (k / 8), "F32"), 0) for k in range(-1, 5)])
    o = np.argsort(plain[:, 1])
    le = np.log(plain[o, 1])
    assert le[0] <= np.log(e1) <= le[-1]
    plain_at_e1 = np.interp(np.log(e1), le, plain[o, 0])  # bits of plain rounding at RDOQ's error
    assert b1 <= plain_at_e1 * 1.002


def test_rdoq_argument_checks():
    x = {"w": np.ones((300, 300), np.float32)}
    for bad in (-1.0, float("nan"), float("inf"), "yes"):
        with pytest.raises(EncodeError):
            bslcodec.save(x, rel_step=0.1, rdoq=bad)
    assert codec.Settings(rel_step=0.1, rdoq=True).rdoq == rdoq.DEFAULT_C
    assert codec.Settings(rel_step=0.1, rdoq=False).rdoq == 0.0
    assert codec.Settings(max_error=0.1).rdoq == 0.0  # never on by default with max_error=
    assert codec.Settings(rel_step=0.1).rdoq == (rdoq.DEFAULT_C if rdoq.DEFAULT_ON else 0.0)


def test_bits_with_rdoq_meets_target():
    rng = np.random.default_rng(6)
    t = {f"w{i}": rng.laplace(0, 0.02, (256, 512)).astype(np.float32) for i in range(3)}
    n = sum(v.size for v in t.values())
    for b in (2.0, 4.0):
        blob = bslcodec.save(t, bits=b, rdoq=0.12)
        assert abs(8 * len(blob) / n - b) <= 0.02 * b


def test_cli_encode_and_verify_with_rdoq(tmp_path):
    from click.testing import CliRunner
    from safetensors.numpy import save_file

    from bslcodec.cli import main

    rng = np.random.default_rng(7)
    src = tmp_path / "m.safetensors"
    save_file({"w": rng.laplace(0, 0.02, (400, 300)).astype(np.float32)}, str(src))
    out = tmp_path / "m.bsl"
    r = CliRunner().invoke(main, ["encode", str(src), str(out), "--rel-step", "0.5", "--rdoq", "0.5", "-q"])
    assert r.exit_code == 0, r.output
    with bslcodec.safe_open(out) as f:
        assert json.loads(f.metadata()["bslcodec.settings"])["rdoq"] == 0.5
    r = CliRunner().invoke(main, ["verify", str(out), "--against", str(src)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["encode", str(src), str(tmp_path / "bad.bsl"), "--rdoq", "-1"])
    assert r.exit_code != 0
