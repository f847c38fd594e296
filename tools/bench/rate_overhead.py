#!/usr/bin/env python
"""Step-time overhead of the dq rate term (issue 21), old and new engines in one process, on the model of
``train_gpu.py`` (defaults: its 57.5M-parameter byte LM, batch 64 x 512 tokens).

Modes, taking turns one training step at a time on the same model and optimizer (AdamW, bf16 autocast on
CUDA): ``plain`` (no rate term), ``new`` (``rate_dq.DQRate``: Triton kernels on CUDA when Triton imports,
eager torch otherwise), ``new-torch`` (the same flat layout in eager torch; CUDA only) and ``old``
(``rate_dq_ref.DQRateRef``, the per-tensor engine before). Step time = median of the timed steps
(synchronised); the refresh (``calibrate="hist"``) is timed apart (median of 3) and added as
refresh / ``--refresh`` per step. Also per engine: the rate term alone (``rate()`` + backward,
synchronised, median of ``--steps``), the number of kernels (CUDA) or aten calls (CPU) of one
``rate()`` + backward from ``torch.profiler``, and, on the same weights, the new engines' value and
gradients against the old one's.

Device: ``PYTHONPATH=. python tools/bench/rate_overhead.py --out $OUT`` (~1-2 min on an H100).
CPU (what ``results/training.md`` reports for this box): ``--device cpu --threads 1 --d 384 --layers 6
--heads 6 --ctx 128 --batch 8``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_gpu import Data, autocast, build, corpus, machine, n_params, sync

from bslcodec.torch import RateLoss, rate_dq, rate_dq_ref


def make_rate(model, args, engine):
    """A RateLoss whose dq engine is ``engine`` ("new", "new-torch", "old"), refreshed once."""
    rate = RateLoss(model, args.lam, expert={"rel_step": args.rel_step}, refresh_every=10**9, calibrate="hist")
    if engine == "old":
        rate._dq_cls = rate_dq_ref.DQRateRef
    saved = rate_dq.BACKEND
    rate_dq.BACKEND = "torch" if engine == "new-torch" else saved
    try:
        rate.refresh()  # builds the engine (the backend is read then)
    finally:
        rate_dq.BACKEND = saved
    rate.steps = 1  # refreshed: the next call does not refresh again
    return rate


def timed(fn, device, reps):
    ts = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return ts


def count_ops(rate, device):
    """Kernels (CUDA) or aten calls (CPU) of one rate() + backward."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        rate().backward()
        sync(device)
    if os.environ.get("RATE_PROFILE"):  # the kernel table of one rate() + backward, for finding the cost
        sort = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
        with open(os.environ["RATE_PROFILE"], "a") as fh:
            fh.write(prof.key_averages().table(sort_by=sort, row_limit=40) + "\n")
    ev = prof.events()
    if device.startswith("cuda"):
        return sum(1 for e in ev if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for e in ev if e.name.startswith("aten::"))


def compare(model, rates, device):
    """Value and gradients of each engine on the same weights, relative to the old engine."""
    params = [st.param for st in rates["old"].states]
    out, ref = {}, None
    for name in ["old"] + [k for k in rates if k != "old"]:
        for p in model.parameters():
            p.grad = None
        v = rates[name]()
        v.backward()
        g = [p.grad.detach().clone() for p in params]
        if ref is None:
            ref = (float(v.detach()), g)
            continue
        out[name] = {"value_rel_diff": abs(float(v.detach()) - ref[0]) / abs(ref[0]),
                     "grad_max_rel_diff": max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(g, ref[1])),
                     "grad_frac_differing": sum(int(((a - b).abs() > 1e-3 * b.abs().max()).sum())
                                                for a, b in zip(g, ref[1])) / sum(b.numel() for b in ref[1])}
    for p in model.parameters():
        p.grad = None
    return out


def run(args):
    res = {"args": vars(args), "machine": machine(args)}
    try:
        res["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       check=False).stdout.strip() or None
    except OSError:
        res["commit"] = None
    data = Data(corpus(args.corpus_mb), args.ctx, 0.02, args.device)
    model = build(args)
    res["params"] = n_params(model)
    engines = ["new", "old"] + (["new-torch"] if args.device.startswith("cuda") else [])
    rates = {e: make_rate(model, args, e) for e in engines}
    res["backend"] = {e: getattr(rates[e]._dq, "backend", "torch (per group)") for e in engines}
    res["tensors"] = len(rates["new"].states)
    res["covered_weights"] = rates["new"].n_weights
    res["compare_to_old"] = compare(model, rates, args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device.startswith("cuda"))
    gen = torch.Generator().manual_seed(1)

    def step(mode):
        x, y = data.batch(gen, args.batch)
        with autocast(args):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, 256), y.reshape(-1))
        if mode != "plain":
            loss = loss + rates[mode]()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    modes = ["plain"] + engines
    st = {m: [] for m in modes}
    for i in range(args.warmup + args.steps):
        for m in modes:
            t = timed(lambda: step(m), args.device, 1)[0]
            if i >= args.warmup:
                st[m].append(t)
    res["step_s"] = {m: statistics.median(v) for m, v in st.items()}
    res["rate_alone_s"], res["refresh_s"], res["ops_per_step"] = {}, {}, {}
    for e in engines:
        r = rates[e]
        r().backward()  # warm
        res["rate_alone_s"][e] = statistics.median(timed(lambda: r().backward(), args.device, args.steps))
        res["refresh_s"][e] = statistics.median(timed(r.refresh, args.device, 3))
        try:
            res["ops_per_step"][e] = count_ops(r, args.device)
        except Exception as exc:  # a profiler without CUPTI: keep the timings
            res["ops_per_step"][e] = f"n/a ({type(exc).__name__})"
        for p in model.parameters():
            p.grad = None
    plain = res["step_s"]["plain"]
    res["overhead"] = {e: {"step": (res["step_s"][e] + res["refresh_s"][e] / args.refresh) / plain - 1,
                           "component": (res["rate_alone_s"][e] + res["refresh_s"][e] / args.refresh) / plain}
                       for e in engines}
    try:
        res["machine"]["load_avg_end"] = os.getloadavg()
    except OSError:
        pass
    return res


def markdown(res) -> str:
    a, m = res["args"], res["machine"]
    where = m.get("gpu") or f"{m['platform']}, {m['cpus']} cpus, torch threads {a['threads']}"
    load = ""
    if "load_avg_start" in m:
        load = f", load average {m['load_avg_start'][0]:.1f} at the start and {m['load_avg_end'][0]:.1f} at the end"
    L = [f"{where}{load}; commit {res.get('commit')}; {res['params']:,} parameters (d={a['d']}, {a['layers']} layers), "
         f"{a['batch'] * a['ctx']:,} tokens/step, {res['tensors']} covered tensors ({res['covered_weights']:,} "
         f"weights), λ={a['lam']}, rel_step={a['rel_step']}, calibrate='hist', refresh every {a['refresh']} steps; "
         f"modes take turns one step at a time, medians of {a['steps']} steps after {a['warmup']} warm-up rounds.",
         "",
         "| engine | backend | step ms (plain {:.1f}) | overhead | rate()+backward ms | refresh ms | component | "
         "kernels / aten calls per step | value vs old | grad max rel. diff vs old |"
         .format(1000 * res["step_s"]["plain"]),
         "|---|---|---|---|---|---|---|---|---|---|"]
    for e in res["rate_alone_s"]:
        c = res["compare_to_old"].get(e)
        L.append(f"| {e} | {res['backend'][e]} | {1000 * res['step_s'][e]:.1f} | "
                 f"**{100 * res['overhead'][e]['step']:+.1f} %** | {1000 * res['rate_alone_s'][e]:.2f} | "
                 f"{1000 * res['refresh_s'][e]:.0f} | {100 * res['overhead'][e]['component']:.1f} % | "
                 f"{res['ops_per_step'][e]} | "
                 + (f"{c['value_rel_diff']:.1e} | {c['grad_max_rel_diff']:.1e} |" if c else "— | — |"))
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--rel-step", type=float, default=0.125)
    ap.add_argument("--refresh", type=int, default=250, help="refresh_every the per-step refresh cost assumes")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    ap.add_argument("--corpus-mb", type=float, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    args.cola_ratio = 0.25
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    os.makedirs(args.out, exist_ok=True)
    res = run(args)
    md = markdown(res)
    res["markdown"] = md
    with open(os.path.join(args.out, "rate_overhead.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    print(md)


if __name__ == "__main__":
    main()
