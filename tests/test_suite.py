"""The rate-quality suite harness (tools/suite/) end to end on one tiny real model.

A 1-layer character-level transformer (train_rd.py's CharLM, d=32) is trained for a few seconds on Python's own
documentation text, encoded at several settings, decoded, run, and reported. Checks real properties: file
sizes, the error bound of ``max_error=``, quality that rises as the step shrinks, interpolation, the report.
"""

import json
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools", "suite"), os.path.join(ROOT, "tools", "bench"), os.path.join(ROOT, "tools")]

import harness  # noqa: E402
import models  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return models.charlm(models.CHARLM_TINY, n_windows=16, cache=str(tmp_path_factory.mktemp("suite")))


def test_tiny_model_is_real(tiny):
    assert tiny.n_weights == sum(v.size for v in tiny.weights.values()) > 10_000
    assert all(v.dtype == np.float32 for v in tiny.weights.values())
    same = tiny.evaluate(tiny.weights)
    assert same["cos"] == pytest.approx(1.0, abs=1e-9) and same["top1"] == 1.0
    assert same["bpc"] == pytest.approx(tiny.reference["bpc"], rel=1e-6)
    assert same["bpc"] < math.log2(103)  # trained: better than a uniform guess over the vocabulary


def test_sweep_sizes_bounds_and_monotone_quality(tiny, tmp_path):
    rows = harness.run_model(tiny, families=("nosetting", "default", "max_error"), log=lambda *a: None,
                             max_points=3, quick=True)
    assert {r["family"] for r in rows} == {"nosetting", "default", "max_error"}
    for r in rows:
        assert r["bytes"] > 0 and r["bpw"] == pytest.approx(8 * r["bytes"] / tiny.n_weights)
        assert 0 < r["fixed_bpw"] < r["bpw"]
        assert -1 <= r["metrics"]["cos"] <= 1 + 1e-12
    me = sorted((r for r in rows if r["family"] == "max_error"), key=lambda r: r["k"])
    assert len(me) >= 2
    for r in me:  # max_error= is a guarantee for every weight
        assert r["max_abs_err"] <= r["setting"]["max_error"] * (1 + 1e-6)
    # a finer global step: larger file, smaller error, output closer to the original's
    assert all(a["bpw"] < b["bpw"] and a["rel_l2"] > b["rel_l2"] for a, b in zip(me, me[1:]))
    assert all(a["metrics"]["cos"] < b["metrics"]["cos"] for a, b in zip(me, me[1:]))
    de = sorted((r for r in rows if r["family"] == "default"), key=lambda r: r["k"])
    assert len(de) >= 2 and all(a["bpw"] < b["bpw"] for a, b in zip(de, de[1:]))  # finer rel_step, larger file
    # interpolation sits between the two points it reads from
    lo, hi = me[0], me[-1]
    t = (lo["metrics"]["cos"] + hi["metrics"]["cos"]) / 2
    v = harness.interp(me, t)
    assert lo["bpw"] <= v <= hi["bpw"]
    assert harness.interp(me, 1 - 1e-12) is None
    # the report renders what was measured
    import report

    d = {"meta": {"command": "test", "date": "-", "git_head": "-", "machine": "-", "cpus": 1, "threads": 1,
                  "numpy": "-", "numba": "-", "torch": "-"},
         "models": {"tiny": {"family": tiny.family, "n_weights": tiny.n_weights, "n_tensors": len(tiny.weights),
                             "inputs": tiny.inputs, "rows": rows}}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d))
    report.main(["--json", str(path)])
    md = (tmp_path / "s.md").read_text()
    assert "suite-headline" in md and f"{me[-1]['bpw']:.3f}" in md


def test_sweep_brackets_targets():
    # a synthetic curve: cos = 1 - 2^-(2k) (each knob step a factor 4 in 1 - cos)
    calls = []

    def get(k):
        calls.append(k)
        return {"metrics": {"cos": 1 - 2.0 ** (-2 * k)}}

    pts = harness.sweep(get, 3.0, 1.0, 0.5, 0.0, 20.0, max_points=10)
    cs = [pts[k]["metrics"]["cos"] for k in sorted(pts)]
    assert min(cs) < 0.999 and max(cs) >= 0.9995
    assert len(calls) == len(set(calls)) <= 10


def test_bits_family_hits_its_targets(tiny):
    """The ``bits`` family (the allocation the default uses): each point's file averages its B within 2 %."""
    rows = harness.run_model(tiny, families=("bits",), log=lambda *a: None, max_points=2, quick=True)
    assert len(rows) == 2 and {r["family"] for r in rows} == {"bits"}
    for r in rows:
        assert r["bpw"] == pytest.approx(r["setting"]["bits"], rel=0.02)
    assert rows[0]["bpw"] < rows[1]["bpw"] and rows[0]["rel_l2"] > rows[1]["rel_l2"]
