"""Each CLI option that had no test of its own (issue 20): ``encode --codec/--quantizer/--sensitivity``,
``decode --overwrite/--workers``, ``verify --workers``, and ``recode`` keeping ``ans-dq`` tensors."""

from __future__ import annotations

import json

import numba
import numpy as np
import pytest
from click.testing import CliRunner

import bslcodec
from bslcodec.cli import main

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="CLI tests need safetensors")

LOSSY = ("a.weight", "b.weight", "c.weight")


def run(*args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, (res.stdout, res.stderr)
    return res


def one_line_error(res) -> str:
    assert res.exit_code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bslcodec: error: ") and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = numba.get_num_threads()
    yield
    numba.set_num_threads(n)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    rng = np.random.default_rng(5)
    sd = {"a.weight": rng.normal(0, 0.05, (200, 200)).astype(np.float32),
          "b.weight": rng.normal(0, 0.05, (200, 200)).astype(np.float32),  # same n and spread as a.weight
          "c.weight": rng.laplace(0, 0.02, (120, 300)).astype(np.float32),
          "bias": rng.normal(0, 0.01, 200).astype(np.float32), "ids": np.arange(9)}
    p = tmp_path_factory.mktemp("cli_opts") / "in.safetensors"
    safetensors_numpy.save_file(sd, str(p))
    return p


def codecs(path) -> dict:
    with bslcodec.safe_open(path) as f:
        return {k: f.entry(k).codec for k in f.keys()}


def params(path, name) -> dict:
    with bslcodec.safe_open(path) as f:
        return f.entry(name).params


@pytest.mark.parametrize("args, want", [
    ((), "ans-dq"),                                   # default: quantizer auto -> dq
    (("--codec", "eg"), "eg"), (("--codec", "ans"), "ans"),
    (("--quantizer", "uniform", "--codec", "eg"), "eg"),
    (("--quantizer", "dq"), "ans-dq"), (("--quantizer", "dq", "--codec", "ans"), "ans-dq"),
    (("--max-error", "1e-3", "--codec", "eg"), "eg"),
])
def test_encode_codec_and_quantizer(src, tmp_path, args, want):
    out = tmp_path / "m.bsl"
    run("encode", src, out, "-q", *args)
    c = codecs(out)
    assert {c[k] for k in LOSSY} == {want}
    assert c["ids"] in ("raw", "zstd")
    # the bias (1-D): exact with --max-error, else plain rounding at a fine step (eg, or the named codec)
    assert c["bias"] in (("raw", "zstd", "fexp") if "--max-error" in args else
                         (("ans",) if "ans" in args else ("eg",)))
    if "--quantizer" not in args and "--codec" not in args:
        return
    api = bslcodec.save(safetensors_numpy.load_file(str(src)),
                       codec=args[args.index("--codec") + 1] if "--codec" in args else "auto",
                       quantizer=args[args.index("--quantizer") + 1] if "--quantizer" in args else "auto",
                       **({"max_error": 1e-3} if "--max-error" in args else {}))
    assert bslcodec.load_file(out)["a.weight"].tobytes() == bslcodec.load(api)["a.weight"].tobytes()


def test_encode_quantizer_uniform_with_auto_codec_is_plain_rounding(src, tmp_path):
    out = tmp_path / "u.bsl"
    run("encode", src, out, "-q", "--quantizer", "uniform", "--rel-step", "0.1")
    assert {codecs(out)[k] for k in LOSSY} <= {"eg", "ans"}
    x = safetensors_numpy.load_file(str(src))["a.weight"].astype(np.float64)
    err = np.abs(bslcodec.load_file(out)["a.weight"] - x).max()
    assert err <= params(out, "a.weight")["step"] / 2 * (1 + 1e-6)  # plain rounding: half a step


def test_encode_dq_with_eg_is_refused(src, tmp_path):
    msg = one_line_error(run("encode", src, tmp_path / "m.bsl", "--quantizer", "dq", "--codec", "eg", ok=False))
    assert "eg" in msg and not (tmp_path / "m.bsl").exists()


def test_encode_sensitivity(src, tmp_path):
    """Steps follow sqrt(n/s): a.weight and b.weight have the same n and spread, 100x apart in sensitivity,
    so their steps are 10x apart; the CLI gives what the API gives."""
    sens = {"a.weight": 100.0, "b.weight": 1.0, "c.weight": 3.0}
    sj = tmp_path / "sens.json"
    sj.write_text(json.dumps(sens))
    out = tmp_path / "s.bsl"
    run("encode", src, out, "-q", "--sensitivity", sj, "--rel-step", "0.05")
    ra = params(out, "a.weight")["step"] / params(out, "b.weight")["step"]
    assert abs(ra - 0.1) < 0.01, ra
    api = bslcodec.save(safetensors_numpy.load_file(str(src)), sensitivity=sens, rel_step=0.05)
    assert bslcodec.load_file(out)["c.weight"].tobytes() == bslcodec.load(api)["c.weight"].tobytes()
    plain = tmp_path / "p.bsl"
    run("encode", src, plain, "-q", "--rel-step", "0.05")
    assert abs(params(plain, "a.weight")["step"] / params(plain, "b.weight")["step"] - 1) < 0.05
    bad = tmp_path / "bad.json"
    for text in ("[1, 2]", "{not json", '{"a.weight": "x", "b.weight": 1, "c.weight": 1}'):
        bad.write_text(text)
        one_line_error(run("encode", src, tmp_path / "x.bsl", "--sensitivity", bad, ok=False))
        assert not (tmp_path / "x.bsl").exists()
    one_line_error(run("encode", src, tmp_path / "x.bsl", "--sensitivity", tmp_path / "missing.json", ok=False))


def test_decode_overwrite(src, tmp_path):
    m = tmp_path / "m.bsl"
    run("encode", src, m, "-q")
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    msg = one_line_error(run("decode", m, out, ok=False))
    assert "exists" in msg and out.read_bytes() == b"keep me"
    run("decode", m, out, "--overwrite", "-q")
    back = safetensors_numpy.load_file(str(out))
    want = bslcodec.load_file(m)
    assert sorted(back) == sorted(want) and all(back[k].tobytes() == want[k].tobytes() for k in want)


def test_decode_and_verify_workers(src, tmp_path):
    m = tmp_path / "m.bsl"
    run("encode", src, m, "-q")
    outs = []
    for w in ("1", str(numba.config.NUMBA_NUM_THREADS)):
        o = tmp_path / f"o{w}.safetensors"
        run("decode", m, o, "--workers", w, "-q")
        assert numba.get_num_threads() == int(w)
        outs.append(o.read_bytes())
        r = run("verify", m, "--against", src, "--workers", w)
        assert numba.get_num_threads() == int(w) and "ok" in r.stdout
    assert outs[0] == outs[1]
    for cmd in (("decode", m, tmp_path / "x.safetensors"), ("verify", m)):
        for bad in ("0", str(numba.config.NUMBA_NUM_THREADS + 1)):
            msg = one_line_error(run(*cmd, "--workers", bad, ok=False))
            assert "--workers" in msg
    from bslcodec.files.api import _Source
    src_ = _Source(path=str(m))
    at = src_.index.data_start + src_.entry("a.weight").offset + 100
    src_.close()
    data = bytearray(m.read_bytes())
    data[at] ^= 0xFF  # inside a.weight's payload
    (tmp_path / "bad.bsl").write_bytes(bytes(data))
    r = run("verify", tmp_path / "bad.bsl", "--workers", "1", ok=False)
    assert r.exit_code == 1 and "checksum" in r.stderr


@pytest.mark.parametrize("codec", ["eg", "ans"])
def test_recode_keeps_ans_dq_tensors(src, tmp_path, codec):
    m = tmp_path / "dq.bsl"
    run("encode", src, m, "-q")  # the default: ans-dq
    assert {codecs(m)[k] for k in LOSSY} == {"ans-dq"}
    out = tmp_path / "r.bsl"
    run("recode", m, out, "--codec", codec, "-q")
    assert {k: v for k, v in codecs(out).items() if k != "bias"} == {k: v for k, v in codecs(m).items() if k != "bias"}
    assert codecs(m)["bias"] == "eg" and codecs(out)["bias"] == codec  # the fine 1-D tensor: recoded
    with bslcodec.safe_open(m) as a, bslcodec.safe_open(out) as b:
        for k in LOSSY:  # copied as they are: same params, same payload
            assert a.entry(k).params == b.entry(k).params and a.entry(k).checksum == b.entry(k).checksum
    want, got = bslcodec.load_file(m), bslcodec.load_file(out)
    assert all(got[k].tobytes() == want[k].tobytes() for k in want)
