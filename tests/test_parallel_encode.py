"""bslcodec.files.parallel_encode: a process pool gives the bytes of the serial encode (rel_step / max_error)."""

import json

import numpy as np
import pytest

import bslcodec
from bslcodec.files.checkpoint import encode_checkpoint
from bslcodec.files.parallel_encode import encode_checkpoint_parallel, plan_tasks

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _tensors(seed, n=5):
    rng = np.random.default_rng(seed)
    t = {f"layer{i}.weight": rng.laplace(0, 0.02, (200 + 50 * i, 300)).astype(np.float32) for i in range(n)}
    t["norm.weight"] = np.ones(300, np.float32)
    t["ids"] = np.arange(40, dtype=np.int64)
    return t


def test_plan_tasks_balances_bytes():
    sizes = {"a": 100, "b": 90, "c": 50, "d": 40, "e": 10}
    parts = plan_tasks(sizes, 2)
    assert sorted(sum(parts, [])) == sorted(sizes)
    totals = sorted(sum(sizes[n] for n in p) for p in parts)
    assert totals == [140, 150]
    assert plan_tasks(sizes, 10) == [["a"], ["b"], ["c"], ["d"], ["e"]]


def test_single_file_split_is_byte_identical(tmp_path):
    src = tmp_path / "m.safetensors"
    safetensors_numpy.save_file(_tensors(0), str(src), metadata={"note": "x"})
    encode_checkpoint(src, tmp_path / "serial.bsl", rel_step=1 / 16, progress=False)
    res = encode_checkpoint_parallel(src, tmp_path / "par.bsl", workers=2, rel_step=1 / 16)
    assert res.tasks == 2 and res.n_tensors == 7
    assert (tmp_path / "par.bsl").read_bytes() == (tmp_path / "serial.bsl").read_bytes()
    assert not list(tmp_path.glob("*.parts")) and not list(tmp_path.glob(".*"))


def test_sharded_folder_and_bits(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    a, b = _tensors(1, 3), {f"x{i}.weight": v for i, v in enumerate(_tensors(2, 3).values())}
    safetensors_numpy.save_file(a, str(src / "model-00001-of-00002.safetensors"))
    safetensors_numpy.save_file(b, str(src / "model-00002-of-00002.safetensors"))
    wm = {k: "model-00001-of-00002.safetensors" for k in a} | {k: "model-00002-of-00002.safetensors" for k in b}
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (src / "config.json").write_text('{"model_type": "test"}')
    encode_checkpoint(src, tmp_path / "serial", max_error=1e-3, progress=False)
    res = encode_checkpoint_parallel(src, tmp_path / "par", workers=2, max_error=1e-3)
    assert res.tasks == 2
    for f in sorted((tmp_path / "serial").iterdir()):
        assert (tmp_path / "par" / f.name).read_bytes() == f.read_bytes(), f.name

    # bits=: one file split in two parts, each with its own step; the whole still meets the target
    one = tmp_path / "one.safetensors"
    safetensors_numpy.save_file(_tensors(3, 6), str(one))
    res = encode_checkpoint_parallel(one, tmp_path / "bits.bsl", workers=2, bits=4.0)
    assert res.tasks == 2 and len(res.rel_steps) == 2
    n = sum(v.size for v in _tensors(3, 6).values())
    assert abs(8 * (tmp_path / "bits.bsl").stat().st_size / n - 4.0) < 0.1
    back = bslcodec.load_file(tmp_path / "bits.bsl")
    assert sorted(back) == sorted(_tensors(3, 6))
    with bslcodec.safe_open(tmp_path / "bits.bsl") as f:
        settings = json.loads(f.metadata()["bslcodec.settings"])
    assert settings["bits"] == 4.0 and settings["allocation"] == "equal-slope"  # each part's own steps
