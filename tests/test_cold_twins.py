"""The numpy twins of the host-side table kernels (``jitcache.loaded``): equal to the numba kernels on valid and
on damaged tables, and a GPU load's host side in a fresh process imports no numba (a serving replica's first
load does not pay numba's 0.3-0.7 s start)."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from bslcodec.codecs import fexp_header, fexp_table, golomb, rans_ref, rans_table
from bslcodec.container.limits import LANES

ROOT = Path(__file__).resolve().parent.parent


def _random_freqs(rng, P, K):
    live = rng.random(K) < rng.uniform(0.2, 1.0)
    live[rng.integers(K)] = True
    live[np.flatnonzero(live)[1 << P:]] = False  # at most M live tokens: each needs a slot
    w = np.where(live, rng.random(K) ** 3 + 1e-3, 0)
    f = np.floor(w / w.sum() * ((1 << P) - live.sum())).astype(np.int64) + live
    f[np.flatnonzero(live)[0]] += (1 << P) - f.sum()
    return f


def test_rans_table_parse_twin():
    rng = np.random.default_rng(1)
    for _ in range(300):
        P, s = int(rng.integers(1, rans_ref.MAX_PROB_BITS + 1)), int(rng.integers(0, 6))
        m = int(rng.integers(0, min(s, rans_ref.MAX_MSB) + 1))
        K = int(rng.integers(1, min(rans_ref.k_max(s, m), 400) + 1))
        kq = int(rng.integers(0, 8))
        freqs = _random_freqs(rng, P, K)
        head = rans_ref.header_bytes(P, s, m, freqs, kq)
        B = int.from_bytes(head[8:12], "little")
        tables = [head[12:12 + B]]
        bad = bytearray(tables[0])
        if bad:
            bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
            tables += [bytes(bad), tables[0][:len(bad) // 2], bytes(len(bad))]
        tables.append(rng.integers(0, 256, int(rng.integers(1, 60)), dtype=np.uint8).tobytes())
        for tb in tables:
            a, b = np.zeros(K, np.int64), np.zeros(K, np.int64)
            want = rans_table._parse_table(np.frombuffer(tb, np.uint8), K, kq, 1 << P, a)
            got = rans_table._parse_table_np(tb, K, kq, 1 << P, b)
            assert got == tuple(int(x) for x in want) and np.array_equal(a, b), (P, s, m, K, kq, tb.hex())
        assert np.array_equal(rans_table._gpu_table_np(P, s, m, freqs), rans_table.gpu_table(P, s, m, freqs))


def test_golomb_lane_table_twin():
    rng = np.random.default_rng(2)
    for _ in range(200):
        S = int(2 ** rng.integers(4, 11))
        G = int(rng.integers(1, 6))
        n = int(rng.integers((G - 1) * LANES * S + 1, G * LANES * S + 1))
        ks = rng.integers(0, 6, G).astype(np.uint8)
        n_last = n - (G - 1) * LANES * S
        cnt = np.full((G, LANES), S, np.int64)
        cnt[-1] = np.maximum(0, (n_last - np.arange(LANES) + LANES - 1) // LANES)
        lens = (cnt * (ks[:, None].astype(np.int64) + 1 + rng.integers(0, 4, (G, LANES)))).astype(np.uint16)
        if rng.random() < 0.5:  # one lane out of its bounds
            lens[rng.integers(G), rng.integers(LANES)] = rng.integers(0, 65536)
        a, b = np.zeros(G + 1, np.int64), np.zeros(G + 1, np.int64)
        want = golomb._lane_table(lens, ks, n, S, a)
        got = golomb._lane_table_np(lens, ks, n, S, b)
        assert got == want
        if want < 0:
            assert np.array_equal(a, b)


def test_fexp_table_twins(monkeypatch):
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 300))
        lengths = np.where(rng.random(n) < 0.7, rng.integers(1, 15, n), 0).astype(np.uint8)
        want = fexp_table._kraft(lengths)
        cold_err = warm_err = None
        try:
            fexp_table.check_lengths(lengths)
        except Exception as e:  # noqa: BLE001 - compared below
            warm_err = str(e)
        with monkeypatch.context() as mp:
            mp.setattr(fexp_header, "ready", lambda kernels, name: None)
            try:
                fexp_table.check_lengths(lengths)
            except Exception as e:  # noqa: BLE001
                cold_err = str(e)
            if warm_err is None:
                cold_lut = fexp_table.build_lut(lengths)
        assert cold_err == warm_err, (want, lengths)
        if warm_err is None:
            assert np.array_equal(cold_lut, fexp_table.build_lut(lengths))


CHILD = r"""
import json, sys, numpy as np, torch
torch.cuda.is_available = lambda: True  # the host side of the GPU loader, run on the CPU
import bslcodec.gpu.load as gl
from bslcodec.files.source import _Source
from bslcodec.pipeline.arrays import _to_framework
cpu_codecs = set()
for path in sys.argv[1:]:
    src = _Source(path=path)
    items, cpu = gl._plan(src, list(src.entries))
    ld = gl._Loader.__new__(gl._Loader); ld.dev = torch.device("cpu")
    for lo, hi, group in gl._chunks(items):
        ld._prepare(group, np.frombuffer(src.buf[lo:hi], np.uint8), lo, gl._Meta())
    for n in cpu:  # what _Loader._cpu_tensors does with the tensors the GPU does not decode
        cpu_codecs.add(src.entry(n).codec)
        _to_framework(src.tensor(n), "pt", "cpu")
    src.close()
# tensor-parallel slices of the GPU codecs (bslcodec.torch.tp): the sub-payloads they cut, the launch stubbed
import bslcodec.gpu as g
from bslcodec.torch import tp
cut = []
g.decode_ans = lambda sub, n, s, step, center, dt, device, dq: cut.append(n) or torch.zeros(n)
g.decode_eg = lambda sub, n, s, step, center, dt, device: cut.append(n) or torch.zeros(n)
for path in sys.argv[1:]:
    src = _Source(path=path)
    for n in src.entries:
        e = src.entry(n)
        r = tp._Reader(src, e, "cuda", True, {"payload_bytes": 0, "bytes_read": 0, "elements_decoded": 0})
        if r._gpu:
            r.read(e.numel // 3, e.numel)
    src.close()
print(json.dumps({"cpu codecs": sorted(cpu_codecs), "tp slices": len(cut), "numba": "numba" in sys.modules}))
"""


def test_gpu_host_side_imports_no_numba(tmp_path):
    pytest.importorskip("torch")
    import ml_dtypes

    import bslcodec

    rng = np.random.default_rng(4)
    t = {f"l{i}.{n}": rng.normal(0, 0.02, (256, 384)).astype(ml_dtypes.bfloat16) for i in range(2) for n in "qk"}
    t.update({f"l{i}.norm": rng.normal(1, 0.05, 384).astype(ml_dtypes.bfloat16) for i in range(2)})
    t["f32"] = rng.normal(0, 1, (64, 64)).astype(np.float32)
    paths = []
    for name, kw in (("b4", {"bits": 4}), ("eg", {"bits": 6, "expert": {"codec": "eg"}}), ("ll", {"exact": True})):
        paths.append(str(tmp_path / f"{name}.bsl"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small random model's quality warnings
            bslcodec.save_file(t, paths[-1], **kw)
    r = subprocess.run([sys.executable, "-c", CHILD, *paths], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    # reading the GPU tensors' headers, building their tables and decoding the rest (the raw norms) on the CPU
    # imported no numba
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["numba"] is False and got["cpu codecs"] and set(got["cpu codecs"]) <= {"raw", "zstd"}
    assert got["tp slices"] >= 8  # the q/k matrices of the bits=4 and eg files, sliced as a GPU rank would



def test_loaded_follows_numba_initialisation():
    """In a fresh process the twins run until any numba kernel has run; then the kernels are used."""
    code = ("import sys, numpy as np\n"
            "from bslcodec.jitcache import loaded\n"
            "from bslcodec.codecs import rans_table, golomb\n"
            "before = loaded(rans_table._parse_table)\n"
            "golomb._lane_table(np.full((1, 32), 8, np.uint16), np.zeros(1, np.uint8), 32, 16, np.empty(2, np.int64))\n"
            "print(before, loaded(rans_table._parse_table), loaded(rans_table._fill_gpu_table))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True", "True"]
