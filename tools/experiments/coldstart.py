#!/usr/bin/env python
"""What a first run compiles: ``bslcodec encode`` / ``decode`` of a small folder in a child process with an
empty Numba cache (``NUMBA_CACHE_DIR`` a fresh temporary dir, unless ``--cache``), numba's
``Dispatcher.compile`` wrapped to time each compiled signature (exclusive of the compiles nested in it), and
cached-kernel loads counted. Prints the wall time of each command and the compiles, largest first
(results/encode.md, "First run and start-up").

    python tools/experiments/coldstart.py [--root TREE] [--folder DIR] [--cache DIR] [--keep] [--warm] [--sigs]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# run in the child: wrap the compile, run the CLI, write the records
CHILD = r"""
import json, sys, time
from numba.core import dispatcher
recs, stack = [], []
orig = dispatcher.Dispatcher.compile
def compile(self, sig):
    t0 = time.thread_time()  # CPU time of the compiling thread: less at the mercy of the box's load than wall time
    stack.append(0.0)
    n0 = len(self.overloads)
    try:
        return orig(self, sig)
    finally:
        dt = time.thread_time() - t0
        nested = stack.pop()
        if stack:
            stack[-1] += dt
        if len(self.overloads) > n0 or dt - nested > 0.05:
            recs.append((self.py_func.__module__ + "." + self.py_func.__qualname__, str(sig), dt - nested,
                         len(self.overloads) > n0))
dispatcher.Dispatcher.compile = compile
out = sys.argv.pop(1)
from bslcodec.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    with open(out, "w") as f:
        json.dump(recs, f)
"""


def folder(path):
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    os.makedirs(path, exist_ok=True)
    save_file({"w": (rng.standard_normal((1024, 1024)) * 0.02).astype(ml_dtypes.bfloat16),
               "f": (rng.standard_normal((512, 1024)) * 0.02).astype(np.float32),
               "norm": np.ones(1024, ml_dtypes.bfloat16)}, os.path.join(path, "model.safetensors"))


def run(root, args, cache, log):
    """Wall and CPU seconds (user + system, the child's) of one command of the tree ``root``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=root)
    t0, c0 = time.perf_counter(), os.times()
    subprocess.run([sys.executable, "-c", CHILD, log] + args, env=env, check=True, cwd=root)
    c1 = os.times()
    return time.perf_counter() - t0, c1.children_user + c1.children_system - c0.children_user - c0.children_system


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=ROOT, help="the source tree to run (default: this one)")
    ap.add_argument("--cache", help="Numba cache dir (default: a fresh temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the cache dir")
    ap.add_argument("--folder", help="encode this folder instead of the generated 3-tensor one")
    ap.add_argument("--bits", default="4", help="the encode's --bits (\"\": the default setting)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--sigs", action="store_true", help="print each compiled signature")
    ap.add_argument("--warm", action="store_true", help="run each command a second time (warm cache)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="coldstart.")
    cache = a.cache or os.path.join(work, "numba")
    try:
        src = a.folder or os.path.join(work, "in")
        if not a.folder:
            folder(src)
        cmds = {"encode": ["encode", src, os.path.join(work, "out"), "-q"] + (["--bits", a.bits] if a.bits else []),
                "decode": ["decode", os.path.join(work, "out"), os.path.join(work, "dec"), "-q"]}
        for name, args in cmds.items():
            reps = ["cold", "warm"] if a.warm else ["cold"]
            for rep in reps:
                log = os.path.join(work, name + ".json")
                load = os.getloadavg()[0]
                s, cpu = run(a.root, args, cache, log)
                recs = json.load(open(log))
                new = [r for r in recs if r[3]]
                print(json.dumps({"root": a.root, "cmd": name, "run": rep, "s": round(s, 2), "cpu_s": round(cpu, 2),
                                  "load": round(load, 2), "compiled": len(new),
                                  "compile_cpu_s": round(sum(r[2] for r in recs), 2)}), flush=True)
                byf = {}
                for f, sig, dt, _ in recs:
                    b = byf.setdefault(f, [0.0, []])
                    b[0] += dt
                    b[1].append(sig)
                for f, (dt, sigs) in sorted(byf.items(), key=lambda kv: -kv[1][0])[:a.top]:
                    print(f"  {dt:6.2f} s  {len(sigs)}  {f}", flush=True)
                    if a.sigs:
                        for sig in sigs:
                            print(f"           {sig}", flush=True)
                if name == "encode" and rep == "cold" and a.warm:
                    shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
                if name == "decode" and a.warm:
                    shutil.rmtree(os.path.join(work, "dec"), ignore_errors=True)
    finally:
        if a.keep:
            print("cache kept:", cache)
        shutil.rmtree(work if not a.keep else os.path.join(work, "in"), ignore_errors=True)


if __name__ == "__main__":
    main()
