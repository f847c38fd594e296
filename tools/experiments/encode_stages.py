#!/usr/bin/env python
"""Per-stage time of one in-process ``bslcodec encode`` (issue 18): the encode's kernels and Python stages
wrapped with timers that add up each call's wall time and the calling thread's CPU time, over every
thread. Inclusive (``dq_search.quantize`` holds its ``_q0_hist``, ``build_model`` and ``_quantize``).
A parallel kernel run with every Numba thread (a tensor coded alone) has wall > thread CPU: its other
threads' time is in the wall only. With N pool threads the walls add up to more than the encode's wall.

    python tools/experiments/encode_stages.py FOLDER --workers 2 --bits 4 [--repeat 2]
"""

import argparse
import sys
import threading
import time
from collections import defaultdict


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--out", default="/tmp/encode_stages_out")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bits", default="4")
    ap.add_argument("--repeat", type=int, default=2, help="encodes in this process (the first warms up)")
    a = ap.parse_args(argv)

    import bslcodec  # noqa: F401  (jitcache before the kernel modules)
    from bslcodec import parallel
    from bslcodec.codecs import dq_search, rans
    from bslcodec.files import checkpoint, encoder, readers
    from bslcodec.pipeline import allocation, codec
    from bslcodec.quantize import ggd, quant

    acc = defaultdict(lambda: [0, 0.0, 0.0])  # name -> [calls, wall, thread cpu]
    lock = threading.Lock()

    def timed(name, fn):
        def wrapper(*args, **kw):
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                dw, dc = time.perf_counter() - w, time.thread_time() - c
                with lock:
                    r = acc[name]
                    r[0] += 1
                    r[1] += dw
                    r[2] += dc
        return wrapper

    orig_launch = parallel.launch

    def launch(kernel, serial, *args, **kw):
        return timed("kernel " + getattr(kernel, "__name__", str(kernel)), orig_launch)(kernel, serial, *args, **kw)

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("bslcodec") and getattr(mod, "launch", None) is orig_launch:
            mod.launch = launch
    for mod, name in ((dq_search, "quantize"), (rans, "build_model"), (rans, "encode"), (ggd, "fit"),
                      (quant, "moments"), (quant, "as_float32"), (readers, "_st_read"), (allocation, "sample"),
                      (codec.LossyTensor, "encode"), (codec.LossyTensor, "_code_dq"), (codec, "entropy_code"),
                      (allocation.Allocation, "solve"), (allocation.Allocation, "__init__"),
                      (encoder, "build_header"), (encoder, "_write"), (checkpoint, "encode_file")):
        setattr(mod, name, timed(f"{getattr(mod, '__name__', mod)}.{name}", getattr(mod, name)))
    codec.rans = rans  # (module attribute: already the patched one)

    from click.testing import CliRunner

    from bslcodec.cli import main as cli

    for rep in range(a.repeat):
        acc.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        r = CliRunner().invoke(cli, ["encode", a.folder, a.out, "-q", "--overwrite", "--workers", str(a.workers),
                                     "--bits", a.bits])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if r.exit_code:
            print(r.output, r.exception, file=sys.stderr)
            return 1
        print(f"run {rep}: wall {wall:.2f} s, process CPU {cpu:.2f} s")
    print(f"{'stage':58s} {'calls':>5s} {'wall s':>7s} {'thread CPU s':>12s}")
    for k, (n, w, c) in sorted(acc.items(), key=lambda kv: -kv[1][1]):
        print(f"{k:58s} {n:5d} {w:7.3f} {c:12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
