#!/usr/bin/env python
"""Rate-distortion experiment for the BackSlash rate loss (``bslcodec.torch.RateLoss``) and CoLA layers.

Task: a character-level transformer language model on real English text that ships with Python itself
(the documentation topics of ``pydoc_data.topics``, ~465k characters; the last 10 % is the validation
set). Metric: validation bits per character (bpc) of the model *decoded from its .bsl file*, against the
file's size in bits per weight (whole file: header, lossless norms/biases and all).

1. Pretrain a dense model (lambda = 0) to a plateau.
2. Fine-tune copies of it with ``loss = CE + rate()`` for a sweep of lambda (lambda = 0: the baseline,
   same number of steps). ``rate`` uses ``rel_step = --rel-step`` (the step the file is written with).
3. Rate-distortion curves: every model encoded with a sweep of rel_step (the lambda = 0 curve is
   post-training compression); the trained operating point is each model at ``--rel-step``. Reports the
   size the post-training-compressed baseline needs for the same bpc, and its bpc at the same size.
4. Estimate vs real: the rate loss's running estimate at the last step (and a GG-only estimate) against
   the encoded payload of the same weights.
5. Dense vs CoLA (``B silu(A x)``, r = d/4) at equal parameter count, both pretrained the same way, and
   both fine-tuned with the same lambda.
6. Step-time overhead of the rate loss (loss mode and gradient-hook mode), interleaved timing; CoLA-M
   activation memory (bytes autograd saves) and step time.

Writes ``results/training.md`` tables (``--md``), ``results/training_rd.png``, ``results/training_track.png``
and prints a JSON summary. CPU-sized: about 10 minutes on 2 cores with the defaults; ``--quick`` for a
smoke run.
"""

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import bslcodec
from bslcodec.files.api import _Source
from bslcodec.torch import RateLoss, load_trained, save_trained, to_cola
from bslcodec.torch.cola import set_memory_efficient

# ---------------------------------------------------------------- data

def load_corpus(path=None) -> str:
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


class Data:
    def __init__(self, text: str, ctx: int, device):
        chars = sorted(set(text))
        self.vocab = len(chars)
        lut = {c: i for i, c in enumerate(chars)}
        ids = torch.tensor([lut[c] for c in text], dtype=torch.long)
        cut = int(0.9 * len(ids))
        self.train, self.val = ids[:cut].to(device), ids[cut:].to(device)
        self.ctx, self.device = ctx, device

    def batch(self, gen, bsz):
        i = torch.randint(0, self.train.numel() - self.ctx - 1, (bsz,), generator=gen)
        idx = i[:, None] + torch.arange(self.ctx + 1)[None, :]
        chunk = self.train[idx.to(self.device)]
        return chunk[:, :-1], chunk[:, 1:]


# ---------------------------------------------------------------- model

class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        y = self.ln1(x)
        q, k, v = (m(y).view(b, t, self.heads, d // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class CharLM(nn.Module):
    def __init__(self, vocab, d, layers, heads, ctx):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.lnf, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx):
        x = self.emb(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.lnf(x))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build(args, data, cola=False, d=None):
    if not cola:
        return CharLM(data.vocab, d or args.d, args.layers, args.heads, args.ctx).to(args.device)
    m = CharLM(data.vocab, args.cola_d, args.layers, args.heads, args.ctx)
    to_cola(m, include=["blocks.*"], rank_ratio=args.cola_ratio, activation="silu")
    return m.to(args.device)


# ---------------------------------------------------------------- training and evaluation

def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def train(model, data, args, steps, lr, warmup, rate=None, seed=0, track=None, label="", val_every=0):
    """AdamW, cosine schedule; returns history. ``track``: every that many steps (just before the rate
    loss refreshes) log its running estimate and the exact encoded payload of the covered tensors."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    hist = {"loss": [], "track": [], "val": []}
    t0 = time.perf_counter()
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        x, y = data.batch(gen, args.batch)
        ce = F.cross_entropy(model(x).reshape(-1, data.vocab), y.reshape(-1))
        loss = ce + rate() if rate is not None and rate.lam else ce
        if rate is not None and not rate.lam:
            with torch.no_grad():
                rate()  # logging only
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        hist["loss"].append(ce.item())
        if val_every and ((step + 1) % val_every == 0 or step + 1 == steps):
            hist["val"].append((step + 1, bpc(model, data, args, max_chars=16384)))
            model.train()
        if track and rate is not None and (step + 1) % track == 0:
            est = rate.estimate_now()
            exact = rate.exact_bits()
            hist["track"].append((step + 1, sum(est.values()) / rate.n_weights,
                                  sum(exact.values()) / rate.n_weights))
        if args.verbose and (step + 1) % max(1, steps // 5) == 0:
            extra = f" rate {rate.bits_per_weight:.3f} b/w" if rate is not None else ""
            print(f"  [{label}] step {step + 1}/{steps} ce {np.mean(hist['loss'][-50:]):.4f}{extra}",
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    sync(args.device)
    hist["seconds"] = time.perf_counter() - t0
    hist["sec_per_step"] = hist["seconds"] / max(1, steps)
    model.eval()
    return hist


@torch.no_grad()
def bpc(model, data, args, max_chars=0):
    """Validation bits per character over non-overlapping windows of ``ctx`` characters."""
    model.eval()
    v = data.val[: (data.val.numel() - 1) // args.ctx * args.ctx + 1]
    limit = min(x for x in (args.eval_chars, max_chars, v.numel()) if x)
    v = v[: (limit - 1) // args.ctx * args.ctx + 1]
    x = v[:-1].view(-1, args.ctx)
    y = v[1:].view(-1, args.ctx)
    tot, n = 0.0, 0
    for i in range(0, x.shape[0], 256):
        logits = model(x[i:i + 256])
        tot += float(F.cross_entropy(logits.reshape(-1, data.vocab), y[i:i + 256].reshape(-1), reduction="sum"))
        n += y[i:i + 256].numel()
    return tot / n / math.log(2)


def file_stats(blob: bytes, covered=()) -> dict:
    src = _Source(data=blob)
    entries = src.index.entries
    n = sum(int(np.prod(e.shape, dtype=np.int64)) for e in entries)
    codecs = {}
    for e in entries:
        codecs[e.codec] = codecs.get(e.codec, 0) + 1
    out = {"bytes": len(blob), "bits_per_weight": 8 * len(blob) / n, "n_weights": n, "codecs": codecs,
           "covered_payload_bits": sum(8 * e.length for e in entries if e.name in covered)}
    src.close()
    return out


def encoded_point(model, data, args, rel_step, fresh):
    blob = bslcodec.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                         expert={"rel_step": rel_step})
    m2 = fresh()
    load_trained(m2, blob)
    return {"rel_step": rel_step, **file_stats(blob), "bpc": bpc(m2.to(args.device), data, args)}


def rd_curve(model, data, args, fresh, steps):
    return [encoded_point(model, data, args, c, fresh) for c in steps]


# ---------------------------------------------------------------- overhead, CoLA-M

def time_steps(model, data, args, mode, lam, steps, opt, gen, rate):
    sync(args.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = data.batch(gen, args.batch)
        loss = F.cross_entropy(model(x).reshape(-1, data.vocab), y.reshape(-1))
        if mode == "loss":
            loss = loss + rate()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(args.device)
    return (time.perf_counter() - t0) / steps


def load_rate_module(path):
    """A RateLoss implementation from another file (e.g. an older ``bslcodec/torch/rate.py`` from git), loaded
    as a sibling module of ``bslcodec.torch.rate`` so its relative imports resolve; for before/after timing."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bslcodec.torch._rate_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # Numba's cache looks the module up by name
    spec.loader.exec_module(mod)
    return mod


def overhead(model, data, args, lam, steps, baseline=None):
    """Step time with and without the rate loss, measured on the same model and data in one process.

    Modes: ``plain`` (no rate term), ``loss`` (``loss = CE + rate()``), ``hook`` (``rate.attach()``) and,
    given ``baseline`` (a module with another RateLoss), ``loss_baseline``. The modes take turns one step
    at a time (the order rotates every round), so load from other processes hits all of them alike; each
    step is timed alone. Per mode: the median of the steps without a refresh, plus the refresh cost
    amortised over ``refresh_every`` steps (the mean excess of the steps that refreshed over that median).
    Overhead = that amortised time / the plain median - 1; also the median of the per-round ratios."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(123)
    rates = {"loss": RateLoss(model, lam, expert={"rel_step": args.rel_step}, refresh_every=args.refresh),
             "hook": RateLoss(model, lam, expert={"rel_step": args.rel_step}, refresh_every=args.refresh)}
    if baseline is not None:  # another commit's rate.py: the old keyword, which every version takes
        rates["loss_baseline"] = baseline.RateLoss(model, lam, rel_step=args.rel_step, refresh_every=args.refresh)
    modes = ["plain", *rates]

    def one_step(mode):
        rate = rates.get(mode)
        refreshing = rate is not None and rate.steps % rate.refresh_every == 0  # (an older RateLoss)
        before = getattr(rate, "refreshes", None)
        if mode == "hook":
            rate.attach()
        sync(args.device)
        t0 = time.perf_counter()
        x, y = data.batch(gen, args.batch)
        loss = F.cross_entropy(model(x).reshape(-1, data.vocab), y.reshape(-1))
        if mode.startswith("loss"):
            loss = loss + rate()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(args.device)
        dt = time.perf_counter() - t0
        if mode == "hook":
            rate.detach()
        if before is not None:  # every refresh_every steps, or earlier on drift
            refreshing = rate.refreshes != before
        return dt, refreshing

    for _ in range(3):  # JIT compilation, first refresh, allocator warm-up
        for mode in modes:
            one_step(mode)
    times = {m: [] for m in modes}
    refresh_times = {m: [] for m in modes}
    for r in range(steps):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for mode in order:
            dt, refreshing = one_step(mode)
            (refresh_times if refreshing else times)[mode].append(dt)
    med = {m: statistics.median(v) for m, v in times.items()}
    amort = {}
    for m in modes:
        extra = statistics.mean([t - med[m] for t in refresh_times[m]]) if refresh_times[m] else 0.0
        amort[m] = med[m] + (extra / args.refresh if m != "plain" else 0.0)
    n_rounds = min(len(v) for v in times.values())
    out = {"sec_per_step": amort, "median_no_refresh": med,
           "refresh_sec": {m: statistics.mean(v) - med[m] for m, v in refresh_times.items() if v},
           "refresh_every": args.refresh, "steps_timed_per_mode": steps, "lam": lam,
           "rounds": {m: v for m, v in times.items()}}
    for m in modes[1:]:
        out[f"overhead_{m}_pct"] = 100 * (amort[m] / amort["plain"] - 1)
        out[f"paired_{m}_pct"] = 100 * (statistics.median(
            [a / b for a, b in zip(times[m][:n_rounds], times["plain"][:n_rounds])]) - 1)
    out["rate_only_ms"] = rate_only_ms(model, lam, args, baseline)
    return out


def rate_only_ms(model, lam, args, baseline=None, reps=200):
    """The rate term alone: median ms of ``rate()`` + its backward, and of one refresh (per implementation)."""
    out = {}
    impls = {"current": RateLoss}
    if baseline is not None:
        impls["baseline"] = baseline.RateLoss
    params = list(model.parameters())
    for name, cls in impls.items():
        # the baseline (another commit's rate.py) gets the old keyword, which every version takes
        step = {"expert": {"rel_step": args.rel_step}} if cls is RateLoss else {"rel_step": args.rel_step}
        rate = cls(model, lam, **step, refresh_every=10**9)
        rate()
        ts = []
        for _ in range(reps):
            for p in params:
                p.grad = None
            t0 = time.perf_counter()
            rate().backward()
            ts.append(time.perf_counter() - t0)
        rs = []
        for _ in range(5):
            t0 = time.perf_counter()
            rate.refresh()
            rs.append(time.perf_counter() - t0)
        out[name] = {"step_ms": 1e3 * statistics.median(ts), "refresh_ms": 1e3 * statistics.median(rs)}
    for p in params:
        p.grad = None
    return out


def saved_bytes(model, x):
    """Bytes of the distinct tensors autograd keeps from one forward pass for backward (weights not
    counted; a tensor saved by several layers counted once)."""
    params = {p.data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[(t.data_ptr(), t.numel(), t.dtype)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x).sum()
    out.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def cola_m_stats(model, data, args):
    model = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(5)
    x, _ = data.batch(gen, args.batch)
    out = {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for mode in (False, True):
        set_memory_efficient(model, mode)
        out["saved_MB_" + ("cola_m" if mode else "cola")] = saved_bytes(model, x) / 2**20
    times = {False: [], True: []}
    for _ in range(3):
        for mode in (False, True):
            set_memory_efficient(model, mode)
            times[mode].append(time_steps(model, data, args, "plain", 0, 25, opt, gen, None))
    out["sec_per_step_cola"] = statistics.median(times[False])
    out["sec_per_step_cola_m"] = statistics.median(times[True])
    return out


# ---------------------------------------------------------------- comparison helpers

def frontier(curve):
    """The post-training frontier: points sorted by size, each with the best bpc of any point no larger
    (a larger file is never worse, since the smaller step's file could be used instead)."""
    out, best = [], float("inf")
    for p in sorted(curve, key=lambda p: p["bits_per_weight"]):
        best = min(best, p["bpc"])
        out.append({"bits_per_weight": p["bits_per_weight"], "bpc": best})
    return out


def ptq_size_at(curve, target_bpc):
    """Bits/weight the post-training frontier needs for ``target_bpc`` (log-linear interpolation), or None."""
    pts = []
    for p in frontier(curve):  # strictly decreasing bpc as size grows: a function of bpc
        if not pts or p["bpc"] < pts[-1][0]:
            pts.append((p["bpc"], math.log(p["bits_per_weight"])))
    pts.sort()
    b = [p[0] for p in pts]
    if not b[0] <= target_bpc <= b[-1]:
        return None
    return math.exp(float(np.interp(target_bpc, b, [p[1] for p in pts])))


def ptq_bpc_at(curve, bits):
    pts = [(math.log(p["bits_per_weight"]), p["bpc"]) for p in frontier(curve)]
    lb = [p[0] for p in pts]
    if not lb[0] <= math.log(bits) <= lb[-1]:
        return None
    return float(np.interp(math.log(bits), lb, [p[1] for p in pts]))


def compare(res):
    """Each rate-trained model against the lambda=0 post-training curve: at its training point, and the
    range of size savings at equal bpc along its own rel_step curve."""
    base_curve = res["runs"]["0"]["rd"]
    for key, r in res["runs"].items():
        op = r["at_train_step"]
        r["ptq_bpc_at_same_size"] = ptq_bpc_at(base_curve, op["bits_per_weight"])
        r["ptq_bits_for_same_bpc"] = ptq_size_at(base_curve, op["bpc"])
        savings = []
        for p in r["rd"]:
            need = ptq_size_at(base_curve, p["bpc"])
            if need is not None:
                savings.append((p["rel_step"], p["bits_per_weight"], p["bpc"], 100 * (1 - p["bits_per_weight"] / need)))
        r["savings_along_curve"] = savings


def estimate_vs_real(model, rate, args):
    covered = [st.name for st in rate.states]
    blob = save_trained(model, rate=rate)
    real = file_stats(blob, covered)["covered_payload_bits"]
    running = rate.total_bits  # the value the loss used at the last training step
    # the model-only estimate (no encoder run): GG for plain rounding, the index histogram for dq
    gg = RateLoss(model, 0.0, calibrate="gg" if rate.quantizer == "uniform" else "hist",
                  expert={"rel_step": args.rel_step, "quantizer": rate.quantizer})
    with torch.no_grad():
        gg()
    return {"real_payload_bits": real, "running_estimate_bits": running,
            "running_err_pct": 100 * (running / real - 1),
            "gg_estimate_bits": gg.total_bits, "gg_err_pct": 100 * (gg.total_bits / real - 1),
            "steps_since_refresh": rate.steps - 1 - rate._refreshed_at}


# ---------------------------------------------------------------- plots and markdown

def plots(res, outdir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plots", file=sys.stderr)
        return []
    files = []
    fig, ax = plt.subplots(figsize=(7.5, 5))
    base = res["runs"]["0"]
    xs = [p["bits_per_weight"] for p in base["rd"]]
    ax.plot(xs, [p["bpc"] for p in base["rd"]], "k-o", ms=4, lw=2, label="λ=0, post-training (rel_step sweep)")
    cmap = plt.get_cmap("viridis")
    lams = [k for k in res["runs"] if k != "0"]
    for i, lam in enumerate(lams):
        r = res["runs"][lam]
        col = cmap(i / max(1, len(lams) - 1) * 0.85)
        ax.plot([p["bits_per_weight"] for p in r["rd"]], [p["bpc"] for p in r["rd"]], "-", color=col, lw=1,
                alpha=0.6)
        op = r["at_train_step"]
        ax.plot([op["bits_per_weight"]], [op["bpc"]], "o", color=col, ms=8, label=f"λ={lam} (rate-trained)")
    if "cola" in res:
        for key, mk in (("pretrained", "s"), ("rate", "D")):
            op = res["cola"][key]["at_train_step"]
            ax.plot([op["bits_per_weight"]], [op["bpc"]], mk, color="tab:red", ms=8, mfc="none", mew=2,
                    label=f"CoLA {'λ=' + str(res['cola']['lam']) if key == 'rate' else 'λ=0'}")
        op = res["dense_pretrained"]["at_train_step"]
        ax.plot([op["bits_per_weight"]], [op["bpc"]], "s", color="k", ms=8, mfc="none", mew=2,
                label="dense pretrained (λ=0)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("file size, bits per weight (whole .bsl file)")
    ax.set_ylabel("validation bits per character (decoded model)")
    ax.set_title(f"char LM on pydoc topics: rate-trained vs post-training compression\n"
                 f"(dot = rel_step {res['config']['rel_step']:.4g}, the training step; lines = rel_step sweep)",
                 fontsize=10)
    lo = min(p["bpc"] for p in base["rd"])
    ax.set_ylim(lo - 0.05, lo + 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(outdir, "training_rd.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for i, lam in enumerate(lams):
        tr = res["runs"][lam]["track"]
        if not tr:
            continue
        col = cmap(i / max(1, len(lams) - 1) * 0.85)
        ax.plot([t[0] for t in tr], [t[2] for t in tr], "-", color=col, lw=2, label=f"λ={lam} encoded")
        ax.plot([t[0] for t in tr], [t[1] for t in tr], "--", color=col, marker="x", label=f"λ={lam} estimate")
    ax.set_xlabel("fine-tuning step (estimate read just before each refresh, i.e. at its stalest)")
    ax.set_ylabel("bits per covered weight")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = os.path.join(outdir, "training_track.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)
    return files


def markdown(res) -> str:
    c = res["config"]
    L = []
    wall = res.get("wall_seconds")
    L.append(f"Setup: char-level transformer LM, d={c['d']}, {c['layers']} layers, {c['heads']} heads, context "
             f"{c['ctx']}, batch {c['batch']}; {c['params']:,} parameters; corpus {c['corpus_chars']:,} chars "
             f"({c['corpus']}), vocab {c['vocab']}; pretrain {c['pretrain_steps']} steps (lr {c['lr']}), "
             f"fine-tune {c['finetune_steps']} steps (lr {c['ft_lr']}); rate loss rel_step={c['rel_step']:.4g}, "
             f"refresh every {c['refresh']} steps. Machine: {c['machine']}, torch threads {c['threads']}. "
             + (f"Total wall time {wall:.0f} s." if wall else ""))
    L.append("")
    L.append(f"Pretrained dense model: val bpc {res['dense_pretrained']['bpc']:.4f} (float); train CE of the "
             f"last 50 steps {res['dense_pretrained']['final_train_ce']:.4f} nats. Validation bpc during "
             f"pretraining (first 16k val chars): "
             + ", ".join(f"{s}: {v:.3f}" for s, v in res["dense_pretrained"]["val_curve"]) + ".")
    L.append("")
    L.append("### Rate-trained models vs post-training compression of the λ=0 model")
    L.append("")
    L.append("| λ | bpc (float) | bpc (decoded) | bits/weight (file) | PTQ(λ=0) bpc at same size | Δbpc | "
             "PTQ(λ=0) size for same bpc | size saving | saving along the λ model's rel_step curve |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for lam, r in res["runs"].items():
        op = r["at_train_step"]
        same = r.get("ptq_bpc_at_same_size")
        need = r.get("ptq_bits_for_same_bpc")
        same_s = "—" if same is None else f"{same:.4f}"
        delta_s = "—" if same is None else f"{op['bpc'] - same:+.4f}"
        need_s = "out of range" if need is None else f"{need:.3f}"
        save_s = "—" if need is None else f"{100 * (1 - op['bits_per_weight'] / need):.1f} %"
        sv = [x[3] for x in r.get("savings_along_curve", [])]
        along = "—" if not sv or lam == "0" else f"{min(sv):.1f} to {max(sv):.1f} %"
        L.append(f"| {lam} | {r['bpc_float']:.4f} | {op['bpc']:.4f} | {op['bits_per_weight']:.3f} | "
                 f"{same_s} | {delta_s} | {need_s} | {save_s} | {along} |")
    L.append("")
    codecs = res["runs"]["0"]["at_train_step"].get("codecs", {})
    L.append("Codecs in the files (tensors per codec, λ=0 at the training rel_step): "
             + ", ".join(f"{k} {v}" for k, v in sorted(codecs.items())) + ".")
    L.append("")
    L.append("Post-training compression curve of the λ=0 model (rel_step sweep):")
    L.append("")
    L.append("| rel_step | bits/weight | bpc |")
    L.append("|---|---|---|")
    for p in res["runs"]["0"]["rd"]:
        L.append(f"| {p['rel_step']:.4g} | {p['bits_per_weight']:.3f} | {p['bpc']:.4f} |")
    L.append("")
    L.append("### Estimate vs real encoded size (covered tensors' payload)")
    L.append("")
    L.append("| λ | real payload bits/weight | running estimate (last step) | error | steps since refresh | "
             "model-only estimate (GG / dq histogram) | error |")
    L.append("|---|---|---|---|---|---|---|")
    for lam, r in res["runs"].items():
        e = r.get("estimate")
        if not e:
            continue
        n = r["covered_weights"]
        L.append(f"| {lam} | {e['real_payload_bits'] / n:.4f} | {e['running_estimate_bits'] / n:.4f} | "
                 f"{e['running_err_pct']:+.2f} % | {e['steps_since_refresh']} | {e['gg_estimate_bits'] / n:.4f} | "
                 f"{e['gg_err_pct']:+.2f} % |")
    if "cola" in res and res["cola"]["rate"].get("estimate"):
        e, n = res["cola"]["rate"]["estimate"], res["cola"]["rate"]["covered_weights"]
        L.append(f"| CoLA {res['cola']['lam']} | {e['real_payload_bits'] / n:.4f} | "
                 f"{e['running_estimate_bits'] / n:.4f} | {e['running_err_pct']:+.2f} % | "
                 f"{e['steps_since_refresh']} | {e['gg_estimate_bits'] / n:.4f} | {e['gg_err_pct']:+.2f} % |")
    if "cola" in res:
        co = res["cola"]
        d = res["dense_pretrained"]
        L.append("")
        L.append("### Dense vs CoLA at equal parameter count")
        L.append("")
        L.append("| model | params | bpc (float) | bits/weight at rel_step | bpc (decoded) | file bytes |")
        L.append("|---|---|---|---|---|---|")
        L.append(f"| dense d={c['d']} pretrained | {c['params']:,} | {d['bpc']:.4f} | "
                 f"{d['at_train_step']['bits_per_weight']:.3f} | {d['at_train_step']['bpc']:.4f} | "
                 f"{d['at_train_step']['bytes']:,} |")
        L.append(f"| CoLA d={c['cola_d']} r={co['rank']} pretrained | {co['params']:,} | "
                 f"{co['pretrained']['bpc']:.4f} | {co['pretrained']['at_train_step']['bits_per_weight']:.3f} | "
                 f"{co['pretrained']['at_train_step']['bpc']:.4f} | {co['pretrained']['at_train_step']['bytes']:,} |")
        dl = res["runs"].get(f"{co['lam']:g}")
        if dl:
            L.append(f"| dense + rate λ={co['lam']} | {c['params']:,} | {dl['bpc_float']:.4f} | "
                     f"{dl['at_train_step']['bits_per_weight']:.3f} | {dl['at_train_step']['bpc']:.4f} | "
                     f"{dl['at_train_step']['bytes']:,} |")
        L.append(f"| CoLA + rate λ={co['lam']} | {co['params']:,} | {co['rate']['bpc']:.4f} | "
                 f"{co['rate']['at_train_step']['bits_per_weight']:.3f} | "
                 f"{co['rate']['at_train_step']['bpc']:.4f} | {co['rate']['at_train_step']['bytes']:,} |")
        L.append("")
        L.append(f"Step time: dense {res['dense_pretrained']['sec_per_step'] * 1e3:.1f} ms, CoLA "
                 f"{co['sec_per_step'] * 1e3:.1f} ms (pretraining averages). CoLA-M: autograd keeps "
                 f"{co['cola_m']['saved_MB_cola_m']:.2f} MB instead of {co['cola_m']['saved_MB_cola']:.2f} MB per "
                 f"forward; step {co['cola_m']['sec_per_step_cola_m'] * 1e3:.1f} ms vs "
                 f"{co['cola_m']['sec_per_step_cola'] * 1e3:.1f} ms.")
    o = res.get("overhead")
    L.append("")
    L.append("### Step-time overhead of the rate loss")
    L.append("")
    if not o:
        L.append("Not measured in this run.")
        return "\n".join(L) + "\n"
    if res.get("overhead_source"):
        L.append(f"Timings from a separate run ({res['overhead_source']}).")
        L.append("")
    L.extend(overhead_table(o, res.get("cola", {}).get("overhead")))
    return "\n".join(L) + "\n"


def overhead_table(o, co=None):
    """Markdown lines for the overhead measurements of the dense model ``o`` and the CoLA model ``co``."""
    def pct(x, key):
        return f"{x[key]:+.1f} %" if key in x else "—"

    L = [f"Modes take turns one step at a time, {o['steps_timed_per_mode']} timed steps per mode, λ={o.get('lam', '?')}, "
         f"refresh every {o['refresh_every']} steps. Step time = median of the steps without a refresh + the "
         "refresh's cost / refresh_every; overhead = that / plain − 1 (in brackets: median of the per-round "
         "ratios, refresh not included). `rate` = the rate term alone (`rate()` + its backward), and one "
         "refresh, medians, timed after the interleaved steps; `component` = (rate + refresh / refresh_every) / "
         "plain, the overhead those imply (now / baseline).", "",
         "| model | plain ms/step | loss mode | overhead | hook mode | overhead | baseline loss mode | overhead | "
         "rate fwd+bwd ms (now / baseline) | refresh ms (now / baseline) | component (now / baseline) |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in (("dense", o), ("CoLA", co)):
        if not x:
            continue
        sp = x["sec_per_step"]
        paired = lambda m: f" ({x[f'paired_{m}_pct']:+.1f} %)" if f"paired_{m}_pct" in x else ""  # noqa: E731
        base = sp.get("loss_baseline")
        ro = x.get("rate_only_ms", {})
        cur, old = ro.get("current", {}), ro.get("baseline", {})
        f2 = lambda d, k: f"{d[k]:.2f}" if k in d else "—"  # noqa: E731
        comp = lambda d: (f"{100 * (d['step_ms'] + d['refresh_ms'] / x['refresh_every']) / (sp['plain'] * 1e3):.1f} %"  # noqa: E731
                          if "step_ms" in d else "—")
        L.append(f"| {name} | {sp['plain'] * 1e3:.1f} | {sp['loss'] * 1e3:.1f} | **{pct(x, 'overhead_loss_pct')}**"
                 f"{paired('loss')} | {sp['hook'] * 1e3:.1f} | {pct(x, 'overhead_hook_pct')}{paired('hook')} | "
                 f"{'—' if base is None else f'{base * 1e3:.1f}'} | {pct(x, 'overhead_loss_baseline_pct')}"
                 f"{paired('loss_baseline')} | {f2(cur, 'step_ms')} / {f2(old, 'step_ms')} | "
                 f"{f2(cur, 'refresh_ms')} / {f2(old, 'refresh_ms')} | {comp(cur)} / {comp(old)} |")
    return L


BEGIN, END = "<!-- BEGIN tools/bench/train_rd.py output -->", "<!-- END tools/bench/train_rd.py output -->"


OVERHEAD_HEADING = "### Step-time overhead of the rate loss"


def write_overhead_md(path, md):
    """Replace only the overhead section of the generated block of ``path`` (--only-overhead runs)."""
    old = open(path).read()
    i, j = old.index(OVERHEAD_HEADING), old.index(END)
    with open(path, "w") as fh:
        fh.write(old[:i] + OVERHEAD_HEADING + "\n\n" + md + old[j:])


def write_md(path, md):
    """Put ``md`` between the BEGIN/END markers of ``path`` (hand-written text around them is kept)."""
    old = open(path).read() if os.path.exists(path) else ""
    block = f"{BEGIN}\n{md}{END}\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):].lstrip("\n")
    else:
        new = (old + "\n" if old else "") + block
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        fh.write(new)


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="text file (default: Python's pydoc_data.topics)")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--finetune-steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--rel-step", type=float, default=1 / 8)
    ap.add_argument("--refresh", type=int, default=100)
    ap.add_argument("--lams", default="0,0.1,0.3,1,3,10")
    ap.add_argument("--sweep", default="-6,-5,-4,-3.5,-3,-2.5,-2,-1.5,-1,-0.5,0",
                    help="log2 of the rel_steps of the post-training curves")
    ap.add_argument("--model-sweep", default="-5,-4,-3,-2,-1",
                    help="log2 rel_steps of the rate-trained models' curves")
    ap.add_argument("--cola-d", type=int, default=204)
    ap.add_argument("--cola-ratio", type=float, default=0.25)
    ap.add_argument("--cola-lam", type=float, default=None, help="default: the middle lambda")
    ap.add_argument("--no-cola", action="store_true")
    ap.add_argument("--overhead-steps", type=int, default=300,
                    help="timed steps per mode (the modes take turns step by step)")
    ap.add_argument("--baseline-rate", metavar="PY", help="also time the RateLoss of this file (e.g. an older "
                    "bslcodec/torch/rate.py from git), interleaved with the current one")
    ap.add_argument("--eval-chars", type=int, default=0, help="limit validation characters (0: all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--outdir", default="results")
    ap.add_argument("--md", default="results/training.md",
                    help="the generated tables replace the part between the markers of this file ('' for none)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--only-overhead", metavar="JSON",
                    help="only time the rate loss (dense and CoLA models as configured, fresh weights) and "
                         "CoLA-M; write the timings to JSON")
    ap.add_argument("--from-json", metavar="JSON", help="no training: re-render tables and plots from a JSON "
                    "this script wrote (--json)")
    ap.add_argument("--overhead-json", metavar="JSON", help="with --from-json: timings from --only-overhead "
                    "replace the run's own")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.pretrain_steps, args.finetune_steps, args.lams = 40, 20, "0,0.1"
        args.sweep, args.model_sweep, args.eval_chars = "-4,-3,-2", "-3", 4096
        args.overhead_steps, args.refresh = 5, 10
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.from_json:
        with open(args.from_json) as fh:
            res = json.load(fh)
        if args.overhead_json:
            with open(args.overhead_json) as fh:
                ov = json.load(fh)
            res["overhead"] = ov["overhead"]
            if "cola" in res:
                res["cola"]["cola_m"] = ov["cola_m"]
                res["cola"]["overhead"] = ov["cola_overhead"]
            res["overhead_source"] = ov["source"]
        compare(res)
        os.makedirs(args.outdir, exist_ok=True)
        res["plots"] = plots(res, args.outdir)
        md = markdown(res)
        if args.md:
            write_md(args.md, md)
        print(md)
        return res
    if args.only_overhead:
        text = load_corpus(args.corpus)
        data = Data(text, args.ctx, args.device)
        torch.manual_seed(0)
        dense, cola = build(args, data), build(args, data, cola=True)
        lam = float(args.lams.split(",")[-1])
        base = load_rate_module(args.baseline_rate) if args.baseline_rate else None
        load0 = os.getloadavg()[0]
        ov = {"overhead": overhead(dense, data, args, lam, args.overhead_steps, base),
              "cola_overhead": overhead(cola, data, args, lam, args.overhead_steps, base),
              "cola_m": cola_m_stats(cola, data, args),
              "baseline_rate": args.baseline_rate,
              "source": f"--only-overhead, fresh weights, lambda={lam:g}, {platform.machine()} "
                        f"{os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, load average "
                        f"{load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end"
                        + (f"; baseline = {args.baseline_rate}" if args.baseline_rate else "")}
        with open(args.only_overhead, "w") as fh:
            json.dump(ov, fh, indent=1)
        lines = [f"Timings from a separate run ({ov['source']}).", "",
                 *overhead_table(ov["overhead"], ov["cola_overhead"])]
        if args.md and not args.quick:
            write_overhead_md(args.md, "\n".join(lines) + "\n")
        print("\n".join(lines))
        return ov
    t_start = time.perf_counter()
    torch.manual_seed(0)
    text = load_corpus(args.corpus)
    data = Data(text, args.ctx, args.device)
    lams = [float(x) for x in args.lams.split(",")]
    if 0.0 not in lams:
        lams = [0.0] + lams
    sweep = [2.0 ** float(x) for x in args.sweep.split(",")]
    msweep = sorted(set([2.0 ** float(x) for x in args.model_sweep.split(",")] + [args.rel_step]))
    fresh = lambda: build(args, data)  # noqa: E731
    lamkey = lambda lam: f"{lam:g}"  # noqa: E731

    res = {"config": {"d": args.d, "layers": args.layers, "heads": args.heads, "ctx": args.ctx,
                      "batch": args.batch, "pretrain_steps": args.pretrain_steps,
                      "finetune_steps": args.finetune_steps, "lr": args.lr, "ft_lr": args.ft_lr,
                      "rel_step": args.rel_step, "refresh": args.refresh, "vocab": data.vocab,
                      "corpus_chars": len(text), "corpus": args.corpus or f"pydoc_data.topics, Python "
                      f"{platform.python_version()}", "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                      "threads": torch.get_num_threads(), "cola_d": args.cola_d, "cola_ratio": args.cola_ratio},
           "runs": {}}

    # 1. pretrain
    print(f"corpus {len(text)} chars, vocab {data.vocab}; pretraining...", flush=True)
    torch.manual_seed(0)
    base = fresh()
    res["config"]["params"] = n_params(base)
    h = train(base, data, args, args.pretrain_steps, args.lr, max(1, args.pretrain_steps // 15), label="dense",
              val_every=max(1, args.pretrain_steps // 8))
    res["dense_pretrained"] = {"bpc": bpc(base, data, args), "final_train_ce": float(np.mean(h["loss"][-50:])),
                               "sec_per_step": h["sec_per_step"],
                               "at_train_step": encoded_point(base, data, args, args.rel_step, fresh),
                               "val_curve": h["val"]}
    print(f"dense pretrained: bpc {res['dense_pretrained']['bpc']:.4f}, {h['sec_per_step'] * 1e3:.0f} ms/step",
          flush=True)
    base_state = copy.deepcopy(base.state_dict())

    def checkpoint():
        if args.json:
            res["wall_seconds"] = time.perf_counter() - t_start
            with open(args.json, "w") as fh:
                json.dump(res, fh, indent=1, default=float)

    checkpoint()
    # 2-4. fine-tune sweep
    for lam in lams:
        torch.manual_seed(1)
        m = fresh()
        m.load_state_dict(base_state)
        rate = RateLoss(m, lam, expert={"rel_step": args.rel_step}, refresh_every=args.refresh) if lam else None
        h = train(m, data, args, args.finetune_steps, args.ft_lr, max(1, args.finetune_steps // 10), rate=rate,
                  seed=1, track=args.refresh if lam else None, label=f"λ={lam:g}")
        r = {"bpc_float": bpc(m, data, args), "sec_per_step": h["sec_per_step"], "track": h["track"],
             "final_train_ce": float(np.mean(h["loss"][-50:]))}
        if rate is not None:
            r["estimate"] = estimate_vs_real(m, rate, args)
            r["covered_weights"] = rate.n_weights
            r["rate_summary"] = [{k: s[k] for k in ("name", "k", "gg_nu", "step")} for s in rate.summary()]
        curve = rd_curve(m, data, args, fresh, sweep if lam == 0 else msweep)
        r["rd"] = curve
        r["at_train_step"] = min(curve, key=lambda p: abs(math.log(p["rel_step"] / args.rel_step)))
        res["runs"][lamkey(lam)] = r
        checkpoint()
        print(f"λ={lam:g}: bpc float {r['bpc_float']:.4f}, decoded {r['at_train_step']['bpc']:.4f} at "
              f"{r['at_train_step']['bits_per_weight']:.3f} b/w; {h['sec_per_step'] * 1e3:.0f} ms/step"
              + (f"; estimate err {r['estimate']['running_err_pct']:+.2f} %" if rate is not None else ""),
              flush=True)
    compare(res)

    # 5. CoLA
    if not args.no_cola:
        cola_lam = args.cola_lam if args.cola_lam is not None else [x for x in lams if x][len([x for x in lams if x]) // 2]
        fresh_cola = lambda: build(args, data, cola=True)  # noqa: E731
        torch.manual_seed(0)
        cm = fresh_cola()
        rank = next(mod.rank for mod in cm.modules() if hasattr(mod, "rank"))
        h = train(cm, data, args, args.pretrain_steps, args.lr, max(1, args.pretrain_steps // 15), label="cola",
                  val_every=max(1, args.pretrain_steps // 8))
        co = {"params": n_params(cm), "rank": rank, "lam": cola_lam, "sec_per_step": h["sec_per_step"],
              "val_curve": h["val"],
              "pretrained": {"bpc": bpc(cm, data, args),
                             "at_train_step": encoded_point(cm, data, args, args.rel_step, fresh_cola)}}
        print(f"CoLA pretrained: {co['params']} params, bpc {co['pretrained']['bpc']:.4f}, "
              f"{h['sec_per_step'] * 1e3:.0f} ms/step", flush=True)
        co["cola_m"] = cola_m_stats(cm, data, args)
        torch.manual_seed(1)
        rate = RateLoss(cm, cola_lam, expert={"rel_step": args.rel_step}, refresh_every=args.refresh)
        h = train(cm, data, args, args.finetune_steps, args.ft_lr, max(1, args.finetune_steps // 10), rate=rate,
                  seed=1, label=f"cola λ={cola_lam:g}")
        # the file round trip into a freshly built *dense* model (converted from the file's metadata)
        blob = save_trained(cm, rate=rate)
        back = load_trained(build(args, data, d=args.cola_d), blob)  # dense-built, CoLA-loaded
        co["rate"] = {"bpc": bpc(cm, data, args), "estimate": estimate_vs_real(cm, rate, args),
                      "covered_weights": rate.n_weights,
                      "at_train_step": {**file_stats(blob), "rel_step": args.rel_step, "bpc": bpc(back, data, args)}}
        res["cola"] = co
        checkpoint()
        print(f"CoLA λ={cola_lam:g}: bpc {co['rate']['bpc']:.4f}, decoded {co['rate']['at_train_step']['bpc']:.4f}"
              f" at {co['rate']['at_train_step']['bits_per_weight']:.3f} b/w", flush=True)

    # 6. overhead
    lam_o = [x for x in lams if x][0] if any(lams) else 0.1
    res["overhead"] = overhead(base, data, args, lam_o, args.overhead_steps)
    print(f"overhead: loss mode {res['overhead']['overhead_loss_pct']:+.1f} %, hook mode "
          f"{res['overhead']['overhead_hook_pct']:+.1f} %", flush=True)

    res["wall_seconds"] = time.perf_counter() - t_start
    os.makedirs(args.outdir, exist_ok=True)
    res["plots"] = plots(res, args.outdir)
    md = markdown(res)
    if args.md:
        write_md(args.md, md)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    print(md)
    print(f"wall time {res['wall_seconds']:.0f} s")
    return res


if __name__ == "__main__":
    main()
