"""Inference benchmark: compressed-resident weights (bslcodec.torch.compressed) against plain bf16, on one GPU.

Stages (each one guarded: a failure is recorded and the next stage runs; results are written after each):

1. ``minilm``: the real all-MiniLM-L6-v2 from an encoded folder (``--minilm``, made by ``bslcodec encode`` with
   the eg codec): compressed-resident on the GPU vs the same decoded weights dense, and cosine similarity of
   sentence embeddings against reference embeddings of the original model (``--minilm-ref``, .npy).
2. ``llama``: a LLaMA-style decoder from a transformers config (default 1.1B: hidden 2048, 22 layers, MLP 5632,
   32 heads / 4 KV heads, vocab 32000), weights drawn from a generalized Gaussian (shape ``--nu``, std 0.02),
   bf16, saved as safetensors shards, encoded with ``bslcodec.files.parallel_encode`` (``--workers`` processes),
   then: the bf16 model (safetensors -> GPU), the bslcodec-decoded dense model, and load_compressed variants:
   load time, resident / peak GPU memory, forward latency at batch 1 and 32 (``--seq`` tokens), greedy
   generation tokens/s, logits equality with the decoded dense model.
3. ``tp``: ``bslcodec.torch.tp.shard_state_dict`` on the GPU: world_size 1 (equal to the full decode) and
   the bytes a rank reads for world_size 2 / 4 (no process group: local column strategy).

    python tools/bench/bench_inference.py --out results_dir [--layers 22] [--deadline 300]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))  # minilm.py (bslcodec itself comes from the install or PYTHONPATH)

T0 = time.perf_counter()
RESULTS = {"stages": {}}


def now():
    return time.perf_counter() - T0


def log(*a):
    print(f"[{now():7.1f}s]", *a, flush=True)


def save(out: Path):
    (out / "inference.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def stage(name, out, fn, deadline):
    if now() > deadline:
        RESULTS["stages"][name] = {"skipped": f"deadline ({deadline:.0f} s) passed at {now():.0f} s"}
        log(f"skip {name}")
        save(out)
        return None
    log(f"stage {name}")
    t = time.perf_counter()
    try:
        r = fn()
        RESULTS["stages"][name] = {"ok": True, "seconds": round(time.perf_counter() - t, 2)}
        return r
    except Exception as exc:  # noqa: BLE001
        RESULTS["stages"][name] = {"ok": False, "error": repr(exc), "traceback": traceback.format_exc()[-3000:]}
        log(f"FAILED {name}: {exc!r}")
        return None
    finally:
        save(out)
        _empty()


DEV = "cuda"  # --device cpu: a dry run of the whole flow on a CPU (tiny config), for testing the script


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def _alloc():
    return torch.cuda.memory_allocated() if DEV == "cuda" else 0


def _peak():
    return torch.cuda.max_memory_allocated() if DEV == "cuda" else 0


def _reset_peak():
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _empty():
    gc.collect()
    if DEV == "cuda":
        torch.cuda.empty_cache()


def mib(n):
    return round(n / 2**20, 1)


# ---------------------------------------------------------------- timing helpers
def time_forward(model, ids, iters, warmup=2):
    with torch.inference_mode():
        for _ in range(warmup):
            model(ids)
        sync()
        _reset_peak()
        ts = []
        for _ in range(iters):
            t = time.perf_counter()
            model(ids)
            sync()
            ts.append(time.perf_counter() - t)
    med = statistics.median(ts)
    return {"batch": ids.shape[0], "seq": ids.shape[1], "ms_median": round(1e3 * med, 3),
            "ms_min": round(1e3 * min(ts), 3), "tokens_per_s": round(ids.numel() / med, 1),
            "peak_mib": mib(_peak()), "iters": iters}


def time_generate(model, batch, prompt, new, reps, vocab):
    g = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(3, vocab, (batch, prompt), generator=g).to(DEV)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)
        sync()
        _reset_peak()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
            sync()
            ts.append(time.perf_counter() - t)
    med = statistics.median(ts)
    return {"batch": batch, "prompt": prompt, "new_tokens": new, "s_median": round(med, 4),
            "new_tokens_per_s": round(batch * new / med, 1), "ms_per_step": round(1e3 * med / new, 3),
            "peak_mib": mib(_peak()), "tokens": out[:, prompt:].cpu()}


# ---------------------------------------------------------------- MiniLM
def run_minilm(args):
    import minilm
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    import bslcodec
    from bslcodec.files.readers import bsl_files
    from bslcodec.torch.compressed import load_compressed

    folder = Path(args.minilm)
    cfg = AutoConfig.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    sents = list(minilm.SENTENCES)
    batch = tok(sents, padding=True, truncation=True, max_length=256, return_tensors="pt").to(DEV)

    def embed(model):
        with torch.inference_mode():
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, dim=-1).float().cpu()

    r = {}
    dense = AutoModel.from_config(cfg).eval()
    sd = {}
    for f in bsl_files(folder):
        sd.update(bslcodec.load_file(f, framework="pt", device=DEV))
    dense.load_state_dict(sd, strict=False)
    dense.to(DEV)
    del sd
    e_dense = embed(dense)
    del dense
    _empty()
    m = AutoModel.from_config(cfg).eval()
    sync()
    t = time.perf_counter()
    cm = load_compressed(m, folder, device=DEV, strict=False)
    sync()
    r["load_s"] = round(time.perf_counter() - t, 3)
    r["summary"] = cm.summary()
    r["verify_kernels"] = cm.verify_kernels()
    e_c = embed(m)
    r["embeddings_equal_dense_decoded"] = bool(torch.equal(e_c, e_dense))
    r["max_abs_diff_vs_dense_decoded"] = float((e_c - e_dense).abs().max())
    if args.minilm_ref and Path(args.minilm_ref).is_file():
        ref = torch.from_numpy(np.load(args.minilm_ref)).float()
        cos = (e_c * ref).sum(-1)
        r["cosine_vs_original"] = {"mean": float(cos.mean()), "min": float(cos.min())}
    sync()
    t = time.perf_counter()
    for _ in range(5):
        embed(m)
    sync()
    r["embed_50_sentences_ms"] = round(1e3 * (time.perf_counter() - t) / 5, 2)
    RESULTS["minilm"] = r
    del m, cm


# ---------------------------------------------------------------- LLaMA
def llama_config(args):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=args.hidden, intermediate_size=args.inter, num_hidden_layers=args.layers,
                       num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                       max_position_embeddings=2048, tie_word_embeddings=False)


def meta_model(cfg):
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    m = m.to(torch.bfloat16)
    m.model.rotary_emb = type(m.model.rotary_emb)(cfg)  # non-persistent buffers: built for real
    return m.eval()


def gg_like(shape, nu, std, gen):
    """Generalized-Gaussian samples of shape ``nu`` scaled to ``std`` (float32, on the GPU)."""
    n = int(np.prod(shape))
    conc = torch.full((n,), 1.0 / nu, device=DEV)
    g = torch._standard_gamma(conc, generator=gen)
    x = g.pow(1.0 / nu)
    x = torch.where(torch.rand(n, device=DEV, generator=gen) < 0.5, -x, x)
    return (x * (std / x.std())).view(shape)


def make_checkpoint(args, cfg, work: Path):
    from safetensors.torch import save_file

    m = meta_model(cfg)
    gen = torch.Generator(device=DEV).manual_seed(0)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    del m
    st = work / "st"
    st.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(st)
    shard_bytes, shards, cur, cur_b = 300 * 2**20, [], {}, 0
    n_params = 0
    for name in sorted(shapes):
        shape = shapes[name]
        n_params += int(np.prod(shape))
        if len(shape) == 1:
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = gg_like(shape, args.nu, 0.02, gen).to(torch.bfloat16).cpu()
        cur[name] = t
        cur_b += t.numel() * 2
        if cur_b >= shard_bytes:
            shards.append(cur)
            cur, cur_b = {}, 0
    if cur:
        shards.append(cur)
    wm = {}
    for i, sd in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(sd, str(st / fn), metadata={"format": "pt"})
        wm.update({k: fn for k in sd})
    (st / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    RESULTS["llama"]["params"] = n_params
    RESULTS["llama"]["bf16_bytes"] = 2 * n_params
    RESULTS["llama"]["safetensors_shards"] = len(shards)
    return st


def encode(args, st: Path, work: Path):
    from bslcodec.files.parallel_encode import encode_checkpoint_parallel

    out = work / "bsl"
    expert = {k: v for k, v in (("rel_step", args.rel_step), ("codec", args.codec), ("quantizer", args.quantizer))
              if v is not None}
    res = encode_checkpoint_parallel(st, out, workers=args.workers, expert=expert)
    RESULTS["llama"]["encode"] = {"seconds": round(res.seconds, 2), "workers": res.workers, "tasks": res.tasks,
                                  "bsl_bytes": res.out_bytes, "bits_per_weight": round(res.bits_per_weight, 4),
                                  "rel_step": args.rel_step, "quantizer": args.quantizer, "cpus": os.cpu_count()}
    import bslcodec
    from bslcodec.files.readers import bsl_files

    codecs = {}
    for f in bsl_files(out):
        with bslcodec.safe_open(f) as h:
            for e in h.entries():
                codecs[e.codec] = codecs.get(e.codec, 0) + 1
    RESULTS["llama"]["encode"]["codecs"] = codecs
    return out


def bench_model(model, args, tag, vocab):
    r = {}
    g = torch.Generator(device="cpu").manual_seed(0)
    fixed = torch.randint(3, vocab, (1, args.seq), generator=g).to(DEV)
    with torch.inference_mode():
        logits = model(fixed).logits.float().cpu()
    for b in args.batches:
        ids = torch.randint(3, vocab, (b, args.seq), generator=g).to(DEV)
        r[f"forward_b{b}"] = time_forward(model, ids, iters=args.iters if b == 1 else max(3, args.iters // 2))
        log(tag, f"forward b{b}", r[f"forward_b{b}"]["ms_median"], "ms")
    if not args.no_generate:
        for b in args.batches:
            gr = time_generate(model, b, 16, args.new_tokens, reps=2, vocab=vocab)
            r[f"generate_b{b}_tokens"] = gr.pop("tokens")
            r[f"generate_b{b}"] = gr
            log(tag, f"generate b{b}", gr["new_tokens_per_s"], "tok/s")
    return r, logits


def run_llama(args, work: Path):
    import bslcodec
    from bslcodec.files.readers import bsl_files
    from bslcodec.torch.compressed import load_compressed

    cfg = llama_config(args)
    RESULTS["llama"] = {"config": {k: getattr(cfg, k) for k in ("hidden_size", "intermediate_size",
                                                                "num_hidden_layers", "num_attention_heads",
                                                                "num_key_value_heads", "vocab_size")},
                        "nu": args.nu, "seq": args.seq}
    L = RESULTS["llama"]
    st = make_checkpoint(args, cfg, work)
    log("checkpoint written", L["params"], "params")
    save(args.out)
    bsl = encode(args, st, work)
    log("encoded", L["encode"])
    save(args.out)
    # page cache: read every file once so both loads start from memory
    for f in list(st.glob("*.safetensors")) + list(bsl.glob("*.bsl")):
        with open(f, "rb") as fh:
            while fh.read(1 << 26):
                pass
    vocab = cfg.vocab_size
    variants = {}

    # --- plain bf16 from safetensors
    from safetensors.torch import load_file

    _empty()
    _reset_peak()
    base0 = _alloc()
    sync()
    t = time.perf_counter()
    m = meta_model(cfg)
    sd = {}
    for f in sorted(st.glob("*.safetensors")):
        sd.update(load_file(str(f), device=DEV))
    m.load_state_dict(sd, assign=True, strict=True)
    m.to(DEV)
    del sd
    sync()
    v = {"load_s": round(time.perf_counter() - t, 3), "resident_mib": mib(_alloc() - base0),
         "load_peak_mib": mib(_peak())}
    log("bf16 loaded", v)
    res, logits_bf16 = bench_model(m, args, "bf16", vocab)
    v.update(res)
    variants["bf16 (safetensors)"] = v
    del m
    _empty()
    L["variants"] = variants
    save(args.out)

    # --- bslcodec full decode to dense bf16 (the reference for exactness)
    _reset_peak()
    sync()
    t = time.perf_counter()
    m = meta_model(cfg)
    sd = {}
    for f in bsl_files(bsl):
        sd.update(bslcodec.load_file(f, framework="pt", device=DEV))
    m.load_state_dict(sd, assign=True, strict=True)
    m.to(DEV)
    del sd
    sync()
    v = {"load_s": round(time.perf_counter() - t, 3), "resident_mib": mib(_alloc() - base0),
         "load_peak_mib": mib(_peak())}
    g = torch.Generator(device="cpu").manual_seed(0)
    fixed = torch.randint(3, vocab, (1, args.seq), generator=g).to(DEV)
    with torch.inference_mode():
        logits_dec = m(fixed).logits.float().cpu()
    gen_dec = {}
    if not args.no_generate:
        for b in args.batches:
            gr = time_generate(m, b, 16, args.new_tokens, reps=1, vocab=vocab)
            gen_dec[b] = gr.pop("tokens")
    v["logits_vs_bf16_original"] = _cmp(logits_dec, logits_bf16)
    variants["bf16 decoded from .bsl (dense)"] = v
    del m
    _empty()
    save(args.out)

    # --- compressed-resident variants
    plans = [("compressed, block units", dict(unit="block", prefetch=False, kernel="multi")),
             ("compressed, block units + prefetch", dict(unit="block", prefetch=True, kernel="multi"))]
    if args.codec != "eg":  # ans payloads re-coded to eg at load time (bslcodec.codecs.transcode)
        plans += [("compressed, block units, ans re-coded to eg at load",
                   dict(unit="block", prefetch=False, kernel="multi", gpu_codec="eg")),
                  ("compressed, block units + prefetch, ans re-coded to eg",
                   dict(unit="block", prefetch=True, kernel="multi", gpu_codec="eg"))]
    plans.append(("compressed, per-module decode_eg", dict(unit="module", prefetch=False, kernel="decode_eg")))
    for name, kw in plans:
        if now() > args.deadline:
            variants[name] = {"skipped": "deadline"}
            continue
        try:
            _reset_peak()
            sync()
            t = time.perf_counter()
            m = meta_model(cfg)
            cm = load_compressed(m, bsl, device=DEV, **kw)
            sync()
            v = {"load_s": round(time.perf_counter() - t, 3),
                 "resident_mib": mib(_alloc() - base0),
                 "load_peak_mib": mib(_peak()), "summary": cm.summary()}
            log(name, "loaded", v["load_s"], "s", v["resident_mib"], "MiB")
            if kw["kernel"] == "multi" and not kw["prefetch"]:
                v["verify_kernels"] = cm.verify_kernels()
                # raw decode time of every unit, back to back, on the current stream
                s = torch.cuda.current_stream() if DEV == "cuda" else None
                for _ in range(2):
                    for u in cm.units:
                        cm._decode_unit(u, 0, s)
                sync()
                t = time.perf_counter()
                for _ in range(5):
                    for u in cm.units:
                        cm._decode_unit(u, 0, s)
                sync()
                v["decode_all_weights_ms"] = round(1e3 * (time.perf_counter() - t) / 5, 3)
                cm.owner = [None] * len(cm.slots)
            res, logits = bench_model(m, args, name, vocab)
            for b in args.batches:
                toks = res.pop(f"generate_b{b}_tokens", None)
                if toks is not None and b in gen_dec:
                    res[f"generate_b{b}"]["tokens_equal_dense_decoded"] = bool(torch.equal(toks, gen_dec[b]))
            v.update(res)
            v["logits_equal_dense_decoded"] = bool(torch.equal(logits, logits_dec))
            v["logits_vs_bf16_original"] = _cmp(logits, logits_bf16)
            cm.check()
            v["stats"] = dict(cm.stats)
            variants[name] = v
            del m, cm
        except Exception as exc:  # noqa: BLE001
            variants[name] = {"error": repr(exc), "traceback": traceback.format_exc()[-3000:]}
            log("FAILED", name, repr(exc))
        _empty()
        save(args.out)
    for k in list(variants):
        for kk in list(variants[k]):
            if kk.endswith("_tokens"):
                variants[k].pop(kk)
    RESULTS["llama"]["bsl_folder"] = str(bsl)
    return bsl


def _cmp(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return {"max_abs_diff": float((a - b).abs().max()), "cosine_mean": float(cos.mean()),
            "top1_agree": float((a.argmax(-1) == b.argmax(-1)).float().mean())}


# ---------------------------------------------------------------- TP on one GPU
def run_tp(args, bsl: Path):
    import bslcodec
    from bslcodec.files.readers import bsl_files
    from bslcodec.torch.tp import LLAMA_PLAN, shard_state_dict

    r = {}
    sync()
    t = time.perf_counter()
    st = {}
    sd = shard_state_dict(bsl, LLAMA_PLAN, 0, 1, device=DEV, stats=st)
    sync()
    r["ws1_seconds"] = round(time.perf_counter() - t, 3)
    r["ws1_stats"] = st
    same = True
    for f in bsl_files(bsl):
        full = bslcodec.load_file(f, framework="pt", device=DEV)
        for k, v in full.items():
            same &= bool(torch.equal(v, sd[k]))
        del full
    r["ws1_equal_full_decode"] = same
    del sd
    _empty()
    for ws in (2, 4):
        st = {}
        sync()
        t = time.perf_counter()
        sd = shard_state_dict(bsl, LLAMA_PLAN, 0, ws, device=DEV, stats=st)
        sync()
        r[f"ws{ws}_rank0"] = {"seconds": round(time.perf_counter() - t, 3),
                              "read_fraction": round(st["bytes_read"] / st["payload_bytes"], 4), "stats": st}
        # what exchange would read: rows only (dim-0 tensors and row blocks of dim-1 tensors)
        st2 = {}
        plan_rows = {k: (0 if v is not None else None) for k, v in LLAMA_PLAN.items()}
        shard_state_dict(bsl, plan_rows, 0, ws, device=DEV, stats=st2)
        r[f"ws{ws}_rank0"]["read_fraction_if_all_rows"] = round(st2["bytes_read"] / st2["payload_bytes"], 4)
        del sd
        _empty()
    RESULTS["tp"] = r


def run_tests(args):
    import subprocess

    left = max(30, int(args.deadline + 60 - now()))
    p = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_compressed.py", "tests/test_tp.py", "-k", "gpu or emulated"],
                       cwd=ROOT, capture_output=True, text=True, timeout=left)
    RESULTS["pytest_gpu"] = {"rc": p.returncode, "tail": (p.stdout + p.stderr)[-2500:]}


def write_markdown(out: Path):
    L = RESULTS.get("llama", {})
    lines = [f"Device: {RESULTS.get('device')}; torch {RESULTS.get('torch')}; transformers "
             f"{RESULTS.get('transformers')}", ""]
    if "config" in L:
        lines.append(f"Model: LLaMA-style {L['config']}, {L.get('params', 0):,} parameters, GG(nu={L['nu']}) "
                     f"weights, bf16. Encode: {L.get('encode')}")
        lines.append("")
        bs = RESULTS.get("batches", [1, 32])
        head = ["variant", "load s", "resident MiB", "load peak MiB"]
        for b in bs:
            head += [f"fwd b{b} ms", f"fwd b{b} tok/s", f"fwd b{b} peak MiB"]
        for b in bs:
            head += [f"gen b{b} tok/s"]
        head += ["logits = decoded dense"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for name, v in L.get("variants", {}).items():
            if "load_s" not in v:
                lines.append(f"| {name} | {v.get('error') or v.get('skipped')} |")
                continue
            row = [name, v["load_s"], v["resident_mib"], v["load_peak_mib"]]
            for b in bs:
                f = v.get(f"forward_b{b}", {})
                row += [f.get("ms_median"), f.get("tokens_per_s"), f.get("peak_mib")]
            for b in bs:
                row += [v.get(f"generate_b{b}", {}).get("new_tokens_per_s")]
            row += [v.get("logits_equal_dense_decoded", "")]
            lines.append("| " + " | ".join(str(x) for x in row) + " |")
    (out / "inference.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bsl_inference"))
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=5632)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--nu", type=float, default=1.0)
    ap.add_argument("--rel-step", type=float, default=1 / 8)
    ap.add_argument("--codec", default="eg", choices=("eg", "ans", "auto"), help="entropy stage of the llama checkpoint")
    ap.add_argument("--quantizer", default=None, choices=("auto", "uniform", "dq"),
                    help="bslcodec's expert quantizer (default auto: plain rounding with a named --codec eg|ans, dq with auto)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--no-generate", action="store_true")
    ap.add_argument("--minilm", default=str(ROOT / ".carry/inference/minilm-bsl"))
    ap.add_argument("--minilm-ref", default=str(ROOT / ".carry/inference/minilm_ref_embeddings.npy"))
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds after which optional stages are skipped")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tests", action="store_true", help="run the GPU tests at the end (if time is left)")
    args = ap.parse_args()
    global DEV
    DEV = args.device
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    import transformers

    RESULTS.update(device=torch.cuda.get_device_name() if DEV == "cuda" else "cpu (dry run)", torch=torch.__version__,
                   transformers=transformers.__version__, python=platform.python_version(),
                   batches=args.batches, cpus=os.cpu_count())
    import bslcodec

    RESULTS["bslcodec_from"] = bslcodec.__file__
    bsl = stage("llama", args.out, lambda: run_llama(args, args.work), args.deadline)
    if bsl is None and (args.work / "bsl").is_dir():
        bsl = args.work / "bsl"
    if bsl is not None:
        stage("tp", args.out, lambda: run_tp(args, bsl), args.deadline)
    if Path(args.minilm).is_dir():
        stage("minilm", args.out, lambda: run_minilm(args), args.deadline)
    if args.tests:
        stage("tests", args.out, lambda: run_tests(args), args.deadline)
    RESULTS["total_s"] = round(now(), 1)
    save(args.out)
    write_markdown(args.out)
    log("done")


if __name__ == "__main__":
    main()
