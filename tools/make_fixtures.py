"""Write the golden v1 fixtures: small real .bsl files plus the inputs and the decoded values they hold.

Run from the repository root: ``python tools/make_fixtures.py``. Every later version must still decode
these files to exactly the stored values (tests/test_fixtures.py). Re-run only for a deliberate format or
encoder change, and say so in the commit.

``python tools/make_fixtures.py alloc`` writes only the files of the equal-slope allocation (``bits=`` and
the default) in ``fixtures/v1/alloc/``. ``python tools/make_fixtures.py dq`` writes only the ``ans-dq`` (format 1.1) files in ``fixtures/v1/dq/``
(tests/test_dq.py), from the same inputs.

``python tools/make_fixtures.py compact`` writes only ``fixtures/v1/compact/``: files of 40 tensors (a small
conv net with BatchNorm) whose header is over 4 KiB, so the writer stores it zstd-compressed (spec 2.1,
.bsl 1.2), with their inputs (``inputs.npz``) and decoded values.

``python tools/make_fixtures.py paths`` writes only ``fixtures/v1/paths/`` (issue 20): one file per decoder
path a porter must get right, each with its decoded values (``<name>.expected.npz``, checked against the
plain-Python references here before it is written) and ``manifest.json`` saying what each tensor covers:
multi-group ``eg``/``ans``/``ans-dq`` tensors (short last groups, lanes without elements), an ``ans`` symbol
with more than 16 raw bits (phase 3), ``fexp`` for every float dtype and every ``m`` corner (``F64`` with
``m = 4``), ``zstd`` with several chunks with and without shuffle, and every integer dtype. The lossy and
fexp payloads come from the library's own encoders; the multi-chunk zstd payloads are built here (the
writer's chunks are 4 MiB) following spec 4.2.
"""

import json
import pathlib
import sys

import ml_dtypes
import numpy as np
import zstandard

import bslcodec
from bslcodec.codecs import fexp, fexp_ref, golomb_ref, rans_ref
from bslcodec.container.dtypes import dtype_name, itemsize
from bslcodec.container.format import Entry, checksum
from bslcodec.files.api import _Source
from bslcodec.files.writers import write_bsl
from bslcodec.quantize import dq

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "v1"


def inputs() -> dict:
    rng = np.random.default_rng(20261125)
    w = rng.laplace(0, 0.02, (96, 80)).astype(np.float32)
    return {
        "layer.weight": w,
        "layer.bias": rng.normal(0, 0.1, 80).astype(np.float32),
        "emb.bf16": rng.normal(0, 1, (64, 70)).astype(ml_dtypes.bfloat16),
        "proj.f16": rng.normal(0, 0.5, (50, 33)).astype(np.float16),
        "proj.f64": rng.normal(0, 3, (20, 41)),
        "norm.weight": (1 + rng.normal(0, 0.01, (40, 40))).astype(np.float32),
        "ids": np.arange(-50, 50, dtype=np.int64),
        "mask": rng.random((7, 9)) > 0.5,
        "u8": rng.integers(0, 255, (5, 5), dtype=np.uint8),
        "scalar": np.float32(0.125),
        "empty": np.zeros((0, 3), np.float32),
    }


# The .bsl 1.0 files: plain rounding, the default when they were made (dq became the default later)
FILES = {
    "default": {"expert": {"quantizer": "uniform"}},
    "max_error": {"max_error": 1e-3},
    "rel_step": {"expert": {"rel_step": 0.25, "quantizer": "uniform"}},
    "bits5": {"bits": 5.0, "expert": {"quantizer": "uniform"}},
}


# Dependent quantization (codec ans-dq, .bsl 1.1): the same inputs, in fixtures/v1/dq/
DQ_FILES = {
    "dq_rel_step": {"expert": {"quantizer": "dq", "rel_step": 0.25}},
    "dq_max_error": {"max_error": 1e-3, "expert": {"quantizer": "dq"}},
}


def _write(out: pathlib.Path, files: dict, src: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, kw in files.items():
        path = out / f"{name}.bsl"
        bslcodec.save_file(src, path, metadata={"fixture": name}, **kw)
        dec = bslcodec.load_file(path)
        np.savez(out / f"{name}.expected.npz",
                 **{k: (v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v) for k, v in dec.items()})
        print(f"{path.name}: {path.stat().st_size} bytes")


# The equal-slope allocation (bits= and the default since issue 17): fixtures/v1/alloc/
ALLOC_FILES = {"alloc_default": {}, "alloc_bits5": {"bits": 5.0}}


def write_alloc() -> None:
    """The allocation fixtures only."""
    _write(OUT / "alloc", ALLOC_FILES, inputs())


def write_dq() -> None:
    """The ans-dq fixtures only (the v1.0 files and inputs.npz are left as they are)."""
    _write(OUT / "dq", DQ_FILES, inputs())


# Compressed headers (.bsl 1.2, spec 2.1): a header over 4 KiB, fixtures/v1/compact/
COMPACT_FILES = {"compact_default": {}, "compact_max_error": {"max_error": 1e-3}}


def compact_inputs() -> dict:
    """8 pointwise conv + BatchNorm blocks (5 tensors each): 40 tensors, a 7 KB JSON header."""
    rng = np.random.default_rng(20261206)
    out, cin = {}, 3
    for i, cout in enumerate((8, 8, 12, 12, 16, 16, 20, 20)):
        out[f"features.{i}.conv.weight"] = rng.normal(0, (2 / cin) ** 0.5, (cout, cin, 1, 1)).astype(np.float32)
        out[f"features.{i}.bn.weight"] = rng.normal(1, 0.2, cout).astype(np.float32)
        out[f"features.{i}.bn.bias"] = rng.normal(0, 0.2, cout).astype(np.float32)
        out[f"features.{i}.bn.running_mean"] = rng.normal(0, 0.5, cout).astype(np.float32)
        var = rng.gamma(2, 0.5, cout).astype(np.float32)
        var[0] = 0.0  # a dead channel
        out[f"features.{i}.bn.running_var"] = var
        cin = cout
    return out


def write_compact() -> None:
    """The compressed-header fixtures only."""
    src = compact_inputs()
    (OUT / "compact").mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "compact" / "inputs.npz", **src)
    _write(OUT / "compact", COMPACT_FILES, src)
    for name in COMPACT_FILES:
        src_ = _Source(path=OUT / "compact" / f"{name}.bsl")
        assert src_.index.flags == 1 and src_.index.minor == 2, name  # the header is stored compressed
        src_.close()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    src = inputs()
    np.savez(OUT / "inputs.npz", **{k: (v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v)
                                    for k, v in src.items()})
    _write(OUT, FILES, src)


# ---------------------------------------------------------------- fixtures/v1/paths

def _bits(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1).view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def _one(name: str, x: np.ndarray, max_error=None, **expert) -> tuple:
    """(entry, payload) of ``x`` as the library's writer codes it with ``max_error`` and ``expert``."""
    src = _Source(data=bslcodec.save({name: x}, max_error=max_error, expert=expert))
    e = src.entry(name)
    assert e.codec == ("ans-dq" if expert.get("quantizer") == "dq" else expert.get("codec")), (name, e.codec)
    return Entry(e.name, e.dtype, e.shape, e.codec, e.params), bytes(src.payload(e))


def _zstd(name: str, x: np.ndarray, chunk: int, shuffle: bool) -> tuple:
    """A zstd payload (spec 4.2) with ``chunk`` elements a chunk: one frame each, content size declared."""
    raw = np.ascontiguousarray(x).reshape(-1).view(np.uint8)
    isz, n = x.dtype.itemsize, x.size
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
    frames = []
    for a in range(0, n, chunk):
        b = raw[a * isz:min(n, a + chunk) * isz]
        if shuffle:
            b = b.reshape(-1, isz).T.reshape(-1)
        frames.append(cctx.compress(np.ascontiguousarray(b).tobytes()))
    head = np.array([len(frames)] + [len(f) for f in frames], "<u4").tobytes()
    return (Entry(name, dtype_name(x.dtype), x.shape, "zstd", {"chunk_elems": chunk, "shuffle": shuffle}),
            head + b"".join(frames))


def _fexp(name: str, x: np.ndarray, s: int, m: int) -> tuple:
    params, payload = fexp.encode(x, s, m)
    return Entry(name, dtype_name(x.dtype), x.shape, "fexp", params), bytes(payload)


def _raw(name: str, x: np.ndarray) -> tuple:
    return Entry(name, dtype_name(x.dtype), x.shape, "raw", {}), np.ascontiguousarray(x).tobytes()


def _reference(e: Entry, payload: bytes) -> np.ndarray:
    """The decoded element bits of a tensor by the plain-Python references (spec 4), flat."""
    n = int(np.prod(e.shape))
    p = e.params
    if e.codec == "fexp":
        return fexp_ref.decode_payload(payload, n, itemsize(e.dtype),
                                       p["lane_symbols"])
    u = (golomb_ref.decode_payload(payload, n, p["lane_symbols"]) if e.codec == "eg" else
         rans_ref.decode_payload(payload, n, p["lane_symbols"])).astype(np.int64)
    d = (u >> 1) ^ -(u & 1)
    q = p["center"] + (dq.levels_ref(d, n, p["lane_symbols"]) if e.codec == "ans-dq" else d)
    if e.dtype == "F64":
        return _bits(q.astype(np.float64) * p["step"])
    y = q.astype(np.float32) * np.float32(p["step"])
    if e.dtype == "F16":
        with np.errstate(over="ignore"):
            y = y.astype(np.float16)
    elif e.dtype == "BF16":
        y = y.astype(ml_dtypes.bfloat16)
    return _bits(y)


def _max_raw_bits(e: Entry, payload: bytes) -> int:
    """The most raw bits any symbol of an ans / ans-dq tensor has (nb(τ) of spec 4.4)."""
    P, s, m = payload[1], payload[2], payload[3]
    u = rans_ref.decode_payload(payload, int(np.prod(e.shape)), e.params["lane_symbols"])
    return max(rans_ref.token_of(int(v), s, m)[1] for v in np.unique(u))


def path_files() -> dict:
    """name -> (list of (entry, payload), {tensor: what it covers})."""
    rng = np.random.default_rng(20261206)
    lossy, cover = [], {}

    def add(lst, item, what):
        lst.append(item)
        cover[item[0].name] = what

    g = rng.laplace(0, 0.02, (3, 11000)).astype(np.float32)  # eg S=512: 3 groups, the last of 265 elements
    add(lossy, _one("eg.f32", g, codec="eg", rel_step=1 / 16, quantizer="uniform"),
        "eg, 3 groups (last short: 265 elements)")
    h = rng.normal(0, 1, (2, 8192 + 10)).astype(np.float16)  # eg: last group of 20 elements, lanes 20..31 empty
    add(lossy, _one("eg.f16.lanes_without_elements", h, codec="eg", rel_step=1 / 8, quantizer="uniform"),
        "eg F16, 2 groups, last group 20 elements (12 empty lanes)")
    b = rng.normal(0, 1, (1, 32768 + 15)).astype(ml_dtypes.bfloat16)  # ans S=1024: 2 groups, last of 15
    add(lossy, _one("ans.bf16", b, codec="ans", rel_step=1 / 32, quantizer="uniform"),
        "ans BF16, 2 groups (last 15 elements: 15 active lanes)")
    d = rng.normal(0, 2, (1, 32768 + 40))
    add(lossy, _one("ans.f64", d, codec="ans", rel_step=1 / 64, quantizer="uniform"), "ans F64, 2 groups (last 40)")
    o = rng.normal(0, 1, (2, 16400)).astype(np.float32)
    o[0, 5], o[1, 7], o[1, 16399] = 2e5, -2.5e5, 1.5e5  # step 0.1: u ~ 2^21.3..2^22.3, 17+ raw bits
    add(lossy, _one("ans.f32.phase3", o, codec="ans", max_error=0.05),
        "ans, 2 groups (last 32), symbols with more than 16 raw bits (phase 3)")
    q = rng.laplace(0, 0.05, (1, 32768 + 99)).astype(np.float32)
    add(lossy, _one("ansdq.f32", q, rel_step=1 / 16, quantizer="dq"), "ans-dq, 2 groups (last 99 elements)")
    r = rng.normal(0, 1, (1, 32768 + 14)).astype(np.float16)
    add(lossy, _one("ansdq.f16", r, rel_step=1 / 8, quantizer="dq"), "ans-dq F16, 2 groups (last 14)")
    t = rng.normal(0, 1, (2, 16390)).astype(ml_dtypes.bfloat16)
    add(lossy, _one("ansdq.bf16", t, rel_step=1 / 4, quantizer="dq"), "ans-dq BF16, 2 groups (last 12)")
    v = rng.normal(0, 1, (2, 16390)).astype(np.float32)
    v[0, 3], v[1, 16389] = 1e5, -1.2e5  # step 0.033: index ~ 1.5e6, u ~ 2^21.5: 17+ raw bits
    add(lossy, _one("ansdq.f32.phase3", v, max_error=0.05, quantizer="dq"),
        "ans-dq, 2 groups (last 12), symbols with more than 16 raw bits (phase 3)")

    lossless = []
    f32 = rng.normal(0, 1, 5000).astype(np.float32)
    add(lossless, _fexp("fexp.f32.m3", f32, 32, 3), "fexp F32 m=3, 5 groups")
    add(lossless, _fexp("fexp.bf16.m0", rng.normal(0, 1, 2500).astype(ml_dtypes.bfloat16), 16, 0),
        "fexp BF16 m=0, 5 groups")
    f16 = rng.normal(0, 1, 2100).astype(np.float16)
    f16[:4] = [np.inf, -np.inf, np.nan, -0.0]
    f16[4:8] = np.array([1, 2, 3, 0x8001], np.uint16).view(np.float16)  # subnormals
    add(lossless, _fexp("fexp.f16.m2", f16, 16, 2), "fexp F16 m=2, 5 groups, inf/nan/-0/subnormals")
    f64 = rng.normal(0, 1, 2200) * np.exp(rng.normal(0, 20, 2200))
    add(lossless, _fexp("fexp.f64.m4", f64, 16, 4), "fexp F64 m=4 (11 exponent bits + 1 mantissa bit), 5 groups")
    add(lossless, _fexp("fexp.f64.m0", f64[:1100], 16, 0), "fexp F64 m=0 (8 leading exponent bits), 3 groups")
    ints = {"i8": rng.integers(-128, 128, 600, dtype=np.int8), "i16": rng.integers(-300, 300, 600, dtype=np.int16),
            "i32": rng.integers(-2**31, 2**31, 600, dtype=np.int32), "u16": rng.integers(0, 2**16, 600, np.uint16),
            "u32": rng.integers(0, 1000, 600, np.uint32), "u64": rng.integers(0, 2**64 - 1, 600, np.uint64,
                                                                              endpoint=True),
            "i64": rng.integers(-5, 5, 600, np.int64), "u8": rng.integers(0, 256, 600, np.uint8),
            "bool": rng.random(600) > 0.3}
    for k, v in ints.items():
        add(lossless, _raw(f"raw.{k}", v.reshape(20, 30)), f"raw {k}")
        add(lossless, _zstd(f"zstd.shuffle.{k}", v.reshape(20, 30), 140, True),
            f"zstd {k}, 5 chunks of 140 elements (last 40), shuffle")
        add(lossless, _zstd(f"zstd.plain.{k}", v.reshape(600), 256, False),
            f"zstd {k}, 3 chunks of 256 (last 88), no shuffle")
    add(lossless, _zstd("zstd.shuffle.f32", f32.reshape(50, 100), 1000, True), "zstd F32, 5 chunks, shuffle")
    add(lossless, _zstd("zstd.plain.bf16", rng.normal(0, 1, 1000).astype(ml_dtypes.bfloat16), 199, False),
        "zstd BF16, 6 chunks (last 5), no shuffle")
    add(lossless, _zstd("zstd.one_elem_chunks.u8", np.arange(5, dtype=np.uint8), 1, True), "zstd, 5 chunks of 1")
    return {"lossy_groups": lossy, "lossless_paths": lossless}, cover


def write_paths() -> None:
    out = OUT / "paths"
    out.mkdir(parents=True, exist_ok=True)
    files, cover = path_files()
    manifest = {}
    for fname, items in files.items():
        items = sorted(items, key=lambda it: it[0].name)
        entries, payloads = [it[0] for it in items], [it[1] for it in items]
        for e, p in zip(entries, payloads):
            e.checksum = checksum(p)
        path = out / f"{fname}.bsl"
        write_bsl(path, entries, payloads, {"fixture": fname})
        dec = bslcodec.load_file(path)
        for e, p in zip(entries, payloads):
            got = dec[e.name]
            assert got.shape == tuple(e.shape), e.name
            if e.codec in ("raw", "zstd"):
                continue
            assert np.array_equal(_bits(got), _reference(e, p)), f"{e.name}: decoder and reference differ"
        for e, p in zip(entries, payloads):
            if e.codec in ("ans", "ans-dq"):
                nb = _max_raw_bits(e, p)
                assert nb > 16 or "phase3" not in e.name, (e.name, nb)
                cover[e.name] += f" [max raw bits {nb}]"
        np.savez_compressed(out / f"{fname}.expected.npz",
                            **{k: (v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v) for k, v in dec.items()})
        manifest[fname] = {e.name: {"codec": e.codec, "dtype": e.dtype, "covers": cover[e.name]} for e in entries}
        print(f"{path.name}: {path.stat().st_size} bytes, {len(entries)} tensors")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["dq"]:
        write_dq()
    elif sys.argv[1:] == ["paths"]:
        write_paths()
    elif sys.argv[1:] == ["alloc"]:
        write_alloc()
    elif sys.argv[1:] == ["compact"]:
        write_compact()
    else:
        main()
        write_dq()
        write_paths()
        write_compact()
