"""``bits=`` on sharded folders whose last shard holds only a norm vector (as Hugging Face folders often
end): such a shard has no tensor whose step the allocation can move, so it is written at its fixed steps and
the folder as a whole meets the target; a single file with nothing to allocate is a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import bslcodec
from bslcodec.cli import main
from bslcodec.container.errors import EncodeError
from bslcodec.files.checkpoint import encode_checkpoint, load_tensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _folder(path, seed=0):
    """Two shards: three 256x256 matrices and a norm, then ``model.norm.weight`` alone."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    s1 = {f"layers.{i}.w": (rng.standard_normal((256, 256)) * 0.02).astype(np.float32) for i in range(3)}
    s1["layers.0.norm"] = (1 + 0.05 * rng.standard_normal(256)).astype(np.float32)
    s2 = {"model.norm.weight": (1 + 0.05 * rng.standard_normal(256)).astype(np.float32)}
    wm = {}
    for i, s in enumerate((s1, s2)):
        f = f"model-{i + 1:05d}-of-00002.safetensors"
        safetensors_numpy.save_file(s, str(path / f), metadata={"format": "pt"})
        wm.update({k: f for k in s})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (path / "config.json").write_text("{}")
    return {**s1, **s2}


def _bpw(res):
    return 8 * res.out_bytes / res.n_weights


def test_folder_whose_last_shard_is_a_norm_meets_bits(tmp_path):
    sd = _folder(tmp_path / "in")
    res = encode_checkpoint(tmp_path / "in", tmp_path / "out", bits=4, progress=False)
    assert abs(_bpw(res) - 4) <= 0.02 * 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json", "model-00001-of-00002.bsl", "model-00002-of-00002.bsl", "model.bsl.index.json"]
    got = load_tensors(tmp_path / "out")
    assert sorted(got) == sorted(sd)
    for name, a in sd.items():
        rel = np.linalg.norm(got[name] - a) / np.linalg.norm(a)
        assert rel < (1e-3 if a.ndim == 1 else 0.2), name  # norms: the fixed fine step


def test_movable_shard_bytes_unchanged(tmp_path):
    """The first shard's output is byte-identical to encoding that shard alone as a file (the per-file
    allocation, as before)."""
    _folder(tmp_path / "in")
    encode_checkpoint(tmp_path / "in", tmp_path / "out", bits=4, progress=False)
    encode_checkpoint(tmp_path / "in" / "model-00001-of-00002.safetensors", tmp_path / "alone.bsl", bits=4,
                      progress=False)
    assert (tmp_path / "out" / "model-00001-of-00002.bsl").read_bytes() == (tmp_path / "alone.bsl").read_bytes()


def test_folder_bits_cli(tmp_path):
    _folder(tmp_path / "in")
    r = CliRunner().invoke(main, ["encode", str(tmp_path / "in"), str(tmp_path / "out"), "--bits", "4"])
    assert r.exit_code == 0, r.output
    assert "bits/weight" in r.output
    bpw = float(r.output.split(" bits/weight")[0].split()[-1])
    assert abs(bpw - 4) <= 0.02 * 4


def test_folder_quality_warnings_name_their_shard(tmp_path):
    """Too few bits for a sharded folder: one warning line per shard that warns, each naming its input file
    (two identical unnamed lines read like a bug)."""
    rng = np.random.default_rng(3)
    (tmp_path / "in").mkdir()
    wm = {}
    for i in range(2):
        f = f"model-{i + 1:05d}-of-00002.safetensors"
        s = {f"layers.{i}.{j}.w": (rng.standard_normal((128, 128)) * 0.02).astype(np.float32) for j in range(3)}
        safetensors_numpy.save_file(s, str(tmp_path / "in" / f), metadata={"format": "pt"})
        wm.update({k: f for k in s})
    (tmp_path / "in" / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    r = CliRunner().invoke(main, ["encode", str(tmp_path / "in"), str(tmp_path / "out"), "--bits", "1.5", "-q"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 2, r.output
    for i, ln in enumerate(sorted(lines)):
        assert f"model-{i + 1:05d}-of-00002.safetensors: bits=1.5: " in ln and "relative L2 error" in ln
    with pytest.warns(bslcodec.QualityWarning, match=r"model-00001-of-00002\.safetensors: bits=1\.5"):
        encode_checkpoint(tmp_path / "in", tmp_path / "out2", bits=1.5, progress=False)


def test_folder_out_of_reach_as_a_whole(tmp_path):
    _folder(tmp_path / "in")
    with pytest.raises(EncodeError, match="out of reach"):
        encode_checkpoint(tmp_path / "in", tmp_path / "out", bits=0.001, progress=False)
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(main, ["encode", str(tmp_path / "in"), str(tmp_path / "out"), "--bits", "0.001"])
    assert r.exit_code != 0 and "out of reach" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_single_file_with_nothing_to_allocate(tmp_path):
    norm = {"model.norm.weight": (1 + 0.05 * np.random.default_rng(0).standard_normal(256)).astype(np.float32)}
    with pytest.raises(EncodeError, match="small 1-D tensors, stored at a fixed fine step") as e:
        bslcodec.save(norm, bits=4)
    assert "cannot apply" in str(e.value) and "out of reach" not in str(e.value)
    const = {"c": np.zeros((512, 512), np.float32)}  # constant: stored exactly, nothing to allocate either
    with pytest.raises(EncodeError, match="cannot apply"):
        bslcodec.save(const, bits=4)
    safetensors_numpy.save_file(norm, str(tmp_path / "norm.safetensors"))
    r = CliRunner().invoke(main, ["encode", str(tmp_path / "norm.safetensors"), str(tmp_path / "n.bsl"),
                                  "--bits", "4"])
    assert r.exit_code != 0 and "cannot apply" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "n.bsl").exists()


def test_parallel_folder_matches_serial(tmp_path):
    from bslcodec.files.parallel_encode import encode_checkpoint_parallel

    _folder(tmp_path / "in")
    encode_checkpoint(tmp_path / "in", tmp_path / "serial", bits=4, progress=False)
    res = encode_checkpoint_parallel(tmp_path / "in", tmp_path / "par", workers=1, bits=4)
    assert abs(_bpw(res) - 4) <= 0.02 * 4
    for name in ("model-00001-of-00002.bsl", "model-00002-of-00002.bsl"):
        assert (tmp_path / "par" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes()
    with pytest.raises(EncodeError, match="out of reach"):
        encode_checkpoint_parallel(tmp_path / "in", tmp_path / "par2", workers=1, bits=0.001)
    assert not (tmp_path / "par2").exists()


def test_parallel_split_file_with_a_norm_part(tmp_path):
    """A single file split into parts (workers=2): one part holds only the norm; the file meets the target."""
    from bslcodec.files.parallel_encode import encode_checkpoint_parallel

    rng = np.random.default_rng(3)
    sd = {"w": (rng.standard_normal((512, 512)) * 0.02).astype(np.float32),
          "norm": (1 + 0.05 * rng.standard_normal(512)).astype(np.float32)}
    safetensors_numpy.save_file(sd, str(tmp_path / "m.safetensors"))
    res = encode_checkpoint_parallel(tmp_path / "m.safetensors", tmp_path / "m.bsl", workers=2, bits=4)
    assert res.tasks == 2
    assert abs(_bpw(res) - 4) <= 0.02 * 4
    got = bslcodec.load_file(tmp_path / "m.bsl")
    assert sorted(got) == ["norm", "w"]
