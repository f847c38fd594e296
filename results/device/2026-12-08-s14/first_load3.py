"""A fresh process's first .bsl load, unprofiled, by phase (issue 23): the 2-layer TinyLlama-shaped folder that
first_load.py makes (/tmp/fl). argv[1]: st | bsl. With the old package (CuPy) on PYTHONPATH there is no warm_up."""
import sys, time
fmt = sys.argv[1]
T = {}
def mark(name, t0):
    T[name] = time.perf_counter() - t0
t0 = time.perf_counter(); import torch; mark("import torch", t0)
t0 = time.perf_counter(); import transformers; mark("import transformers", t0)
t0 = time.perf_counter(); torch.zeros(1, device="cuda"); torch.cuda.synchronize(); mark("cuda init", t0)
from transformers import AutoModelForCausalLM  # both formats build the model with it: imported before the timers
if fmt == "bsl":
    t0 = time.perf_counter(); import bslcodec.gpu as g; mark("import bslcodec.gpu", t0)
    T["numba imported"] = float("numba" in sys.modules)
    if hasattr(g, "warm_up"):
        t0 = time.perf_counter(); g.warm_up("cuda"); mark("warm_up", t0)
    from bslcodec.hf import from_pretrained
    load = lambda: from_pretrained("/tmp/fl/bsl", device="cuda", dtype=torch.bfloat16)
else:
    load = lambda: AutoModelForCausalLM.from_pretrained("/tmp/fl/st", device_map="cuda", dtype=torch.bfloat16)
t0 = time.perf_counter(); m = load(); torch.cuda.synchronize(); mark("first load", t0)
T["numba after first load"] = float("numba" in sys.modules)
from numba.core.registry import CPUDispatcher  # noqa: E402 - after the timings (numba is imported here if not yet)
T["bslcodec kernels loaded"] = float(sum(1 for mn, mod in list(sys.modules.items()) if mn.startswith("bslcodec") and mod
                                         for v in vars(mod).values() if isinstance(v, CPUDispatcher) and v.signatures))
t0 = time.perf_counter(); m = load(); torch.cuda.synchronize(); mark("second load", t0)
print(fmt, " | ".join(f"{k} {v:.3f}" for k, v in T.items()), flush=True)
