"""Plots (PNG) and BENCHMARKS.md from the JSON written by run_all.py.

    python tools/bench/report.py [--json results/peers/bench.json] [--out results/peers] [--md BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

BSL, BSLME, NNC, NNCOFF = "bslcodec", "bslcodec max_error (global step)", "NNCodec (DQ on)", "NNCodec (DQ off)"
COS_TARGETS = [0.996, 0.999, 0.9992, 0.9998]
OTHER_RESULTS = [("results/gpu_decode.md", "GPU decode"),
                 ("results/minilm_rate_quality.md", "all-MiniLM-L6-v2 rate vs quality"),
                 ("results/training.md", "training with the codec in the loop"),
                 ("results/reliability.md", "reliability"),
                 ("results/codec_bench.md", "codec micro-benchmark (synthetic GG, bits and CPU speed)")]


# ---------------------------------------------------------------- data helpers

def ok_rows(d, ckpt, alloc=True):
    return [r for r in d[ckpt]["rows"] if "error" not in r and (alloc or not r.get("alloc"))]


def fam(rows, family):
    return [r for r in rows if r["family"] == family]


def curve(rows, xkey, ykey="bpw"):
    pts = [(r[xkey], r[ykey]) for r in rows if r.get(xkey) is not None and r.get(ykey) is not None]
    return sorted(pts)


def _x(v, kind):
    return math.log(1 - v) if kind == "cos" else math.log(v)


def interp(rows, kind, target, ykey="bpw"):
    """bits/weight of a family at equal quality (kind "cos": cos_mean = target; "rel": rel_l2 = target),
    linear in log(1 - cos) or log(rel_l2); None outside the measured range."""
    key = "cos_mean" if kind == "cos" else "rel_l2"
    pts = []
    for r in rows:
        v = r.get(key)
        if v is None or r.get(ykey) is None or (kind == "cos" and v >= 1) or (kind == "rel" and v <= 0):
            continue
        pts.append((_x(v, kind), r[ykey]))
    if len(pts) < 2:
        return None
    pts.sort()
    xs, ys = zip(*pts)
    t = _x(target, kind)
    if t < xs[0] or t > xs[-1]:
        return None
    return float(np.interp(t, xs, ys))


def fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def sci(v):
    return "–" if v is None else ("0" if v == 0 else f"{v:.2e}")


def h0_rows(rows):
    """The bslcodec rel_step curve with its EG code bits replaced by the entropy H0 of the same symbols:
    the size an ideal static (arithmetic/ANS) coder would reach, side info excluded."""
    out = []
    for r in fam(rows, BSL):
        b = r.get("breakdown")
        if b:
            out.append(dict(r, bpw=b["file_bpw"] - b["eg_code_bpw"] + b["h0_bpw"] - b["lane_tables_bpw"]
                            - b["word_padding_bpw"]))
    return out


def rdoq_rows(d, ckpt, lam):
    return [dict(r) for r in d[ckpt]["gap"]["rdoq"] if r["lam"] == lam]


# ---------------------------------------------------------------- plots

STYLE = {BSL: dict(color="C0", marker="o", lw=2), BSLME: dict(color="C9", marker="s", lw=1.2, ls="-."),
         NNC: dict(color="C3", marker="^", lw=2), NNCOFF: dict(color="C1", marker="v", lw=0, ms=8),
         "H0": dict(color="C0", ls=":", lw=1.5)}
POINTS = [("zstd (bf16)", "zstd -3 (bf16)", "C7", "x"), ("ZipNN (bf16)", "ZipNN (bf16)", "C2", "D"),
          ("bslcodec lossless (bf16)", "bslcodec lossless (bf16)", "C4", "P")]


def plot_rd(d, ckpt, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ok_rows(d, ckpt)
    panels = [("rel_l2", "relative L2 error ‖W−Ŵ‖/‖W‖"), ("max_abs_err", "max |w − ŵ|")]
    if ckpt == "real":
        panels.append(("one_minus_cos", "1 − embedding cosine similarity (mean of 50 sentences)"))
    for r in rows:
        r["one_minus_cos"] = None if r.get("cos_mean") is None else max(1 - r["cos_mean"], 1e-9)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.0))
    star = False
    for ax, (xk, xl) in zip(np.atleast_1d(axes), panels):
        for family, label in ((BSL, "bslcodec (rel_step = c·std)"), (BSLME, "bslcodec max_error (one global step)"),
                              (NNC, "NNCodec 2.1.3 (DQ on, CABAC)"), (NNCOFF, "NNCodec (DQ off)")):
            pts = curve(fam(rows, family), xk)
            if pts:
                ax.plot(*zip(*pts), label=label, **STYLE[family])
        h0 = [dict(r, one_minus_cos=r["one_minus_cos"]) for r in h0_rows(rows)]
        pts = curve(h0, xk)
        if pts:
            ax.plot(*zip(*pts), label="bslcodec symbols at entropy H0 (ideal coder)", **STYLE["H0"])
        for lam, c in ((0.3, "C5"),):
            rr = rdoq_rows(d, ckpt, lam)
            for r in rr:
                r["one_minus_cos"] = None if r.get("cos_mean") is None else 1 - r["cos_mean"]
            pts = curve(rr, xk)
            if pts:
                ax.plot(*zip(*pts), color=c, marker=".", lw=1, label=f"bslcodec + RDOQ λ={lam} (same format)")
        for who, c, mk in (("bslcodec", "C0", "*"), ("NNCodec", "C3", "*")):
            pts = curve(fam(rows, f"{who}, word embeddings at 4x step"), xk)
            if pts and xk == "one_minus_cos":
                ax.plot(*zip(*pts), color=c, marker=mk, ms=9, lw=1.2, ls="--",
                        label=f"{who}, word_embeddings at 4× step")
                star = True
        for fam_name, lab, c, mk in POINTS:
            pts = curve(fam(rows, fam_name), xk)
            if pts:
                ax.plot(*zip(*pts), ls="", marker=mk, color=c, ms=8, label=lab + " (bf16 cast)")
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xl)
        ax.set_ylabel("bits per weight")
        ax.grid(True, which="both", alpha=0.3)
        if xk == "one_minus_cos":
            for t in (0.999, 0.9992):
                ax.axvline(1 - t, color="k", lw=0.6, ls="--", alpha=0.5)
    lossless = {r["label"]: r["bpw"] for r in rows if r["lossless"]}
    note = "lossless fp32 (off the chart): " + ", ".join(
        f"{k.replace(' (fp32)', '').replace(' (fp32, uncompressed)', '')} {v:.1f}" for k, v in sorted(lossless.items(), key=lambda kv: kv[1]))
    np.atleast_1d(axes)[0].legend(fontsize=7.5, loc="upper right")
    if star:
        ax = np.atleast_1d(axes)[-1]
        hs = [h for h in ax.get_lines() if "4×" in str(h.get_label())]
        ax.legend(hs, [h.get_label() for h in hs], fontsize=7.5, loc="upper right")
    name = "all-MiniLM-L6-v2 (22.7 M weights)" if ckpt == "real" else f"synthetic GG checkpoint ({d[ckpt]['n_weights'] / 1e6:.1f} M weights)"
    fig.suptitle(f"Rate–distortion, {name}.  {note} b/w", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speed_rows(rows):
    """One representative per codec: median MB/s over its settings."""
    groups = {}
    for r in rows:
        key = r["family"]
        if r["family"].startswith("zstd"):
            key = f"{r['label']}"
        groups.setdefault(key, []).append(r)
    out = []
    for key, rr in groups.items():
        e = float(np.median([r["enc_MBps"] for r in rr]))
        dd = float(np.median([r["dec_MBps"] for r in rr]))
        out.append((key, e, dd, len(rr)))
        e1 = [r["enc_MBps_1thr"] for r in rr if "enc_MBps_1thr" in r]
        if e1:
            out.append((key + " (1 thread)", float(np.median(e1)),
                        float(np.median([r["dec_MBps_1thr"] for r in rr if "dec_MBps_1thr" in r])), len(e1)))
    order = [BSL + " (1 thread)", BSL, BSLME, NNC, NNCOFF]
    out.sort(key=lambda t: (order.index(t[0]) if t[0] in order else 99, t[0]))
    return out


def plot_speed(d, ckpt, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sr = speed_rows(ok_rows(d, ckpt, alloc=False))
    fig, ax = plt.subplots(figsize=(11, 5))
    y = np.arange(len(sr))
    ax.barh(y - 0.2, [s[1] for s in sr], 0.4, label="encode", color="C0")
    ax.barh(y + 0.2, [s[2] for s in sr], 0.4, label="decode", color="C1")
    for i, s in enumerate(sr):
        ax.text(s[1] * 1.05, i - 0.2, f"{s[1]:.0f}" if s[1] >= 10 else f"{s[1]:.1f}", va="center", fontsize=7)
        ax.text(s[2] * 1.05, i + 0.2, f"{s[2]:.0f}" if s[2] >= 10 else f"{s[2]:.1f}", va="center", fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels([s[0] for s in sr], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("MB/s, fp32-equivalent (4 bytes × weights / s), median over settings; higher is better")
    m = d["meta"]
    ax.set_title(f"Speed on {ckpt} checkpoint, {m['cpus']} CPU cores shared with other jobs "
                 f"(load average {np.median([r['loadavg_before'] for r in ok_rows(d, ckpt, alloc=False) if r.get('loadavg_before') is not None]):.1f})",
                 fontsize=9)
    ax.legend()
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gap(d, ckpt, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in fam(ok_rows(d, ckpt), BSL) if "breakdown" in r and "default" not in r["label"]]
    labs = [r["label"].replace("bslcodec rel_step=", "c=") for r in rows]
    parts = [("h0_bpw", "entropy H0 of the symbols", "C0"), ("eg_minus_h0_bpw", "exp-Golomb − H0", "C3"),
             ("lane_tables_bpw", "lane tables + group orders", "C2"), ("word_padding_bpw", "64-bit word padding", "C8"),
             ("lossless_tensors_bpw", "lossless 1-D tensors", "C4"), ("header_bpw", "header + preamble", "C7"),
             ("alignment_bpw", "64-byte alignment", "C5")]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    bottom = np.zeros(len(rows))
    for key, lab, c in parts:
        v = np.array([r["breakdown"][key] for r in rows])
        ax.bar(labs, v, bottom=bottom, label=lab, color=c)
        bottom += v
    for i, r in enumerate(rows):
        b = r["breakdown"]
        ax.text(i, bottom[i] + 0.05, f"{b['file_bpw']:.2f}\n(+{b['eg_minus_h0_bpw']:.2f} EG)", ha="center", fontsize=7)
    ax.set_ylabel("bits per weight")
    ax.set_title(f"Where bslcodec's bits go ({ckpt} checkpoint)", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper left")
    ax.set_ylim(0, bottom.max() * 1.18)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- markdown

def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def full_table(d, ckpt):
    rows = ok_rows(d, ckpt, alloc=False)
    real = ckpt == "real"
    hdr = ["method", "bits/weight", "ratio vs fp32", "max abs err", "rel L2 err"] + (["cos mean", "cos min"] if real else []) \
        + ["enc MB/s", "dec MB/s", "enc/dec MB/s, 1 thread"]
    out = []
    for r in rows:
        one = f"{r['enc_MBps_1thr']:.0f} / {r['dec_MBps_1thr']:.0f}" if "enc_MBps_1thr" in r else ""
        c = [r["label"], f"{r['bpw']:.3f}", f"{r['ratio_vs_fp32']:.2f}", sci(r["max_abs_err"]), sci(r["rel_l2"])]
        if real:
            c += [fmt(r["cos_mean"], 5), fmt(r["cos_min"], 5)]
        c += [f"{r['enc_MBps']:.1f}", f"{r['dec_MBps']:.1f}", one]
        out.append(c)
    failed = [r for r in d[ckpt]["rows"] if "error" in r]
    s = table(hdr, out)
    if failed:
        s += "\n\nFailed: " + "; ".join(f"{r['label']}: {r['error']}" for r in failed)
    return s


def gap_table(d, ckpt):
    g = d[ckpt]["gap"]
    out = []
    for r in fam(ok_rows(d, ckpt), BSL):
        b = r.get("breakdown")
        if not b or "default" in r["label"]:
            continue
        tag = r["label"].split("=")[-1]
        lay = g["layout"].get(tag)
        best = min((x for x in lay if x["lane_symbols"] != "whole tensor"), key=lambda x: x["payload_bpw"]) if lay else None
        s512 = next((x for x in lay if x["lane_symbols"] == 512 and x["k_range"] == "k0±2"), None) if lay else None
        rice = g["rice"].get(tag)
        out.append([f"c={tag}", f"{b['file_bpw']:.3f}", f"{b['eg_code_bpw']:.3f}", f"{b['h0_bpw']:.3f}",
                    f"**+{b['eg_minus_h0_bpw']:.3f}**", f"{100 * (b['eg_over_h0'] - 1):.1f} %",
                    f"{b['lane_tables_bpw']:.4f}", f"{b['word_padding_bpw']:.4f}",
                    f"{b['header_bpw'] + b['alignment_bpw']:.4f}", f"{b['lossless_tensors_bpw']:.4f}",
                    f"{b['k_median']:.0f}",
                    "–" if not best else f"{best['payload_bpw'] - s512['payload_bpw']:+.3f} (S={best['lane_symbols']}, {best['k_range']})",
                    "–" if rice is None else f"{rice:.3f} ({rice - b['eg_code_bpw']:+.3f})"])
    return table(["setting", "file b/w", "EG code bits", "H0 (same symbols)", "EG − H0", "EG/H0 − 1", "lane tables",
                  "word padding", "header + align", "lossless 1-D", "median k",
                  "best other S / k range (Δ payload)", "Golomb-Rice estimate (Δ vs EG)"], out)


def rdoq_table(d, ckpt):
    rows = ok_rows(d, ckpt)
    base = fam(rows, BSL)
    out = []
    for r in d[ckpt]["gap"]["rdoq"]:
        same = interp(base, "rel", r["rel_l2"])
        plain = next((b for b in base if b["label"].endswith("=" + r["rel_step"])), None)
        c = [f"c={r['rel_step']}", r["lam"], f"{plain['bpw']:.3f}" if plain else "–", f"{r['bpw']:.3f}",
             sci(r["rel_l2"]), fmt(same, 3), "–" if same is None else f"**{r['bpw'] - same:+.3f}**"]
        if ckpt == "real":
            samec = interp(base, "cos", r["cos_mean"])
            c += [fmt(r["cos_mean"], 5), "–" if samec is None else f"{r['bpw'] - samec:+.3f}"]
        out.append(c)
    hdr = ["setting", "λ", "plain b/w", "RDOQ b/w", "RDOQ rel L2", "plain b/w at that rel L2", "gain at equal rel L2"]
    if ckpt == "real":
        hdr += ["RDOQ cos", "gain at equal cos"]
    return table(hdr, out)


def headline(d):
    rows = ok_rows(d, "real")
    b, me, n = fam(rows, BSL), fam(rows, BSLME), fam(rows, NNC)
    h0 = h0_rows(rows)
    al = fam(rows, "bslcodec, word embeddings at 4x step")
    an = fam(rows, "NNCodec, word embeddings at 4x step")
    out = []
    for t in COS_TARGETS:
        vb, vm, vn, vh, va, vna = (interp(x, "cos", t) for x in (b, me, n, h0, al, an))
        out.append([f"cos = {t}", fmt(vb), fmt(vm), fmt(vn), fmt(vh),
                    "–" if vb is None or vn is None else f"**{vb - vn:+.2f} ({100 * (vb / vn - 1):+.1f} %)**",
                    fmt(va), fmt(vna),
                    "–" if va is None or vna is None else f"**{va - vna:+.2f} ({100 * (va / vna - 1):+.1f} %)**"])
    return out


def rel_compare(d, ckpt, targets):
    rows = ok_rows(d, ckpt)
    b, me, n = fam(rows, BSL), fam(rows, BSLME), fam(rows, NNC)
    h0 = h0_rows(rows)
    out = []
    for t in targets:
        vb, vm, vn, vh = (interp(x, "rel", t) for x in (b, me, n, h0))
        out.append([f"rel L2 = {t:.2e}", fmt(vb), fmt(vm), fmt(vn), fmt(vh),
                    "–" if vb is None or vn is None else f"{vb - vn:+.2f} ({100 * (vb / vn - 1):+.1f} %)"])
    return out


def speed_compare(d, ckpt):
    rows = ok_rows(d, ckpt)
    b, n = fam(rows, BSL), fam(rows, NNC)
    if not b or not n:
        return None
    med = lambda rr, k: float(np.median([r[k] for r in rr if k in r])) if any(k in r for r in rr) else None  # noqa: E731
    return {"bsl_enc": med(b, "enc_MBps"), "bsl_dec": med(b, "dec_MBps"), "bsl_enc1": med(b, "enc_MBps_1thr"),
            "bsl_dec1": med(b, "dec_MBps_1thr"), "nnc_enc": med(n, "enc_MBps"), "nnc_dec": med(n, "dec_MBps")}


def lossless_compare(d, ckpt):
    rows = ok_rows(d, ckpt)
    by = {r["label"]: r for r in rows}
    return by


def write_md(d, path, outdir):
    rel = os.path.relpath(outdir, os.path.dirname(os.path.abspath(path)))
    m = d["meta"]
    has_real = "real" in d
    L = []
    L.append("# Benchmarks: bslcodec vs NNCodec, zstd, ZipNN, safetensors\n")
    L.append("Sections: [Headline](#headline) · [Rate–distortion](#ratedistortion-plots) · [Speed](#speed) · "
             "[Why we lose where we lose](#why-we-lose-where-we-lose-the-gap-to-the-entropy) · "
             "[Full tables](#full-tables) · [Method](#method) · [Other results](#other-results)\n")
    L.append("Regenerate everything on this page (JSON, PNGs and this file):\n")
    L.append("```bash\n. .venv/bin/activate\nbash tools/bench/setup_peers.sh      # once: NNCodec 2.1.3 + ZipNN 0.5.4 "
             "outside the venv (numpy<2 pin)\npython tools/bench/run_all.py        # all codecs in one process\n"
             "python tools/bench/report.py         # only redraw plots + this file from results/peers/bench.json\n```\n")
    L.append("`python tools/bench/alloc.py` (≈10 min) adds the rate-allocation experiment (`results/peers/alloc.json`, "
             "the 'word_emb. 4× step' columns); report.py picks it up when present.\n")
    L.append(f"Run: {m['date']}, {m['machine']}, {m['cpus']} CPU cores (shared with other jobs), Python {m['python']}, "
             f"numpy {m['numpy']}, numba {m['numba']} ({m['numba_threads']} threads), torch {m['torch']} "
             f"({m['torch_threads']} threads), peers {', '.join(f'{k} {v}' for k, v in m['peers'].items())}; "
             f"bslcodec {m['bslcodec']} at {m['git_head']}{' + uncommitted bslcodec/ changes of other engineers' if m['bslcodec_worktree_dirty'] else ''}. "
             f"Whole run: {m['wall_s'] / 60:.1f} min" + time_split(d) + ".\n")
    if has_real:
        L.append("## Headline\n")
        L.append("Real model, all-MiniLM-L6-v2 (22,713,216 float32 weights, 90.85 MB). Bits/weight needed to reach a "
                 "given embedding cosine similarity, interpolated along each codec's measured curve "
                 "(linear in log(1 − cos)):\n")
        L.append(table(["quality", "bslcodec rel_step", "bslcodec max_error", "NNCodec (DQ on)",
                        "bslcodec symbols at H0 (ideal coder)", "bslcodec − NNCodec",
                        "bslcodec, word_emb. 4× step", "NNCodec, word_emb. 4× step (+8 qp)",
                        "difference (4× emb.)"], headline(d)))
        sc = speed_compare(d, "real")
        by = lossless_compare(d, "real")
        L.append("")
        L.append(verdict(d, sc, by))
        L.append(alloc_text(d))
    L.append("\n## Rate–distortion plots\n")
    if has_real:
        L.append(f"![rate-distortion, real model]({rel}/rd_real.png)\n")
    L.append(f"![rate-distortion, synthetic]({rel}/rd_synthetic.png)\n")
    for ck in (["real"] if has_real else []) + ["synthetic"]:
        L.append(f"Equal-error comparison, {ck} checkpoint (bits/weight interpolated linearly in log rel-L2):\n")
        targets = [2.5e-2, 1.26e-2, 6.3e-3, 3.2e-3]
        L.append(table(["error", "bslcodec rel_step", "bslcodec max_error", "NNCodec (DQ on)",
                        "bslcodec symbols at H0", "bslcodec − NNCodec"], rel_compare(d, ck, targets)) + "\n")
    L.append("## Speed\n")
    if has_real:
        L.append(f"![speed, real model]({rel}/speed_real.png)\n")
    L.append(f"![speed, synthetic]({rel}/speed_synthetic.png)\n")
    L.append(speed_text(d))
    L.append("\n## Why we lose where we lose: the gap to the entropy\n")
    if has_real:
        L.append(f"![bits breakdown]({rel}/gap_real.png)\n")
    L.append(gap_text(d))
    for ck in (["real"] if has_real else []) + ["synthetic"]:
        L.append(f"\n**Bits breakdown, {ck} checkpoint** (bits per weight of the whole checkpoint; H0 = order-0 "
                 "empirical entropy of each tensor's symbols, summed; 'best other S / k range' = exact payload of "
                 "the same symbols re-coded with lane_symbols S ∈ {64..1024} and per-group order search k0±2 or k0±4, "
                 "relative to the shipped S=512, k0±2; Golomb-Rice = same lanes with Rice codes, not format v1):\n")
        L.append(gap_table(d, ck))
        L.append(f"\n**RDOQ inside format v1, {ck} checkpoint** (encoder picks each level from q, q∓1, q∓2 toward "
                 "the center minimizing (x−x̂)² + λ·step²·len_EG; decoder unchanged; negative gain = smaller file "
                 "at the same error):\n")
        L.append(rdoq_table(d, ck))
    L.append("\n## Full tables\n")
    for ck in (["real"] if has_real else []) + ["synthetic"]:
        n = d[ck]["n_weights"]
        L.append(f"\n### {ck} checkpoint ({n:,} weights, {d[ck]['n_tensors']} tensors)\n")
        L.append(full_table(d, ck))
    L.append("\n## Method\n")
    L.append(METHOD)
    L.append("\n## Other results\n")
    for p, what in OTHER_RESULTS:
        L.append(f"- [{p}]({p}): {what}")
    L.append("")
    with open(path, "w") as fh:
        fh.write("\n".join(L))


METHOD = """\
* **One process.** `tools/bench/run_all.py` loads every codec into one Python process and runs them one after
  the other on the same in-memory state dict: bslcodec (`bslcodec.save/load`, public API), NNCodec 2.1.3
  (`nncodec.nnc.compress(dict_of_fp32, qp=QP, use_dq=..., return_bitstream=True)` / `decompress(bytes)`,
  defaults otherwise: qp_density 2, i.e. step 2^(qp/4), one global step for all ≥2-D tensors, 1-D tensors at
  nonweight_qp −75, CABAC with param_opt), zstd (python-zstandard, single thread) and ZipNN
  (`ZipNN(input_format="byte", bytearray_dtype=..., threads=1)`) on the whole checkpoint concatenated in
  sorted-name order, safetensors (`safetensors.numpy.save/load`). NNCodec and ZipNN sit in a separate
  `--target` folder (`tools/bench/setup_peers.sh`, `--no-deps`) because nncodec pins numpy<2; torchvision is
  stubbed (the registry only has a CUDA build that cannot load on CPU torch; the codec never calls it).
* **bf16 rows**: the fp32 weights cast to bf16 (round to nearest even) before timing, then coded losslessly;
  their error is the cast's.
* **Sizes** are exact byte counts of what each codec returns: bits/weight = 8·bytes / number of float weights
  (bslcodec: the whole `.bsl` file incl. header, tables, padding and the exact 1-D tensors; NNCodec: its
  bitstream; zstd/ZipNN: the compressed buffer without a tensor index).
* **Errors** are over all float weights: max |w − ŵ| and ‖W − Ŵ‖/‖W‖. **Quality** (real model only): cosine
  similarity of the normalized sentence embeddings of 50 fixed English sentences (`tools/minilm.py`),
  decoded vs original weights; mean over the sentences (min in the JSON and full table).
* **Speed**: encode = state dict in memory → bytes, decode = bytes → dict of arrays; best of `--repeats`
  (2) runs for fast codecs, one run for NNCodec and zstd -19. MB/s = 4 bytes × weights / s for every row (bf16
  rows too), so rows compare as weights per second. bslcodec uses Numba's default 2 threads, and the
  1-thread column re-times it with `numba.set_num_threads(1)`; NNCodec, zstd and ZipNN are single-threaded
  coders (NNCodec's torch ops may use 2 threads). The machine has 2 cores shared with other engineers' jobs:
  the load average before each measurement is in the JSON; treat MB/s as ±2×, sizes and errors are exact.
* **Interpolation** ("bits at equal quality"): linear in log(1 − cos) or log(rel L2) between the two nearest
  measured settings of a curve; '–' where the target lies outside a curve's measured range.
* **H0**: the order-0 empirical entropy of each tensor's quantization symbols as bslcodec chose them (decoded
  back from the file), summed over tensors; the "ideal coder" curve replaces the EG code bits, lane tables and
  word padding of each file by H0 (headers and lossless tensors kept). A static arithmetic/ANS coder reaches
  H0 plus its model side info (measured in `/work/shared/measurements.md`: +0.01–0.17 b/w for a 16-bit
  histogram, +0.04 b/w for a 2-parameter Laplace model).
* **Synthetic checkpoint**: 8 matrices (1024 columns) of generalized-Gaussian weights with shapes
  ν ∈ {0.6, 0.8, 1.0, 1.0, 1.2, 1.5, 2.0, 0.8} and std 0.02 each (scipy `gennorm`, seed 0), plus 8 small
  N(0, 0.02) biases; no quality figure (errors only).
* Raw numbers: `results/peers/bench.json`.
"""


def speed_text(d):
    L = []
    for ck in [c for c in ("real", "synthetic") if c in d]:
        sc = speed_compare(d, ck)
        if not sc:
            continue
        L.append(f"- **{ck}**: bslcodec median encode {sc['bsl_enc']:.0f} MB/s / decode {sc['bsl_dec']:.0f} MB/s "
                 f"(2 Numba threads)"
                 + (f", {sc['bsl_enc1']:.0f} / {sc['bsl_dec1']:.0f} MB/s with 1 thread" if sc["bsl_enc1"] else "")
                 + f"; NNCodec {sc['nnc_enc']:.1f} / {sc['nnc_dec']:.1f} MB/s. Ratio bslcodec/NNCodec: encode "
                 f"**{sc['bsl_enc'] / sc['nnc_enc']:.0f}×**, decode **{sc['bsl_dec'] / sc['nnc_dec']:.0f}×**"
                 + (f" (1 thread: {sc['bsl_enc1'] / sc['nnc_enc']:.0f}× / {sc['bsl_dec1'] / sc['nnc_dec']:.0f}×)"
                    if sc["bsl_enc1"] else "") + ".")
        if sc["bsl_enc1"] and sc["bsl_enc1"] > sc["bsl_enc"]:
            L.append(f"  With the 2 cores already loaded by other jobs, Numba's 2 threads were *slower* than 1 "
                     f"(thread oversubscription); the 1-thread figures are the fairer measure against the "
                     f"single-threaded peers. All MB/s here are several times below an idle machine's "
                     f"(zstd -3 fp32 measured {next((r['enc_MBps'] for r in ok_rows(d, ck, False) if r['label'] == 'zstd -3 (fp32)'), 0):.0f} MB/s "
                     f"here vs ~200–400 MB/s idle in /work/shared/measurements.md); ratios between codecs measured "
                     f"in the same run are the meaningful numbers.")
    return "\n".join(L) + "\n"


def _avg(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def goals(d):
    """(goal, result, met) rows computed from the run."""
    out = []
    rows = ok_rows(d, "real")
    b, n = fam(rows, BSL), fam(rows, NNC)
    for t in (0.999, 0.9992):
        vb, vn = interp(b, "cos", t), interp(n, "cos", t)
        if vb is not None and vn is not None:
            out.append((f"smaller file than NNCodec at equal quality (cos {t})",
                        f"bslcodec {vb:.2f} b/w vs NNCodec {vn:.2f} b/w ({100 * (vb / vn - 1):+.1f} %)", vb < vn))
    sc = speed_compare(d, "real")
    if sc:
        re_, rd = sc["bsl_enc"] / sc["nnc_enc"], sc["bsl_dec"] / sc["nnc_dec"]
        out.append(("encode ≥ 10× faster than NNCodec", f"{re_:.0f}× ({sc['bsl_enc']:.0f} vs {sc['nnc_enc']:.1f} MB/s)"
                    + (f"; 1 thread {sc['bsl_enc1'] / sc['nnc_enc']:.0f}×" if sc["bsl_enc1"] else ""), re_ >= 10))
        out.append(("decode ≥ 10× faster than NNCodec", f"{rd:.0f}× ({sc['bsl_dec']:.0f} vs {sc['nnc_dec']:.1f} MB/s)"
                    + (f"; 1 thread {sc['bsl_dec1'] / sc['nnc_dec']:.0f}×" if sc["bsl_dec1"] else ""), rd >= 10))
    al, an = fam(rows, "bslcodec, word embeddings at 4x step"), fam(rows, "NNCodec, word embeddings at 4x step")
    for t in (0.999,):
        va, vn, vna = interp(al, "cos", t), interp(n, "cos", t), interp(an, "cos", t)
        if va is not None and vn is not None:
            out.append((f"same, with word_embeddings at 4× step (cos {t})",
                        f"bslcodec {va:.2f} b/w vs NNCodec defaults {vn:.2f} ({100 * (va / vn - 1):+.1f} %)"
                        + ("" if vna is None else f"; vs NNCodec given the same allocation {vna:.2f} "
                           f"({100 * (va / vna - 1):+.1f} %)"), va < vn and (vna is None or va < vna)))
    by = {r["label"]: r for r in rows}
    zb = [by[k] for k in ("zstd -3 (bf16)", "zstd -19 (bf16)", "ZipNN (bf16)") if k in by]
    if zb:
        best = min(zb, key=lambda r: r["bpw"])
        same = interp(b, "cos", best["cos_mean"])
        if same is None:  # bf16's cosine is past our finest setting: compare with c=1/128
            r128 = next((r for r in b if r["label"].endswith("1/128")), None)
            same, how = (r128["bpw"], f"c=1/128 (cos {r128['cos_mean']:.5f})") if r128 else (None, "")
        else:
            how = f"same cos {best['cos_mean']:.5f}"
        if same is not None:
            out.append(("lossy: much smaller than zstd/ZipNN, at the bf16 cast's quality",
                        f"bslcodec {same:.2f} b/w ({how}) vs {best['label']} {best['bpw']:.2f} b/w: only "
                        f"{best['bpw'] / same:.2f}× smaller", best["bpw"] / same >= 1.25))
        dflt = next((r for r in b if "default" in r["label"]), None)
        v999 = interp(b, "cos", 0.999)
        if dflt:
            out.append(("lossy: much smaller than zstd/ZipNN, default setting (near-lossless)",
                        f"default {dflt['bpw']:.2f} b/w (cos {dflt['cos_mean']:.5f}) vs {best['label']} "
                        f"{best['bpw']:.2f} b/w: {best['bpw'] / dflt['bpw']:.2f}× smaller", best["bpw"] / dflt["bpw"] >= 1.25))
        if v999:
            out.append(("lossy: much smaller than zstd/ZipNN, at cos 0.999",
                        f"{v999:.2f} b/w vs {best['label']} {best['bpw']:.2f} b/w: {best['bpw'] / v999:.2f}× smaller",
                        best["bpw"] / v999 >= 1.25))
    zf = [by[k] for k in ("zstd -3 (fp32)", "zstd -19 (fp32)", "ZipNN (fp32)") if k in by]
    dflt = next((r for r in b if "default" in r["label"]), None)
    if zf and dflt:
        best = min(zf, key=lambda r: r["bpw"])
        out.append(("lossy default vs lossless fp32", f"default {dflt['bpw']:.2f} b/w (cos {dflt['cos_mean']:.5f}) vs "
                    f"{best['label']} {best['bpw']:.2f} b/w: {best['bpw'] / dflt['bpw']:.1f}× smaller", True))
    return out


def time_split(d):
    """Where the run's time went (coding only: encode + decode × repeats)."""
    t = {}
    for ck in [c for c in ("real", "synthetic") if c in d]:
        for r in ok_rows(d, ck, alloc=False):
            k = "NNCodec" if r["family"].startswith("NNCodec") else ("zstd -19" if "zstd -19" in r["label"] else
                                                                       ("bslcodec" if r["family"].startswith("bslcodec") else "other"))
            t[k] = t.get(k, 0) + (r["enc_s"] + r["dec_s"]) * r.get("repeats", 1)
    if not t:
        return ""
    la = [r["loadavg_before"] for ck in ("real", "synthetic") if ck in d for r in ok_rows(d, ck, False)
          if r.get("loadavg_before") is not None]
    return (f" with the machine's load average at {min(la):.1f}–{max(la):.1f} (other engineers' jobs on the same 2 "
            f"cores); coding time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in sorted(t.items(), key=lambda kv: -kv[1]))
            + "; the rest is quality evaluation, entropy/layout analysis and RDOQ re-encodes. The < 20 min budget "
            "holds only on an unloaded machine (NNCodec and zstd -19 ran 3–7× slower than their idle speeds in /work/shared/measurements.md)")


def alloc_text(d):
    rows = ok_rows(d, "real")
    al, an = fam(rows, "bslcodec, word embeddings at 4x step"), fam(rows, "NNCodec, word embeddings at 4x step")
    if not al:
        return ""
    va, vn, vna = interp(al, "cos", 0.999), interp(fam(rows, NNC), "cos", 0.999), interp(an, "cos", 0.999)
    vb = interp(fam(rows, BSL), "cos", 0.999)
    s = ("\n**Rate allocation is the biggest lever, and it is inside the format.** Every `eg` tensor carries its own "
         "step, so an encoder may quantize the token-embedding table (51.6 % of the weights; looked up, not "
         "multiplied) 4× coarser than the rest (`tools/bench/alloc.py`). At cos 0.999 that takes bslcodec from "
         f"{fmt(vb)} to {fmt(va)} b/w, {100 * (va / vn - 1):+.1f} % against NNCodec's defaults ({fmt(vn)})")
    if vna is not None:
        s += (f"; but NNCodec gains as much from the same allocation (`qp_per_tensor`, +8 qp: {fmt(vna)} b/w), so "
              f"codec against codec we still lose by {100 * (va / vna - 1):+.1f} %. The public API has no per-tensor "
              "step yet (the experiment patches `LossyTensor.step_for`); a sensitivity-based `bits=` allocation is the "
              "cheapest real win available.")
    return s + "\n"


def verdict(d, sc, by):
    L = ["**Goals** (from issue 8), measured in this run:\n"]
    L.append(table(["goal", "result", "met?"], [(g, r, "yes" if m else "**NO**") for g, r, m in goals(d)]))
    rows = ok_rows(d, "real")
    b, n, h0, me = fam(rows, BSL), fam(rows, NNC), h0_rows(rows), fam(rows, BSLME)
    t = 0.999
    vb, vn, vh, vm = (interp(x, "cos", t) for x in (b, n, h0, me))
    if None not in (vb, vn, vh):
        L.append(f"\n**Where we lose, plainly:** at equal quality NNCodec's files are smaller than ours. At cos {t} "
                 f"bslcodec needs {vb:.2f} b/w, NNCodec {vn:.2f} b/w ({vb - vn:+.2f} b/w, {100 * (vb / vn - 1):+.1f} %). "
                 f"Of that, {vb - vh:.2f} b/w is our entropy coder: the same symbols at their empirical entropy H0 "
                 f"would need {vh:.2f} b/w (exp-Golomb's fixed code shape, lane tables, padding); the remaining "
                 f"{vh - vn:.2f} b/w is NNCodec's quantizer (dependent/trellis quantization, 'DQ'), which a uniform "
                 "reconstruction grid cannot match (with DQ off, NNCodec lands on our H0 curve, see below). "
                 "See [the gap analysis](#why-we-lose-where-we-lose-the-gap-to-the-entropy).")
        if vm is not None:
            L.append(f"One global step (`max_error=`, NNCodec's allocation) needs {vm:.2f} b/w at cos {t}, "
                     f"{'more' if vm > vb else 'less'} than per-tensor `rel_step` ({vb:.2f}).")
    mx = []
    for r in me:
        vn = None
        pts = sorted((math.log(x["max_abs_err"]), x["bpw"]) for x in n)
        if len(pts) > 1 and pts[0][0] <= math.log(r["max_abs_err"]) <= pts[-1][0]:
            vn = float(np.interp(math.log(r["max_abs_err"]), *zip(*pts)))
        if vn is not None:
            mx.append(r["bpw"] - vn)
    L.append("\n**Where we win:** encode and decode speed, by more than the 10× asked (see [Speed](#speed)); at "
             "equal *maximum* error, where `max_error=` (one global step, a guaranteed bound) is "
             + (f"{-max(mx):.2f}–{-min(mx):.2f} b/w smaller than NNCodec " if mx else "smaller than NNCodec ")
             + "(DQ buys its lower mean error with a larger worst-case error; plots, middle panel); and against "
             "lossless coders of fp32 weights by 3×. Against bf16 + ZipNN the margin is wide only once some loss is "
             "accepted (cos ≤ 0.9999); at the bf16 cast's own quality it is ~10 %.")
    return "\n".join(L)


def gap_text(d):
    L = []
    for ck in [c for c in ("real", "synthetic") if c in d]:
        rows = ok_rows(d, ck)
        bb = [r for r in fam(rows, BSL) if r.get("breakdown") and "default" not in r["label"]]
        if not bb:
            continue
        gaps = [r["breakdown"]["eg_minus_h0_bpw"] for r in bb]
        pct = [100 * (r["breakdown"]["eg_over_h0"] - 1) for r in bb]
        ovh = [r["breakdown"]["overhead_bpw"] for r in bb]
        g = d[ck]["gap"]
        lay_d = []
        for tag, lay in g["layout"].items():
            base = next(x for x in lay if x["lane_symbols"] == 512 and x["k_range"] == "k0±2")
            best = min((x for x in lay if x["lane_symbols"] != "whole tensor"), key=lambda x: x["payload_bpw"])
            lay_d.append(best["payload_bpw"] - base["payload_bpw"])
        rice_d = [g["rice"][r["label"].split("=")[-1]] - r["breakdown"]["eg_code_bpw"] for r in bb
                  if r["label"].split("=")[-1] in g["rice"]]
        rd = []
        for r in g["rdoq"]:
            same = interp(fam(rows, BSL), "rel", r["rel_l2"])
            if same is not None:
                rd.append(r["bpw"] - same)
        noff = fam(rows, NNCOFF)
        h0 = h0_rows(rows)
        off_txt = ""
        for r in noff:
            v = interp(h0, "rel", r["rel_l2"])
            vb = interp(fam(rows, BSL), "rel", r["rel_l2"])
            if v is not None:
                off_txt = (f" NNCodec with DQ off ({r['label']}) spends {r['bpw']:.2f} b/w at rel-L2 {r['rel_l2']:.2e}, "
                           f"where our symbols at H0 would need {v:.2f} and our file needs {vb:.2f}: its CABAC is worth "
                           f"about H0 ({r['bpw'] - v:+.2f}), the rest of its lead is DQ.")
        L.append(f"- **{ck}**: exp-Golomb spends **{min(gaps):.2f}–{max(gaps):.2f} b/w ({min(pct):.1f}–{max(pct):.1f} %) "
                 f"over the empirical entropy H0** of the very same symbols, at every setting; the format's other "
                 f"overhead (lane tables 16 bits per 512 weights, group orders, word padding, header, alignment) is "
                 + (f"{min(ovh):.3f}–{max(ovh):.3f}" if round(min(ovh), 3) != round(max(ovh), 3) else f"{min(ovh):.3f}") + " b/w." + off_txt)
        L.append(f"  - Inside format v1 (encoder choices only, any v1 reader decodes the result): " + (f"the best other lane size / order search range saves {-min(lay_d):.3f} b/w at most"
                        if min(lay_d) < -5e-4 else "no other lane size (S = 64..1024) or order search range "
                        "(k0±4) beats the shipped S = 512, k0±2") + "; RDOQ "
                 f"(EG-length-aware level choice) changes the size by {min(rd) if rd else float('nan'):+.3f} to "
                 f"{max(rd) if rd else float('nan'):+.3f} b/w at equal rel-L2. **Nothing inside the format closes the "
                 f"gap**: EG-k code lengths grow in steps of 2 bits per doubling of |q| above 2^k and are flat below "
                 f"it, a shape no k matches to a Laplacian/GG histogram, and the decoder fixes the code.")
        if rice_d:
            L.append(f"  - Changing the code (a v2 format): Golomb-Rice codes with a per-group parameter in the same "
                     f"lanes would save {-max(rice_d):.2f}–{-min(rice_d):.2f} b/w (estimate from the same symbols); "
                     f"an arithmetic/ANS coder reaches H0 + ≈0.01–0.04 b/w of model side info, i.e. the full "
                     f"{min(gaps):.2f}–{max(gaps):.2f} b/w, at some decode speed cost. Even then, NNCodec's DQ keeps a "
                     f"lead at equal mean error (MSE), not at equal max error.")
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=os.path.join(ROOT, "results", "peers", "bench.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "peers"))
    ap.add_argument("--md", default=os.path.join(ROOT, "BENCHMARKS.md"))
    args = ap.parse_args(argv)
    with open(args.json) as fh:
        d = json.load(fh)
    alloc = os.path.join(os.path.dirname(os.path.abspath(args.json)), "alloc.json")
    if "real" in d and os.path.exists(alloc):
        with open(alloc) as fh:
            a = json.load(fh)
        for r in a["rows"]:
            if r.get("codec", "bslcodec") == "bslcodec":
                label = f"bslcodec rel_step={r['rel_step']}, word_embeddings {r['emb_mult']}x step"
                setting = {"rel_step": r["rel_step"], "emb_mult": r["emb_mult"]}
            else:
                label = f"NNCodec qp={r['qp']} dq=on, word_embeddings qp={r['emb_qp']}"
                setting = {"qp": r["qp"], "emb_qp": r["emb_qp"]}
            d["real"]["rows"].append(dict(r, ckpt="real", family=f"{r.get('codec', 'bslcodec')}, word embeddings at "
                                          f"{r['emb_mult']}x step", label=label, setting=setting, input="fp32",
                                          lossless=False, ratio_vs_fp32=32 / r["bpw"], alloc=True))
    os.makedirs(args.out, exist_ok=True)
    for ck in [c for c in ("real", "synthetic") if c in d]:
        plot_rd(d, ck, os.path.join(args.out, f"rd_{ck}.png"))
        plot_speed(d, ck, os.path.join(args.out, f"speed_{ck}.png"))
        plot_gap(d, ck, os.path.join(args.out, f"gap_{ck}.png"))
    write_md(d, args.md, args.out)
    print("wrote", args.md, "and plots in", args.out)


if __name__ == "__main__":
    main()
