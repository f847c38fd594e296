"""Output quality against the fine step of the small 1-D tensors (norms, biases, BatchNorm statistics), on the
suite's real models (tools/suite/models.py): how coarse may ``codec.SMALL_REL_STEP`` be (issue 17, fixed cost)?

For each model and divisor d (the step is std/d, or min(std, smallest positive value)/d for a tensor without
negative values) the whole model is saved with the default setting and decoded; the model is then evaluated
with (a) only the small 1-D tensors decoded, everything else original, (b) everything decoded, (c) everything
decoded but the small 1-D tensors original. ``--kinds`` adds, at std/256 and std/64, one row per kind of
1-D tensor (the last part of the name: weight, bias, running_mean, running_var) decoded alone.

Run from the repository root: ``python tools/experiments/small_tensor_step.py effnet 256,64,32,16,8 [--kinds]``;
writes ``tools/out/small_tensor_step/<model>.json`` (git-ignored). Results: results/fixed_cost.md.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools", "suite"))

import bslcodec  # noqa: E402
from bslcodec.files import api  # noqa: E402
from bslcodec.pipeline import codec as C  # noqa: E402


def run(m, divs, kinds: bool) -> dict:
    w, n = m.weights, m.n_weights
    small = [k for k, v in w.items() if v.ndim <= 1 and 2 <= v.size <= C.SMALL_1D]
    n1 = sum(w[k].size for k in small)
    out = {"model": m.name, "weights": n, "tensors": len(w), "small_tensors": len(small), "small_elems": n1,
           "rows": [], "kinds": []}
    for d in divs:
        C.SMALL_REL_STEP = 1.0 / d
        blob = bslcodec.save(w)
        back = bslcodec.load(blob)
        src = api._Source(data=blob)
        ents = {e.name: e for e in src.index.entries}
        src.close()
        sbits = 8 * sum(ents[k].length for k in small)
        only1d = dict(w)
        only1d.update({k: back[k] for k in small})
        big_only = dict(back)
        big_only.update({k: w[k] for k in small})
        r = {"div": d, "bpw": 8 * len(blob) / n, "small_bits_per_elem": sbits / max(n1, 1), "small_bpw": sbits / n,
             "only_1d": m.evaluate(only1d), "all": m.evaluate(back), "big_only": m.evaluate(big_only)}
        print(json.dumps(r), flush=True)
        out["rows"].append(r)
        if kinds and d in (256, 64):
            for kind in sorted({k.rsplit(".", 1)[-1] for k in small}):
                ks = [k for k in small if k.rsplit(".", 1)[-1] == kind]
                ww = dict(w)
                ww.update({k: back[k] for k in ks})
                row = {"div": d, "kind": kind, "tensors": len(ks),
                       "bits_per_elem": 8 * sum(ents[k].length for k in ks) / sum(w[k].size for k in ks),
                       "eval": m.evaluate(ww)}
                print(json.dumps(row), flush=True)
                out["kinds"].append(row)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=("minilm", "effnet", "charlm"))
    ap.add_argument("divs", help="comma-separated divisors d of the step std/d, e.g. 256,64,32,16,8")
    ap.add_argument("--kinds", action="store_true")
    args = ap.parse_args()
    import torch

    import models
    torch.set_num_threads(1)
    t = time.time()
    res = run(getattr(models, args.model)(), [int(x) for x in args.divs.split(",")], args.kinds)
    res.update(load=os.getloadavg()[0], seconds=time.time() - t)
    out = os.path.join(ROOT, "tools", "out", "small_tensor_step")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{args.model}.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
