"""bslcodec vs NNCodec, zstd, ZipNN and safetensors on a real model and a synthetic GG checkpoint.

    . .venv/bin/activate
    bash tools/bench/setup_peers.sh                 # once: NNCodec + ZipNN outside the venv
    python tools/bench/run_all.py                   # ~25-30 min on 2 shared cores -> results/peers/*.json, *.png,
                                                    #    results/peers/minilm.md (via report.py)
    python tools/bench/report.py                    # redraw plots + results/peers/minilm.md from the JSON only

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
from peers import Bsl, NNCodec, Safetensors, ZipNNMethod, Zstd  # noqa: E402


def rs(x: float) -> tuple:
    """rel_step 2^-x as (label, value): 1/4, 1/5.66, 1/8, 1/11.3, 1/16, 1/22.6, ..."""
    c = 2.0 ** -x
    return f"1/{1 / c:.3g}", c


# bslcodec settings, as log2(1/rel_step); half octaves where the headline's operating points are
# ("dq"/"dq_sens": quantizer="dq" at the same rel_steps as plain/sens; on the real model eg and rdoq were cut to
# 4 and 2 points to pay for them, keeping the whole run near 25 min on 2 shared cores)
PLAN = {
    "real": {"plain": [2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7], "sens": [2, 2.5, 3, 3.5, 4, 4.5, 5],
             "dq": [2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7], "dq_sens": [2, 2.5, 3, 3.5, 4, 4.5, 5],
             "eg": [3, 4, 5, 7], "rdoq": [3.5, 5],
             "nnc_qps": [-34, -36, -38, -40, -42, -46], "nnc_off": [-38], "nnc_sens": [3, 3.5, 4, 4.5, 5]},
    "synthetic": {"plain": [2, 3, 4, 4.5, 5, 6, 7], "sens": [], "dq": [2, 3, 4, 4.5, 5, 6, 7], "dq_sens": [],
                  "eg": [2, 3, 4, 5, 6, 7], "rdoq": [2, 3, 4],
                  "nnc_qps": [-34, -38, -42, -46, -50], "nnc_off": [-42], "nnc_sens": []},
}
QUICK = {"plain": [3, 4, 6], "sens": [3, 4], "dq": [3, 4, 6], "dq_sens": [3, 4], "eg": [3, 6], "rdoq": [4],
         "nnc_qps": [-34, -42], "nnc_off": [-42], "nnc_sens": [3]}
FAM_PLAIN, FAM_SENS, FAM_EG, FAM_RDOQ = ("bslcodec", "bslcodec + sensitivity", "bslcodec codec=eg",
                                         "bslcodec rdoq=True")
FAM_DQ, FAM_DQ_SENS = "bslcodec quantizer=dq", "bslcodec quantizer=dq + sensitivity"
FAM_ME = "bslcodec max_error (global step)"
FAM_NNC_SENS = "NNCodec + sensitivity (qp_per_tensor)"


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
            row["breakdown"] = gap.breakdown(blob, ck.n)
    log(f"  {ck.name:9s} {m.label:34s} {row['bpw']:7.3f} b/w  rel {rel:.3e}  max {mx:.2e}  "
        f"cos {cos_mean if cos_mean is not None else float('nan'):.5f}  enc {row['enc_MBps']:7.1f}  "
        f"dec {row['dec_MBps']:7.1f} MB/s  (load {la})")
    return row


# ---------------------------------------------------------------- the plan

def methods_for(ck: "Ckpt", have_nnc: bool, have_zipnn: bool, args, sens=None):
    plan = QUICK if args.quick else PLAN[ck.name]
    ms = [Safetensors("safetensors (fp32, uncompressed)", {})]
    big = ck.n * 4 > args.zstd19_max_mb * 1e6
    for inp in ("fp32", "bf16"):
        ms.append(Zstd(3, inp))
        if not (big and inp == "fp32"):
            ms.append(Zstd(19, inp))
        else:
            args.skipped.append(f"zstd -19 on {ck.name} {inp} ({ck.n * 4 / 1e6:.0f} MB > --zstd19-max-mb "
                                f"{args.zstd19_max_mb:g})")
    if have_zipnn:
        ms += [ZipNNMethod("fp32"), ZipNNMethod("bf16")]
    ms += [Bsl("bslcodec lossless (fp32)", lossless=True),
           Bsl("bslcodec lossless (bf16)", input="bf16", lossless=True)]

    def bsl(family, x, **kw):
        lab, c = rs(x)
        name = {FAM_PLAIN: "bslcodec", FAM_SENS: "bslcodec+sens", FAM_EG: "bslcodec eg",
                FAM_RDOQ: "bslcodec rdoq", FAM_DQ: "bslcodec dq", FAM_DQ_SENS: "bslcodec dq+sens"}[family]
        b = Bsl(f"{name} rel_step={lab}", rel_step=c, **kw)
        b.family, b.tag = family, lab
        return b

    # plain = plain rounding (quantizer="uniform"); since dq became the default it must be asked for
    out = [bsl(FAM_PLAIN, x, quantizer="uniform") for x in plan["plain"]]
    d = Bsl("bslcodec default")  # dq (quantizer="auto" at rel_step=1/64)
    d.tag = "default"
    out.append(d)
    if sens is not None:
        out += [bsl(FAM_SENS, x, sensitivity=sens, quantizer="uniform") for x in plan["sens"]]
    out += [bsl(FAM_DQ, x, quantizer="dq") for x in plan["dq"]]
    if sens is not None:
        out += [bsl(FAM_DQ_SENS, x, quantizer="dq", sensitivity=sens) for x in plan["dq_sens"]]
    out += [bsl(FAM_EG, x, codec="eg") for x in plan["eg"]]
    out += [bsl(FAM_RDOQ, x, rdoq=True) for x in plan["rdoq"]]
    # max_error=E gives one global step 2E, NNCodec's allocation; E matched to NNCodec's step 2^(qp/4)
    for qp in plan["nnc_qps"]:
        b = Bsl(f"bslcodec max_error (qp {qp} step)", max_error=2.0 ** (qp / 4) / 2)
        b.family, b.tag = FAM_ME, None
        out.append(b)
    nnc = []
    if have_nnc:
        nnc = [NNCodec(qp, True) for qp in plan["nnc_qps"]]
        nnc += [NNCodec(qp, False) for qp in plan["nnc_off"]]
        if sens is not None:
            for x in plan["nnc_sens"]:
                lab, c = rs(x)
                qp, per = nnc_qps_for(ck.sd, sens, c)
                m = NNCodec(qp, True, qp_per_tensor=per, label=f"NNCodec+sens c={lab} dq=on")
                m.family, m.setting = FAM_NNC_SENS, {"rel_step": lab, "qp_per_tensor": per, "use_dq": True}
                nnc.append(m)
    return ms, out, nnc


def nnc_qps_for(sd: dict, sens: dict, c: float) -> tuple:
    """NNCodec's qp per tensor for bslcodec's sensitivity steps at rel_step c (qp_density 2: step 2^(qp/4),
    so each step is rounded to the nearest 2^(1/4)). Returns (qp of the largest tensor, {name: qp})."""
    from bslcodec.pipeline.codec import Settings
    from bslcodec.pipeline import codec as _codec

    st = Settings(max_error=None, rel_step=c, bits=None, lossless=(), rdoq=None)
    lossy = {}
    for k, v in sd.items():
        if _codec.wants_lossy(k, v, "F32", st):
            lossy[k] = _codec.LossyTensor(k, v, "F32")
    _codec.apply_sensitivity(lossy, sens)
    per = {k: int(round(4 * np.log2(c * t.unit))) for k, t in lossy.items() if t.std > 0}
    big = max(per, key=lambda k: sd[k].size)
    return per[big], per


def run_ckpt(ck: Ckpt, args, have, sens=None) -> dict:
    ms, bsl, nnc = methods_for(ck, have["nnc"], have["zipnn"], args, sens)
    rows = []
    log(f"[{ck.name}] {ck.n:,} weights, {len(ck.sd)} tensors")
    for m in bsl:
        tag = getattr(m, "tag", None)
        lossless = m.kw.get("lossless")
        row = measure(m, ck, args.repeats, one_thread=m.family.startswith("bslcodec"),
                      breakdown=not lossless)
        rows.append(row)
    for m in ms + nnc:
        try:
            rows.append(measure(m, ck, args.repeats))
        except Exception as exc:  # a broken peer must not sink the whole run
            log(f"  {m.label}: FAILED {type(exc).__name__}: {exc}")
            rows.append({"ckpt": ck.name, "family": m.family, "label": m.label, "error": str(exc)})
    return {"n_weights": ck.n, "n_tensors": len(ck.sd), "rows": rows}


def git_state():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "bslcodec"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head, bool(dirty)
    except OSError:
        return None, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "peers"))
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats of fast methods (best of)")
    ap.add_argument("--synthetic-weights", type=int, default=8 << 20)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: 1M synthetic weights, few settings")
    ap.add_argument("--with-real", action="store_true", help="with --quick: the real model too (QUICK settings)")
    ap.add_argument("--zstd19-max-mb", type=float, default=1e9,
                    help="skip zstd -19 on fp32 inputs larger than this many MB (it is ~100x slower than -3 for "
                         "+0.3 %% size)")
    ap.add_argument("--sens-from", help="read sensitivities from this JSON instead of calibrating (smoke runs)")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    args.skipped = []
    t0 = time.time()
    p = peers.import_peers()
    have = {"nnc": p["nnc"] is not None, "zipnn": p["zipnn"] is not None}
    for k, v in p["errors"].items():
        log(f"peer {k} unavailable: {v}  (run tools/bench/setup_peers.sh)")
    # warm-up: compile / load every Numba kernel the timed runs use, so no row pays for the JIT
    import ml_dtypes
    import numba
    import torch

    import bslcodec

    w = synthetic(1 << 18, seed=1)
    w16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in w.items()}
    for kw in ({}, {"expert": {"rel_step": 1 / 16}}, {"expert": {"codec": "eg"}}, {"expert": {"codec": "ans"}},
               {"expert": {"rdoq": True}}, {"max_error": 1e-3}, {"exact": True}, {"expert": {"quantizer": "dq"}}):
        bslcodec.load(bslcodec.save(w, **kw))
        bslcodec.load(bslcodec.save(w16, **kw))
        numba.set_num_threads(1)
        bslcodec.load(bslcodec.save(w, **kw))
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    log("warm-up done")
    head, dirty = git_state()
    out = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(), "bslcodec": bslcodec.__version__, "git_head": head,
        "bslcodec_worktree_dirty": dirty, "peers": p["versions"], "peer_errors": p["errors"],
        "command": "python tools/bench/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeats": args.repeats, "quick": args.quick}}
    if not args.skip_real and (not args.quick or args.with_real):
        import minilm
        from minilm_allocation import CALIBRATION

        from bslcodec.calibrate import sensitivity

        ck = Ckpt("real", minilm.load_original(), minilm.cosine_vs_original)
        log("real model: original-vs-original cosine", ck.cos(ck.sd))
        # sensitivity= allocation: calibrated here, on 16 sentences disjoint from the 50 evaluation sentences
        assert not set(CALIBRATION) & set(minilm.SENTENCES)
        if args.sens_from:
            with open(args.sens_from) as fh:
                sens = json.load(fh)
            out["meta"]["calibration"] = {"from": args.sens_from}
        else:
            la, t = loadavg(), time.perf_counter()
            sens = sensitivity(lambda w: minilm.embed(w, CALIBRATION), ck.sd)
            out["meta"]["calibration"] = {"seconds": round(time.perf_counter() - t, 1), "loadavg_before": la,
                                          "sentences": len(CALIBRATION), "tensors": len(sens),
                                          "forward_passes": len(sens) + 1}
            log(f"calibrated sensitivities of {len(sens)} tensors in {out['meta']['calibration']['seconds']} s")
        out["real"] = run_ckpt(ck, args, have, sens)
        out["real"]["sensitivity"] = sens
        del ck
    n_syn = (1 << 20) if args.quick else args.synthetic_weights
    out["synthetic"] = run_ckpt(Ckpt("synthetic", synthetic(n_syn), None), args, have)
    out["meta"]["wall_s"] = round(time.time() - t0, 1)
    if args.skipped:
        out["meta"]["zstd19_skipped"] = ("Not run, to keep the run within its time budget: " + "; ".join(args.skipped)
                                         + ". On the synthetic fp32 input -19 was run; compare -3 and -19 there.")
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
