"""bslcodec.torch.tp: each rank reads and decodes only its part of each tensor.

* one process playing every rank (no process group, ``column="local"``): slices equal the matching slices of
  the full decode, and the bytes a rank's decoders touch are ~1/world_size for row shards;
* a poisoned file (bytes the rank says it does not read are overwritten) still gives the same slices;
* three gloo processes (``torch.multiprocessing.spawn``): column shards exchanged with scatters, replicated
  tensors all-gathered; every rank reads about a third of the payload;
* one GPU, world_size 1 (skipped without CUDA);
* ``eg``, ``ans`` and ``ans-dq`` row slices decoded on the GPU (sub-payloads of the overlapping groups) equal
  the CPU slices bit for bit, from a file poisoned outside those groups, with ``bytes_read`` exactly their
  bytes; here without a GPU the same check runs the ``ans`` kernel's source in its g++ emulation
  (tests/test_gpu_ans_emu.py) behind a stand-in ``bslcodec.gpu``.
"""

import json
import os

import numpy as np
import pytest
import torch

import bslcodec
from bslcodec.container.errors import ChecksumError
from bslcodec.torch.tp import eg_subpayload, plan_dim, shard_of, shard_state_dict
from tests.test_gpu_ans_emu import emu, emu_decode_many  # noqa: F401 - ``emu``: the emulated kernel fixture

PLAN = {"q.weight": 0, "o.weight": 1, "long.weight": 1, "conv.weight": 1, "bf.weight": -1, "emb.weight": 0,
        "norm.weight": None}


def _tensors():
    import ml_dtypes

    rng = np.random.default_rng(0)
    return {"q.weight": rng.normal(0, .02, (768, 1024)).astype(np.float32),
            "o.weight": rng.normal(0, .02, (1024, 769)).astype(np.float32),       # 769 columns: uneven split
            "long.weight": rng.normal(0, .02, (4, 150000)).astype(np.float32),    # long rows: groups skipped
            "conv.weight": rng.laplace(0, .02, (8, 64, 600)).astype(np.float32),  # 3-D, dim 1
            "bf.weight": rng.normal(0, .02, (600, 512)).astype(ml_dtypes.bfloat16),
            "emb.weight": rng.normal(0, 1, (4001, 64)).astype(np.float32),
            "norm.weight": np.ones(512, np.float32),
            "steps": np.arange(100)}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("tp") / "m.bsl"
    bslcodec.save_file(_tensors(), p, rel_step=1 / 8)
    return p


@pytest.fixture(scope="module")
def full(model_file):
    return bslcodec.load_file(model_file, framework="pt")


def _want(full, name, ws, r):
    dim = plan_dim(PLAN, name)
    return full[name] if dim is None else torch.tensor_split(full[name], ws, dim)[r]


def test_shard_of_matches_tensor_split():
    for size in (0, 1, 5, 7, 100):
        for ws in (1, 2, 3, 4):
            parts = torch.tensor_split(torch.arange(size), ws)
            for r in range(ws):
                lo, hi = shard_of(size, ws, r)
                assert torch.equal(torch.arange(size)[lo:hi], parts[r])


@pytest.mark.parametrize("ws", [1, 2, 3])
def test_local_slices_equal_full_decode(model_file, full, ws):
    for r in range(ws):
        st = {}
        sd = shard_state_dict(model_file, PLAN, r, ws, stats=st)
        assert sorted(sd) == sorted(full)
        for name, t in sd.items():
            want = _want(full, name, ws, r)
            assert t.dtype == want.dtype and t.shape == want.shape, name
            assert torch.equal(t, want), (name, ws, r)
        assert st["payload_bytes"] > 0 and 0 < st["bytes_read"] <= st["payload_bytes"]


def test_row_shards_read_a_fraction(model_file):
    with bslcodec.safe_open(model_file) as f:
        for name in ("q.weight", "emb.weight", "bf.weight", "long.weight"):
            e = f.entry(name)
            for ws in (2, 3):
                fr = []
                for r in range(ws):
                    st = {}
                    shard_state_dict(model_file, PLAN, r, ws, names=[name], stats=st)
                    fr.append(st["bytes_read"] / st["payload_bytes"])
                if plan_dim(PLAN, name) == 0 or name == "long.weight":
                    # its own rows or long-row segments: 1/ws plus a boundary group at each end of each
                    # segment, and the tables
                    unit = 32 * e.params["lane_symbols"]
                    segments = 1 if plan_dim(PLAN, name) == 0 else e.shape[0]
                    slack = 2 * segments * unit / e.numel + 0.02
                    assert max(fr) <= 1 / ws + slack, (name, ws, fr)
                else:  # a column shard of ordinary rows: every group holds some of the rank's columns
                    assert min(fr) > 0.99, (name, ws, fr)


def _needed_spans(payload: bytes, e, g0: int, g1: int) -> list:
    """Byte ranges of a payload that decoding groups [g0, g1) reads: the tables and those groups' words."""
    from bslcodec.torch.compressed import eg_word_offsets

    s = e.params["lane_symbols"]
    if e.codec == "eg":
        offs, head_padded, _ = eg_word_offsets(payload, e.numel, s)
        return [(0, head_padded), (head_padded + 8 * int(offs[g0]), head_padded + 8 * int(offs[g1]))]
    assert e.codec in ("ans", "ans-dq"), e.codec  # spec 4.4: header, table, W[g], then each group's words
    p = np.frombuffer(payload, np.uint8)
    b = int(p[8:12].view("<u4")[0])
    h = 12 + b + (-(12 + b) % 4)
    g = -(-e.numel // (32 * s))
    w = p[h:h + 4 * g].view("<u4").astype(np.int64)
    offs = np.concatenate([[0], np.cumsum(2 * (w + w % 2))])
    area = h + 4 * g
    return [(0, area), (area + int(offs[g0]), area + int(offs[g1]))]


@pytest.mark.parametrize("codec", ["ans-dq", "eg"])
def test_poisoned_bytes_are_never_read(codec, model_file, tmp_path):
    """Overwrite every payload byte outside what rank 1 of 3 needs for q.weight: its slice is unchanged.
    ``ans-dq`` is the default file's codec; ``eg`` a file written with ``codec="eg"``."""
    from bslcodec.files.api import _Source

    path = model_file
    if codec == "eg":
        path = tmp_path / "eg.bsl"
        bslcodec.save_file(_tensors(), path, rel_step=1 / 8, codec="eg")
    data = bytearray(path.read_bytes())
    src = _Source(path=str(path))
    e = src.entry("q.weight")
    assert e.codec == codec  # the test must not go dead again when a default changes
    start = src.index.data_start + e.offset
    src.close()
    payload = bytes(data[start:start + e.length])
    lo, hi = shard_of(e.shape[0], 3, 1)
    row, unit = e.shape[1], 32 * e.params["lane_symbols"]
    g0, g1 = lo * row // unit, -(-hi * row // unit)
    assert 0 < g0 < g1 < -(-e.numel // unit)  # groups on both sides are poisoned
    keep = _needed_spans(payload, e, g0, g1)
    poisoned = bytearray(np.random.default_rng(1).integers(0, 256, e.length, dtype=np.uint8).tobytes())
    for a, b in keep:
        poisoned[a:b] = payload[a:b]
    assert sum(b - a for a, b in keep) < e.length / 2
    data[start:start + e.length] = poisoned
    bad = tmp_path / "poisoned.bsl"
    bad.write_bytes(bytes(data))
    want = bslcodec.load_file(path, framework="pt")["q.weight"][lo:hi]
    sd = shard_state_dict(bad, PLAN, 1, 3, names=["q.weight"])
    assert torch.equal(sd["q.weight"], want)
    with pytest.raises(ChecksumError):
        shard_state_dict(bad, PLAN, 1, 3, names=["q.weight"], verify=True)


def test_eg_subpayload_decodes_its_groups(full, tmp_path):
    from bslcodec.container.format import Entry
    from bslcodec.pipeline import codec as codec_mod

    x = np.random.default_rng(2).normal(0, 1, 5 * 16384 + 77).astype(np.float32)
    p = tmp_path / "one.bsl"
    old = getattr(codec_mod, "DEFAULT_CODEC", None)
    if old is not None:
        codec_mod.DEFAULT_CODEC = "eg"
    try:
        bslcodec.save_file({"x": x}, p, rel_step=1 / 16)
    finally:
        if old is not None:
            codec_mod.DEFAULT_CODEC = old
    with bslcodec.safe_open(p) as f:
        e = f.entry("x")
        assert e.codec == "eg"
        payload = bytes(f._src.payload(e))
    allx = bslcodec.load_file(p)["x"]
    s = e.params["lane_symbols"]
    for g0, g1 in ((0, 1), (1, 4), (4, 6), (0, 6), (5, 6)):
        sub, n = eg_subpayload(payload, x.size, s, g0, g1)
        se = Entry("x", "F32", (n,), "eg", e.params)
        got = codec_mod.decode_flat(se, sub, "sub")
        np.testing.assert_array_equal(got, allx[g0 * 32 * s: g0 * 32 * s + n])


# ---------------------------------------------------------------- three gloo processes
def _gloo_worker(rank, world, path, rdzv, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rdzv}", rank=rank, world_size=world)
    try:
        full = bslcodec.load_file(path, framework="pt")
        res = {}
        for column, replicate in (("auto", "gather"), ("local", "local")):
            st = {}
            sd = shard_state_dict(path, PLAN, device="cpu", column=column, replicate=replicate, stats=st)
            ok = {n: bool(torch.equal(t, _want(full, n, world, rank))) for n, t in sd.items()}
            res[column] = {"ok": ok, "stats": st}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(res, fh)
    finally:
        dist.destroy_process_group()


def test_gloo_three_ranks(model_file, tmp_path):
    import torch.multiprocessing as mp

    old = os.environ.get("NUMBA_NUM_THREADS")
    os.environ["NUMBA_NUM_THREADS"] = "1"  # three processes on a shared machine
    try:
        mp.spawn(_gloo_worker, args=(3, str(model_file), str(tmp_path / "rdzv"), str(tmp_path)), nprocs=3,
                 join=True)
    finally:
        if old is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = old
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    bound = 0
    with bslcodec.safe_open(model_file) as f:
        for e in f.entries():
            unit = 32 * e.params["lane_symbols"] if "lane_symbols" in e.params else e.numel
            groups = -(-e.numel // unit)
            bound += e.length / 3 + 2 * e.length * min(1, unit / e.numel) + 65 * groups + 64
    for res in ranks:
        for column in ("auto", "local"):
            assert all(res[column]["ok"].values()), res[column]["ok"]
        ex, loc = res["auto"]["stats"], res["local"]["stats"]
        assert ex["columns_exchange"] == 4 and ex["replicated_gather"] == 2 and ex["bytes_received"] > 0
        # exchange + gather: every rank reads about a third of the file's payload: a third of each tensor,
        # plus at most a boundary group at each end and the group tables
        assert ex["bytes_read"] <= bound, (ex, bound)
        assert ex["bytes_read"] / ex["payload_bytes"] < 0.45, ex
        assert loc["bytes_read"] > ex["bytes_read"]  # local column shards decode whole tensors
    total = ranks[0]["auto"]["stats"]["payload_bytes"]
    assert sum(r["auto"]["stats"]["bytes_read"] for r in ranks) < 1.25 * total  # boundary groups are read by two ranks


# ---------------------------------------------------------------- one GPU
def _gpu_ok():
    try:
        import bslcodec.gpu  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.skipif(not _gpu_ok(), reason="needs CUDA")
def test_one_gpu_world_size_1(model_file):
    want = bslcodec.load_file(model_file, framework="pt", device="cuda")
    st = {}
    sd = shard_state_dict(model_file, PLAN, 0, 1, device="cuda", stats=st)
    for name, t in sd.items():
        assert t.device.type == "cuda" and torch.equal(t, want[name]), name
    sd2 = shard_state_dict(model_file, PLAN, 1, 2, device="cuda")
    cpu = bslcodec.load_file(model_file, framework="pt")
    for name, t in sd2.items():
        assert torch.equal(t.cpu(), _want(cpu, name, 2, 1)), name


# ---------------------------------------------------------------- GPU row slices of eg / ans / ans-dq
ROWS = {"*": 0}


def _dtype_file(codec, tmp_path):
    """F32 / F16 / BF16 tensors of 3 to 4 ans groups (32,768 elements; 7 eg groups), partial last groups."""
    import ml_dtypes

    rng = np.random.default_rng(5)
    t = {"f32": rng.normal(0, .02, (150, 700)).astype(np.float32),
         "f16": rng.laplace(0, .02, (99, 1001)).astype(np.float16),
         "bf16": rng.normal(0, .02, (77, 1333)).astype(ml_dtypes.bfloat16)}
    path = tmp_path / f"{codec}.bsl"
    expert = {"rel_step": 1 / 8}
    expert.update({"quantizer": "dq"} if codec == "ans-dq" else {"codec": codec})
    bslcodec.save_file(t, path, expert=expert)
    with bslcodec.safe_open(path) as f:
        assert {e.codec for e in f.entries()} == {codec}
    return path


def _check_gpu_row_slices(path, tmp_path, on_device=True, ranks=((2, 0), (2, 1), (3, 1), (5, 0), (5, 4))):
    """Rank r of ws reads ``path`` (device "cuda") poisoned outside its groups: its row slices equal the clean
    CPU slices bit for bit, and ``bytes_read`` is exactly the tables and its groups' words. ``on_device``:
    the slices must be CUDA tensors (not with the stand-in bslcodec.gpu)."""
    from bslcodec.files.api import _Source

    data = path.read_bytes()
    cpu = bslcodec.load_file(path, framework="pt")
    src = _Source(path=str(path))
    entries = [(src.entry(n), src.index.data_start + src.entry(n).offset) for n in sorted(src.entries)]
    src.close()
    for ws, r in ranks:
        bad, need = bytearray(data), 0
        rng = np.random.default_rng(ws * 10 + r)
        for e, start in entries:
            payload = data[start:start + e.length]
            lo, hi = shard_of(e.shape[0], ws, r)
            row, unit = e.numel // e.shape[0], 32 * e.params["lane_symbols"]
            poisoned = bytearray(rng.integers(0, 256, e.length, dtype=np.uint8).tobytes())
            if hi > lo:
                for a, b in _needed_spans(payload, e, lo * row // unit, -(-hi * row // unit)):
                    poisoned[a:b] = payload[a:b]
                    need += b - a
            bad[start:start + e.length] = poisoned
        p = tmp_path / f"poisoned_{ws}_{r}.bsl"
        p.write_bytes(bytes(bad))
        st = {}
        sd = shard_state_dict(p, ROWS, r, ws, device="cuda", stats=st)
        for name, t in sd.items():
            want = torch.tensor_split(cpu[name], ws, 0)[r]
            assert t.device.type == "cuda" or not on_device, name
            assert t.dtype == want.dtype and torch.equal(t.cpu(), want), (name, ws, r)
        assert st["bytes_read"] == need, (ws, r, st["bytes_read"], need)


@pytest.mark.skipif(not _gpu_ok(), reason="needs CUDA")
@pytest.mark.parametrize("codec", ["ans", "ans-dq", "eg"])
def test_gpu_row_slices_read_only_their_groups(codec, tmp_path):
    from bslcodec import gpu

    path = _dtype_file(codec, tmp_path)
    calls = []
    fn = "decode_eg" if codec == "eg" else "decode_ans"
    real = getattr(gpu, fn)

    def spy(payload, n, *a, **k):
        calls.append(n)
        return real(payload, n, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(gpu, fn, spy)
    try:
        _check_gpu_row_slices(path, tmp_path)
    finally:
        mp.undo()
    assert calls  # the GPU decoder ran (not the CPU fallback)


def _stand_in_gpu(lib, calls):
    """A ``bslcodec.gpu`` whose ``decode_ans`` is the ans kernel emulated on the CPU (``decode_eg``: the CPU
    decoder on the eg sub-payload); outputs are CPU tensors."""
    import types

    from bslcodec.container.errors import FormatError
    from bslcodec.container.format import Entry
    from bslcodec.pipeline import codec as codec_mod

    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}

    def decode_ans(payload, n_elems, lane_symbols, step, center, dtype, device="cuda", dq=False):
        calls.append(("ans-dq" if dq else "ans", len(payload), n_elems))
        job = {"payload": bytes(payload), "n": n_elems, "s": lane_symbols, "step": step, "center": center,
               "mode": dtype, "dq": dq}
        (bits,), err = emu_decode_many(lib, [job])
        if err[0]:
            raise FormatError(f"emulated ans kernel: error flags {int(err[0])}")
        return torch.from_numpy(bits.view(np.int32 if dtype == "F32" else np.int16)).view(dtypes[dtype])

    def decode_eg(payload, n_elems, lane_symbols, step, center, dtype, device="cuda"):
        calls.append(("eg", len(payload), n_elems))
        e = Entry("x", dtype, (n_elems,), "eg", {"step": step, "center": center, "lane_symbols": lane_symbols})
        arr = codec_mod.decode_flat(e, payload, "sub")
        return torch.from_numpy(arr.view(np.int32 if dtype == "F32" else np.int16)).view(dtypes[dtype])

    mod = types.ModuleType("bslcodec.gpu")
    mod.decode_ans, mod.decode_eg = decode_ans, decode_eg
    return mod


@pytest.mark.parametrize("codec", ["ans", "ans-dq", "eg"])
def test_gpu_path_through_the_emulated_kernel(codec, emu, tmp_path, monkeypatch):  # noqa: F811
    """tp's CUDA path here: the reader cuts sub-payloads and hands them to (a stand-in) bslcodec.gpu, whose
    ans decoder runs the shipped kernel source on the CPU; slices bit-exact, only the groups' bytes read."""
    import sys

    calls = []
    monkeypatch.setitem(sys.modules, "bslcodec.gpu", _stand_in_gpu(emu, calls))
    path = _dtype_file(codec, tmp_path)
    _check_gpu_row_slices(path, tmp_path, on_device=False, ranks=((2, 0), (3, 1), (5, 4)))
    assert {c[0] for c in calls} == {codec}
    with bslcodec.safe_open(path) as f:
        total = sum(e.length for e in f.entries())
    assert max(c[1] for c in calls) < total / 2  # sub-payloads, not whole payloads
