"""bslcodec vs NNCodec, zstd, ZipNN and safetensors on a real model and a synthetic GG checkpoint.

    . .venv/bin/activate
    bash tools/bench/setup_peers.sh                 # once: NNCodec + ZipNN outside the venv
    python tools/bench/run_all.py                   # ~15 min on 2 cores -> results/peers/*.json, *.png,
                                                    #    BENCHMARKS.md (via report.py)
    python tools/bench/report.py                    # redraw plots + BENCHMARKS.md from the JSON only

Everything runs in this one process, one method after the other, so speed numbers share the machine
state (they are still noisy: the load average before each measurement is in the JSON). Per method:
file size (bits/weight over all float weights), max |x - x̂|, relative L2 error ‖W - Ŵ‖/‖W‖ over the
whole checkpoint, and for the real model the cosine similarity of sentence embeddings
(tools/minilm.py, 50 sentences) computed with the decoded vs the original weights. MB/s are
fp32-equivalent: 4 bytes x weights / second, for every row (bf16 rows too), encode = in-memory
state dict -> bytes, decode = bytes -> state dict of arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(ROOT, "tools"), ROOT]

import gap  # noqa: E402
import peers  # noqa: E402
from peers import NNCodec, Bsl, Safetensors, Zstd, ZipNNMethod  # noqa: E402

REL_STEPS = [("1/4", 1 / 4), ("1/8", 1 / 8), ("1/16", 1 / 16), ("1/22", 1 / 22), ("1/32", 1 / 32),
             ("1/64", 1 / 64), ("1/128", 1 / 128)]
ONE_THREAD_TOO = {"1/4", "1/22", "default"}  # bslcodec settings also timed with 1 Numba thread


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# ---------------------------------------------------------------- checkpoints

def synthetic(n_weights: int = 8 << 20, seed: int = 0) -> dict:
    """8 matrices of generalized-Gaussian weights (shapes nu 0.6..2, std 0.02), plus small biases."""
    from scipy import special, stats

    nus = [0.6, 0.8, 1.0, 1.0, 1.2, 1.5, 2.0, 0.8]
    per = n_weights // len(nus)
    cols = 1024 if per >= 1024 * 64 else 256
    rng = np.random.default_rng(seed)
    sd = {}
    for i, nu in enumerate(nus):
        alpha = 0.02 * np.sqrt(special.gamma(1 / nu) / special.gamma(3 / nu))  # std 0.02
        w = stats.gennorm.rvs(nu, scale=alpha, size=(per // cols, cols), random_state=rng)
        sd[f"layers.{i}.weight"] = w.astype(np.float32)
        sd[f"layers.{i}.bias"] = rng.normal(0, 0.02, cols).astype(np.float32)
    return sd


# ---------------------------------------------------------------- measuring

class Ckpt:
    def __init__(self, name, sd, quality):
        self.name, self.sd, self.quality = name, sd, quality
        self.names = sorted(sd)
        self.n = int(sum(v.size for v in sd.values()))
        self.sd16 = {k: peers.to_bf16_bits(v) for k, v in sd.items()}
        self.flat = np.concatenate([sd[k].ravel() for k in self.names]).astype(np.float64)
        self.norm = float(np.linalg.norm(self.flat))
        self._qcache = {}

    def errors(self, back: dict) -> tuple:
        missing = set(self.names) - set(back)
        if missing:
            raise KeyError(f"decoded state dict misses {sorted(missing)[:3]}")
        flat = np.concatenate([peers.to_f32(back[k]).reshape(-1) for k in self.names]).astype(np.float64)
        d = flat - self.flat
        return float(np.abs(d).max()), float(np.linalg.norm(d) / self.norm)

    def cos(self, back: dict, key=None):
        if self.quality is None:
            return None, None
        if key is not None and key in self._qcache:
            return self._qcache[key]
        r = self.quality({k: peers.to_f32(v) for k, v in back.items()})
        if key is not None:
            self._qcache[key] = r
        return r


def timed(fn, reps):
    best, out = None, None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, out


def measure(m, ck: Ckpt, reps: int, one_thread: bool = False, breakdown: bool = False) -> dict:
    la = loadavg()
    m.prepare(ck.sd, ck.sd16)
    r = 1 if m.slow else reps
    t_enc, blob = timed(lambda: m.encode(ck.sd, ck.sd16), r)
    t_dec, back = timed(lambda: m.decode(blob), r)
    mx, rel = ck.errors(back)
    key = None
    if mx == 0.0:
        key = "exact"
    elif getattr(m, "input", "fp32") == "bf16" and m.family != "bslcodec":
        key = "bf16"
    cos_mean, cos_min = ck.cos(back, key) if key != "exact" or ck.quality is None else (1.0, 1.0)
    mb = 4 * ck.n / 1e6
    row = {"ckpt": ck.name, "family": m.family, "label": m.label, "setting": m.setting, "input": m.input,
           "lossless": bool(mx == 0.0), "bytes": len(blob), "bpw": 8 * len(blob) / ck.n,
           "ratio_vs_fp32": 4 * ck.n / len(blob), "max_abs_err": mx, "rel_l2": rel, "cos_mean": cos_mean,
           "cos_min": cos_min, "enc_s": t_enc, "dec_s": t_dec, "enc_MBps": mb / t_enc, "dec_MBps": mb / t_dec,
           "repeats": r, "loadavg_before": la}
    if isinstance(m, Bsl):
        import numba

        row["numba_threads"] = numba.get_num_threads()
        if one_thread:
            m.threads = 1
            t1e, blob1 = timed(lambda: m.encode(ck.sd, ck.sd16), max(1, r - 1))
            t1d, _ = timed(lambda: m.decode(blob1), max(1, r - 1))
            m.threads = None
            assert blob1 == blob, "bslcodec output depends on the thread count"
            row.update(enc_MBps_1thr=mb / t1e, dec_MBps_1thr=mb / t1d)
        if breakdown:
            b = gap.breakdown(blob, ck.n, keep_symbols=True)
            row["_symbols"] = b.pop("_symbols")
            row["breakdown"] = b
    log(f"  {ck.name:9s} {m.label:34s} {row['bpw']:7.3f} b/w  rel {rel:.3e}  max {mx:.2e}  "
        f"cos {cos_mean if cos_mean is not None else float('nan'):.5f}  enc {row['enc_MBps']:7.1f}  "
        f"dec {row['dec_MBps']:7.1f} MB/s  (load {la})")
    return row


# ---------------------------------------------------------------- the plan

def methods_for(ck_name: str, have_nnc: bool, have_zipnn: bool, quick: bool):
    ms = [Safetensors("safetensors (fp32, uncompressed)", {})]
    ms += [Zstd(3, "fp32"), Zstd(19, "fp32"), Zstd(3, "bf16"), Zstd(19, "bf16")]
    if have_zipnn:
        ms += [ZipNNMethod("fp32"), ZipNNMethod("bf16")]
    ms += [Bsl("bslcodec lossless (fp32)", lossless=["*"]),
           Bsl("bslcodec lossless (bf16)", input="bf16", lossless=["*"])]
    bsl = [Bsl(f"bslcodec rel_step={lab}", rel_step=c) for lab, c in REL_STEPS]
    bsl.append(Bsl("bslcodec default (rel_step=1/64)"))
    for b, lab in zip(bsl, [lab for lab, _ in REL_STEPS] + ["default"]):
        b.tag = lab
    qps = [-26, -30, -34, -38, -42, -46] if ck_name == "real" else [-30, -34, -38, -42, -46, -50]
    if quick:
        qps = qps[1::2]
    # max_error=E gives one global step 2E, NNCodec's allocation; E matched to NNCodec's step 2^(qp/4)
    for qp in qps[1:]:
        b = Bsl(f"bslcodec max_error (qp {qp} step)", max_error=2.0 ** (qp / 4) / 2)
        b.family, b.tag = "bslcodec max_error (global step)", None
        bsl.append(b)
    nnc = []
    if have_nnc:
        nnc = [NNCodec(qp, True) for qp in qps]
        nnc += [NNCodec(qp, False) for qp in ([-38] if ck_name == "real" else [-42])]
    return ms, bsl, nnc


def run_ckpt(ck: Ckpt, args, have) -> dict:
    ms, bsl, nnc = methods_for(ck.name, have["nnc"], have["zipnn"], args.quick)
    rows, syms = [], {}
    log(f"[{ck.name}] {ck.n:,} weights, {len(ck.sd)} tensors")
    for m in bsl:
        tag = getattr(m, "tag", None)
        row = measure(m, ck, args.repeats, one_thread=tag in ONE_THREAD_TOO and not args.quick,
                      breakdown=m.family == "bslcodec")
        if "_symbols" in row:
            s = row.pop("_symbols")
            if tag in ("1/8", "1/22", "1/64") or args.quick:
                syms[tag] = s
        rows.append(row)
    for m in ms + nnc:
        try:
            rows.append(measure(m, ck, args.repeats))
        except Exception as exc:  # a broken peer must not sink the whole run
            log(f"  {m.label}: FAILED {type(exc).__name__}: {exc}")
            rows.append({"ckpt": ck.name, "family": m.family, "label": m.label, "error": str(exc)})
    # -- where the bits go and what closes the gap (same symbols, other encoder choices / codes)
    gap_out = {"layout": {}, "rice": {}, "rdoq": []}
    for tag, s in syms.items():
        log(f"  [{ck.name}] layout sweep / Golomb-Rice estimate at rel_step={tag}")
        gap_out["layout"][tag] = gap.layout_sweep(s, ck.n, lane_symbols=(64, 128, 256, 512, 1024)
                                                  if not args.quick else (128, 512), spread=(2, 4))
        gap_out["rice"][tag] = gap.rice_estimate(s, ck.n)
    del syms
    import bslcodec

    lams = [0.1, 0.3] if not args.quick else [0.3]
    for lab, c in REL_STEPS:
        if lab not in ("1/16", "1/22", "1/32"):
            continue
        for lam in lams:
            with gap.rdoq_patch(lam):
                blob = bslcodec.save(ck.sd, rel_step=c)
            back = bslcodec.load(blob)
            mx, rel = ck.errors(back)
            cm, cmin = ck.cos(back)
            gap_out["rdoq"].append({"rel_step": lab, "lam": lam, "bpw": 8 * len(blob) / ck.n, "rel_l2": rel,
                                    "max_abs_err": mx, "cos_mean": cm, "cos_min": cmin})
            log(f"  [{ck.name}] RDOQ rel_step={lab} lam={lam}: {8 * len(blob) / ck.n:.3f} b/w rel {rel:.3e} "
                f"cos {cm if cm is not None else float('nan'):.5f}")
    return {"n_weights": ck.n, "n_tensors": len(ck.sd), "rows": rows, "gap": gap_out}


def git_state():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "bslcodec"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return head, bool(dirty)
    except OSError:
        return None, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "peers"))
    ap.add_argument("--repeats", type=int, default=2, help="timing repeats of fast methods (best of)")
    ap.add_argument("--synthetic-weights", type=int, default=8 << 20)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: 1M synthetic weights, few settings")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    p = peers.import_peers()
    have = {"nnc": p["nnc"] is not None, "zipnn": p["zipnn"] is not None}
    for k, v in p["errors"].items():
        log(f"peer {k} unavailable: {v}  (run tools/bench/setup_peers.sh)")
    import numba
    import torch

    import bslcodec

    head, dirty = git_state()
    out = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(), "bslcodec": bslcodec.__version__, "git_head": head,
        "bslcodec_worktree_dirty": dirty, "peers": p["versions"], "peer_errors": p["errors"],
        "command": "python tools/bench/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeats": args.repeats, "quick": args.quick}}
    if not args.skip_real and not args.quick:
        import minilm

        ck = Ckpt("real", minilm.load_original(), minilm.cosine_vs_original)
        log("real model: original-vs-original cosine", ck.cos(ck.sd))
        out["real"] = run_ckpt(ck, args, have)
        del ck
    n_syn = (1 << 20) if args.quick else args.synthetic_weights
    out["synthetic"] = run_ckpt(Ckpt("synthetic", synthetic(n_syn), None), args, have)
    out["meta"]["wall_s"] = round(time.time() - t0, 1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench_quick.json" if args.quick else "bench.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1, default=float)
    log(f"wrote {path} ({out['meta']['wall_s']} s)")
    if not args.no_report:
        import report

        report.main(["--json", path] + (["--out", args.out, "--md", os.path.join(args.out, "BENCHMARKS_quick.md")]
                                        if args.quick else []))


if __name__ == "__main__":
    main()
