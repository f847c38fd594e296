"""RDOQ on all-MiniLM-L6-v2: file bits/weight vs mean embedding cosine, with and without RDOQ and
sensitivity allocation (issue 12, item 2).

Run: ``python tools/experiments/rdoq_minilm.py [--cs 0,0.12] [--rels ...]`` -> ``tools/out/rdoq_minilm.json`` and
markdown tables on stdout (pasted into results/rdoq.md). Every point is a real ``bslcodec.save`` of the
whole checkpoint (default codec ``auto``) at one ``rel_step``, decoded, and run on the 50 evaluation
sentences of ``tools/minilm.py``. Sensitivities come from ``results/minilm_sensitivity.json`` (written by
``tools/minilm_allocation.py`` from calibration sentences disjoint from the evaluation sentences).
Bits at a target cosine are interpolated linearly in log(1 - cos) between the two neighbouring points.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import minilm  # noqa: E402

import bslcodec  # noqa: E402

TARGETS = (0.99, 0.995, 0.998, 0.999, 0.9992, 0.9995)


def at_cos(points, target):
    """Bits/weight at mean cosine ``target`` from [(bits, cos)], or None outside the measured range."""
    pts = sorted(points, key=lambda p: p[1])
    y = np.log(1 - np.array([p[1] for p in pts]))
    x = np.array([p[0] for p in pts])
    t = np.log(1 - target)
    if not (y.min() <= t <= y.max()):
        return None
    o = np.argsort(y)
    return float(np.interp(t, y[o], x[o]))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cs", default="0,0.12")
    ap.add_argument("--rels", default=",".join(f"{2.0 ** (-e / 2):.6g}" for e in range(4, 13)))
    ap.add_argument("--alloc", default="relative,sensitivity")
    ap.add_argument("--out", default=str(ROOT / "tools" / "out" / "rdoq_minilm.json"))
    a = ap.parse_args(argv)
    sd = minilm.load_original()
    n = sum(v.size for v in sd.values())
    sens = json.loads((ROOT / "results" / "minilm_sensitivity.json").read_text())
    out = pathlib.Path(a.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    done = {(r["alloc"], r["c"], r["rel_step"]) for r in rows}
    for alloc in a.alloc.split(","):
        for c in (float(v) for v in a.cs.split(",")):
            for rel in (float(v) for v in a.rels.split(",")):
                if (alloc, c, rel) in done:
                    continue
                t = time.time()
                blob = bslcodec.save(sd, expert={"rel_step": rel, "rdoq": c},
                                     sensitivity=sens if alloc == "sensitivity" else None)
                t_enc = time.time() - t
                back = bslcodec.load(blob)
                mean, low = minilm.cosine_vs_original(back)
                num = sum(float(np.sum((back[k].astype(np.float64) - v.astype(np.float64)) ** 2)) for k, v in sd.items())
                den = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in sd.values())
                rows.append({"alloc": alloc, "c": c, "rel_step": rel, "bits": 8 * len(blob) / n, "cos": mean,
                             "cos_min": low, "rel_l2": (num / den) ** 0.5, "enc_s": t_enc})
                print(rows[-1], flush=True)
                out.parent.mkdir(exist_ok=True)
                out.write_text(json.dumps(rows, indent=1))
    report(rows)


def report(rows):
    print("| allocation | c (λ = c·step²) | " + " | ".join(f"b/w at cos {t}" for t in TARGETS) + " |")
    print("|---" * (2 + len(TARGETS)) + "|")
    for alloc in sorted({r["alloc"] for r in rows}):
        for c in sorted({r["c"] for r in rows if r["alloc"] == alloc}):
            pts = [(r["bits"], r["cos"]) for r in rows if r["alloc"] == alloc and r["c"] == c]
            cells = [at_cos(pts, t) for t in TARGETS]
            print(f"| {alloc} | {'off' if c == 0 else c} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in cells) + " |")
    print()
    print("| allocation | c | rel_step | file bits/w | mean cos | min cos | rel L2 | encode s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["alloc"], -r["rel_step"], r["c"])):
        print(f"| {r['alloc']} | {'off' if r['c'] == 0 else r['c']} | {r['rel_step']:.4g} | {r['bits']:.4f} | "
              f"{r['cos']:.5f} | {r['cos_min']:.5f} | {r['rel_l2']:.5f} | {r['enc_s']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
