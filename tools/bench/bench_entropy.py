"""Entropy-stage benchmark (issue 12, part 1): ``ans`` vs ``eg`` vs the empirical entropy H0 of the same
symbols, and encode/decode speed of both stages. Writes ``results/entropy_stage.md``.

Run: ``python tools/bench/bench_entropy.py [--n 16000000] [--repeats 3] [--no-minilm]``.

* Same symbols for every coder: ``LossyTensor.code(step)`` (uniform quantization, zigzag), so the rows
  differ only in the entropy stage. Bits/weight are exact payload sizes (tables included); H0 is the
  order-0 empirical entropy of the symbols (per tensor), the bound for any per-tensor order-0 coder.
* "GG param" / "Laplace param": what a parametric model from stored parameters would cost instead of
  the frequency table: the cross-entropy of the symbols under the GG fitted by ``ggd.fit`` (the
  ``gg_nu``/``gg_scale`` already in the params) or a Laplace with ML scale, with exact float
  probabilities (no slot quantization, escapes capped at 40 bits) plus 128 bits of parameters, i.e. a
  lower bound for such a variant, without its lane/group overheads.
* Speed: MB of float32 input per second, median of ``--repeats``, numba compiled beforehand, eg and
  ans timed alternately in the same process. Encode = symbols -> payload (eg: order choice + bit
  packing; ans: histogram + model search + rANS); decode = payload -> float32 values (both dequantize).
"""

import argparse
import os
import pathlib
import platform
import sys
import time

import numba
import numpy as np
from scipy import stats

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bslcodec.codecs import golomb, rans  # noqa: E402
from bslcodec.pipeline import codec

OUT = ROOT / "results" / "entropy_stage.md"
S_ANS = codec.ANS_LANE_SYMBOLS
S_EG = codec.LANE_SYMBOLS


def h0_bits(u: np.ndarray) -> float:
    """n * order-0 empirical entropy of the symbols, in bits."""
    counts = np.bincount(u.astype(np.int64))
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / u.size)).sum())


def _interval_probs(dist, lo, hi):
    """P(lo < X <= hi), accurate in both tails."""
    mid = dist.mean()
    left = dist.cdf(hi) - dist.cdf(lo)
    right = dist.sf(lo) - dist.sf(hi)
    return np.where(lo >= mid, right, left)


def parametric_bits(u: np.ndarray, params: dict, mean: float, nu: float, alpha: float) -> tuple:
    """(GG bits, Laplace bits) for the symbols under models from stored parameters (see module doc)."""
    vals, counts = np.unique(u, return_counts=True)
    v = vals.astype(np.int64)
    q = params["center"] + ((v >> 1) ^ -(v & 1))
    step = params["step"]
    lo, hi = (q - 0.5) * step, (q + 0.5) * step
    out = []
    if alpha > 0:
        gg = stats.gennorm(nu, loc=mean, scale=alpha)
        out.append(_interval_probs(gg, lo, hi))
    else:
        out.append(np.ones_like(lo))
    qq = np.repeat(q, counts)
    med = float(np.median(qq)) * step
    b = max(float(np.abs(qq * step - med).mean()), 1e-30)
    out.append(_interval_probs(stats.laplace(loc=med, scale=b), lo, hi))
    res = []
    for p in out:
        cost = np.minimum(-np.log2(np.maximum(p, 1e-300)), 40.0)
        res.append(float((counts * cost).sum()) + 128)
    return tuple(res)


def timed(fn):
    """(wall seconds, process CPU seconds) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def eg_encode(u, lt, step):
    from bslcodec.container.limits import MAX_EG_ORDER
    from bslcodec.quantize import ggd

    k0 = ggd.best_order(lt.nu, lt.alpha, step)
    ks, lens = golomb.choose_orders(u, S_EG, max(0, k0 - 2), min(MAX_EG_ORDER, k0 + 2))
    return golomb.encode(u, S_EG, ks, lens)


def ans_encode(u, s=S_ANS):
    model, _ = rans.build_model(u)
    return rans.encode(u, s, model), model


def measure(lt, step, repeats, threads_list, speed=True):
    params, ks, lens, u = lt.code(step)
    n = u.size
    eg = golomb.encode(u, S_EG, ks, lens)
    an, model = ans_encode(u)
    row = {"n": n, "h0": h0_bits(u), "eg": 8 * len(eg), "ans": 8 * len(an), "table": 8 * model.header_size,
           "model": f"P={model.prob_bits} s={model.s} m={model.m} K={model.freqs.size}"}
    row["gg"], row["lap"] = parametric_bits(u, params, lt.mean, lt.nu, lt.alpha)
    # the two stages must give the very same values
    a, b = np.empty(n, np.float32), np.empty(n, np.float32)
    golomb.decode_into(eg, n, S_EG, params["center"], step, a, "F32")
    rans.decode_into(an, n, S_ANS, params["center"], step, b, "F32")
    assert a.tobytes() == b.tobytes()
    if not speed:
        return row
    for th in threads_list:
        numba.set_num_threads(th)
        eg_encode(u, lt, step), ans_encode(u)  # warm (threads)
        fns = {"eg_enc": lambda: eg_encode(u, lt, step), "ans_enc": lambda: ans_encode(u),
               "eg_dec": lambda: golomb.decode_into(eg, n, S_EG, params["center"], step, a, "F32"),
               "ans_dec": lambda: rans.decode_into(an, n, S_ANS, params["center"], step, b, "F32")}
        ts = {k: [] for k in fns}
        for _ in range(repeats):  # alternate the coders so both see the same machine load
            for k, fn in fns.items():
                ts[k].append(timed(fn))
        mb = 4 * n / 1e6
        for k, v in ts.items():
            row[f"{k}{th}"] = mb / float(np.median([w for w, _ in v]))
            if th == 1:  # one thread: CPU time is the uncontended cost, whatever else the machine runs
                row[f"{k}cpu"] = mb / float(np.median([c for _, c in v]))
    return row


def synthetic(n, repeats, threads_list):
    rows = []
    for nu in (0.5, 1.0, 2.0):
        x = stats.gennorm.rvs(nu, scale=0.02, size=n, random_state=7).astype(np.float32).reshape(-1, 1000)
        lt = codec.LossyTensor("w", x, "F32")
        for c in (1 / 4, 1 / 16, 1 / 64):
            step = lt.step_for(codec.Settings(rel_step=c))
            row = measure(lt, step, repeats, threads_list)
            u = lt.code(step)[3]
            for s in (512, 2048):
                row[f"ans_S{s}"] = 8 * len(rans.encode(u, s, rans.build_model(u)[0]))
            row.update(nu=nu, c=c)
            rows.append(row)
            print(f"GG {nu} c=1/{round(1 / c)}: H0 {row['h0'] / n:.4f} eg {row['eg'] / n:.4f} ans {row['ans'] / n:.4f} "
                  f"({100 * (row['ans'] / row['h0'] - 1):+.2f}%) | enc eg/ans {row['eg_enc1']:.0f}/{row['ans_enc1']:.0f} "
                  f"dec {row['eg_dec1']:.0f}/{row['ans_dec1']:.0f} MB/s", flush=True)
    return rows


def minilm_rows(repeats, threads_list):
    import minilm

    sd = minilm.load_original()
    out = []
    lts = None
    for c in (1 / 4, 1 / 16, 1 / 64, 1 / 128):
        settings = codec.Settings(rel_step=c)
        if lts is None:
            lts = [codec.LossyTensor(k, a, "F32") for k, a in sorted(sd.items())
                   if codec.wants_lossy(k, a, "F32", settings)]
        tot = {"n": 0, "h0": 0.0, "eg": 0, "ans": 0, "auto": 0, "table": 0, "gg": 0.0, "lap": 0.0, "worst": (0, ""),
               "eg_wins": 0}
        speed = {}
        for lt in lts:
            step = lt.step_for(settings)
            r = measure(lt, step, repeats, threads_list, speed=(c == 1 / 64))
            for k in ("n", "h0", "eg", "ans", "table", "gg", "lap"):
                tot[k] += r[k]
            tot["auto"] += min(r["eg"], r["ans"])
            tot["eg_wins"] += r["eg"] < r["ans"]
            if r["n"] >= 32 * S_ANS and r["h0"]:  # at least one full ans group
                tot["worst"] = max(tot["worst"], (r["ans"] / r["h0"] - 1, f"{lt.name} ({r['n']:,})"))
            for k, v in r.items():
                if k.startswith(("eg_enc", "ans_enc", "eg_dec", "ans_dec")):
                    speed[k] = speed.get(k, 0.0) + 4 * r["n"] / 1e6 / v  # seconds
        tot.update(c=c, tensors=len(lts))
        if speed:
            mb = 4 * tot["n"] / 1e6
            tot.update({k: mb / v for k, v in speed.items()})
        out.append(tot)
        n = tot["n"]
        print(f"MiniLM c=1/{round(1 / c)}: H0 {tot['h0'] / n:.4f} eg {tot['eg'] / n:.4f} ans {tot['ans'] / n:.4f} "
              f"({100 * (tot['ans'] / tot['h0'] - 1):+.2f}%)", flush=True)
    return out


def _tl(t):
    return "1T CPU-time" if t == "cpu" else f"{t}T"


def fmt_speed(r, th):
    if f"eg_enc{th}" not in r:
        return "– | – | – | –"
    return (f"{r[f'eg_enc{th}']:.0f} | {r[f'ans_enc{th}']:.0f} | {r[f'eg_dec{th}']:.0f} | {r[f'ans_dec{th}']:.0f}")


def write(rows, mrows, args, load_before, load_after):
    L = ["# Entropy stage: `ans` (interleaved rANS, spec 4.4) vs `eg` (exp-Golomb, 4.3) vs H0", ""]
    L.append(f"Generated by `python tools/bench/bench_entropy.py --n {args.n} --repeats {args.repeats}"
             f"{' --no-minilm' if args.no_minilm else ''}` on {platform.machine()}, {os.cpu_count()} cores, "
             f"numba {numba.__version__}. Load average before/after: {load_before} / {load_after} (a shared, busy "
             "machine: speeds are medians of alternating eg/ans runs and are good to about ±30 % relative, "
             "worse absolute; sizes are exact and deterministic).")
    L.append("")
    L.append(f"`ans`: S = {S_ANS} symbols a lane (group of 32·{S_ANS}); `eg`: S = {S_EG}. Bits/weight = payload "
             "bits / elements, every table included (ans: model header + frequency table + uint32 word count "
             "per group + lane states; eg: lane lengths + orders). H0 = order-0 empirical entropy of the same "
             "symbols. Speeds: MB of float32 input per second (symbols -> payload for encode, payload -> "
             "float32 for decode).")
    L.append("")
    L.append("## Synthetic generalized-Gaussian tensors")
    L.append("")
    L.append(f"scipy `gennorm(shape, scale=0.02)`, {args.n:,} float32 elements each, step = rel_step · std.")
    L.append("")
    L.append("| GG shape | rel_step | H0 | eg | ans | ans − H0 | ans/H0 − 1 | eg/H0 − 1 | ans table b/w | ans model | "
             "ans S=512 | ans S=2048 | GG param | Laplace param |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = r["n"]
        L.append(f"| {r['nu']} | 1/{round(1 / r['c'])} | {r['h0'] / n:.4f} | {r['eg'] / n:.4f} | **{r['ans'] / n:.4f}** | "
                 f"{(r['ans'] - r['h0']) / n:+.4f} | {100 * (r['ans'] / r['h0'] - 1):+.2f} % | "
                 f"{100 * (r['eg'] / r['h0'] - 1):+.2f} % | {r['table'] / n:.5f} | {r['model']} | "
                 f"{r['ans_S512'] / n:.4f} | {r['ans_S2048'] / n:.4f} | {r['gg'] / n:.4f} | {r['lap'] / n:.4f} |")
    L.append("")
    L.append("Speed (MB/s of float32 input; `nT` = wall clock with n Numba threads, `1T CPU-time` = one thread, "
             "MB per second of process CPU time, i.e. what an idle core would do):")
    L.append("")
    ths = list(args.threads) + (["cpu"] if 1 in args.threads else [])
    head = " | ".join(f"eg enc {_tl(t)} | ans enc {_tl(t)} | eg dec {_tl(t)} | ans dec {_tl(t)}" for t in ths)
    L.append(f"| GG shape | rel_step | {head} |")
    L.append("|---|---|" + "---|" * (4 * len(ths)))
    for r in rows:
        L.append(f"| {r['nu']} | 1/{round(1 / r['c'])} | " + " | ".join(fmt_speed(r, t) for t in ths) + " |")
    if mrows:
        L.append("")
        L.append("## Real model: all-MiniLM-L6-v2")
        L.append("")
        L.append(f"The {mrows[0]['tensors']} tensors `codec.wants_lossy` quantizes ({mrows[0]['n']:,} weights; 1-D "
                 "tensors stay lossless and are not counted), step = rel_step · std per tensor. Sums over "
                 "tensors; `auto` = the smaller of eg and ans per tensor (what `save` writes).")
        L.append("")
        L.append("| rel_step | H0 | eg | ans | auto | tensors auto gives eg | ans/H0 − 1 | eg/H0 − 1 | ans tables b/w "
                 f"| worst tensor (>= {32 * S_ANS:,} elements) ans/H0 − 1 | GG param | Laplace param |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in mrows:
            n = r["n"]
            L.append(f"| 1/{round(1 / r['c'])} | {r['h0'] / n:.4f} | {r['eg'] / n:.4f} | **{r['ans'] / n:.4f}** | "
                     f"{r['auto'] / n:.4f} | {r['eg_wins']} | {100 * (r['ans'] / r['h0'] - 1):+.2f} % | "
                     f"{100 * (r['eg'] / r['h0'] - 1):+.2f} % | {r['table'] / n:.5f} | "
                     f"{100 * r['worst'][0]:+.2f} % {r['worst'][1]} | {r['gg'] / n:.4f} | {r['lap'] / n:.4f} |")
        r = next(r for r in mrows if "eg_enc1" in r)
        L.append("")
        L.append("Speed over those tensors at rel_step 1/64 (sum of per-tensor times; MB/s of float32 input):")
        L.append("")
        L.append(f"| {head} |")
        L.append("|" + "---|" * (4 * len(ths)))
        L.append("| " + " | ".join(fmt_speed(r, t) for t in ths) + " |")
    L.append("")
    L.append("## Summary")
    L.append("")
    worst = max(rows, key=lambda r: r["ans"] / r["h0"])
    L.append(f"- Synthetic: ans is {100 * (min(r['ans'] / r['h0'] for r in rows) - 1):.2f}–"
             f"{100 * (worst['ans'] / worst['h0'] - 1):.2f} % above H0 (goal: within 1 %, tables included); eg is "
             f"{100 * (min(r['eg'] / r['h0'] for r in rows) - 1):.1f}–{100 * (max(r['eg'] / r['h0'] for r in rows) - 1):.1f} %.")
    if mrows:
        L.append(f"- MiniLM: ans is {100 * (min(r['ans'] / r['h0'] for r in mrows) - 1):.2f}–"
                 f"{100 * (max(r['ans'] / r['h0'] for r in mrows) - 1):.2f} % above H0 over the lossy tensors; eg "
                 f"{100 * (min(r['eg'] / r['h0'] for r in mrows) - 1):.1f}–{100 * (max(r['eg'] / r['h0'] for r in mrows) - 1):.1f} %.")
    for t in ths:
        re = [r[f"ans_enc{t}"] / r[f"eg_enc{t}"] for r in rows]
        rd = [r[f"ans_dec{t}"] / r[f"eg_dec{t}"] for r in rows]
        L.append(f"- {_tl(t)}, synthetic: ans encode {min(re):.2f}–{max(re):.2f}× eg's speed, decode "
                 f"{min(rd):.2f}–{max(rd):.2f}×.")
    L.append("")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(L))
    print(f"wrote {OUT}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-minilm", action="store_true")
    args = ap.parse_args()
    load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    rows = synthetic(args.n, args.repeats, args.threads)
    mrows = [] if args.no_minilm else minilm_rows(args.repeats, args.threads)
    load_after = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    write(rows, mrows, args, load_before, load_after)


if __name__ == "__main__":
    main()
