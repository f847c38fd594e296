"""The ``bslcodec`` CLI: encode/decode/info/verify on safetensors, .pt, .npz and model folders (single and
sharded), bad inputs, and a real subprocess. Everything here is small; the whole file runs in seconds."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

import bslcodec
from bslcodec.cli import main

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="CLI tests need safetensors")

BF16 = np.dtype(ml_dtypes.bfloat16)
ROOT = Path(__file__).resolve().parents[1]


def _state(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "layer.0.weight": rng.normal(0, 0.05, (96, 160)).astype(np.float32),
        "layer.0.bias": rng.normal(0, 0.01, 96).astype(np.float32),
        "layer.1.weight": rng.normal(0, 0.02, (64, 96)).astype(np.float32).astype(BF16),
        "emb.weight": rng.standard_t(5, (128, 48)).astype(np.float16),
        "steps": np.arange(7, dtype=np.int64),
        "mask": rng.random(10) > 0.5,
    }


def run(*args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, (res.stdout, res.stderr)
    return res


def one_line_error(res):
    assert res.exit_code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("bslcodec: error: ")
    assert "Traceback" not in res.output
    return lines[0]


def listing(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def check_close(orig: dict, back: dict, max_error=None):
    assert set(orig) == set(back)
    for k, x in orig.items():
        y = back[k]
        assert y.dtype == x.dtype and y.shape == x.shape, k
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        if x.dtype.kind in "biu" or (x.ndim <= 1 and max_error is not None):  # stored exactly
            assert x.tobytes() == y.tobytes(), k
        elif max_error is not None:
            assert np.abs(x64 - y64).max() <= max_error, k
        elif x.ndim <= 1:  # the default: small 1-D tensors at step std/256, plus the dtype's rounding
            assert np.abs(x64 - y64).max() <= x64.std() / 512 * 1.01 + 2.0 ** -8 * np.abs(x64).max(), k
        else:  # the default allocation: no tensor's relative L2 error above ~4 x the model's 2^-8
            rel = np.sqrt(((x64 - y64) ** 2).sum() / (x64 ** 2).sum())
            assert rel <= 5 * 2.0 ** -8, (k, rel)


def _to_torch(sd):
    import torch

    out = {}
    for k, v in sd.items():
        out[k] = torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) if v.dtype == BF16 else torch.from_numpy(v)
    return out


def _from_torch(sd):
    return {k: bslcodec.pipeline.arrays.as_numpy(v) for k, v in sd.items()}


# ---------------------------------------------------------------- round trips per format

def test_safetensors_round_trip(tmp_path):
    sd = _state()
    src = tmp_path / "in.safetensors"
    safetensors_numpy.save_file(sd, str(src), metadata={"format": "pt", "note": "kept"})
    res = run("encode", src, tmp_path / "m.bsl")
    assert "bits/weight" in res.stdout and "ratio" in res.stdout and res.stdout.count("\n") == 1
    with bslcodec.safe_open(tmp_path / "m.bsl") as f:
        meta = f.metadata()
    assert meta["note"] == "kept" and meta["bslcodec.source_format"] == "safetensors"
    assert json.loads(meta["bslcodec.settings"]) == {"allocation": "equal-slope", "quantizer": "dq",
                                                     "rel_error": 2.0 ** -8}  # the default
    run("decode", tmp_path / "m.bsl", tmp_path / "out.safetensors")
    check_close(sd, safetensors_numpy.load_file(str(tmp_path / "out.safetensors")))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"format": "pt", "note": "kept"}  # bslcodec.* keys are not copied out
    assert sorted(os.listdir(tmp_path)) == ["in.safetensors", "m.bsl", "out.safetensors"]  # no temp files


def test_pt_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    sd = _state(1)
    torch.save({"state_dict": _to_torch(sd)}, tmp_path / "in.pt")
    run("encode", tmp_path / "in.pt", tmp_path / "m.bsl", "--max-error", "1e-3", "-q")
    run("decode", tmp_path / "m.bsl", tmp_path / "out.pt")
    back = torch.load(tmp_path / "out.pt", weights_only=True)  # loads where the original loaded
    assert list(back) == ["state_dict"]  # the wrapper key survives
    assert back["state_dict"]["layer.1.weight"].dtype == torch.bfloat16
    check_close(sd, _from_torch(back["state_dict"]), max_error=1e-3)
    # a plain state dict, and .bin as the suffix (what pytorch_model.bin uses)
    torch.save(_to_torch(sd), tmp_path / "plain.bin")
    run("encode", tmp_path / "plain.bin", tmp_path / "p.bsl", "-q")
    run("decode", tmp_path / "p.bsl", tmp_path / "p.bin", "-q")
    assert set(torch.load(tmp_path / "p.bin", weights_only=True)) == set(sd)


def test_npz_round_trip(tmp_path):
    sd = {k: v for k, v in _state(2).items() if v.dtype != BF16}  # .npz cannot carry bfloat16
    np.savez(tmp_path / "in.npz", **sd)
    run("encode", tmp_path / "in.npz", tmp_path / "m.bsl", "--rel-step", "0.01", "-q")
    res = run("decode", tmp_path / "m.bsl", tmp_path / "out.npz")
    assert "tensors" in res.stdout
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        check_close(sd, {k: z[k] for k in z.files})


def test_npz_cannot_take_bf16(tmp_path):
    safetensors_numpy.save_file(_state(), str(tmp_path / "in.safetensors"))
    run("encode", tmp_path / "in.safetensors", tmp_path / "m.bsl", "-q")
    msg = one_line_error(run("decode", tmp_path / "m.bsl", tmp_path / "out.npz", ok=False))
    assert "bfloat16" in msg and not (tmp_path / "out.npz").exists()


def _sharded_folder(folder: Path, sd: dict) -> Path:
    folder.mkdir()
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    for shard, keys in shards.items():
        safetensors_numpy.save_file({k: sd[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(v.nbytes for v in sd.values())},
             "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"model_type": "test"}')
    (folder / "tokenizer.json").write_text('{"vocab": [1, 2, 3]}')
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"another copy of the weights")  # left out of the output
    return folder


def test_sharded_folder_round_trip(tmp_path):
    sd = _state(3)
    src = _sharded_folder(tmp_path / "hf", sd)
    res = run("encode", src, tmp_path / "enc")
    assert "pytorch_model.bin" in res.stderr  # the note about the weight copy not copied
    enc = tmp_path / "enc"
    assert listing(enc) == ["1_Pooling", "1_Pooling/config.json", "config.json", "model-00001-of-00002.bsl",
                            "model-00002-of-00002.bsl", "model.bsl.index.json", "tokenizer.json"]
    assert (enc / "config.json").read_bytes() == (src / "config.json").read_bytes()
    index = json.loads((enc / "model.bsl.index.json").read_text())
    assert index["weight_map"] == {k: v.replace(".safetensors", ".bsl")
                                   for k, v in json.loads((src / "model.safetensors.index.json").read_text())
                                   ["weight_map"].items()}
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in sd.values())
    from bslcodec.files.writers import _umask

    assert enc.stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700
    assert (enc / "model.bsl.index.json").stat().st_mode & 0o777 == 0o666 & ~_umask()

    run("decode", enc, tmp_path / "dec", "-q")
    dec = tmp_path / "dec"
    assert listing(dec) == ["1_Pooling", "1_Pooling/config.json", "config.json", "model-00001-of-00002.safetensors",
                            "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json"]
    back = {}
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        back.update(safetensors_numpy.load_file(str(dec / shard)))
    check_close(sd, back)
    dindex = json.loads((dec / "model.safetensors.index.json").read_text())
    assert dindex["weight_map"] == json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]

    res = run("info", enc, "--json")
    info = json.loads(res.stdout)
    assert info["total"]["files"] == 2 and info["total"]["tensors"] == len(sd)
    assert run("verify", enc, "--against", src).exit_code == 0


def test_single_file_folder(tmp_path):
    sd = _state(4)
    src = tmp_path / "hf"
    src.mkdir()
    safetensors_numpy.save_file(sd, str(src / "model.safetensors"), metadata={"format": "pt"})
    (src / "config.json").write_text("{}")
    run("encode", src, tmp_path / "enc", "--bits", "6", "-q")
    assert listing(tmp_path / "enc") == ["config.json", "model.bsl"]
    run("decode", tmp_path / "enc", tmp_path / "dec", "-q")
    assert listing(tmp_path / "dec") == ["config.json", "model.safetensors"]


# ---------------------------------------------------------------- options, info, verify

def _big(tmp_path) -> Path:
    rng = np.random.default_rng(5)
    sd = {"w": rng.normal(0, 0.02, (256, 1024)).astype(np.float32), "b": np.zeros(256, np.float32),
          "keep.w": rng.normal(0, 1, (64, 64)).astype(np.float32)}
    safetensors_numpy.save_file(sd, str(tmp_path / "big.safetensors"))
    return tmp_path / "big.safetensors"


def test_bits_and_lossless(tmp_path):
    src = _big(tmp_path)
    res = run("encode", src, tmp_path / "b.bsl", "--bits", "4", "--lossless", "keep.*", "--workers", "1")
    assert "bits/weight" in res.stdout
    info = json.loads(run("info", tmp_path / "b.bsl", "--json").stdout)
    assert abs(info["total"]["bits_per_weight"] - 4) <= 0.08
    codecs = {t["name"]: t["codec"] for t in info["files"][0]["tensors"]}
    assert codecs["w"] == "ans-dq" and codecs["b"] == "zstd" and codecs["keep.w"] == "fexp"
    settings = json.loads(info["files"][0]["metadata"]["bslcodec.settings"])
    assert settings["bits"] == 4 and settings["lossless"] == ["keep.*"] and settings["allocation"] == "equal-slope"


def test_too_few_bits_warn_in_one_line(tmp_path):
    src = _big(tmp_path)
    res = run("encode", src, tmp_path / "b.bsl", "--bits", "1", "-q")
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: bits=1") and "relative L2 error" in lines[0]
    assert (tmp_path / "b.bsl").is_file()  # written as asked


def test_bits_matches_the_api(tmp_path):
    """The CLI runs the bits= search tensor by tensor (for its progress bar): it must pick what
    ``bslcodec.save(bits=)`` picks."""
    src = _big(tmp_path)
    sd = safetensors_numpy.load_file(str(src))
    run("encode", src, tmp_path / "b.bsl", "--bits", "3.5", "-q")
    api_file = tmp_path / "api.bsl"
    api_file.write_bytes(bslcodec.save(sd, bits=3.5))
    compared = 0
    with bslcodec.safe_open(tmp_path / "b.bsl") as a, bslcodec.safe_open(api_file) as b:
        for name in sd:
            ea, eb = a.entry(name), b.entry(name)
            assert ea.codec == eb.codec, name
            if ea.codec in ("eg", "ans", "ans-dq"):  # every quantized codec has a step
                assert abs(ea.params["step"] / eb.params["step"] - 1) < 0.02, name
                compared += 1
    assert compared >= 1  # the step comparison ran (it did not once the default became ans-dq)
    assert abs((tmp_path / "b.bsl").stat().st_size / api_file.stat().st_size - 1) < 0.02


def test_info_table(tmp_path):
    src = _big(tmp_path)
    run("encode", src, tmp_path / "m.bsl", "--max-error", "1e-4", "-q")
    out = run("info", tmp_path / "m.bsl").stdout
    header = next(line for line in out.splitlines() if line.startswith("name"))
    for col in ("dtype", "shape", "codec", "GG shape", "GG scale", "step", "EG k", "bits/w", "ratio"):
        assert col in header
    row = next(line for line in out.splitlines() if line.startswith("w "))
    assert "256x1024" in row and (" eg " in row or " ans " in row)
    assert out.strip().splitlines()[-1].startswith("total: 3 tensors (2 quantized)")
    t = json.loads(run("info", tmp_path / "m.bsl", "--json").stdout)["files"][0]["tensors"]
    w = next(x for x in t if x["name"] == "w")
    assert w["step"] <= 2e-4 and w["gg_nu"] > 0 and w["ratio"] > 2
    assert w["eg_order"] >= 0 if w["codec"] == "eg" else w["eg_order"] is None  # ans has no EG order


def test_verify_against(tmp_path):
    src = _big(tmp_path)
    run("encode", src, tmp_path / "m.bsl", "--max-error", "1e-4", "-q")
    res = run("verify", tmp_path / "m.bsl", "--against", src)
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["name", "codec", "max", "abs", "err", "rel", "L2", "bound", "within"]
    w = next(line.split() for line in lines if line.startswith("w "))
    assert float(w[2]) <= 1e-4 and float(w[4]) == 1e-4 and w[-1] == "ok"
    assert lines[-1].startswith("verify ok: 3 tensors")
    data = json.loads(run("verify", tmp_path / "m.bsl", "--against", src, "--json").stdout)
    assert data["ok"] and data["max_abs_error"] <= 1e-4

    # another original: the lossy tensor is out of its bound, and a tensor is missing
    sd = safetensors_numpy.load_file(str(src))
    sd["w"] = sd["w"] + np.float32(1e-3)
    sd["extra"] = np.ones(3, np.float32)
    safetensors_numpy.save_file(sd, str(tmp_path / "other.safetensors"))
    res = run("verify", tmp_path / "m.bsl", "--against", tmp_path / "other.safetensors", ok=False)
    assert res.exit_code == 1
    assert "FAIL w: over its bound" in res.stderr and "FAIL extra: in" in res.stderr
    assert res.stdout.strip().splitlines()[-1].startswith("verify FAILED")


def test_verify_detects_corruption(tmp_path):
    src = _big(tmp_path)
    run("encode", src, tmp_path / "m.bsl", "-q")
    assert run("verify", tmp_path / "m.bsl").stdout.startswith("verify ok: 3 tensors")
    data = bytearray((tmp_path / "m.bsl").read_bytes())
    data[-100] ^= 0xFF  # inside the last payload
    (tmp_path / "bad.bsl").write_bytes(bytes(data))
    res = run("verify", tmp_path / "bad.bsl", ok=False)
    assert res.exit_code == 1 and "checksum" in res.stderr
    data[40] ^= 0xFF  # inside the header
    (tmp_path / "bad2.bsl").write_bytes(bytes(data))
    res = run("verify", tmp_path / "bad2.bsl", ok=False)
    assert res.exit_code == 1 and "checksum" in res.stderr


def test_quiet_and_overwrite(tmp_path):
    src = _big(tmp_path)
    assert run("encode", src, tmp_path / "m.bsl", "--quiet").output == ""
    before = (tmp_path / "m.bsl").read_bytes()
    msg = one_line_error(run("encode", src, tmp_path / "m.bsl", "--rel-step", "0.1", ok=False))
    assert "already exists" in msg and (tmp_path / "m.bsl").read_bytes() == before
    run("encode", src, tmp_path / "m.bsl", "--rel-step", "0.1", "--overwrite", "-q")
    assert (tmp_path / "m.bsl").stat().st_size < len(before)


# ---------------------------------------------------------------- bad inputs: one line, non-zero, no output

class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_inputs(tmp_path):
    out = tmp_path / "out.bsl"
    cases = []
    # missing file
    cases.append((["encode", tmp_path / "nope.safetensors", out], "no such file"))
    # a pickle with code in it, as .pt and as .bin
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    for name in ("evil.pt", "evil.bin"):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({"w": evil}, fh)
        cases.append((["encode", tmp_path / name, out], "refusing"))
    # a folder without weights
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    cases.append((["encode", tmp_path / "empty", tmp_path / "outdir"], "no model weights"))
    # conflicting and bad options
    _big(tmp_path)
    big = tmp_path / "big.safetensors"
    cases.append((["encode", big, out, "--bits", "4", "--rel-step", "0.1"], "at most one of"))
    cases.append((["encode", big, out, "--max-error", "0"], "positive"))
    cases.append((["encode", big, out, "--bits", "-3"], "positive"))
    cases.append((["encode", big, out, "--bits", "0.001"], "out of reach"))
    cases.append((["encode", big, out, "--workers", "0"], "--workers"))
    cases.append((["encode", big, out, "--nope"], "no such option"))
    # not a checkpoint; a .bsl as encode input; a non-.bsl as decode input; output folder missing
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    cases.append((["encode", tmp_path / "junk.safetensors", out], "not a readable .safetensors"))
    (tmp_path / "junk.xyz").write_bytes(b"hello world, not a checkpoint")
    cases.append((["encode", tmp_path / "junk.xyz", out], "unknown checkpoint format"))
    cases.append((["decode", big, tmp_path / "x.safetensors"], "not a .bsl file"))
    cases.append((["info", big], "not a .bsl file"))
    cases.append((["verify", tmp_path / "junk.xyz"], "not a .bsl file"))
    cases.append((["encode", big, tmp_path / "no" / "such" / "dir.bsl"], "does not exist"))
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    cases.append((["encode", tmp_path / "obj.npz", out], "refusing to unpickle"))
    (tmp_path / "hf").mkdir()
    safetensors_numpy.save_file({"w": np.ones((4, 4), np.float32)}, str(tmp_path / "hf" / "model.safetensors"))
    cases.append((["encode", tmp_path / "hf", tmp_path / "hf" / "enc"], "inside the input folder"))
    cases.append((["encode", tmp_path / "hf", tmp_path / "hf"], "must differ"))
    nan = {"w": np.full((64, 64), np.nan, np.float32)}
    safetensors_numpy.save_file(nan, str(tmp_path / "nan.safetensors"))
    cases.append((["encode", tmp_path / "nan.safetensors", out], "NaN"))

    before = listing(tmp_path)
    for args, expected in cases:
        msg = one_line_error(run(*args, ok=False))
        assert expected.lower() in msg.lower(), (args, msg)
        assert listing(tmp_path) == before, args  # no partial output, no temp files
    assert not evil.marker.exists()


def test_pickle_state_dict_with_non_tensor(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(3), "epoch": 3}, tmp_path / "ckpt.pt")
    msg = one_line_error(run("encode", tmp_path / "ckpt.pt", tmp_path / "o.bsl", ok=False))
    assert "'epoch' holds a int" in msg or "'epoch'" in msg
    assert not (tmp_path / "o.bsl").exists()


def test_failed_folder_encode_leaves_nothing(tmp_path):
    sd = _state()
    src = _sharded_folder(tmp_path / "hf", sd)
    # the second shard is damaged: the first one is encoded, then the run fails
    (src / "model-00002-of-00002.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken json}   ")
    before = listing(tmp_path)
    msg = one_line_error(run("encode", src, tmp_path / "enc", ok=False))
    assert "model-00002-of-00002.safetensors" in msg
    assert listing(tmp_path) == before


# ---------------------------------------------------------------- a real process

def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "bslcodec.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_subprocess(tmp_path):
    sd = _state(6)
    safetensors_numpy.save_file(sd, str(tmp_path / "in.safetensors"))
    p = _cli("encode", tmp_path / "in.safetensors", tmp_path / "m.bsl", "--max-error", "2e-3")
    assert p.returncode == 0, p.stderr
    assert "ratio" in p.stdout and "bits/weight" in p.stdout
    run("decode", tmp_path / "m.bsl", tmp_path / "out.safetensors", "--quiet")
    check_close(sd, safetensors_numpy.load_file(str(tmp_path / "out.safetensors")), max_error=2e-3)
    p = _cli("encode", tmp_path / "missing.pt", tmp_path / "x.bsl")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [f"bslcodec: error: {tmp_path / 'missing.pt'}: no such file or folder"]


def test_version_and_help():
    assert bslcodec.__version__ in run("--version").stdout
    for cmd in ("encode", "decode", "info", "verify"):
        assert "Usage:" in run(cmd, "--help").stdout


def test_recode_same_values_other_codec(tmp_path):
    """bslcodec recode: eg <-> ans with the same decoded bytes; lossless tensors and metadata copied."""
    import ml_dtypes

    rng = np.random.default_rng(11)
    tensors = {"w": rng.laplace(0, 0.02, (600, 300)).astype(np.float32),
               "h": rng.normal(0, 0.02, (300, 200)).astype(ml_dtypes.bfloat16),
               "f": rng.normal(0, 1, (50, 70)).astype(np.float16),
               "bias": rng.normal(size=300).astype(np.float32), "ids": np.arange(10)}
    src = tmp_path / "a.bsl"
    bslcodec.save_file(tensors, src, codec="ans", rel_step=0.05, metadata={"note": "kept"})
    want = bslcodec.load_file(src)
    eg, back = tmp_path / "eg.bsl", tmp_path / "back.bsl"
    r = CliRunner().invoke(main, ["recode", str(src), str(eg), "--codec", "eg"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["recode", str(eg), str(back), "--codec", "ans", "-q"])
    assert r.exit_code == 0, r.output
    for path, codec in ((eg, "eg"), (back, "ans")):
        with bslcodec.safe_open(path) as f:
            assert f.metadata()["note"] == "kept"
            assert {f.entry(k).codec for k in ("w", "h", "f")} == {codec}
        got = bslcodec.load_file(path)
        for k in tensors:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k].view(np.uint8), want[k].view(np.uint8)), k
    assert back.read_bytes() == src.read_bytes() or back.stat().st_size <= src.stat().st_size * 1.001
    r = CliRunner().invoke(main, ["recode", str(src), str(eg), "--codec", "eg"])
    assert r.exit_code != 0 and "exists" in r.output
    r = CliRunner().invoke(main, ["recode", str(src), str(src), "--codec", "eg", "--overwrite"])
    assert r.exit_code != 0 and "must not be the input" in r.output


def test_recode_bad_input_leaves_no_output(tmp_path):
    src = tmp_path / "a.bsl"
    bslcodec.save_file({"w": np.random.default_rng(0).normal(size=(300, 300)).astype(np.float32)}, src, codec="ans")
    data = bytearray(src.read_bytes())
    data[-100] ^= 0xFF  # inside the payload: its checksum fails
    bad = tmp_path / "bad.bsl"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.bsl"
    r = CliRunner().invoke(main, ["recode", str(bad), str(out), "--codec", "eg"])
    assert r.exit_code == 1 and "checksum" in r.output.lower()
    assert not out.exists() and not any(p.name.startswith(".out.bsl") for p in tmp_path.iterdir())
