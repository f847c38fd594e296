"""Where a ``save_file`` of many small tensors spends its time (issue 19's per-tensor cost), stage by stage.

Two files of ``bench_load.py --small``: ``--n`` 64x64 f32 tensors at the default settings (ans-dq) and ``--n``
4,096-element bf16 tensors with ``exact=True`` (fexp). For each: ``save_file`` end to end, the encode without
the write (``_encode_tensors``), the header (``build_header``: its zstd frame), and the stages of the
encode run alone over every tensor: the equal-slope allocation (``Allocation.solve``), the dq trellis with its
model (``dq_search.quantize``), the GG fit of the informational params, ``rans.build_model`` of the final
symbols (and, where the checkout has them, the search and the model with ``pipeline/ans_model.py``'s
compiled model, ``pipeline/dq_small.py``'s search and ``pipeline/ans_encode.py``'s encode), ``rans.encode``;
for fexp ``fexp.encode`` and the zstd trial. Microseconds a tensor, best of ``--reps`` (the box is shared:
compare checkouts alternately, same minutes); ``--cpu``: the process's CPU time (``time.process_time``,
every thread's) instead of the wall clock, steadier where other jobs hold the cores. Only public entry points, so another checkout on ``PYTHONPATH`` gives its own numbers:

    PYTHONPATH=/path/to/checkout python tools/bench/save_stages.py [--n 300] [--reps 5] [--cpu]
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.append(os.path.join(os.path.dirname(__file__), "..", ".."))  # PYTHONPATH first: another checkout


CLOCK = time.perf_counter  # --cpu: time.process_time


def best(fn, reps: int, n: int) -> float:
    """Microseconds a tensor: the best of ``reps`` runs of ``fn`` (after one untimed run)."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        ts.append(CLOCK() - t0)
    return min(ts) / n * 1e6


def stages(kind: str, t: dict, kw: dict, path: str, reps: int) -> dict:
    """{stage: us a tensor} of saving ``t`` (settings ``kw``) to ``path``."""
    import bslcodec
    from bslcodec.codecs import dq_search, fexp, lossless, rans
    from bslcodec.container.format import build_header
    from bslcodec.files import encoder
    from bslcodec.pipeline import knobs
    from bslcodec.pipeline.allocation import Allocation, steps_for
    from bslcodec.pipeline.codec import LossyTensor, Settings
    from bslcodec.quantize import ggd

    n = len(t)
    k = knobs.resolve(None, None, None, kw.get("exact"), None, {}, where="save_file")
    r = {"save_file": best(lambda: bslcodec.save_file(t, path, **kw), reps, n),
         "_encode_tensors": best(lambda: encoder._encode_tensors(t, None, k, None, False), reps, n)}
    entries, _, md = encoder._encode_tensors(t, None, k, None, False)
    r["build_header"] = best(lambda: build_header(entries, md), reps, n)
    if kind == "fexp":
        arrs = list(t.values())
        r["fexp.encode"] = best(lambda: [fexp.encode(a) for a in arrs], reps, n)
        r["zstd trial"] = best(lambda: [lossless.encode_zstd(a) for a in arrs], reps, n)
        try:
            from bslcodec.pipeline import fexp_small

            r["fexp_small.encode"] = best(lambda: [fexp_small.encode(a) for a in arrs], reps, n)
        except ImportError:
            pass
        return r
    s = Settings(quantizer="auto")
    lossy = {}
    for name, a in t.items():
        lt = LossyTensor(name, a, "F32")
        lt.quantizer, lt.rdoq = s.quantizer, s.rdoq
        lossy[name] = lt
    r["Allocation.solve"] = best(lambda: Allocation(lossy).solve(rel_error=s.rel_error), reps, n)
    try:  # since 6a6aa29: the small curves' rounding on two threads (allocation.SPLIT), as the encoder asks
        r["Allocation.solve (2 threads)"] = best(lambda: Allocation(lossy, threads=2).solve(rel_error=s.rel_error),
                                                 reps, n)
    except TypeError:
        pass
    al = Allocation(lossy)
    rels = steps_for(al, al.solve(rel_error=s.rel_error)[0], lossy)
    steps = {name: lossy[name].step_for(s, rels[name]) for name in lossy}
    center = {name: int(np.rint(lossy[name].mean / steps[name])) for name in lossy}
    r["dq_search.quantize"] = best(lambda: [dq_search.quantize(lossy[m].kx, steps[m], center[m], "F32", 1024)
                                            for m in lossy], reps, n)
    r["ggd.fit"] = best(lambda: [ggd.fit(lt.kx) for lt in lossy.values()], reps, n)
    try:  # what the encoder runs since c03a876: every small tensor's fit at once
        from bslcodec.pipeline import ggfit

        r["ggfit.fit_many"] = best(lambda: ggfit.fit_many([lt.kx for lt in lossy.values()]), reps, n)
    except ImportError:
        pass
    us = [dq_search.quantize(lossy[m].kx, steps[m], center[m], "F32", 1024).u for m in lossy]
    r["rans.build_model"] = best(lambda: [rans.build_model(u) for u in us], reps, n)
    models = [rans.build_model(u)[0] for u in us]
    try:  # what the encoder runs since 7d928dd: both models of a small tensor in one compiled call each
        from bslcodec.pipeline import ans_model

        r["dq_search.quantize (ans_model)"] = best(lambda: [dq_search.quantize(
            lossy[m].kx, steps[m], center[m], "F32", 1024, build_model=ans_model.build_model) for m in lossy], reps, n)
        r["ans_model.build_model"] = best(lambda: [ans_model.build_model(u) for u in us], reps, n)
    except ImportError:
        pass
    r["rans.encode"] = best(lambda: [rans.encode(u, 1024, md_) for u, md_ in zip(us, models)], reps, n)
    try:  # what the encoder runs since round 6 (results/load.md): the small dq search and ans encode
        from bslcodec.pipeline import ans_encode, dq_small

        r["dq_small.quantize"] = best(lambda: [dq_small.quantize(lossy[m].kx, steps[m], center[m], "F32", 1024)
                                               for m in lossy], reps, n)
        r["ans_encode.encode"] = best(lambda: [ans_encode.encode(u, 1024, md_) for u, md_ in zip(us, models)], reps,
                                      n)
    except ImportError:
        pass
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cpu", action="store_true", help="CPU time of the process instead of the wall clock")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.cpu else time.perf_counter
    import ml_dtypes  # noqa: F401  (numpy's "bfloat16")

    n = args.n
    rng = np.random.default_rng(0)
    files = {"ans-dq": ({f"t.{i}": rng.normal(0, 0.02, (64, 64)).astype(np.float32) for i in range(n)}, {}),
             "fexp": ({f"t.{i}": rng.normal(0, 1, 4096).astype("bfloat16") for i in range(n)}, {"exact": True})}
    with tempfile.TemporaryDirectory() as tmp:
        out = {kind: stages(kind, t, kw, os.path.join(tmp, "s.bsl"), args.reps) for kind, (t, kw) in files.items()}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for kind, r in out.items():
        clock = "CPU time" if args.cpu else "wall clock"
        print(f"{kind} (n={n}, best of {args.reps}, {clock}, load {load}):")
        for key, v in r.items():
            print(f"  {key:31s} {v:8.1f} us/tensor")


if __name__ == "__main__":
    main()
