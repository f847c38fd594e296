#!/usr/bin/env python
"""Where a whole-folder encode's wall time goes on many cores (issue 18): ``bslcodec encode`` of a folder with
``--workers N``, with ``bslcodec.files.pool.run`` wrapped to record every call (its wall time, its tasks'
busy time and count, the pool threads it ran on) and the time spent outside the pool (the calling
thread's serial work: reading, allocation search, writing). Prints one line per pool call grouped by
the calling function, the tensors coded alone with every thread, and a summary: wall, time inside pool calls, their utilisation (busy / (wall x
threads)), serial time outside.

    python tools/experiments/encode_timeline.py FOLDER --workers 16 --bits 4 [--json out.json]
"""

import argparse
import json
import sys
import threading
import time
import traceback


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--out", default="/tmp/encode_timeline_out")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--bits", default="4")
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    from bslcodec.files import pool

    calls = []
    orig = pool.run
    t_run0 = time.perf_counter()

    def run(fn, items, weights, n_threads=None, budget=None):
        up, direct = traceback.extract_stack(limit=3)[:2]  # e.g. encode_all, called from _encode_tensors:252
        rec = {"caller": f"{direct.name} <- {up.filename.split('bslcodec/')[-1]}:{up.lineno} {up.name}",
               "items": len(items), "bytes": int(sum(weights)), "busy": 0.0, "threads": set(), "tasks": []}
        lock = threading.Lock()
        size = {id(it): int(w) for it, w in zip(items, weights)}

        def timed(it):
            t = time.perf_counter()
            try:
                return fn(it)
            finally:
                t1 = time.perf_counter()
                with lock:
                    rec["busy"] += t1 - t
                    rec["threads"].add(threading.get_ident())
                    main = threading.current_thread() is threading.main_thread()
                    rec["tasks"].append({"bytes": size.get(id(it), 0), "start": t - t_run0, "end": t1 - t_run0,
                                         "main_thread": main})

        t0 = time.perf_counter()
        try:
            return orig(timed, items, weights, n_threads=n_threads, budget=budget)
        finally:
            rec["wall"] = time.perf_counter() - t0
            rec["threads"] = len(rec["threads"])
            calls.append(rec)

    pool.run = run
    serial = _wrap_serial()
    from click.testing import CliRunner

    from bslcodec.cli import main as cli

    t0 = time.perf_counter()
    r = CliRunner().invoke(cli, ["encode", a.folder, a.out, "-q", "--overwrite", "--workers", str(a.workers),
                                 "--bits", a.bits])
    wall = time.perf_counter() - t0
    if r.exit_code:
        print(r.output, r.exception, file=sys.stderr)
        return 1
    inside = sum(c["wall"] for c in calls)
    by = {}
    for c in calls:
        d = by.setdefault(c["caller"], {"calls": 0, "wall": 0.0, "busy": 0.0, "items": 0, "bytes": 0, "threads": 0})
        d["calls"] += 1
        d["wall"] += c["wall"]
        d["busy"] += c["busy"]
        d["items"] += c["items"]
        d["bytes"] += c["bytes"]
        d["threads"] = max(d["threads"], c["threads"])
    print(f"wall {wall:.2f} s; inside pool.run {inside:.2f} s; outside (serial) {wall - inside:.2f} s")
    for k, (n, sec) in sorted(serial.items(), key=lambda kv: -kv[1][1]):
        print(f"  serial stage {k}: {n} calls, {sec:.2f} s")
    alone = [t for c in calls for t in c["tasks"] if t["main_thread"]]  # the tensors run alone, all threads
    if alone:
        mb = sum(t["bytes"] for t in alone) / 1e6
        sec = sum(t["end"] - t["start"] for t in alone)
        print(f"  tensors coded alone on every thread (pool.run's 'big'): {len(alone)}, {mb:.0f} MB in {sec:.2f} s "
              f"({mb / max(sec, 1e-9):.0f} MB/s)")
    for k, d in sorted(by.items(), key=lambda kv: -kv[1]["wall"]):
        print(f"  {k}: {d['calls']} calls, {d['items']} items, {d['bytes'] / 1e6:.0f} MB, wall {d['wall']:.2f} s, "
              f"task busy {d['busy']:.2f} s, max pool threads {d['threads']}, "
              f"busy/(wall x workers) {d['busy'] / max(1e-9, d['wall'] * a.workers):.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"wall": wall, "inside": inside, "calls": calls, "by_caller": by}, fh, indent=1)
    return 0


def _wrap_serial() -> dict:
    """Time the calling thread's known serial stages (name -> [calls, seconds]): the file writes (header,
    payloads, fsync), the step search and its correction, the input-size scan, the folder's index and copies."""
    from bslcodec.files import checkpoint, encoder

    out = {}

    def wrap(mod, name):
        fn = getattr(mod, name)

        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                rec = out.setdefault(f"{mod.__name__.split('.')[-1]}.{name}", [0, 0.0])  # not thread-safe: main thread only
                rec[0] += 1
                rec[1] += time.perf_counter() - t

        setattr(mod, name, timed)

    for mod, name in ((checkpoint, "write_bsl"), (checkpoint, "_total_bytes"), (checkpoint, "_finish_staged"),
                      (encoder, "correction"), (encoder, "steps_for"), (encoder, "overhead_guess"),
                      (encoder, "build_header"), (encoder, "place")):
        if hasattr(mod, name):
            wrap(mod, name)
    wrap(encoder.Allocation, "solve")
    wrap(encoder.Allocation, "__init__")
    return out


if __name__ == "__main__":
    sys.exit(main())
