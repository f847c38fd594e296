#!/usr/bin/env python
"""The rate loss of the default codec at GPU scale (issue 21): a >= 50M-parameter byte-level decoder LM
trained from scratch, lambda = 0 vs lambda > 0, and a CoLA version at equal training FLOPs.

Text that ships with Python: the documentation topics (``pydoc_data.topics``) and the standard library's
``.py`` sources, as bytes (vocabulary 256); the last ``--val-frac`` of the bytes is the validation set.
Quality = validation bits per byte (bpb) of the model **decoded from its .bsl file**; size = the whole file
in bits per weight. Runs, all with the same cosine schedule and the same number of steps ``S`` (set so that
all runs fit ``--train-seconds``):

1. dense, lambda = 0 (no rate term at all: the baseline and its step time);
2. dense, ``loss = CE + rate()`` for each lambda in ``--lams`` (``RateLoss(expert={"rel_step": --rel-step},
   calibrate="hist")``: the default codec's estimate on the GPU, no encoder run while training);
3. CoLA (``B silu(A x)``, r = d/4 on every block matrix), lambda = 0, trained for ``S x F_dense / F_cola``
   steps (equal training FLOPs, 6 N + attention per token).

Then every model is written with ``save_trained`` (the default codec, ans-dq) at a sweep of rel_step: the
lambda = 0 sweep is post-training compression (PTQ); each rate-trained model is compared with it at equal
bpb. Also: the rate term's step-time overhead (interleaved-free: medians of the timed steps of the lambda=0
and lambda>0 runs, plus the refresh's cost per step, and the rate term alone with CUDA synchronisation),
and the running estimate against the written payload.

On the device: ``python tools/bench/train_gpu.py --out $OUT`` (writes ``train_gpu.json``; checks its own
deadline ``--budget-s`` and drops the least important encodes first). Here: ``--from-json run.json --md
results/training.md --png-dir results`` renders the tables (between markers) and the plots. ``--quick``:
a tiny CPU dry run.
"""

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_rd import file_stats, ptq_bpc_at, ptq_size_at

from bslcodec.torch import RateLoss, load_trained, save_trained, to_cola

MARK_BEGIN = "<!-- BEGIN tools/bench/train_gpu.py output -->"
MARK_END = "<!-- END tools/bench/train_gpu.py output -->"


# ---------------------------------------------------------------- data

def corpus(max_mb: float) -> bytes:
    from pydoc_data.topics import topics

    parts = ["\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")]
    size, limit = len(parts[0]), int(max_mb * 2**20)
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        for f in sorted(files):
            if f.endswith(".py") and size < limit:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    b = fh.read()
                parts.append(b)
                size += len(b)
    return b"\n".join(parts)[:limit]


class Data:
    def __init__(self, raw: bytes, ctx: int, val_frac: float, device):
        ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
        cut = int(len(ids) * (1 - val_frac))
        self.train, self.val = ids[:cut].to(device), ids[cut:].to(device)
        self.ctx, self.device, self.n_bytes = ctx, device, len(raw)

    def batch(self, gen, bsz):
        i = torch.randint(0, self.train.numel() - self.ctx - 1, (bsz,), generator=gen)
        idx = (i[:, None] + torch.arange(self.ctx + 1)[None, :]).to(self.device)
        chunk = self.train[idx]
        return chunk[:, :-1], chunk[:, 1:]


# ---------------------------------------------------------------- model (nanoGPT-like, pre-LN)

class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ByteLM(nn.Module):
    def __init__(self, d, layers, heads, ctx):
        super().__init__()
        self.emb, self.pos = nn.Embedding(256, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.lnf, self.head = nn.LayerNorm(d), nn.Linear(d, 256)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx):
        x = self.emb(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.lnf(x))


def build(args, cola=False):
    torch.manual_seed(args.seed)
    m = ByteLM(args.d, args.layers, args.heads, args.ctx)
    if cola:
        to_cola(m, include=["blocks.*"], rank_ratio=args.cola_ratio, activation="silu")
    return m.to(args.device)


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def flops_per_token(m, args) -> float:
    """Training FLOPs per token: 6 x matmul weights (embeddings are lookups) + attention (QK^T and AV)."""
    mat = sum(p.numel() for n, p in m.named_parameters() if p.ndim == 2 and not n.startswith(("emb.", "pos.")))
    return 6.0 * mat + 6.0 * 2 * args.layers * args.ctx * args.d


# ---------------------------------------------------------------- training and evaluation

def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def autocast(args):
    if str(args.device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def bpb(model, data, args, tokens=None):
    model.eval()
    n_win = min((data.val.numel() - 1) // args.ctx, (tokens or args.eval_tokens) // args.ctx)
    v = data.val[: n_win * args.ctx + 1]
    x, y = v[:-1].view(-1, args.ctx), v[1:].view(-1, args.ctx)
    tot = 0.0
    for i in range(0, x.shape[0], args.batch):
        with autocast(args):
            logits = model(x[i:i + args.batch])
        tot += float(F.cross_entropy(logits.float().reshape(-1, 256), y[i:i + args.batch].reshape(-1),
                                     reduction="sum"))
    model.train()
    return tot / y.numel() / math.log(2)


def train(model, data, args, steps, lam=0.0, label="", cap_s=None):
    """AdamW on a cosine schedule; per-step wall times (synchronised); validation bpb at 5 points."""
    rate = (RateLoss(model, lam, expert={"rel_step": args.rel_step}, refresh_every=args.refresh, calibrate="hist")
            if lam else None)
    fused = str(args.device).startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
    gen = torch.Generator().manual_seed(args.seed + 1)
    h = {"loss": [], "step_s": [], "refresh_steps": [], "val": [], "steps_planned": steps}
    checkpoints = {max(1, round(steps * f)) for f in (0.2, 0.4, 0.6, 0.8, 1.0)}
    t_start = time.perf_counter()
    model.train()
    for step in range(steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, args.lr, args.warmup)
        x, y = data.batch(gen, args.batch)
        with autocast(args):
            logits = model(x)
        ce = F.cross_entropy(logits.float().reshape(-1, 256), y.reshape(-1))
        if rate is not None:
            before = rate.refreshes
            loss = ce + rate()
            if rate.refreshes != before:  # every refresh_every steps, or earlier on drift
                h["refresh_steps"].append(step)
        else:
            loss = ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync(args.device)
        h["step_s"].append(time.perf_counter() - t0)
        h["loss"].append(ce.item())
        if step + 1 in checkpoints:
            h["val"].append((step + 1, bpb(model, data, args, tokens=args.eval_tokens // 4)))
        if args.verbose and (step + 1) % max(1, steps // 5) == 0:
            extra = f" rate {rate.bits_per_weight:.3f} b/w" if rate is not None else ""
            print(f"  [{label}] step {step + 1}/{steps} ce {np.mean(h['loss'][-20:]):.4f}{extra} "
                  f"({time.perf_counter() - t_start:.0f}s)", flush=True)
        if cap_s is not None and time.perf_counter() - t_start > cap_s:
            h["stopped_early_at"] = step + 1
            break
    h["steps"] = len(h["step_s"])
    h["seconds"] = time.perf_counter() - t_start
    for p in model.parameters():
        p.grad = None
    model.eval()
    return h, rate, opt


def step_stats(h, skip=10):
    """Median step seconds outside refresh steps (the first ``skip`` steps are warm-up)."""
    ref = set(h["refresh_steps"])
    skip = min(skip, len(h["step_s"]) // 3)
    ts = [t for i, t in enumerate(h["step_s"]) if i >= skip and i not in ref]
    return statistics.median(ts) if ts else float("nan")


def time_rate(model, args, lam, reps=20):
    """The rate term alone (forward + backward, synchronised), and one refresh, in seconds (medians)."""
    rate = RateLoss(model, lam, expert={"rel_step": args.rel_step}, refresh_every=10**9, calibrate="hist")
    for p in model.parameters():
        p.grad = None
    rate().backward()  # the first call refreshes
    fb, rf = [], []
    for _ in range(reps):
        sync(args.device)
        t0 = time.perf_counter()
        rate().backward()
        sync(args.device)
        fb.append(time.perf_counter() - t0)
    for _ in range(3):
        sync(args.device)
        t0 = time.perf_counter()
        rate.refresh()
        sync(args.device)
        rf.append(time.perf_counter() - t0)
    for p in model.parameters():
        p.grad = None
    return statistics.median(fb), statistics.median(rf), len(rate.states)


def encoded_point(model, data, args, rel_step, fresh, covered):
    t0 = time.perf_counter()
    blob = save_trained(model, expert={"rel_step": rel_step})
    t_enc = time.perf_counter() - t0
    m2 = fresh()
    load_trained(m2, blob)
    st = file_stats(blob, covered)
    n_cov = sum(p.numel() for n, p in model.named_parameters() if n in covered)
    return {"rel_step": rel_step, **st, "covered_bits_per_weight": st["covered_payload_bits"] / max(1, n_cov),
            "bpc": bpb(m2.to(args.device), data, args), "encode_s": t_enc}


# ---------------------------------------------------------------- the run

def run(args):
    T0 = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - T0)
    # compile the encoder's and decoder's Numba kernels in another process while the GPU trains
    warm = subprocess.Popen([sys.executable, "-c", ("import os; os.nice(10); import numpy as np, bslcodec; "
                             "b = bslcodec.save({'w': np.random.randn(300, 400).astype(np.float32)}, "
                             "expert={'rel_step': 1/8}); bslcodec.load(b)")])
    raw = corpus(args.corpus_mb)
    data = Data(raw, args.ctx, args.val_frac, args.device)
    res = {"args": vars(args), "machine": machine(args), "corpus_bytes": len(raw),
           "val_bytes": int(data.val.numel()), "runs": {}}
    out_json = os.path.join(args.out, "train_gpu.json")

    def save():
        res["wall_s"] = time.perf_counter() - T0
        with open(out_json, "w") as fh:
            json.dump(res, fh, indent=1)

    dense = build(args)
    cola = build(args, cola=True)
    fd, fc = flops_per_token(dense, args), flops_per_token(cola, args)
    res["dense_params"], res["cola_params"] = n_params(dense), n_params(cola)
    res["flops_per_token"] = {"dense": fd, "cola": fc}
    # time a few steps of both to size S so that every run fits --train-seconds
    probe = {}
    for name, m in (("dense", copy.deepcopy(dense)), ("cola", copy.deepcopy(cola))):
        h, _, _ = train(m, data, args, 12, label="probe")
        probe[name] = statistics.median(h["step_s"][4:])
        del m
    n_lam = len(args.lams)
    per_s = probe["dense"] * (1 + n_lam * (1 + args.assume_overhead)) + probe["cola"] * fd / fc
    S = max(20, int(args.train_seconds / per_s)) if not args.steps else args.steps
    S_cola = max(20, round(S * fd / fc))
    res.update(probe_step_s=probe, steps=S, steps_cola=S_cola, tokens_per_step=args.batch * args.ctx)
    print(f"dense {n_params(dense):,} params, CoLA {n_params(cola):,}; probe step {probe}; S={S}, "
          f"S_cola={S_cola}", flush=True)
    save()

    models = {}
    cap = args.train_seconds / (2 + n_lam) * 1.6
    h, _, opt = train(dense, data, args, S, label="lambda=0", cap_s=cap)
    del opt
    res["runs"]["0"] = {"lam": 0.0, "kind": "dense", "hist": h}
    models["0"] = dense
    save()
    rates = {}
    for lam in args.lams:
        m = build(args)
        h, rate, opt = train(m, data, args, S, lam=lam, label=f"lambda={lam}", cap_s=cap)
        del opt
        res["runs"][str(lam)] = {"lam": lam, "kind": "dense", "hist": h,
                                 "running_estimate_bits": rate.total_bits, "covered": [s.name for s in rate.states],
                                 "steps_since_refresh": rate.steps - 1 - rate._refreshed_at}
        models[str(lam)], rates[str(lam)] = m, rate
        save()
    h, _, opt = train(cola, data, args, S_cola, label="CoLA", cap_s=cap)
    del opt
    res["runs"]["cola"] = {"lam": 0.0, "kind": "cola", "hist": h}
    models["cola"] = cola
    save()

    # overhead: the rate term alone and a refresh, on the lambda=0 model's shapes
    fb, rf, n_t = time_rate(models["0"], args, max(args.lams))
    res["rate_timing"] = {"fwd_bwd_s": fb, "refresh_s": rf, "tensors": n_t, "refresh_every": args.refresh,
                          "plain_step_s": step_stats(res["runs"]["0"]["hist"]),
                          "lam_step_s": {str(l): step_stats(res["runs"][str(l)]["hist"]) for l in args.lams}}
    save()
    warm.wait()

    # encodes, most important first; each checks the deadline
    fresh = {"0": lambda: build(args), "cola": lambda: build(args, cola=True)}
    covered = [s.name for s in RateLoss(models["0"], 0.0, expert={"rel_step": args.rel_step}).states]
    covered_c = [s.name for s in RateLoss(models["cola"], 0.0, expert={"rel_step": args.rel_step}).states]
    plan = [("0", args.rel_step)] + [(str(l), args.rel_step) for l in args.lams] + [("cola", args.rel_step)]
    plan += [("0", c) for c in args.ptq_steps if c != args.rel_step]
    plan += [(str(l), c) for c in args.lam_steps for l in args.lams if c != args.rel_step]
    plan += [("cola", c) for c in args.lam_steps if c != args.rel_step]
    res["float_bpb"] = {}
    for key, m in models.items():
        res["float_bpb"][key] = bpb(m, data, args)
    for key, c in plan:
        if left() < args.encode_reserve_s:
            res.setdefault("skipped_encodes", []).append((key, c))
            continue
        r = res["runs"][key]
        pt = encoded_point(models[key], data, args, c, fresh.get(key, fresh["0"]),
                           covered_c if key == "cola" else covered)
        r.setdefault("rd", []).append(pt)
        if c == args.rel_step:
            r["at_train_step"] = pt
        print(f"  encode {key} rel_step {c:.4g}: {pt['bits_per_weight']:.3f} b/w, bpb {pt['bpc']:.4f} "
              f"({pt['encode_s']:.1f}s, {left():.0f}s left)", flush=True)
        save()
    save()
    return res


def machine(args):
    d = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
         "platform": platform.platform()}
    if str(args.device).startswith("cuda"):
        d["gpu"] = torch.cuda.get_device_name()
    try:
        d["load_avg_start"] = os.getloadavg()
    except OSError:
        pass
    return d


# ---------------------------------------------------------------- analysis, tables and plots

def analyse(res):
    base = res["runs"]["0"].get("rd", [])
    out = {}
    for key, r in res["runs"].items():
        op = r.get("at_train_step")
        if key == "0" or op is None or len(base) < 2:
            continue
        need = ptq_size_at(base, op["bpc"])
        sav = []
        for p in r.get("rd", []):
            n = ptq_size_at(base, p["bpc"])
            if n is not None:
                sav.append((p["rel_step"], p["bits_per_weight"], p["bpc"], 100 * (1 - p["bits_per_weight"] / n)))
        out[key] = {"ptq_bpc_at_same_size": ptq_bpc_at(base, op["bits_per_weight"]), "ptq_bits_for_same_bpc": need,
                    "saving_pct": None if need is None else 100 * (1 - op["bits_per_weight"] / need),
                    "savings_along_curve": sav}
    return out


def dense_flops_to_reach(res, target):
    """Training FLOPs at which the lambda=0 dense run's validation curve reached ``target`` bpb (linear
    interpolation between its 5 points; None if it never did)."""
    pts = res["runs"]["0"]["hist"]["val"]
    per_step = res["flops_per_token"]["dense"] * res["tokens_per_step"]
    prev = None
    for s, v in pts:
        if v <= target:
            if prev is None:
                return s * per_step
            (s0, v0) = prev
            return (s0 + (s - s0) * (v0 - target) / (v0 - v)) * per_step
        prev = (s, v)
    return None


def markdown(res) -> str:
    a = res["args"]
    mach = res["machine"]
    runs = res["runs"]
    L = []
    L.append(f"Setup: byte-level decoder LM, d={a['d']}, {a['layers']} layers, {a['heads']} heads, context {a['ctx']}, "
             f"batch {a['batch']} ({res['tokens_per_step']:,} tokens/step); dense {res['dense_params']:,} parameters, "
             f"CoLA (r = d/4 on every block matrix) {res['cola_params']:,}. Corpus {res['corpus_bytes']:,} bytes "
             f"(pydoc topics + stdlib .py sources), last {res['val_bytes']:,} = validation; bpb on "
             f"{a['eval_tokens']:,} validation bytes. AdamW lr {a['lr']}, cosine, warm-up {a['warmup']}, bf16 autocast. "
             f"Rate loss rel_step={a['rel_step']:g}, calibrate='hist', refresh every {a['refresh']} steps. "
             f"Machine: {mach.get('gpu', 'CPU')}, {mach['cpus']} CPUs, torch {mach['torch']}. Total wall "
             f"{res.get('wall_s', 0):.0f} s.")
    L.append("")
    L.append("### Training runs (same schedule; CoLA at equal training FLOPs)")
    L.append("")
    L.append("| run | params | steps | tokens | training FLOPs | median step ms | train CE (last 20) | val bpb (float) |")
    L.append("|---|---|---|---|---|---|---|---|")
    for key, r in runs.items():
        h = r["hist"]
        f = res["flops_per_token"]["cola" if key == "cola" else "dense"] * res["tokens_per_step"] * h["steps"]
        name = "CoLA λ=0" if key == "cola" else f"dense λ={r['lam']:g}"
        params = res["cola_params"] if key == "cola" else res["dense_params"]
        early = f" (stopped at {h['stopped_early_at']} of {h['steps_planned']})" if "stopped_early_at" in h else ""
        L.append(f"| {name} | {params:,} | {h['steps']}{early} | {h['steps'] * res['tokens_per_step']:,} | {f:.3g} | "
                 f"{1000 * step_stats(h):.1f} | {np.mean(h['loss'][-20:]) / math.log(2):.4f} bits | "
                 f"{res['float_bpb'].get(key, float('nan')):.4f} |")
    L.append("")
    L.append("Validation bpb during training (quarter-size evaluation): " + "; ".join(
        ("CoLA" if k == "cola" else f"λ={r['lam']:g}") + ": " + ", ".join(f"{s}: {v:.3f}" for s, v in r["hist"]["val"])
        for k, r in runs.items()))
    L.append("")
    an = analyse(res)
    L.append("### Rate-trained models vs post-training compression (PTQ) of the λ=0 model, default codec (ans-dq)")
    L.append("")
    L.append("| model | bits/weight (file) | covered payload b/w | bpb (decoded) | PTQ bpb at same size | PTQ size for same bpb | size saving at equal bpb | saving along its rel_step curve |")
    L.append("|---|---|---|---|---|---|---|---|")
    for key, r in runs.items():
        op = r.get("at_train_step")
        if op is None:
            continue
        name = "CoLA λ=0" if key == "cola" else f"dense λ={r['lam']:g}"
        x = an.get(key, {})
        fmt = lambda v, f: "—" if v is None else f.format(v)
        along = x.get("savings_along_curve") or []
        rng = f"{min(s[3] for s in along):.1f} to {max(s[3] for s in along):.1f} %" if along else "—"
        L.append(f"| {name} | {op['bits_per_weight']:.3f} | {op['covered_bits_per_weight']:.3f} | {op['bpc']:.4f} | "
                 f"{fmt(x.get('ptq_bpc_at_same_size'), '{:.4f}')} | {fmt(x.get('ptq_bits_for_same_bpc'), '{:.3f}')} | "
                 f"{fmt(x.get('saving_pct'), '{:.1f} %')} | {rng} |")
    L.append("")
    L.append("Every encoded point (rel_step sweep):")
    L.append("")
    L.append("| model | rel_step | bits/weight | bpb (decoded) | encode s |")
    L.append("|---|---|---|---|---|")
    for key, r in runs.items():
        name = "CoLA λ=0" if key == "cola" else f"dense λ={r['lam']:g}"
        for p in sorted(r.get("rd", []), key=lambda p: p["rel_step"]):
            L.append(f"| {name} | {p['rel_step']:.4g} | {p['bits_per_weight']:.3f} | {p['bpc']:.4f} | {p['encode_s']:.1f} |")
    if res.get("skipped_encodes"):
        L.append("")
        L.append(f"Skipped for the time budget: {res['skipped_encodes']}.")
    L.append("")
    L.append("### Estimate vs written payload (covered tensors, at the training rel_step)")
    L.append("")
    L.append("| run | running estimate (last step) | written payload | error | steps since refresh |")
    L.append("|---|---|---|---|---|")
    for key, r in runs.items():
        if "running_estimate_bits" in r and r.get("at_train_step"):
            real = r["at_train_step"]["covered_payload_bits"]
            est = r["running_estimate_bits"]
            L.append(f"| λ={r['lam']:g} | {est / 8e6:.3f} MB | {real / 8e6:.3f} MB | {100 * (est / real - 1):+.2f} % | "
                     f"{r['steps_since_refresh']} |")
    rt = res.get("rate_timing")
    if rt:
        L.append("")
        L.append("### Step-time overhead of the rate term")
        L.append("")
        plain = rt["plain_step_s"]
        comp = (rt["fwd_bwd_s"] + rt["refresh_s"] / rt["refresh_every"]) / plain
        L.append(f"Rate term alone (`rate()` + backward, {rt['tensors']} tensors, synchronised, median of 20): "
                 f"{1000 * rt['fwd_bwd_s']:.2f} ms; one refresh (calibrate='hist'): {1000 * rt['refresh_s']:.0f} ms, "
                 f"every {rt['refresh_every']} steps. Plain step (λ=0 run, median): {1000 * plain:.1f} ms. "
                 f"Component overhead (rate + refresh/{rt['refresh_every']}) / plain = **{100 * comp:.1f} %**. "
                 "Whole-step medians of the λ>0 runs (refresh steps excluded; refresh cost added per step): " + ", ".join(
                     f"λ={l}: {1000 * s:.1f} ms ({100 * ((s + rt['refresh_s'] / rt['refresh_every']) / plain - 1):+.1f} %)"
                     for l, s in rt["lam_step_s"].items()) + ".")
    c = runs.get("cola")
    if c and "0" in res["float_bpb"] and "cola" in res["float_bpb"]:
        L.append("")
        L.append("### Dense vs CoLA at equal training FLOPs")
        L.append("")
        fc, fd = res["float_bpb"]["cola"], res["float_bpb"]["0"]
        fcola = res["flops_per_token"]["cola"] * res["tokens_per_step"] * c["hist"]["steps"]
        if fc < fd:  # CoLA ends better: when did dense get there (its curve is the quarter-size evaluation)
            reach = dense_flops_to_reach(res, fc)
            verdict = (f"CoLA ends lower. The dense run's validation curve (quarter-size evaluation) reached CoLA's "
                       f"final bpb after {reach:.3g} FLOPs ({100 * reach / fcola:.0f} % of CoLA's)." if reach else
                       "CoLA ends lower; the dense run's validation curve never got down to CoLA's final bpb.")
        else:
            verdict = (f"Dense ends lower: at equal training FLOPs CoLA is {fc - fd:+.4f} bpb "
                       f"({100 * (fc / fd - 1):+.2f} %) from dense with {100 * res['cola_params'] / res['dense_params']:.0f} "
                       "% of its parameters (no equal-loss point inside this run).")
        L.append(f"CoLA: {res['cola_params']:,} parameters ({100 * res['cola_params'] / res['dense_params']:.0f} % of "
                 f"dense), {res['flops_per_token']['cola'] / res['flops_per_token']['dense']:.2f}x the FLOPs per token, "
                 f"{c['hist']['steps']} steps ({fcola:.3g} FLOPs) → val bpb {fc:.4f}; dense λ=0 after its "
                 f"{runs['0']['hist']['steps']} steps: {fd:.4f}. " + verdict)
    return "\n".join(L)


def plots(res, outdir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, r in res["runs"].items():
        pts = sorted(r.get("rd", []), key=lambda p: p["bits_per_weight"])
        if not pts:
            continue
        name = "CoLA λ=0" if key == "cola" else ("dense λ=0 (PTQ)" if key == "0" else f"dense λ={r['lam']:g}")
        ax[0].plot([p["bits_per_weight"] for p in pts], [p["bpc"] for p in pts], "o-", label=name)
        if r.get("at_train_step"):
            ax[0].plot(r["at_train_step"]["bits_per_weight"], r["at_train_step"]["bpc"], "k*", ms=10)
    ax[0].set_xlabel("bits/weight (whole .bsl file, ans-dq)")
    ax[0].set_ylabel("validation bits/byte (decoded)")
    ax[0].set_title("Rate-loss curves (★: training rel_step)")
    ax[0].legend()
    for key, r in res["runs"].items():
        per = res["flops_per_token"]["cola" if key == "cola" else "dense"] * res["tokens_per_step"]
        v = r["hist"]["val"]
        name = "CoLA λ=0" if key == "cola" else f"dense λ={r['lam']:g}"
        ax[1].plot([s * per for s, _ in v], [b for _, b in v], "o-", label=name)
    ax[1].set_xlabel("training FLOPs")
    ax[1].set_ylabel("validation bits/byte (float)")
    ax[1].set_title("Validation during training")
    ax[1].legend()
    fig.tight_layout()
    path = os.path.join(outdir, "training_gpu.png")
    fig.savefig(path, dpi=110)
    return path


def write_md(path, md):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    block = f"{MARK_BEGIN}\n{md}\n{MARK_END}"
    if MARK_BEGIN in text:
        pre, rest = text.split(MARK_BEGIN, 1)
        text = pre + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--lams", default="0.3,3")
    ap.add_argument("--rel-step", type=float, default=0.125)
    ap.add_argument("--refresh", type=int, default=100)
    ap.add_argument("--cola-ratio", type=float, default=0.25)
    ap.add_argument("--ptq-steps", default="0.0625,0.125,0.25,0.5,1.0")
    ap.add_argument("--lam-steps", default="0.125,0.25,0.5")
    ap.add_argument("--train-seconds", type=float, default=150, help="for all training runs together")
    ap.add_argument("--steps", type=int, default=0, help="fix S instead of sizing it from --train-seconds")
    ap.add_argument("--assume-overhead", type=float, default=0.05)
    ap.add_argument("--budget-s", type=float, default=330, help="the whole script's deadline")
    ap.add_argument("--encode-reserve-s", type=float, default=12, help="start no encode with less time left")
    ap.add_argument("--corpus-mb", type=float, default=24)
    ap.add_argument("--val-frac", type=float, default=0.02)
    ap.add_argument("--eval-tokens", type=int, default=262144)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=".")
    ap.add_argument("--quick", action="store_true", help="tiny CPU dry run")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--from-json", help="render tables and plots from a saved run")
    ap.add_argument("--md", help="results markdown to update between the markers")
    ap.add_argument("--png-dir", help="where to write training_gpu.png")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as fh:
            res = json.load(fh)
    else:
        args.lams = [float(x) for x in args.lams.split(",") if x]
        args.ptq_steps = [float(x) for x in args.ptq_steps.split(",")]
        args.lam_steps = [float(x) for x in args.lam_steps.split(",")]
        if args.quick:
            args.d, args.layers, args.heads, args.ctx, args.batch = 64, 2, 4, 64, 8
            args.corpus_mb, args.eval_tokens, args.warmup = 1.0, 8192, 5
            args.train_seconds = min(args.train_seconds, 20)
        if str(args.device).startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        os.makedirs(args.out, exist_ok=True)
        res = run(args)
    md = markdown(res)
    print(md)
    if args.md:
        write_md(args.md, md)
    if args.png_dir:
        print("plot:", plots(res, args.png_dir))


if __name__ == "__main__":
    main()
