"""Golden fixtures: files written by v1 must keep decoding to exactly the same values."""

import pathlib

import ml_dtypes
import numpy as np
import pytest

import bslcodec

FIX = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "v1"
NAMES = ["default", "max_error", "rel_step", "bits5"]
# The .bsl 1.0 files were written before dependent quantization became the default: plain rounding
# (quantizer="uniform", which the settings metadata does not record, so the bytes are the same).
U = {"quantizer": "uniform"}
KWARGS = {"default": U, "max_error": {"max_error": 1e-3}, "rel_step": {"rel_step": 0.25, **U},
          "bits5": {"bits": 5.0, **U}}
DQ = {"dq_rel_step": {"quantizer": "dq", "rel_step": 0.25}, "dq_max_error": {"quantizer": "dq", "max_error": 1e-3}}


def _load_npz(path, like):
    with np.load(path, allow_pickle=False) as z:
        return {k: (z[k].view(ml_dtypes.bfloat16) if like.get(k) == "BF16" else z[k]) for k in z.files}


@pytest.mark.parametrize("name", NAMES)
def test_fixture_decodes_to_expected_values(name):
    path = FIX / f"{name}.bsl"
    with bslcodec.safe_open(path) as f:
        dtypes = {e.name: e.dtype for e in f.entries()}
        meta = f.metadata()
        assert meta["fixture"] == name and "bslcodec.settings" in meta
    expected = _load_npz(FIX / f"{name}.expected.npz", dtypes)
    got = bslcodec.load_file(path)
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert got[k].tobytes() == v.tobytes(), k


@pytest.mark.parametrize("name", NAMES)
def test_encoder_output_is_unchanged(name):
    """Golden bytes: the encoder still writes exactly these files (determinism across runs/machines)."""
    with bslcodec.safe_open(FIX / "default.bsl") as f:
        dtypes = {e.name: e.dtype for e in f.entries()}
    inputs = _load_npz(FIX / "inputs.npz", dtypes)
    inputs["scalar"] = inputs["scalar"].reshape(())
    blob = bslcodec.save(inputs, metadata={"fixture": name}, **KWARGS[name])
    assert blob == (FIX / f"{name}.bsl").read_bytes()


@pytest.mark.parametrize("name", sorted(DQ))
def test_dq_encoder_output_is_unchanged(name):
    """Golden bytes of the ans-dq files (fixtures/v1/dq): the trellis is deterministic across runs,
    machines and thread counts."""
    with bslcodec.safe_open(FIX / "default.bsl") as f:
        dtypes = {e.name: e.dtype for e in f.entries()}
    inputs = _load_npz(FIX / "inputs.npz", dtypes)
    inputs["scalar"] = inputs["scalar"].reshape(())
    blob = bslcodec.save(inputs, metadata={"fixture": name}, **DQ[name])
    assert blob == (FIX / "dq" / f"{name}.bsl").read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_lossy_tensors_meet_their_bounds(name):
    with bslcodec.safe_open(FIX / name.__add__(".bsl")) as f:
        dtypes = {e.name: e.dtype for e in f.entries()}
        inputs = _load_npz(FIX / "inputs.npz", dtypes)
        for e in f.entries():
            if e.codec in ("eg", "ans"):
                got = f.get_tensor(e.name).astype(np.float64)
                err = np.abs(got - inputs[e.name].astype(np.float64)).max()
                assert err <= e.params["max_abs_error"]
                if name == "max_error":
                    assert err <= 1e-3
