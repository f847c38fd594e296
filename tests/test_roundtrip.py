"""Round trips through the public API: exactness, error bounds, determinism, slices, rate control."""


import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bslcodec
from bslcodec.quantize.quant import ROUNDING
from tests.strategies import float_arrays, int_arrays

BF16 = np.dtype(ml_dtypes.bfloat16)


def _f64(a):
    return np.asarray(a).astype(np.float64)


def _entry(blob, name):
    return bslcodec.files.api._Source(data=blob).entry(name)


@settings(max_examples=80, deadline=None)
@given(int_arrays())
def test_integers_and_bools_are_exact(arr):
    blob = bslcodec.save({"t": arr})
    back = bslcodec.load(blob)["t"]
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


@settings(max_examples=80, deadline=None)
@given(float_arrays())
def test_lossless_pattern_is_bit_exact(arr):
    back = bslcodec.load(bslcodec.save({"w": arr}, lossless=["w"]))["w"]
    assert back.dtype == arr.dtype and back.tobytes() == arr.tobytes()


@settings(max_examples=120, deadline=None)
@given(arr=float_arrays(), e=st.sampled_from([1e-5, 1e-3, 0.05, 3.0]))
def test_max_error_is_a_hard_bound(arr, e):
    blob = bslcodec.save({"w": arr}, max_error=e)
    back = bslcodec.load(blob)["w"]
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.all(np.abs(_f64(back) - _f64(arr)) <= e)
    ent = _entry(blob, "w")
    if ent.codec in ("eg", "ans"):
        assert ent.params["step"] <= 2 * e
        assert np.abs(_f64(back) - _f64(arr)).max(initial=0) <= ent.params["max_abs_error"] + 1e-300


@settings(max_examples=120, deadline=None)
@given(arr=float_arrays(), c=st.sampled_from([1 / 256, 1 / 16, 0.5, 2.0]))
def test_rel_step_bound_is_half_step_plus_output_rounding(arr, c):
    blob = bslcodec.save({"w": arr}, rel_step=c, quantizer="uniform")  # dq's 1.5-step bound: test_dq.py
    back = bslcodec.load(blob)["w"]
    ent = _entry(blob, "w")
    err = np.abs(_f64(back) - _f64(arr))
    if ent.codec in ("eg", "ans"):
        rel, ab = ROUNDING[ent.dtype]
        allowed = ent.params["step"] / 2 + rel * (2 * np.abs(_f64(arr)) + err) + ab
        assert np.all(err <= allowed)
    else:
        assert back.tobytes() == arr.tobytes()


@settings(max_examples=40, deadline=None)
@given(arr=float_arrays(), kw=st.sampled_from([{}, {"max_error": 1e-3}, {"rel_step": 0.1}]))
def test_encoding_is_deterministic(arr, kw):
    assert bslcodec.save({"w": arr, "z": arr.copy()}, **kw) == bslcodec.save({"z": arr, "w": arr}, **kw)


def test_big_tensors_are_lossy_with_small_1d_exact():
    rng = np.random.default_rng(0)
    t = {"w": rng.normal(0, 0.02, (300, 200)).astype(np.float32), "b": rng.normal(size=200).astype(np.float32)}
    blob = bslcodec.save(t, rel_step=1 / 64)  # rel_step: small 1-D tensors stay exact
    assert _entry(blob, "w").codec == "ans-dq" and _entry(blob, "b").codec in ("zstd", "raw", "fexp")
    back = bslcodec.load(blob)
    assert back["b"].tobytes() == t["b"].tobytes()
    # dq with step = 0.575 std/64, so the error is at most 1.5 steps ~ std/74 (+ rounding)
    step = _entry(blob, "w").params["step"]
    assert np.isclose(step, 0.575 * t["w"].std() / 64, rtol=1e-3)
    assert np.abs(back["w"] - t["w"]).max() <= 1.5 * step * (1 + 1e-6)


def test_default_quantizes_small_1d_at_a_fine_step():
    rng = np.random.default_rng(0)
    t = {"w": rng.normal(0, 0.02, (300, 200)).astype(np.float32), "b": rng.normal(size=2000).astype(np.float32),
         "var": rng.uniform(0.5, 2.0, 3000).astype(np.float32), "tiny": np.float32([1.0, 2.0])}
    blob = bslcodec.save(t)
    back = bslcodec.load(blob)
    assert _entry(blob, "w").codec == "ans-dq"
    for name in ("b", "var"):  # plain rounding at std / 256 (positive: min(std, smallest) / 256)
        e = _entry(blob, name)
        assert e.codec in ("eg", "ans") and e.length < 0.5 * t[name].nbytes
        x = t[name].astype(np.float64)
        scale = min(x.std(), x.min()) if x.min() > 0 else x.std()
        assert e.params["step"] <= scale / 256 * (1 + 1e-6)
        assert np.abs(back[name] - x).max() <= scale / 512 * (1 + 1e-5)
    assert back["tiny"].tobytes() == t["tiny"].tobytes()  # where quantizing does not pay: exact


def test_default_fine_step_of_a_variance_with_zeros_follows_its_smallest_positive_value():
    # a BatchNorm running_var with dead channels (EfficientNet-Lite0 has such): a step of std / 256 moved
    # its small variances by up to 14 %, and carried most of the output error at 7.5-8.5 bits/weight
    rng = np.random.default_rng(1)
    var = rng.uniform(0.01, 70.0, 3000).astype(np.float32)
    var[:40] = 0.0
    var[40:45] = 0.02
    t = {"w": rng.normal(0, 0.02, (300, 200)).astype(np.float32), "var": var}
    back = bslcodec.load(bslcodec.save(t))["var"].astype(np.float64)
    assert np.all(back[:40] == 0.0)
    x = var.astype(np.float64)
    assert np.all(np.abs(back[40:] - x[40:]) <= x[40:] / 512 * (1 + 1e-5))  # every element within 0.2 %


def test_nan_in_lossy_tensor_is_a_clear_error():
    w = np.ones((100, 100), np.float32)
    w[3, 4] = np.nan
    with pytest.raises(bslcodec.EncodeError, match="'w'.*NaN"):
        bslcodec.save({"w": w})
    back = bslcodec.load(bslcodec.save({"w": w}, lossless=["w"]))["w"]
    assert back.tobytes() == w.tobytes()


def test_options_are_validated():
    w = np.ones((4, 4), np.float32)
    for kw in ({"max_error": 1e-3, "bits": 4}, {"max_error": -1.0}, {"rel_step": float("nan")}, {"bits": 0}):
        with pytest.raises(bslcodec.EncodeError):
            bslcodec.save({"w": w}, **kw)
    with pytest.raises(bslcodec.EncodeError):
        bslcodec.save({"w": object()})
    with pytest.raises(bslcodec.EncodeError):
        bslcodec.save({"w": w}, metadata={"a": 1})


@pytest.mark.parametrize("bits", [2.0, 4.0, 7.5])
def test_bits_target_is_met_within_two_percent(bits):
    rng = np.random.default_rng(1)
    t = {"a": rng.laplace(0, 0.02, (512, 512)).astype(np.float32),
         "b": rng.normal(0, 1.0, (256, 300)).astype(np.float32),
         "c": rng.normal(size=64).astype(np.float32)}
    blob = bslcodec.save(t, bits=bits)
    got = len(blob) * 8 / sum(v.size for v in t.values())
    assert abs(got - bits) <= 0.02 * bits


def test_bits_out_of_reach_is_a_clear_error():
    t = {"a": np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)}
    with pytest.raises(bslcodec.EncodeError, match="out of reach"):
        bslcodec.save(t, bits=0.01)


def test_torch_tensors_in_and_out():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    t = {"w": torch.randn(64, 128, generator=g).to(torch.bfloat16), "f": torch.randn(40, 50, generator=g).t(),
         "i": torch.arange(10)}
    blob = bslcodec.save(t, max_error=0.01)
    back = bslcodec.load(blob, framework="pt")
    assert back["w"].dtype == torch.bfloat16 and back["f"].shape == (50, 40)
    assert torch.equal(back["i"], t["i"])
    assert (back["f"] - t["f"]).abs().max() <= 0.01
    assert (back["w"].float() - t["w"].float()).abs().max() <= 0.01
    assert _entry(blob, "w").dtype == "BF16"


def test_safe_open_and_slices(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (3000, 70)).astype(np.float32)  # several groups: slices cross group boundaries
    ints = np.arange(3000 * 7).reshape(3000, 7)
    path = tmp_path / "m.bsl"
    bslcodec.save_file({"w": w, "ints": ints}, path, metadata={"who": "test"}, rel_step=0.05)
    full = bslcodec.load_file(path)
    with bslcodec.safe_open(path) as f:
        assert f.keys() == ["ints", "w"] and f.metadata()["who"] == "test"
        sl = f.get_slice("w")
        assert sl.get_shape() == [3000, 70]
        for key in [slice(0, 1), slice(233, 1999), slice(2999, 3000), slice(None, None, 7), 5, -1,
                    (slice(10, 20), slice(3, 9)), slice(100, 50), slice(None, None, -3)]:
            assert np.array_equal(sl[key], full["w"][key]), key
        assert np.array_equal(f.get_slice("ints")[1234:2345], ints[1234:2345])
        assert np.array_equal(f.get_tensor("w"), full["w"])
    assert not list(tmp_path.glob("*.tmp"))


def test_encode_decode_single_tensor():
    x = np.linspace(-1, 1, 10000, dtype=np.float32).reshape(100, 100)
    y = bslcodec.decode(bslcodec.encode(x, max_error=1e-3))
    assert y.shape == x.shape and np.abs(y - x).max() <= 1e-3
    assert bslcodec.decode(bslcodec.encode(x, lossless=True)).tobytes() == x.tobytes()


def test_empty_file_and_empty_tensors():
    blob = bslcodec.save({})
    assert bslcodec.load(blob) == {}
    t = {"e": np.zeros((0, 5), np.float32), "s": np.float64(2.5), "b16": np.zeros((3, 0), BF16)}
    back = bslcodec.load(bslcodec.save(t))
    for k, v in t.items():
        assert back[k].shape == np.shape(v) and back[k].dtype == np.asarray(v).dtype
    assert float(back["s"]) == 2.5


def test_load_file_errors_name_the_file(tmp_path):
    p = tmp_path / "x.bsl"
    p.write_bytes(b"not a bsl file at all, just text" * 3)
    with pytest.raises(bslcodec.FormatError, match="x.bsl"):
        bslcodec.load_file(p)
    with pytest.raises(bslcodec.BslError):
        bslcodec.load_file(tmp_path / "missing.bsl")


@pytest.mark.parametrize("choice", ["eg", "ans", "auto"])
def test_codec_choice(choice):
    w = np.random.default_rng(5).laplace(0, 0.02, (300, 200)).astype(np.float32)
    blob = bslcodec.save({"w": w}, rel_step=1 / 16, codec=choice)
    e = _entry(blob, "w")
    assert e.codec == ("ans-dq" if choice == "auto" else choice)  # auto: dq (a named codec: plain rounding)
    back = bslcodec.load(blob)["w"]
    assert np.abs(back - w).max() <= e.params["step"] * (1.5 if choice == "auto" else 0.5) * (1 + 1e-6)
    with pytest.raises(bslcodec.EncodeError, match="codec="):
        bslcodec.save({"w": w}, codec="zip")


def test_lossless_true_stores_everything_exactly():
    rng = np.random.default_rng(6)
    t = {"w": rng.normal(0, 0.02, (200, 300)).astype(BF16), "f": rng.normal(size=(100, 100)).astype(np.float32)}
    blob = bslcodec.save(t, lossless=True)
    back = bslcodec.load(blob)
    assert all(back[k].tobytes() == v.tobytes() for k, v in t.items())
    assert all(_entry(blob, k).codec in ("fexp", "zstd", "raw") for k in t)
