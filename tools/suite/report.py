"""Tables and plots of the rate-quality suite from its JSON (written by run.py): ``<stem>.md`` and ``<stem>.png``.

    python tools/suite/report.py [--json results/suite.json]
    python tools/suite/report.py --merge a.json b.json --json results/suite.json   # runs made in separate processes

The headline table (between the ``suite-headline`` markers of the .md) is the one BENCHMARKS.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from harness import LABELS, TARGETS, interp  # noqa: E402

FINDINGS = ("<!-- findings -->", "<!-- /findings -->")
CURVES = ("bits", "default", "max_error", "sens", "nncodec")
STYLE = {"bits": dict(color="C1", marker="s", lw=2), "default": dict(color="C0", marker="o", lw=1.2), "max_error": dict(color="C8", marker="x", lw=1.2, ls="-."),
         "sens": dict(color="C2", marker="D", lw=1.5), "nncodec": dict(color="C3", marker="^", lw=2),
         "nosetting": dict(color="k", marker="*", ms=12, lw=0)}


def fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def fam_rows(entry, fam):
    return [r for r in entry.get("rows", []) if r["family"] == fam]


def at(entry, fam, t):
    return interp(fam_rows(entry, fam), t)


def headline(d) -> str:
    """bits/weight at equal output cosine, per model: NNCodec and each bslcodec family (difference to NNCodec)."""
    rows = []
    for name, e in d["models"].items():
        if "rows" not in e:
            continue
        for t in TARGETS:
            nnc = at(e, "nncodec", t)
            cells = [name if t == TARGETS[0] else "", f"{t:g}", fmt(nnc)]
            for fam in ("bits", "default", "max_error", "sens"):
                v = at(e, fam, t)
                cells.append(fmt(v) + (f" ({v - nnc:+.2f}, {100 * (v / nnc - 1):+.0f} %)" if v and nnc else ""))
            rows.append(cells)
    return table(["model", "output cosine", "NNCodec 2.1.3", "bslcodec `bits=` (the default allocation)",
                  "bslcodec `rel_step=`",
                  "bslcodec `max_error=`", "bslcodec + `sensitivity=`"], rows)


def model_section(name, e) -> str:
    if "rows" not in e:
        return f"## {name}\n\nSkipped: {e.get('skipped')}\n"
    out = [f"## {name}: {e['family']}", "",
           f"{e['n_weights']:,} weights in {e['n_tensors']} tensors. Inputs: {e['inputs']}."]
    out += [f"- {n}" for n in e.get("notes", [])]
    if e.get("reference"):
        out.append("- original model: " + ", ".join(f"{k} {v:.4f}" for k, v in e["reference"].items()))
    if e.get("calibration"):
        c = e["calibration"]
        out.append(f"- `sensitivity=` calibration: {c['tensors']} tensors in {c['seconds']} s "
                   f"(load {c['loadavg_before']})")
    ns = fam_rows(e, "nosetting")
    if ns:
        r = ns[0]
        out.append(f"- no setting (`save_file(w)`): {r['bpw']:.2f} b/w, output cosine {r['metrics']['cos']:.5f}"
                   + (f", top-1 agreement {100 * r['metrics']['top1']:.1f} %" if "top1" in r["metrics"] else ""))
    out.append(f"- wall time for this model: {e.get('wall_s')} s"
               + (f" (CPU time of the process: {e['cpu_s']} s)" if e.get("cpu_s") is not None else ""))
    out.append("")
    mk = sorted({k for r in e["rows"] for k in r["metrics"]} - {"cos", "cos_min"})
    hdr = ["family", "setting", "b/w", "fixed b/w", "cos mean", "cos min"] + mk + ["rel L2", "max abs err", "enc s"]
    body = []
    for r in e["rows"]:
        s = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["setting"].items())
        m = r["metrics"]
        body.append([LABELS[r["family"]], s or "–", f"{r['bpw']:.3f}", fmt(r.get("fixed_bpw"), 3),
                     f"{m['cos']:.6f}", f"{m['cos_min']:.5f}"] + [fmt(m.get(k), 4) for k in mk]
                    + [f"{r['rel_l2']:.2e}", f"{r['max_abs_err']:.2e}", r["enc_s"]])
    out.append(table(hdr, body))
    return "\n".join(out) + "\n"


def plot(d, path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, e in d["models"].items() if "rows" in e]
    if not names:
        return False
    fig, axes = plt.subplots(1, len(names), figsize=(5.6 * len(names), 4.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        e = d["models"][name]
        for fam in CURVES + ("nosetting",):
            pts = sorted((max(1 - r["metrics"]["cos"], 1e-9), r["bpw"]) for r in fam_rows(e, fam))
            if pts:
                ax.plot(*zip(*pts), label=LABELS[fam], **STYLE[fam])
        for t in TARGETS:
            ax.axvline(1 - t, color="k", lw=0.6, ls="--", alpha=0.5)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("1 − mean output cosine")
        ax.set_ylabel("bits per weight (whole file)")
        ax.set_title(f"{name}: {e['n_weights'] / 1e6:.2f}M weights", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(d, stem) -> str:
    m = d["meta"]
    loads = [r["loadavg_before"] for e in d["models"].values() for r in e.get("rows", [])
             if r.get("loadavg_before") is not None]
    load = (f"load average before each point min {min(loads):.1f} / median {statistics.median(loads):.1f} / "
            f"max {max(loads):.1f}" if loads else "")
    png = os.path.basename(stem) + ".png"
    parts = ["# Rate-quality suite: bslcodec beside NNCodec on several model families", "",
             f"`{m['command']}` — {m['date']}, commit {m['git_head']}"
             f"{' (bslcodec/ modified)' if m.get('bslcodec_worktree_dirty') else ''}, {m['machine']} "
             f"{m['cpus']} CPUs (shared, loaded: {load}), {m['threads']} thread(s) for torch and numba, "
             f"wall {m.get('wall_s')} s; numpy {m['numpy']}, numba {m['numba']}, torch {m['torch']}, peers "
             f"{m.get('peers')}.", "",
             "Each model's weights (every float tensor) are encoded, decoded and run on real inputs; quality is the "
             "mean cosine similarity of the outputs against the original weights' outputs on the same inputs. "
             "Bits/weight are the whole file (header, padding, exactly stored tensors included) over the number "
             "of float weights. Each curve is read at cosine 0.999 and 0.9995 (linear in log(1 − cos) between the "
             "two bracketing points; – where the curve does not reach it). Tools: `tools/suite/` "
             "(models.py, harness.py, run.py, report.py).", "",
             f"![rate-quality per model]({png})", "",
             "## Headline: bits/weight at equal output cosine (difference to NNCodec)", "",
             "<!-- suite-headline -->", headline(d), "<!-- /suite-headline -->", "",
             FINDINGS[0], FINDINGS[1], ""]
    parts += [model_section(n, e) for n, e in d["models"].items()]
    return "\n".join(parts)


def merge(paths, out_path):
    """One JSON from several runs: their models side by side; meta from the first, each run's meta in meta.parts."""
    parts = []
    for p in paths:
        with open(p) as fh:
            parts.append(json.load(fh))
    meta = dict(parts[0]["meta"])
    meta["parts"] = [p["meta"] for p in parts]
    meta["command"] = " + ".join(p["meta"]["command"] for p in parts) + " (separate processes at the same time)"
    meta["wall_s"] = max(p["meta"].get("wall_s") or 0 for p in parts)
    heads = {p["meta"].get("git_head") for p in parts}
    meta["git_head"] = ", ".join(sorted(h for h in heads if h))
    meta["bslcodec_worktree_dirty"] = any(p["meta"].get("bslcodec_worktree_dirty") for p in parts)
    d = {"meta": meta, "models": {k: v for p in parts for k, v in p["models"].items()}}
    with open(out_path, "w") as fh:
        json.dump(d, fh, indent=1, default=float)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=os.path.join(ROOT, "results", "suite.json"))
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="write --json from these runs' JSON files (one "
                    "model each, e.g. run as parallel processes), then report it")
    args = ap.parse_args(argv)
    if args.merge:
        merge(args.merge, args.json)
    with open(args.json) as fh:
        d = json.load(fh)
    stem = os.path.splitext(args.json)[0]
    has_png = plot(d, stem + ".png")
    text = render(d, stem)
    if not has_png:
        text = text.replace(f"![rate-quality per model]({os.path.basename(stem)}.png)", "(no plot: matplotlib missing)")
    # a hand-written findings block in an existing report survives re-rendering
    old = open(stem + ".md").read() if os.path.exists(stem + ".md") else ""
    a, b = old.find(FINDINGS[0]), old.find(FINDINGS[1])
    if 0 <= a < b:
        text = text.replace(FINDINGS[0] + "\n" + FINDINGS[1], old[a:b + len(FINDINGS[1])])
    with open(stem + ".md", "w") as fh:
        fh.write(text)
    print(headline(d))
    print(f"wrote {stem}.md" + (f", {stem}.png" if has_png else ""))


if __name__ == "__main__":
    main()
