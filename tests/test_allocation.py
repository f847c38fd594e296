"""Sensitivity-weighted bit allocation and the calibration probe."""

import doctest

import numpy as np
import pytest

import bslcodec
from bslcodec import calibrate


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
