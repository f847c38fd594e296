"""Where a CPU ``bslcodec.load_file`` of an ans-dq file spends its time (issue 19), at 1, 2, ... threads.

Per thread count: ``load_file`` (numpy out) end to end, then each stage of it alone over every tensor: the
payload checksums, ``rans.parse``, ``rans.tables``, a fresh output array touched once (allocation and page
faults), and the decode kernel (``rans.decode_into`` into a reused array). Wall times are the best of
``--reps``; at 1 thread the kernel's CPU time (``time.process_time``) too, which a loaded machine disturbs
less, and where the vector usual step is on (``rans_vec.SIMD``) the same with the scalar step, rounds
alternated in one process. GB/s are of bf16 output (2 bytes a weight).

    python tools/bench/load_stages.py [--file F.bsl | --side 4096 --count 8] [--threads 1 2 4 8 16]

Without ``--file`` it writes ``--count`` bf16 GG matrices (beta 1, as ``bench_load.py --cpu-only``) at the
default ``bits=4`` to a temporary file first (the encode takes a while). Run it with another checkout on
``PYTHONPATH`` for a before/after on the same machine.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.append(os.path.join(os.path.dirname(__file__), "..", ".."))  # PYTHONPATH first: another checkout


def best(fn, reps, clock=time.perf_counter):
    fn()
    ts = []
    for _ in range(reps):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return min(ts)


def write(path, side, count):
    import ml_dtypes

    import bslcodec

    from bench_load import gg  # noqa: E402  (tools/bench is on sys.path when run as a script)

    rng = np.random.default_rng(0)
    t = {f"layers.{i}.weight": gg(rng, side * side, 1.0).reshape(side, side).astype(ml_dtypes.bfloat16)
         for i in range(count)}
    bslcodec.save_file(t, path, bits=4)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", default=None)
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    import numba

    import bslcodec
    from bslcodec.codecs import rans
    from bslcodec.container.format import checksum
    from bslcodec.files import pool
    from bslcodec.files.source import _Source

    try:
        import bslcodec.codecs.rans_vec as vec  # the vector usual step (issue 19); absent before it
        print(f"vector usual step: {'on' if vec.SIMD else 'off (no AVX-512)'}"
              f"{', vpexpandw renormalisation' if vec.EXPAND else ''}", flush=True)
    except ImportError:
        vec = None
    tmp = None
    path = args.file
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "w.bsl")
        t0 = time.perf_counter()
        write(path, args.side, args.count)
        print(f"wrote {args.count} x {args.side}^2 bf16 at bits=4 in {time.perf_counter() - t0:.0f} s", flush=True)
    src = _Source(path=path)
    es = [src.entry(n) for n in src.entries]
    es = [e for e in es if e.codec in ("ans", "ans-dq")]
    n = sum(e.numel for e in es)
    pl = [src.payload(e, verify=False) for e in es]
    parsed = [rans.parse(p, e.numel, e.params["lane_symbols"]) for p, e in zip(pl, es)]
    outs = [np.empty(e.numel, np.uint16) for e in es]

    def kernel():
        for p, e, pp, o in zip(pl, es, parsed, outs):
            rans.decode_into(p, e.numel, e.params["lane_symbols"], e.params["center"], e.params["step"], o,
                             "BF16", parsed=pp, dq=e.codec == "ans-dq")

    def fresh():
        for e in es:
            np.empty(e.numel, np.uint16).fill(0)

    def kernel_fresh():  # the decode into new arrays, as load_file does: its page faults on every thread
        for p, e, pp in zip(pl, es, parsed):
            rans.decode_into(p, e.numel, e.params["lane_symbols"], e.params["center"], e.params["step"],
                             np.empty(e.numel, np.uint16), "BF16", parsed=pp, dq=e.codec == "ans-dq")

    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    print(f"transparent huge pages: {open(thp).read().strip() if os.path.exists(thp) else 'unknown'}; numpy "
          f"madvise(HUGEPAGE): {np._core.multiarray._get_madvise_hugepage()}", flush=True)
    print(f"{path}: {len(es)} ans tensors, {n / 1e6:.1f} M weights; bslcodec {bslcodec.__file__}; "
          f"{os.cpu_count()} CPUs", flush=True)
    top = numba.config.NUMBA_NUM_THREADS
    for th in args.threads:
        th = min(th, top)
        numba.set_num_threads(th)
        pool.set_threads(th)
        la = os.getloadavg()[0]
        t = {"load_file": best(lambda: bslcodec.load_file(path), args.reps),
             "checksum": best(lambda: [checksum(p) for p in pl], args.reps),
             "parse": best(lambda: [rans.parse(p, e.numel, e.params["lane_symbols"]) for p, e in zip(pl, es)],
                           args.reps),
             "tables": best(lambda: [rans.tables(*pp[:4]) for pp in parsed], args.reps),
             "fresh output": best(fresh, args.reps),
             "kernel": best(kernel, args.reps),
             "kernel, fresh outputs": best(kernel_fresh, args.reps)}
        cpu = best(kernel, args.reps, time.process_time) if th == 1 else None
        if th == 1 and vec is not None and vec.SIMD:  # the scalar usual step, same process, alternated
            cpus = {True: [cpu], False: []}
            for simd in (False, True, False, True, False):
                vec.SIMD = simd
                cpus[simd].append(best(kernel, args.reps, time.process_time))
            vec.SIMD = True
            print(f"kernel CPU time, 1 thread, best of {args.reps} (rounds alternated): vector step "
                  f"{n / min(cpus[True]) / 1e6:.0f} M weights/s, scalar step {n / min(cpus[False]) / 1e6:.0f} "
                  f"M weights/s ({min(cpus[False]) / min(cpus[True]):.2f}x); rounds vector "
                  + " ".join(f"{n / c / 1e6:.0f}" for c in cpus[True]) + ", scalar "
                  + " ".join(f"{n / c / 1e6:.0f}" for c in cpus[False]) + f"; load average {os.getloadavg()[0]:.1f}",
                  flush=True)
        share = " ".join(f"{k} {v * 1e3:.2f} ms ({100 * v / t['load_file']:.1f} %)," for k, v in t.items()
                         if k != "load_file")
        print(f"threads {th}: load_file {t['load_file'] * 1e3:.1f} ms = {2 * n / t['load_file'] / 1e9:.3f} GB/s; "
              f"{share} kernel {2 * n / t['kernel'] / 1e9:.3f} GB/s"
              + (f", kernel CPU time {cpu * 1e3:.1f} ms = {n / cpu / 1e6:.0f} M weights/s" if cpu else "")
              + f"; load average {la:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    numba.set_num_threads(top)
    pool.set_threads(None)
    src.close()


if __name__ == "__main__":
    main()
