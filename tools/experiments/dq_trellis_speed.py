"""The dq trellis before and after issue 18 (results/encode.md): 1-thread CPU time per element of
``dq_search.quantize`` at the dtypes and steps the encoder uses, the old module taken from git (commit
9f79e8f, one lane at a time) and run in the same process; symbols compared (md5).

    python tools/experiments/dq_trellis_speed.py
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import ml_dtypes  # noqa: E402
import numba  # noqa: E402

from bslcodec.codecs import dq_search as new  # noqa: E402
from bslcodec.quantize import quant  # noqa: E402

OLD = "9f79e8f"


def old_module():
    src = subprocess.run(["git", "-C", ROOT, "show", f"{OLD}:bslcodec/codecs/dq_search.py"], capture_output=True,
                         text=True, check=True).stdout
    src = (src.replace("from ..", "from bslcodec.").replace("from . import rans", "from bslcodec.codecs import rans")
           .replace("from .golomb", "from bslcodec.codecs.golomb"))
    path = os.path.join(tempfile.mkdtemp(), "dq_search_old.py")
    open(path, "w").write(src)
    spec = importlib.util.spec_from_file_location("dq_search_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    numba.set_num_threads(1)
    old = old_module()
    rng = np.random.default_rng(0)
    n = 1 << 21
    rows = []
    for dt, npdt in (("F32", np.float32), ("BF16", ml_dtypes.bfloat16), ("F16", np.float16)):
        a = rng.laplace(0, 0.02, n).astype(npdt)
        x = a if dt == "F32" else a.astype(np.float32)
        for rel in (1 / 4, 1 / 16, 1 / 64):
            step = quant.step_for_dtype(0.575 * float(x.std()) * rel, dt)
            for m in (old, new):
                m.quantize(x[:40000], step, 0, dt, 1024)
            best = {}
            for _ in range(5):
                for name, m in (("old", old), ("new", new)):
                    t = time.thread_time()
                    r = m.quantize(x, step, 0, dt, 1024)
                    best[name] = min(best.get(name, 1e9), time.thread_time() - t)
                    best[name + "_md5"] = hashlib.md5(r.u.tobytes()).hexdigest()
            same = best["old_md5"] == best["new_md5"]
            rows.append((dt, rel, n / best["old"] / 1e6, n / best["new"] / 1e6, best["old"] / best["new"], same))
            print(f"| {dt} | 1/{round(1 / rel)} | {rows[-1][2]:.1f} | {rows[-1][3]:.1f} | {rows[-1][4]:.2f}x | "
                  f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    print("| dtype | rel_step | old Mel/s | new Mel/s | speed-up | same symbols |\n|---|---|---:|---:|---:|---|")
    main()
