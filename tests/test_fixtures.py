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
ALLOC = {"alloc_default": {}, "alloc_bits5": {"bits": 5.0}}  # fixtures/v1/alloc (tools/make_fixtures.py alloc)
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


# The v1.0 "default" and "bits5" files predate the equal-slope allocation (bits= and the default since
# issue 17): the relative step that wrote them still writes the same payloads.
REL_STEP_OF = {"default": 1 / 64, "bits5": None}  # None: the rel_step recorded in the file


def _inputs():
    with bslcodec.safe_open(FIX / "default.bsl") as f:
        dtypes = {e.name: e.dtype for e in f.entries()}
    inputs = _load_npz(FIX / "inputs.npz", dtypes)
    inputs["scalar"] = inputs["scalar"].reshape(())
    return inputs


@pytest.mark.parametrize("name", NAMES)
def test_encoder_output_is_unchanged(name, tmp_path):
    """Golden bytes: the encoder still writes exactly these files (determinism across runs/machines)."""
    inputs = _inputs()
    if name not in REL_STEP_OF:
        blob = bslcodec.save(inputs, metadata={"fixture": name}, **KWARGS[name])
        assert blob == (FIX / f"{name}.bsl").read_bytes()
        return
    import json

    with bslcodec.safe_open(FIX / f"{name}.bsl") as f:
        old = {e.name: (e.codec, e.params, f.get_tensor(e.name).tobytes()) for e in f.entries()}
        rel = REL_STEP_OF[name] or json.loads(f.metadata()["bslcodec.settings"])["rel_step"]
    bslcodec.save_file(inputs, tmp_path / "new.bsl", rel_step=rel, **U)
    with bslcodec.safe_open(tmp_path / "new.bsl") as f:
        new = {e.name: (e.codec, e.params, f.get_tensor(e.name).tobytes()) for e in f.entries()}
    assert new == old


@pytest.mark.parametrize("name", sorted(ALLOC))
def test_allocation_encoder_output_is_unchanged(name):
    """Golden bytes of files written with the equal-slope allocation (fixtures/v1/alloc)."""
    blob = bslcodec.save(_inputs(), metadata={"fixture": name}, **ALLOC[name])
    assert blob == (FIX / "alloc" / f"{name}.bsl").read_bytes()
    expected = _load_npz(FIX / "alloc" / f"{name}.expected.npz", {"emb.bf16": "BF16"})
    got = bslcodec.load(blob)
    for k, v in expected.items():
        assert got[k].tobytes() == v.tobytes(), k


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


# ---------------------------------------------------------------- fixtures/v1/paths: one file per decoder path

PATHS = FIX / "paths"
PATH_MANIFEST = __import__("json").loads((PATHS / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(PATH_MANIFEST))
def test_path_fixture_decodes_to_expected_values(name):
    path = PATHS / f"{name}.bsl"
    with bslcodec.safe_open(path) as f:
        entries = {e.name: e for e in f.entries()}
    assert {k: (e.codec, e.dtype) for k, e in entries.items()} == \
        {k: (v["codec"], v["dtype"]) for k, v in PATH_MANIFEST[name].items()}
    expected = _load_npz(PATHS / f"{name}.expected.npz", {k: e.dtype for k, e in entries.items()})
    got = bslcodec.load_file(path)
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert got[k].tobytes() == v.tobytes(), k
    with bslcodec.safe_open(path) as f:  # slices decode only their groups / chunks: same values
        for k, v in expected.items():
            if v.ndim == 2 and v.shape[0] > 1:
                assert f.get_slice(k)[1:].tobytes() == v[1:].tobytes(), k


def test_path_fixtures_cover_every_path():
    """What issue 20 asks the fixtures to cover is really in them (so a regeneration cannot drop it)."""
    import sys
    sys.path.insert(0, str(FIX.parent.parent / "tools"))
    import make_fixtures as mf

    from bslcodec.codecs import rans_ref
    from bslcodec.container.dtypes import FLOAT_NAMES
    from bslcodec.files.api import _Source
    seen = set()
    for name in PATH_MANIFEST:
        src = _Source(path=str(PATHS / f"{name}.bsl"))
        for e in src.entries.values():
            n, p = int(np.prod(e.shape)), e.params
            if e.codec in ("eg", "ans", "ans-dq", "fexp"):
                groups = -(-n // (32 * p["lane_symbols"]))
                assert groups >= 2, e.name
                seen.add((e.codec, "multi-group"))
                seen.add((e.codec, e.dtype))
                if n % (32 * p["lane_symbols"]) < 32:
                    seen.add((e.codec, "lanes without elements"))
            if e.codec == "fexp":
                payload = bytes(src.payload(e))
                seen.add(("fexp", e.dtype, payload[0]))  # m
                assert np.array_equal(mf._reference(e, payload), mf._bits(bslcodec.load_file(PATHS / f"{name}.bsl")[e.name]))
            if e.codec in ("ans", "ans-dq") and "phase3" in e.name:
                payload = bytes(src.payload(e))
                u = rans_ref.decode_payload(payload, n, p["lane_symbols"])
                nb = max(rans_ref.token_of(int(v), payload[2], payload[3])[1] for v in np.unique(u))
                assert nb > 16, e.name
                seen.add((e.codec, "phase 3"))
            if e.codec == "zstd":
                assert -(-n // p["chunk_elems"]) >= 3, e.name
                seen.add(("zstd", p["shuffle"]))
            if e.codec in ("raw", "zstd"):
                seen.add((e.codec, e.dtype))
    for codec in ("eg", "ans", "ans-dq", "fexp"):
        assert (codec, "multi-group") in seen
    assert ("eg", "lanes without elements") in seen and ("ans", "phase 3") in seen and ("ans-dq", "phase 3") in seen
    assert ("zstd", True) in seen and ("zstd", False) in seen
    assert all(("fexp", d) in seen for d in FLOAT_NAMES)
    assert ("fexp", "F64", 4) in seen and ("fexp", "F64", 0) in seen
    for d in ("I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"):
        assert ("raw", d) in seen and ("zstd", d) in seen, d


# ---------------------------------------------------------------- fixtures/v1/compact: compressed headers (1.2)

COMPACT = {"compact_default": {}, "compact_max_error": {"max_error": 1e-3}}  # tools/make_fixtures.py compact


def _compact_inputs():
    with np.load(FIX / "compact" / "inputs.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", sorted(COMPACT))
def test_compact_header_fixture(name):
    """A header over 4 KiB is stored as a zstd frame (spec 2.1, .bsl 1.2): the file decodes to its stored
    values, and the encoder still writes exactly these bytes."""
    import struct

    import zstandard

    path = FIX / "compact" / f"{name}.bsl"
    data = path.read_bytes()
    minor, flags, hlen = struct.unpack_from("<HIQ", data, 10)
    assert (minor, flags) == (2, 1)
    jlen, flen = struct.unpack_from("<QQ", data, 32)  # the header region, read without the library
    text = zstandard.ZstdDecompressor().decompress(data[48:48 + flen], max_output_size=jlen)
    assert len(text) == jlen and not any(data[48 + flen:32 + hlen]) and (32 + hlen) % 64 == 0
    doc = __import__("json").loads(text)
    assert doc["metadata"]["fixture"] == name and len(doc["tensors"]) == 40
    expected = _load_npz(FIX / "compact" / f"{name}.expected.npz", {})
    got = bslcodec.load_file(path)
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert got[k].tobytes() == v.tobytes(), k
    assert bslcodec.save(_compact_inputs(), metadata={"fixture": name}, **COMPACT[name]) == data
