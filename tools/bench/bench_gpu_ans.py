"""GPU decode of ``ans`` payloads (``bslcodec.gpu.decode_ans``), with baselines run in the same process.

On the device machine:
1. 1e9 GG(shape 0.8) symbols at step = std/8 (the data of ``tools/bench/bench_gpu.py``): ``ans`` payload
   (S=1024) encoded on the CPU, then decoded on the GPU to bf16. Kernels: the default (v2) with 16 and 8
   warps a block, the first version (v1) and v1 with a word ring; smaller frequency tables (P = 11, 12). Baselines on the same symbols: the ``eg`` GPU decoder
   (S=512), a D2D copy and a pinned H2D copy of the bf16 output. Every output is checked bit for bit.
2. A real model: MiniLM cast to bf16 (``.carry/lossless/minilm_bf16.npz``, from ``tools/bench/bench_lossless.py
   carry``), saved with ``codec="ans"`` at the default setting and at ``rel_step=1/16``; whole-file
   ``load_file(device="cuda")`` (all ``ans`` tensors in one launch) against the CPU ``load_file`` plus a
   copy to the GPU, the one-launch kernel time alone, and the same file with ``codec="eg"``.

    python tools/bench/bench_gpu_ans.py --md results/gpu_ans.md --json out.json
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))


def _median_ms(fn, reps, torch):
    from bench_gpu import _median_ms as m

    return m(fn, reps, torch)


_VARIANT_TEXT = {"default": "default kernel (v2)", "v1": "first version (v1)",
                 "ring": "v1 + word ring in shared memory"}


def synthetic(args, torch, res):
    from bench_gpu import encode_fast, make_symbols

    from bslcodec.codecs import rans
    from bslcodec.gpu import _ans, decode_eg

    n = args.n
    u_gpu, step, ref = make_symbols(n, args.step_div, torch)
    torch.cuda.synchronize()
    u = u_gpu.cpu().numpy().view(np.uint32)
    del u_gpu
    counts = np.bincount(u).astype(np.float64)
    p = counts[counts > 0] / n
    h0 = float(-(p * np.log2(p)).sum())
    t0 = time.time()
    model, _ = rans.build_model(u)
    payload = np.frombuffer(rans.encode(u, 1024, model), np.uint8)
    t_enc = time.time() - t0
    bpw = 8 * payload.size / n
    print(f"ans: {bpw:.4f} b/w (H0 {h0:.4f}), P={model.prob_bits}, encode {t_enc:.1f} s", flush=True)
    out_bytes = 2 * n
    gbs = lambda ms: out_bytes / ms / 1e6  # noqa: E731
    pinned = torch.from_numpy(payload).pin_memory()
    buf = torch.empty(payload.size, dtype=torch.uint8, device="cuda")
    h2d_c = _median_ms(lambda: buf.copy_(pinned, non_blocking=True), 3, torch)[0]
    buf.copy_(pinned)
    prep = _ans.Prepared(payload, n, 1024)
    tab = torch.from_numpy(prep.gpu_table).cuda()
    ws = torch.from_numpy(prep.wstart).cuda()
    out = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    job = {"payload": buf, "n_elems": n, "lane_symbols": 1024, "step": step, "center": 0, "dtype": torch.bfloat16,
           "out": out, "prepared": prep, "table_dev": tab, "wstart_dev": ws}
    rows = []
    if args.profile:  # one warm-up and one profiled launch of the default kernel (run under ncu)
        launch = _ans.Launch([job])
        launch.run()
        launch.run()
        torch.cuda.synchronize()
        launch.raise_errors()
        print("profiled: exact", torch.equal(out.view(torch.int16), ref.view(torch.int16)), flush=True)
        return
    for variant, wpb in (("default", 16), ("default", 8), ("v1", 16), ("ring", 16)):
        out.fill_(float("nan"))
        try:
            launch = _ans.Launch([job], variant=variant, warps_per_block=wpb)
            launch.run()
            launch.raise_errors()
            med, lo, hi = _median_ms(launch.run, args.reps, torch)
            exact = torch.equal(out.view(torch.int16), ref.view(torch.int16))
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"ans variant {variant} wpb={wpb} failed: {type(e).__name__}: {e}", flush=True)
            continue
        name = f"decode_ans, {_VARIANT_TEXT[variant]}, {wpb} warps/block"
        rows.append(dict(what=name, S=1024, bpw=bpw, ms=med, lo=lo, hi=hi, exact=exact))
        print(f"{name}: {med:.3f} ms = {gbs(med):.0f} GB/s bf16, exact={exact}", flush=True)
        del launch
    # ans-dq (spec 4.6): the same payload read as dependent-quantization indices, default kernel: what the
    # per-lane state machine costs. Checked bit for bit on a prefix of whole groups against dq.levels.
    from bslcodec.quantize import dq as _dq

    out.fill_(float("nan"))
    launch = _ans.Launch([dict(job, dq=True)])
    launch.run()
    launch.raise_errors()
    med, lo, hi = _median_ms(launch.run, args.reps, torch)
    n0 = min(n, 300 * 32 * 1024)
    uu = u[:n0].astype(np.int64)
    lv = _dq.levels((uu >> 1) ^ -(uu & 1), 1024)
    want = (torch.from_numpy(lv.astype(np.float32)) * float(np.float32(step))).to(torch.bfloat16)
    exact = torch.equal(out[:n0].cpu().view(torch.int16), want.view(torch.int16))
    name = "decode_ans with dq=True (ans-dq levels), default kernel, 16 warps/block"
    rows.append(dict(what=name, S=1024, bpw=bpw, ms=med, lo=lo, hi=hi, exact=exact))
    print(f"{name}: {med:.3f} ms = {gbs(med):.0f} GB/s bf16, exact (first {n0} elements)={exact}", flush=True)
    del launch, uu, lv, want
    for pb in (11, 12):  # same symbols, smaller tables (2^P x 8 bytes in shared memory): does occupancy pay?
        if pb == model.prob_bits:
            continue
        m2, _ = rans.build_model(u, prob_bits_choices=(pb,))
        pl2 = np.frombuffer(rans.encode(u, 1024, m2), np.uint8)
        b2 = torch.from_numpy(pl2.copy()).cuda()
        job2 = dict(job, payload=b2, prepared=None, table_dev=None, wstart_dev=None)
        out.fill_(float("nan"))
        launch = _ans.Launch([job2])
        launch.run()
        launch.raise_errors()
        med, lo, hi = _median_ms(launch.run, args.reps, torch)
        exact = torch.equal(out.view(torch.int16), ref.view(torch.int16))
        name = f"decode_ans, default, table P = {pb} ({8 << pb >> 10} KiB)"
        rows.append(dict(what=name, S=1024, bpw=8 * pl2.size / n, ms=med, lo=lo, hi=hi, exact=exact))
        print(f"{name}: {8 * pl2.size / n:.4f} b/w, {med:.3f} ms = {gbs(med):.0f} GB/s bf16, exact={exact}", flush=True)
        del launch, b2, pl2
    del buf, pinned, tab, ws
    t0 = time.time()
    eg_payload, _ = encode_fast(u, 512)
    t_eg = time.time() - t0
    ebuf = torch.from_numpy(eg_payload).cuda()
    out.fill_(float("nan"))
    decode_eg(ebuf, n, 512, step, 0, torch.bfloat16, out=out)
    med, lo, hi = _median_ms(lambda: decode_eg(ebuf, n, 512, step, 0, torch.bfloat16, out=out, check=False),
                             args.reps, torch)
    exact = torch.equal(out.view(torch.int16), ref.view(torch.int16))
    rows.append(dict(what="decode_eg (same symbols)", S=512, bpw=8 * eg_payload.size / n, ms=med, lo=lo, hi=hi,
                     exact=exact))
    print(f"eg: {8 * eg_payload.size / n:.4f} b/w, {med:.3f} ms = {gbs(med):.0f} GB/s, exact={exact}", flush=True)
    del ebuf
    try:  # (c) DFloat11's own GPU decoder (lossless bf16) on the same bf16 output values
        import cupy
        from bench_lossless import Df11Gpu, df11_bytes, df11_encode

        bits = ref.view(torch.int16).cpu().numpy().view(np.uint16)
        what = "DFloat11 0.5.0 (its decode.ptx), lossless bf16 of the same output"
        t0 = time.time()
        try:
            d = df11_encode(bits)
        except Exception as e:  # noqa: BLE001 - its table builder fails on some data: use N(0, 0.02) bf16
            print(f"DFloat11 cannot encode these values ({type(e).__name__}: {e}); N(0, 0.02) bf16 instead", flush=True)
            g = torch.Generator(device="cuda").manual_seed(0)
            ref2 = (torch.randn(n, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
            bits = ref2.view(torch.int16).cpu().numpy().view(np.uint16)
            ref = ref2
            what = "DFloat11 0.5.0 (its decode.ptx), lossless N(0, 0.02) bf16 (same count)"
            t0 = time.time()
            d = df11_encode(bits)
        t_df = time.time() - t0
        df = Df11Gpu(torch, cupy)
        gd = df.upload(d)
        o = df.decode(gd)
        torch.cuda.synchronize()
        exact = torch.equal(o.view(torch.int16), ref.view(torch.int16))
        med, lo, hi = _median_ms(lambda: df.decode(gd), args.reps, torch)
        rows.append(dict(what=what, S="-",
                         bpw=8 * df11_bytes(d) / n, ms=med, lo=lo, hi=hi, exact=exact))
        print(f"DFloat11: {8 * df11_bytes(d) / n:.3f} b/w (encode {t_df:.0f} s), {med:.3f} ms = {gbs(med):.0f} GB/s, "
              f"exact={exact}", flush=True)
        del gd, d, o, bits
    except Exception as e:  # noqa: BLE001 - a baseline only
        print(f"DFloat11 baseline skipped: {type(e).__name__}: {e}", flush=True)
    host = torch.empty(n, dtype=torch.bfloat16, pin_memory=True)
    h2d = _median_ms(lambda: out.copy_(host, non_blocking=True), 3, torch)[0]
    d2d = _median_ms(lambda: out.copy_(ref), args.reps, torch)[0]
    del host
    res["synthetic"] = dict(n=n, step=step, h0=h0, ans_bpw=bpw, ans_encode_s=t_enc, eg_encode_s=t_eg, rows=rows,
                            h2d_ms=h2d, d2d_ms=d2d, h2d_ans_payload_ms=h2d_c, P=model.prob_bits)
    del out, ref


def minilm(args, torch, res):
    import bslcodec
    from bslcodec.files import api
    from bslcodec.gpu import _ans

    path = os.path.join(args.data, "minilm_bf16.npz")
    if not os.path.exists(path):
        print(f"no {path}: MiniLM part skipped", flush=True)
        return
    import ml_dtypes

    with np.load(path) as z:
        tensors = {k: z[k].view(ml_dtypes.bfloat16) for k in z.files}
    n_w = sum(v.size for v in tensors.values())
    out_rows = []
    tmp = tempfile.mkdtemp()
    for label, expert in (("ans, default setting", dict(codec="ans")),
                          ("ans, rel_step=1/16", dict(codec="ans", rel_step=1 / 16)),
                          ("ans-dq (quantizer='dq'), rel_step=1/16", dict(codec="ans", rel_step=1 / 16, quantizer="dq")),
                          ("eg, default setting", dict(codec="eg"))):
        f = os.path.join(tmp, "m.bsl")
        t0 = time.time()
        bslcodec.save_file(tensors, f, expert=expert)
        t_enc = time.time() - t0
        size = os.path.getsize(f)
        cpu = bslcodec.load_file(f, framework="pt")
        gpu = bslcodec.load_file(f, framework="pt", device="cuda")
        exact = all(torch.equal(gpu[k].cpu().view(-1).view(torch.uint8), cpu[k].view(-1).view(torch.uint8)) for k in cpu)

        def load_gpu():
            bslcodec.load_file(f, framework="pt", device="cuda")

        def load_cpu_copy():
            d = bslcodec.load_file(f, framework="pt")
            for v in d.values():
                v.to("cuda", non_blocking=False)
        t_gpu = _wall(load_gpu, args.reps, torch)
        t_cpu = _wall(load_cpu_copy, max(3, args.reps // 3), torch)
        kernel_ms = None
        if expert["codec"] == "ans":
            jobs = []
            src = api._Source(path=f)  # noqa: SLF001 - the benchmark wants the raw payloads
            try:
                for name in src.entries:
                    e = src.entry(name)
                    if e.codec not in ("ans", "ans-dq"):
                        continue
                    from bslcodec.pipeline import codec as C
                    step, center, s = C._check_ans_params(e, name)
                    pl = np.frombuffer(src.payload(e), np.uint8)
                    prep = _ans.Prepared(pl, e.numel, s)
                    jobs.append({"payload": torch.from_numpy(pl.copy()).cuda(), "n_elems": e.numel, "lane_symbols": s,
                                 "step": step, "center": center, "dtype": e.dtype, "prepared": prep,
                                 "dq": e.codec == "ans-dq",
                                 "table_dev": torch.from_numpy(prep.gpu_table).cuda(),
                                 "wstart_dev": torch.from_numpy(prep.wstart).cuda(),
                                 "out": torch.empty(e.numel, dtype=torch.bfloat16, device="cuda")})
            finally:
                src.close()
            launch = _ans.Launch(jobs)
            launch.run()
            launch.raise_errors()
            kernel_ms = _median_ms(launch.run, args.reps, torch)[0]
            del launch
            del jobs
        bpw = 8 * size / n_w
        out_rows.append(dict(what=label, bpw=bpw, size=size, encode_s=t_enc, gpu_load_ms=t_gpu, cpu_load_copy_ms=t_cpu,
                             kernel_ms=kernel_ms, exact=exact))
        print(f"MiniLM bf16 {label}: {bpw:.3f} b/w, load_file(cuda) {t_gpu:.1f} ms, CPU load+copy {t_cpu:.1f} ms, "
              f"one-launch kernel {kernel_ms} ms, exact={exact}", flush=True)
    res["minilm"] = dict(weights=n_w, rows=out_rows)


def _wall(fn, reps, torch):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def report(res) -> str:
    lines = [f"Device: {res['device']}; torch {res['torch']}; CuPy {res['cupy']}.", ""]
    s = res.get("synthetic")
    if s:
        gbs = lambda ms: 2 * s["n"] / ms / 1e6  # noqa: E731
        lines += [f"**Synthetic:** {s['n']:,} GG(shape 0.8) weights, step = std/8, bf16 output "
                  f"({2 * s['n'] / 1e9:.2f} GB). Empirical entropy of the symbols H0 = {s['h0']:.4f} bits; "
                  f"ans payload {s['ans_bpw']:.4f} b/w (P = {s['P']}), encoded in {s['ans_encode_s']:.1f} s on the CPU "
                  f"(Numba, all cores). Median of the runs, CUDA events, payload already on the GPU.", "",
                  "| what | S | bits/weight | time ms (median; min-max) | GB/s of bf16 output | vs D2D copy | bit-exact |",
                  "|---|---|---|---|---|---|---|"]
        for r in s["rows"]:
            lines.append(f"| {r['what']} | {r['S']} | {r['bpw']:.3f} | {r['ms']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | "
                         f"{gbs(r['ms']):.0f} | {s['d2d_ms'] / r['ms']:.2f} | {'yes' if r['exact'] else 'NO'} |")
        lines.append(f"| (a) pinned H2D copy of the bf16 weights | | 16 | {s['h2d_ms']:.3f} | {gbs(s['h2d_ms']):.0f} | "
                     f"{s['d2d_ms'] / s['h2d_ms']:.2f} | |")
        lines.append(f"| (b) D2D copy of the bf16 weights | | 16 | {s['d2d_ms']:.3f} | {gbs(s['d2d_ms']):.0f} | 1.00 | |")
        lines.append(f"| pinned H2D of the ans payload | 1024 | {s['ans_bpw']:.3f} | {s['h2d_ans_payload_ms']:.3f} | "
                     f"{gbs(s['h2d_ans_payload_ms']):.0f} (output-equivalent) | | |")
        lines.append("")
    m = res.get("minilm")
    if m:
        lines += [f"**MiniLM (all-MiniLM-L6-v2) cast to bf16**, {m['weights']:,} weights, whole file:", "",
                  "| file | bits/weight | encode s (CPU) | `load_file(device=\"cuda\")` ms | CPU `load_file` + copy ms | "
                  "ans kernel alone, one launch, ms | GPU == CPU |", "|---|---|---|---|---|---|---|"]
        for r in m["rows"]:
            k = f"{r['kernel_ms']:.3f}" if r["kernel_ms"] is not None else "-"
            lines.append(f"| {r['what']} | {r['bpw']:.3f} | {r['encode_s']:.1f} | {r['gpu_load_ms']:.1f} | "
                         f"{r['cpu_load_copy_ms']:.1f} | {k} | {'yes' if r['exact'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000_000)
    ap.add_argument("--step-div", type=float, default=8.0)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--data", default=".carry/lossless")
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--profile", action="store_true", help="two launches of the default kernel only (for ncu)")
    ap.add_argument("--report", default=None, help="only rewrite --md from this json")
    args = ap.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            res = json.load(f)
    else:
        import cupy
        import torch

        res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cupy": cupy.__version__}
        if not args.skip_synthetic:
            synthetic(args, torch, res)
            torch.cuda.empty_cache()
        if args.profile:
            return
        try:
            minilm(args, torch, res)
        except Exception as e:  # noqa: BLE001 - keep the synthetic numbers
            import traceback

            traceback.print_exc()
            res["minilm_error"] = f"{type(e).__name__}: {e}"
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
    text = report(res)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
