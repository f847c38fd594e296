"""The user's view of loading: file -> CUDA tensors and folder -> ready transformers model, bslcodec against
safetensors in the same process (issue 19).

1. ``--weights`` (default 134M) bf16 generalized-Gaussian weights (shape ``--beta``, scale 0.02; 4096-wide
   matrices) as one safetensors file and as ``.bsl`` files at: default ``bits=4`` (ans-dq), ``bits=4`` with
   ``expert={"codec": "eg"}``, ``expert={"rel_step": 1/16}``, the default, ``exact=True``. Timed:
   ``safetensors.torch.load_file(device="cuda")`` and ``bslcodec.load_file(framework="pt", device="cuda")``,
   each to a synchronised GPU.
2. ``--folder``: a LLaMA-shaped model (TinyLlama-1.1B shapes, random GG weights, norms = 1) written by
   safetensors in 5 shards with config.json; encoded with ``bslcodec.files.checkpoint.encode_checkpoint``;
   timed: ``transformers.AutoModelForCausalLM.from_pretrained(dtype=bf16, device_map="cuda")`` against
   ``bslcodec.hf.from_pretrained(device="cuda")``.

Three read conditions, same method for both sides:
* warm: the files are in the page cache (read once before, median of ``--reps`` runs);
* cold: every file of the load is evicted from the page cache first with ``posix_fadvise(DONTNEED)`` (works
  without root for files nobody writes; ``/proc/sys/vm/drop_caches`` is tried first);
* throttled (files only): the file is read through a reader capped at ``--rate`` GB/s (8 MB blocks, sleeping
  to stay under the rate: what a network volume delivers), then loaded by each library's own file loader
  (from the page cache the read just filled); the time is the sum, so the read is not overlapped with the
  decode on either side. (Loading from the read bytes instead is unfair to safetensors: its from-bytes path,
  ``safetensors.torch.load`` + ``.to("cuda")``, took 706 ms against 37 ms for its file loader.)

    python tools/bench/bench_load.py --md results/load.md --json load.json [--folder]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))


def gg(rng, n, beta, scale=0.02):
    """n generalized-Gaussian draws (shape beta): sign * Gamma(1/beta)^(1/beta), scaled to std ``scale``."""
    from math import gamma

    g = rng.standard_gamma(1 / beta, n).astype(np.float32) ** np.float32(1 / beta)
    g *= np.where(rng.random(n, np.float32) < 0.5, -1, 1).astype(np.float32)
    std = (gamma(3 / beta) / gamma(1 / beta)) ** 0.5
    return g * np.float32(scale / std)


def bf16(torch, a):
    return torch.from_numpy(a).to(torch.bfloat16)


def evict(paths):
    """Drop the files from the page cache: drop_caches where permitted, else fadvise(DONTNEED) per file."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        pass
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "posix_fadvise(DONTNEED)"


def read_throttled(path, rate):
    """The file's bytes, read in 8 MB blocks at most ``rate`` bytes/s."""
    size = os.path.getsize(path)
    buf = bytearray(size)
    mv = memoryview(buf)
    t0 = time.perf_counter()
    pos = 0
    with open(path, "rb", buffering=0) as f:
        while pos < size:
            k = f.readinto(mv[pos:pos + (8 << 20)])
            if not k:
                break
            pos += k
            ahead = pos / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    return buf


def timed(fn, torch, reps, before=None):
    """Median wall seconds of fn() to a synchronised GPU (one untimed run first); results dropped each time."""
    ts = []
    for i in range(reps + 1):
        if before is not None:
            before()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        del out
        if i:
            ts.append(dt)
    return statistics.median(ts), min(ts), max(ts)


SETTINGS = [("default bits=4 (ans-dq)", {"bits": 4}), ("codec=\"eg\", bits=4", {"bits": 4, "expert": {"codec": "eg"}}),
            ("rel_step=1/16 (ans-dq)", {"expert": {"rel_step": 1 / 16}}), ("default rel_step", {}),
            ("lossless", {"exact": True})]


def write_files(tensors, tmp, args) -> list:
    """The safetensors file and one .bsl file per selected setting (``--only``), each a row: what, path,
    bits/weight (and encode seconds)."""
    import safetensors.torch as st

    import bslcodec

    n = sum(t.numel() for t in tensors.values())
    st_path = os.path.join(tmp, "w.safetensors")
    st.save_file(tensors, st_path)
    rows = [{"what": "safetensors", "path": st_path, "bpw": 8 * os.path.getsize(st_path) / n}]
    for label, kw in SETTINGS:
        if args.only and not any(o in label for o in args.only):
            continue
        p = os.path.join(tmp, f"w{len(rows)}.bsl")
        t0 = time.perf_counter()
        bslcodec.save_file(tensors, p, **kw)
        rows.append({"what": label, "path": p, "bpw": 8 * os.path.getsize(p) / n, "encode_s": time.perf_counter() - t0})
        print(f"encoded {label}: {rows[-1]['bpw']:.3f} b/w in {rows[-1]['encode_s']:.1f} s", flush=True)
    return rows


def files_bench(args, torch, res, tmp):
    import safetensors.torch as st

    import bslcodec

    rng = np.random.default_rng(0)
    n_mat = max(1, args.weights // (4096 * 4096))
    tensors = {f"layers.{i}.weight": bf16(torch, gg(rng, 4096 * 4096, args.beta).reshape(4096, 4096))
               for i in range(n_mat)}
    n = sum(t.numel() for t in tensors.values())
    rows = write_files(tensors, tmp, args)
    ref = None
    for r in rows:
        if r["what"] == "safetensors":
            load = lambda p=r["path"]: st.load_file(p, device="cuda")
        else:
            load = lambda p=r["path"]: bslcodec.load_file(p, framework="pt", device="cuda")
        got = load()
        if r["what"] == "safetensors":
            ref = {k: v.clone() for k, v in got.items()}
        elif r["what"] == "lossless":
            r["exact"] = all(torch.equal(got[k].view(torch.int16), ref[k].view(torch.int16)) for k in ref)
        if r["what"] != "safetensors":  # bit-exact with the CPU decoder
            cpu = bslcodec.load_file(r["path"], framework="pt")
            r["gpu_eq_cpu"] = all(torch.equal(got[k].cpu().view(torch.int16), cpu[k].view(torch.int16)) for k in cpu)
            del cpu
        del got
        r["warm"] = timed(load, torch, args.reps)
        r["cold"] = timed(load, torch, max(1, args.reps // 3), before=lambda p=r["path"]: res.__setitem__(
            "evict", evict([p])))
        r["throttled"] = timed(lambda p=r["path"], ld=load: (read_throttled(p, args.rate * 1e9), ld())[1], torch,
                               max(1, args.reps // 3))
        print(r["what"], {k: round(r[k][0] * 1e3, 1) for k in ("warm", "cold", "throttled")}, flush=True)
        if args.cpu:
            r["cpu"] = cpu_scaling(r, torch, args.reps)
            print(r["what"], "CPU", r["cpu"], flush=True)
    for r in rows:
        r.pop("path")
    res["files"] = {"n": n, "rows": rows}


def cpu_scaling(r, torch, reps):
    """{threads: median s} of the CPU load (framework="pt", page cache warm) at 1, 2, 4, ... numba threads."""
    import numba

    import bslcodec

    if r["what"] == "safetensors":
        import safetensors.torch as st

        load = lambda: st.load_file(r["path"])
    else:
        load = lambda: bslcodec.load_file(r["path"], framework="pt")
    from bslcodec.files import pool

    top = numba.config.NUMBA_NUM_THREADS
    out, k = {}, 1
    try:
        while True:
            numba.set_num_threads(min(k, top))
            torch.set_num_threads(min(k, top))
            pool.set_threads(min(k, top))  # the loader's tensor-level threads (default: from the load average)
            load()
            ts = []
            for _ in range(max(1, reps // 2)):
                t0 = time.perf_counter()
                load()
                ts.append(time.perf_counter() - t0)
            out[min(k, top)] = statistics.median(ts)
            if k >= top:
                return out
            k *= 2
    finally:
        numba.set_num_threads(top)
        pool.set_threads(None)


def cpu_only_bench(args, res, tmp):
    """``--cpu-only``: the files of ``files_bench`` (``--weights``, ``--only``) loaded on the CPU alone at 1, 2, 4
    ... threads, safetensors in the same process (no GPU needed)."""
    import torch


    rng = np.random.default_rng(0)
    side = args.side
    n_mat = max(1, args.weights // (side * side))
    tensors = {f"layers.{i}.weight": bf16(torch, gg(rng, side * side, args.beta).reshape(side, side))
               for i in range(n_mat)}
    n = sum(t.numel() for t in tensors.values())
    rows = write_files(tensors, tmp, args)
    for r in rows:
        r["cpu"] = cpu_scaling(r, torch, args.reps)
        print(r["what"], "CPU", r["cpu"], flush=True)
        r.pop("path")
    res["files"] = {"n": n, "rows": rows}


# label -> (one tensor, save_file settings)
SMALL_KINDS = {"1-D 64 f32, default (fine step)": (lambda rng: rng.normal(0, 1, 64).astype(np.float32), {}),
               "1-D 64 f32, lossless (raw)": (lambda rng: rng.normal(0, 1, 64).astype(np.float32), {"exact": True}),
               "1-D 4096 bf16, lossless": (lambda rng: rng.normal(0, 1, 4096).astype("bfloat16"), {"exact": True}),
               "64x64 f32, default (ans-dq)": (lambda rng: rng.normal(0, 0.02, (64, 64)).astype(np.float32), {})}


def small_bench(args, res, tmp):
    """Per-tensor cost of many small tensors (CPU, no GPU needed): ``save_file`` and ``load_file`` (numpy) of
    ``--small`` tensors of one kind, against safetensors' numpy API in the same process; median (and min) of
    ``--small-reps`` runs, wall clock, and the median CPU time of the process (``*_cpu``)."""
    import ml_dtypes  # noqa: F401  (numpy's "bfloat16" dtype name)
    import safetensors.numpy as snp

    import bslcodec

    rows = []
    for label, (make, kw) in SMALL_KINDS.items():
        rng = np.random.default_rng(0)
        t = {f"t.{i}": make(rng) for i in range(args.small)}
        p, q = os.path.join(tmp, "small.bsl"), os.path.join(tmp, "small.safetensors")
        bslcodec.save_file(dict(list(t.items())[:4]), p, **kw)  # compile / load the kernels first
        bslcodec.load_file(p)
        r = {"what": label, "n": len(t)}
        for key, fn in (("bsl_save", lambda t=t, p=p, kw=kw: bslcodec.save_file(t, p, **kw)),
                        ("bsl_load", lambda p=p: bslcodec.load_file(p)),
                        ("st_save", lambda t=t, q=q: snp.save_file(t, q)), ("st_load", lambda q=q: snp.load_file(q))):
            ts, cs = [], []
            for _ in range(args.small_reps):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
                cs.append(time.process_time() - c0)
            r[key] = statistics.median(ts) / len(t) * 1e6  # microseconds per tensor
            r[key + "_min"] = min(ts) / len(t) * 1e6
            r[key + "_cpu"] = statistics.median(cs) / len(t) * 1e6  # the process's CPU time (every thread's):
            # steadier than the wall clock where other jobs hold the cores
        with bslcodec.safe_open(p) as f:
            r["codecs"] = sorted({f.entry(k).codec for k in f.keys()})  # noqa: SIM118 (safe_open has no __iter__)
        rows.append(r)
        print(r, flush=True)
    res["small"] = rows


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                       torch_dtype="bfloat16", tie_word_embeddings=False, architectures=["LlamaForCausalLM"])


def folder_bench(args, torch, res, tmp):
    import safetensors.torch as st
    import transformers
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    import bslcodec.hf
    from bslcodec.files.checkpoint import encode_checkpoint

    cfg = llama_config()
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(cfg).state_dict().items()}
    rng = np.random.default_rng(1)
    folder = os.path.join(tmp, "llama")
    os.makedirs(folder)
    cfg.save_pretrained(folder)
    names = sorted(shapes)
    shards = np.array_split(np.arange(len(names)), 5)
    weight_map, n = {}, 0
    for i, idx in enumerate(shards):
        part = {}
        for j in idx:
            k = names[j]
            m = int(np.prod(shapes[k]))
            n += m
            part[k] = (torch.ones(shapes[k], dtype=torch.bfloat16) if k.endswith("norm.weight")
                       else bf16(torch, gg(rng, m, args.beta).reshape(shapes[k])))
        fn = f"model-{i + 1:05d}-of-00005.safetensors"
        st.save_file(part, os.path.join(folder, fn), metadata={"format": "pt"})
        weight_map.update({k: fn for k in part})
        del part
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    rows = [{"what": "transformers (safetensors)", "path": folder,
             "bpw": 8 * sum(os.path.getsize(os.path.join(folder, f)) for f in set(weight_map.values())) / n}]
    for label, kw in SETTINGS:
        if label not in args.folder_settings:
            continue
        out = os.path.join(tmp, f"llama{len(rows)}")
        t0 = time.perf_counter()
        r = encode_checkpoint(folder, out, progress=False, **kw)
        rows.append({"what": label, "path": out, "bpw": 8 * r.bsl_bytes / n, "encode_s": time.perf_counter() - t0})
        print(f"folder encoded {label}: {rows[-1]['bpw']:.3f} b/w in {rows[-1]['encode_s']:.1f} s", flush=True)
    for r in rows:
        p = r["path"]
        files = [os.path.join(p, f) for f in os.listdir(p) if f.endswith((".safetensors", ".bsl"))]
        if r["what"].startswith("transformers"):
            load = lambda p=p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.bfloat16, device_map="cuda")
        else:
            load = lambda p=p: bslcodec.hf.from_pretrained(p, dtype=torch.bfloat16, device="cuda")
        r["warm"] = timed(load, torch, args.reps)
        r["cold"] = timed(load, torch, max(1, args.reps // 3), before=lambda f=files: evict(f))
        print(r["what"], {k: round(r[k][0] * 1e3, 1) for k in ("warm", "cold")}, flush=True)
    for r in rows:
        r.pop("path")
    res["folder"] = {"n": n, "rows": rows, "transformers": transformers.__version__}


def report(res) -> str:
    if res.get("small"):
        L = [(f"Per-tensor cost on {res['host']} ({res['cpus']} CPUs, load average {res['load']} at the start, "
              f"{res.get('load_end', '?')} at the end), commit {res['commit']}: microseconds per tensor, median (min) of "
              f"{res.get('reps', 3)} runs of {res['small'][0]['n']} tensors; safetensors (numpy API) in the same process. "
              "Goal (issue 19): <= 30 us to load, <= 250 us to save on 2 cores."), "",
             "| tensors | codec | bslcodec save | bslcodec load | safetensors save | safetensors load |",
             "|---|---|---|---|---|---|"]
        for r in res["small"]:
            L.append(f"| {r['what']} | {', '.join(r['codecs'])} | {r['bsl_save']:.0f} ({r.get('bsl_save_min', 0):.0f}) | "
                     f"{r['bsl_load']:.0f} ({r.get('bsl_load_min', 0):.0f}) | {r['st_save']:.0f} | {r['st_load']:.0f} |")
        return "\n".join(L) + "\n"
    L = [(f"Generated by `python tools/bench/bench_load.py` on {res['device']} ({res['cpus']} CPUs, load average "
         f"{res['load']}), torch {res['torch']}, commit {res['commit']}. Wall time to a synchronised GPU, median "
         f"(min-max) of the runs; page-cache eviction: {res.get('evict', 'n/a')}; throttled: file read at "
         f"{res['rate']} GB/s by a rate-capped reader, then loaded by the library's file loader, times summed (both "
         "sides)."), ""]
    f = res.get("files")
    if f and res.get("cpu_only"):
        ks = list(f["rows"][0]["cpu"])
        L = [(f"`python tools/bench/bench_load.py --cpu-only` on {res['device']} ({res['cpus']} CPUs, load average "
              f"{res['load']} at the start, {res.get('load_end', '?')} at the end), torch {res['torch']}, commit "
              f"{res['commit']}: `load_file(framework=\"pt\")` (safetensors: `safetensors.torch.load_file`) of "
              f"{f['n']:,} bf16 GG weights, page cache warm, GB/s of bf16 output (median of {max(1, args_reps(res))} "
              "runs) by threads (numba and the loader's pool). Goal (16 cores): >= 8 GB/s."), "",
             "| file | bits/w | " + " | ".join(f"{k} thr" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
        for r in f["rows"]:
            L.append(f"| {r['what']} | {r['bpw']:.2f} | " + " | ".join(f"{2 * f['n'] / r['cpu'][k] / 1e9:.2f}"
                                                                  for k in ks) + " |")
        return "\n".join(L) + "\n"
    if f:
        base = f["rows"][0]
        L += [(f"**File -> CUDA tensors**: {f['n']:,} bf16 GG(shape {res['beta']}) weights "
              f"({2 * f['n'] / 1e9:.2f} GB of output). Goal (issue 19): >= 0.8 x 16/bpw x safetensors."), "",
              "| file | bits/w | warm ms | GB/s | vs safetensors | goal | cold ms | vs | 2 GB/s ms | vs | GPU == CPU |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in f["rows"]:
            sp = {k: base[k][0] / r[k][0] for k in ("warm", "cold", "throttled")}
            goal = "" if r is base else f"{0.8 * 16 / r['bpw']:.2f}"
            eq = "" if r is base else ("yes" if r.get("gpu_eq_cpu") else "NO")
            L.append(f"| {r['what']} | {r['bpw']:.2f} | {r['warm'][0] * 1e3:.1f} ({r['warm'][1] * 1e3:.1f}-"
                     f"{r['warm'][2] * 1e3:.1f}) | {2 * f['n'] / r['warm'][0] / 1e9:.1f} | {sp['warm']:.2f} | {goal} | "
                     f"{r['cold'][0] * 1e3:.1f} | {sp['cold']:.2f} | {r['throttled'][0] * 1e3:.1f} | "
                     f"{sp['throttled']:.2f} | {eq} |")
        L.append("")
        if "cpu" in base:
            ks = list(base["cpu"])
            L += [("**CPU** `load_file(framework=\"pt\")` (safetensors: `safetensors.torch.load_file`), page cache warm, "
                  "GB/s of bf16 output by numba threads. Goal: >= 8 GB/s on 16 cores."), "",
                  "| file | " + " | ".join(f"{k} thr" for k in ks) + " |", "|---|" + "---|" * len(ks)]
            for r in f["rows"]:
                L.append(f"| {r['what']} | " + " | ".join(f"{2 * f['n'] / r['cpu'][k] / 1e9:.1f}" for k in ks) + " |")
            L.append("")
    d = res.get("folder")
    if d:
        base = d["rows"][0]
        L += [(f"**Folder -> ready transformers model** (LLaMA-shaped, TinyLlama-1.1B sizes, {d['n']:,} weights, "
              f"5 shards; transformers {d['transformers']}): `AutoModelForCausalLM.from_pretrained(dtype=bf16, "
              f"device_map=\"cuda\")` against `bslcodec.hf.from_pretrained(dtype=bf16, device=\"cuda\")`. Goal: "
              f">= 2x at <= 6 b/w."), "", "| folder | bits/w | encode s | warm ms | vs transformers | cold ms | vs |",
              "|---|---|---|---|---|---|---|"]
        for r in d["rows"]:
            L.append(f"| {r['what']} | {r['bpw']:.2f} | {r.get('encode_s', 0):.0f} | {r['warm'][0] * 1e3:.0f} "
                     f"({r['warm'][1] * 1e3:.0f}-{r['warm'][2] * 1e3:.0f}) | {base['warm'][0] / r['warm'][0]:.2f} | "
                     f"{r['cold'][0] * 1e3:.0f} | {base['cold'][0] / r['cold'][0]:.2f} |")
    return "\n".join(L) + "\n"


def args_reps(res) -> int:
    return res.get("reps", 7) // 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=int, default=134_217_728)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rate", type=float, default=2.0, help="GB/s of the throttled reader")
    ap.add_argument("--only", nargs="*", default=None, help="file settings whose label contains one of these")
    ap.add_argument("--folder", action="store_true", help="also the 1.1B LLaMA folder")
    ap.add_argument("--cpu", action="store_true", help="also CPU load_file at 1, 2, 4 ... numba threads")
    ap.add_argument("--skip-files", action="store_true")
    ap.add_argument("--cpu-only", action="store_true", help="only the CPU load at 1, 2, 4 ... threads (no GPU)")
    ap.add_argument("--side", type=int, default=4096, help="--cpu-only: matrices of side x side weights")
    ap.add_argument("--folder-settings", nargs="*", default=["codec=\"eg\", bits=4", "rel_step=1/16 (ans-dq)"])
    ap.add_argument("--small", type=int, default=0, help="only the per-tensor cost of this many small tensors (CPU)")
    ap.add_argument("--small-reps", type=int, default=3, help="runs of each --small measurement (median and min)")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--commit", default=None, help="commit to name in the report (default: git rev-parse)")
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--report", default=None, help="only rewrite --md from this json")
    args = ap.parse_args(argv)
    if args.small:
        res = {"host": platform.node() or "?", "cpus": os.cpu_count(), "commit": args.commit or "unknown",
               "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
        res["reps"] = args.small_reps
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            small_bench(args, res, tmp)
        res["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(write(args, res))
        return
    if args.report:
        with open(args.report) as f:
            res = json.load(f)
    elif args.cpu_only:
        import torch

        res = {"device": f"CPU only ({platform.node() or '?'})", "torch": torch.__version__, "cpus": os.cpu_count(),
               "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "commit": args.commit or "unknown",
               "rate": args.rate, "beta": args.beta, "host": platform.node(), "cpu_only": True, "reps": args.reps}
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            cpu_only_bench(args, res, tmp)
        res["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    else:
        import torch

        commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                               text=True, check=False).stdout.strip() or "unknown"
        res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cpus": os.cpu_count(),
               "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "commit": commit, "rate": args.rate,
               "beta": args.beta, "host": platform.node()}
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            if not args.skip_files:
                files_bench(args, torch, res, tmp)
                write(args, res)
                torch.cuda.empty_cache()
            if args.folder:
                folder_bench(args, torch, res, tmp)
    print(write(args, res))


def write(args, res) -> str:
    """The json and the markdown table of what has been measured so far."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    text = report(res)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
