"""Encode at model scale (results/encode.md): ``bslcodec encode`` of a LLaMA-shaped bf16 Hugging Face folder
beside zstd -3 (python-zstandard, one thread and every thread) on the same bytes, in the same run.

The folder is generated on the fly: LLaMA layer shapes (hidden 2048, MLP 5632, 4 KV heads of 64, vocab
32000: 1.1B parameters in 22 layers, the TinyLlama shape) in 5 safetensors shards, weights generalized-Gaussian
(shape ν = 0.8, per-tensor scale 0.01-0.05). Samples come from one pool of 2^24 GG values (each tensor a slice
at a random offset, scaled), so generating 1.1B weights costs seconds, not minutes. ``--layers`` makes a
smaller variant (this 2-core box: ``--layers 2 --vocab 4000``, 86M weights).

Each encode runs in a fresh process (``python -m bslcodec.cli encode ... -q``): wall time, MB/s of bf16 input,
peak RSS of that process (getrusage of the child), output bits/weight. Settings (``--settings``): ``bits 4``,
``default`` and ``fixed step (rel-step 1/16)`` (one dq encode at a fixed step, what the ``bits=`` search is
compared against). Also measured: the start-up of a fresh process (imports and cached kernels), so the
markdown gives MB/s with and without it, the ratio to single-thread zstd -3, ``bits=``/fixed-step time and the
peak-RSS bound (2 x the largest shard + 0.5 GiB). The machine, its load and the commit go into the markdown.
(``--layers 4`` with the full vocabulary leaves ``model.norm.weight`` alone in the last shard, where
``--bits 4`` cannot be met; use ``--layers 5 --vocab 8000`` for a ~0.5 GB folder.)

    python tools/bench/bench_encode.py --layers 2 --vocab 4000 --threads 1 2 --out results/encode_cpu.json
    python tools/bench/bench_encode.py --layers 22 --threads 1 4 16 --out $OUT/encode_16.json   # GPU host
    python tools/bench/bench_encode.py report results/encode_cpu.json $OUT/encode_16.json      # markdown
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

HIDDEN, MLP, KV, VOCAB = 2048, 5632, 256, 32000
SHARDS = 5
POOL = 1 << 24
NU = 0.8
# the encodes measured (--settings): the allocation at 4 bits/weight, the default (near-lossless allocation),
# and one encode at a fixed step (dq, no allocation): what bits='s search is compared against
SETTINGS = {"bits 4": ["--bits", "4"], "default": [], "fixed step (rel-step 1/16)": ["--expert", "rel_step=0.0625"]}
SETTINGS["default (rel-step 1/64)"] = SETTINGS["default"]  # the label of earlier runs


def _pool(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = rng.gamma(1 / NU, 1.0, POOL) ** (1 / NU)
    g *= rng.choice(np.array([-1.0, 1.0]), POOL)
    return (g / g.std()).astype(np.float32)


def shapes(layers: int, vocab: int = VOCAB) -> dict:
    out = {"model.embed_tokens.weight": (vocab, HIDDEN), "lm_head.weight": (vocab, HIDDEN),
           "model.norm.weight": (HIDDEN,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (KV, HIDDEN),
                    p + "self_attn.v_proj.weight": (KV, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                    p + "mlp.gate_proj.weight": (MLP, HIDDEN), p + "mlp.up_proj.weight": (MLP, HIDDEN),
                    p + "mlp.down_proj.weight": (HIDDEN, MLP), p + "input_layernorm.weight": (HIDDEN,),
                    p + "post_attention_layernorm.weight": (HIDDEN,)})
    return out


def generate(folder: str, layers: int, vocab: int = VOCAB, shards: int = SHARDS, seed: int = 0) -> dict:
    """A sharded HF folder of bf16 GG weights; returns {bytes, params, files}."""
    import ml_dtypes
    from safetensors.numpy import save_file

    pool = _pool(seed)
    rng = np.random.default_rng(seed + 1)
    sh = shapes(layers, vocab)
    names = list(sh)  # embed first, lm_head early: the largest tensors spread over shards by order below
    order = [names[0]] + names[3:] + [names[1], names[2]]
    total = sum(int(np.prod(sh[n])) for n in order)
    per = total / shards
    groups, acc, cur = [], 0, []
    for n in order:
        cur.append(n)
        acc += int(np.prod(sh[n]))
        if acc >= per * (len(groups) + 1) and len(groups) < shards - 1:
            groups.append(cur)
            cur = []
    groups.append(cur)
    groups = [g for g in groups if g]
    os.makedirs(folder, exist_ok=True)
    weight_map = {}
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for n in g:
            size = int(np.prod(sh[n]))
            if len(sh[n]) == 1:
                a = 1.0 + 0.05 * pool[:size]
            else:
                off = int(rng.integers(0, POOL))
                idx = (np.arange(size, dtype=np.int64) + off) % POOL if size > POOL - off else None
                a = (pool[idx] if idx is not None else pool[off:off + size]) * np.float32(rng.uniform(0.01, 0.05))
            tensors[n] = a.astype(ml_dtypes.bfloat16).reshape(sh[n])
            weight_map[n] = fname
        save_file(tensors, os.path.join(folder, fname), metadata={"format": "pt"})
        del tensors
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": 2 * total}, "weight_map": weight_map}, fh)
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump({"model_type": "llama", "hidden_size": HIDDEN, "num_hidden_layers": layers}, fh)
    return {"bytes": 2 * total, "params": total, "files": len(groups)}


# The child's peak RSS: VmHWM of its own memory map. Not getrusage's ru_maxrss, which Linux carries over
# exec from the forked copy of this parent: with the generated model and zstd's buffers held here (~2.7 GB
# for the 1.1B folder), every child reported at least that (the 2,758 / 2,772 MB "peaks" of the fifth and
# sixth sessions' 16-core runs were this parent's size, not the encoder's).
_HWM = ("def _hwm_mb():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n")


def _child(cmd: list, env: dict) -> dict:
    """Run ``cmd`` in a fresh process: wall seconds and what it prints (its own peak RSS: ``_HWM``)."""
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"{cmd}: {r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def measure_encode(src: str, dst: str, args: list, threads: int) -> dict:
    """One ``bslcodec encode`` in a child that reports its own time and peak RSS."""
    code = (
        "import json, resource, sys, time\n"
        f"{_HWM}"
        "from click.testing import CliRunner;"
        "t = time.perf_counter();"
        "from bslcodec.cli import main;"
        f"r = CliRunner().invoke(main, ['encode', {src!r}, {dst!r}, '-q', '--overwrite', '--workers', "
        f"'{threads}'] + {args!r});"
        "assert r.exit_code == 0, r.output + repr(r.exception);"
        "ru = resource.getrusage(resource.RUSAGE_SELF);"
        "print(json.dumps({'s': time.perf_counter() - t, 'cpu_s': ru.ru_utime + ru.ru_stime, "
        "'rss_mb': _hwm_mb()}))")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return _child([sys.executable, "-c", code], env)


def startup_seconds(repeat: int = 3) -> float:
    """Seconds a fresh process spends before it encodes anything: importing the CLI and the encoder (numpy,
    numba, ml_dtypes, safetensors) and loading the cached kernels of a tiny dq encode; best of ``repeat``.
    A real model's encode pays it once; the MB/s "after start-up" column leaves it out."""
    code = ("import time; t = time.perf_counter();"
            "import numpy as np, ml_dtypes, bslcodec, bslcodec.cli, bslcodec.files.checkpoint;"
            "from bslcodec.files.api import save_file;"
            "import tempfile, os; d = tempfile.mkdtemp();"
            "x = (np.arange(1 << 16, dtype=np.float32) % 97 - 48).astype(ml_dtypes.bfloat16).reshape(256, 256);"
            "save_file({'w': x}, os.path.join(d, 'a.bsl'), bits=4);"
            "print(time.perf_counter() - t); import shutil; shutil.rmtree(d)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    best = math.inf
    for _ in range(repeat):
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])
        best = min(best, float(r.stdout.strip().splitlines()[-1]))
    return best


def folder_bytes(folder: str, suffix: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(suffix))


def zstd_rates(folder: str) -> dict:
    """zstd -3 of the shards' bytes (read into memory first): one thread and every thread."""
    import zstandard

    data = [open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))
            if f.endswith(".safetensors")]
    n = sum(len(d) for d in data)
    out = {}
    for name, threads in (("zstd-3 1 thread", 0), ("zstd-3 all threads", -1)):
        c = zstandard.ZstdCompressor(level=3, threads=threads)
        t = time.perf_counter()
        size = sum(len(c.compress(d)) for d in data)
        s = time.perf_counter() - t
        out[name] = {"s": s, "MBps": n / s / 1e6, "ratio": n / size}
    return out


def machine() -> dict:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "bslcodec"], capture_output=True,
                           text=True).stdout.strip()
    model = ""
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": cpus, "cpu": model, "host": platform.node(), "load_1m": os.getloadavg()[0],
            "commit": commit + ("+dirty" if dirty else ""), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def run(args) -> dict:
    work = tempfile.mkdtemp(prefix="bench_encode.", dir=args.tmp)
    try:
        src = os.path.join(work, "in")
        t = time.perf_counter()
        info = generate(src, args.layers, args.vocab)
        info["gen_s"] = time.perf_counter() - t
        res = {"machine": machine(), "data": info, "runs": [], "zstd": zstd_rates(src)}
        res["startup_s"] = startup_seconds()
        res["largest_shard"] = max(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src)
                                   if f.endswith(".safetensors"))
        for label in args.settings:
            for th in args.threads:
                dst = os.path.join(work, "out")
                r = measure_encode(src, dst, SETTINGS[label], th)
                r.update(setting=label, threads=th, MBps=info["bytes"] / r["s"] / 1e6,
                         bits_per_weight=8 * folder_bytes(dst, ".bsl") / info["params"],
                         load_after=os.getloadavg()[0])
                res["runs"].append(r)
                print(json.dumps(r), flush=True)
                shutil.rmtree(dst, ignore_errors=True)
        res["machine"]["load_end"] = os.getloadavg()[0]
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(paths: list) -> str:
    lines = []
    for p in paths:
        r = json.load(open(p))
        m, d = r["machine"], r["data"]
        lines.append(f"### {m['cpus']} cores ({m['cpu']}), commit {m['commit']}, {m['when']}\n")
        lines.append(f"Input: {d['params'] / 1e9:.2f}B bf16 weights, {d['bytes'] / 1e6:.0f} MB in {d['files']} "
                     f"safetensors shards (generated in {d['gen_s']:.0f} s). Load average (1 min) at the start "
                     f"{m['load_1m']:.1f}, at the end {m.get('load_end', float('nan')):.1f}.\n")
        st = r.get("startup_s")
        z1 = r["zstd"]["zstd-3 1 thread"]["MBps"]
        lines.append("| run | threads | seconds | MB/s of bf16 input | MB/s after start-up | x zstd-3 1 thread | "
                     "bits/weight | peak RSS (MB) |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for x in r["runs"]:
            after = f"{d['bytes'] / (x['s'] - st) / 1e6:.1f}" if st is not None and x["s"] > st else ""
            lines.append(f"| bslcodec encode, {x['setting']} | {x['threads']} | {x['s']:.1f} | {x['MBps']:.1f} | "
                         f"{after} | {x['MBps'] / z1:.3f} | {x['bits_per_weight']:.3f} | {x['rss_mb']:.0f} |")
        for name, z in r["zstd"].items():
            lines.append(f"| {name} (same bytes, in memory) | | {z['s']:.2f} | {z['MBps']:.0f} | | | "
                         f"{16 / z['ratio']:.2f} | |")
        lines.append("")
        if st is not None:
            lines.append(f"Start-up of a fresh process (imports, cached kernels; best of 3): {st:.2f} s.")
        fixed = {x["threads"]: x["s"] for x in r["runs"] if x["setting"].startswith("fixed step")}
        for x in r["runs"]:
            if x["setting"] == "bits 4" and x["threads"] in fixed:
                lines.append(f"`bits=4` / fixed step, {x['threads']} thread(s): {x['s'] / fixed[x['threads']]:.2f}x "
                             f"the time")
        if r.get("largest_shard"):
            bound = (2 * r["largest_shard"] + (512 << 20)) / 2**20
            worst = max(x["rss_mb"] for x in r["runs"])
            lines.append(f"Peak RSS bound (2 x largest shard + 0.5 GiB): {bound:.0f} MB; largest measured "
                         f"{worst:.0f} MB ({'within' if worst <= bound else 'OVER'}).")
        lines.append("")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        print(report(sys.argv[2:]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=22, help="22: the 1.1B model; 2: a 0.14B variant")
    ap.add_argument("--vocab", type=int, default=VOCAB, help="rows of the embedding and lm_head")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--settings", nargs="+", default=["bits 4", "default", "fixed step (rel-step 1/16)"],
                    choices=sorted(SETTINGS))
    ap.add_argument("--tmp", default=None, help="folder for the generated model and outputs")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    res = run(args)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    print(report([args.out]))


if __name__ == "__main__":
    main()
