"""Drift of the default codec's rate estimate between refreshes, with and without the drift-triggered refresh
(``bslcodec.torch.rate.DRIFT``), on train_rd.py's char LM fine-tuned with a strong rate term.

Pretrain a small dense model (λ=0, cached in ``--cache``), then fine-tune copies with ``loss = CE + rate()``
(dq, ``rel_step`` 1/8, ``calibrate="exact"``) for each λ and each mode: ``fixed`` (no drift trigger:
``rate.drift = inf``, refresh every ``--refresh`` steps) and ``drift`` (the default threshold; ``drift:0.05`` another). Every ``--track`` steps
(after the optimizer step) it logs the running estimate (``estimate_now``) and the encoder's payload of the
covered tensors (``exact_bits``); tracking time is excluded from the step times. Writes JSON and a markdown
table (stdout).

    PYTHONPATH=. python tools/bench/rate_drift.py --json /tmp/drift.json
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from train_rd import CharLM, Data, load_corpus, lr_at

from bslcodec.torch import RateLoss


def pretrained(args, data):
    torch.manual_seed(0)
    m = CharLM(data.vocab, args.d, args.layers, args.heads, args.ctx)
    key = f"{args.cache}/drift_pre_d{args.d}_l{args.layers}_s{args.pretrain_steps}.pt"
    if os.path.exists(key):
        m.load_state_dict(torch.load(key))
        return m
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    for step in range(args.pretrain_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.pretrain_steps, 3e-3, 100)
        x, y = data.batch(gen, args.batch)
        loss = F.cross_entropy(m(x).reshape(-1, data.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    os.makedirs(args.cache, exist_ok=True)
    torch.save(m.state_dict(), key)
    return m


def finetune(base, data, args, lam, mode):
    m = CharLM(data.vocab, args.d, args.layers, args.heads, args.ctx)
    m.load_state_dict(base.state_dict())
    rate = RateLoss(m, lam, expert={"rel_step": args.rel_step}, refresh_every=args.refresh, calibrate="exact")
    if mode == "fixed":
        rate.drift = math.inf
    elif mode.startswith("drift:"):  # another threshold than the default
        rate.drift = float(mode.split(":")[1])
    opt = torch.optim.AdamW(m.parameters(), lr=args.ft_lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    track, times, refresh_steps, worst = [], [], [], 0.0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.ft_lr, 20)
        t0 = time.perf_counter()
        before = rate.refreshes
        x, y = data.batch(gen, args.batch)
        loss = F.cross_entropy(m(x).reshape(-1, data.vocab), y.reshape(-1)) + rate()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        if rate.refreshes != before:
            refresh_steps.append(step)
        if (step + 1) % args.track == 0 or step + 1 == args.steps:
            est = sum(rate.estimate_now().values())
            real = sum(rate.exact_bits().values())
            err = 100 * (est / real - 1)
            ref, tot = rate._ref
            moved = float((rate._dq.last - ref).abs().sum() / tot) if rate._dq.last is not ref else 0.0
            worst = max(worst, abs(err))
            track.append((step + 1, est / rate.n_weights, real / rate.n_weights, err, 100 * moved))
    plain = [t for i, t in enumerate(times) if i not in set(refresh_steps)]
    return {"lam": lam, "mode": mode, "refreshes": rate.refreshes, "refresh_steps": refresh_steps,
            "track": track, "final_err_pct": track[-1][3], "max_abs_err_pct": worst,
            "mean_abs_err_pct": statistics.mean(abs(t[3]) for t in track),
            "median_step_s": statistics.median(plain), "total_s": sum(times),
            "final_bpw": track[-1][2]}


def costs(base, data, args):
    """Median seconds of the drift check (``_drifted``, once a step) and of one refresh (calibrate="exact"),
    and of a plain training step, on the pretrained model, in one process."""
    m = CharLM(data.vocab, args.d, args.layers, args.heads, args.ctx)
    m.load_state_dict(base.state_dict())
    rate = RateLoss(m, 3.0, expert={"rel_step": args.rel_step}, refresh_every=10**9, calibrate="exact")
    with torch.no_grad():
        rate()
        rate()

    def med(f, n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(2)

    def plain():
        x, y = data.batch(gen, args.batch)
        loss = F.cross_entropy(m(x).reshape(-1, data.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    med(plain, 5)
    out = {"plain_step_s_before": med(plain, 30), "check_s": med(rate._drifted, 2000),
           "refresh_s": med(rate.refresh, 7)}
    out["plain_step_s"] = med(plain, 30)
    return out


def table(res, meta):
    head = ("| λ | mode | refreshes | estimate − written at the end | max \\|error\\| along training | "
            "mean \\|error\\| | written payload b/w at the end | median step ms (no refresh) | "
            "fine-tune s (all steps) |")
    L = [f"Setup: {meta}", "", head, "|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        L.append(f"| {r['lam']:g} | {r['mode']} | {r['refreshes']} | {r['final_err_pct']:+.2f} % | "
                 f"{r['max_abs_err_pct']:.2f} % | {r['mean_abs_err_pct']:.2f} % | {r['final_bpw']:.3f} | "
                 f"{1e3 * r['median_step_s']:.1f} | {r['total_s']:.1f} |")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pretrain-steps", type=int, default=800)
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps per run")
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--rel-step", type=float, default=1 / 8)
    ap.add_argument("--refresh", type=int, default=100)
    ap.add_argument("--track", type=int, default=10)
    ap.add_argument("--lams", default="3,10")
    ap.add_argument("--modes", default="fixed,drift")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/bsl_drift_cache")
    ap.add_argument("--json")
    ap.add_argument("--costs", action="store_true", help="only time the drift check, a refresh, a plain step")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Data(load_corpus(), args.ctx, "cpu")
    t0 = time.perf_counter()
    base = pretrained(args, data)
    load0 = os.getloadavg()[0]
    if args.costs:
        c = costs(base, data, args)
        print(f"drift check {1e6 * c['check_s']:.1f} us, refresh {1e3 * c['refresh_s']:.1f} ms, plain step "
              f"{1e3 * c['plain_step_s_before']:.1f} ms (after the refreshes {1e3 * c['plain_step_s']:.1f}); load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
        return
    c = costs(base, data, args)  # also warms up (JIT, allocator) before the timed runs
    res = []
    for lam in [float(v) for v in args.lams.split(",")]:
        for mode in args.modes.split(","):
            res.append(finetune(base, data, args, lam, mode))
            print(f"λ={lam:g} {mode}: refreshes {res[-1]['refreshes']} final {res[-1]['final_err_pct']:+.2f} % "
                  f"max {res[-1]['max_abs_err_pct']:.2f} %", flush=True)
    meta = (f"char LM d={args.d}, {args.layers} layers, {sum(p.numel() for p in base.parameters()):,} parameters, "
            f"pretrained {args.pretrain_steps} steps (λ=0), fine-tuned {args.steps} steps per run (AdamW lr "
            f"{args.ft_lr:g}, cosine), batch {args.batch}x{args.ctx}; RateLoss dq rel_step {args.rel_step:g}, "
            f"calibrate='exact', refresh_every {args.refresh}; error read every {args.track} steps; "
            f"{platform.machine()} {os.cpu_count()} cpus, torch threads {args.threads}, load average "
            f"{load0:.1f} at the start of fine-tuning, {os.getloadavg()[0]:.1f} at the end; "
            f"{time.perf_counter() - t0:.0f} s wall. Same process, before the runs: one drift check "
            f"{1e6 * c['check_s']:.1f} µs, one refresh {1e3 * c['refresh_s']:.0f} ms, a plain step (no rate term) "
            f"{1e3 * c['plain_step_s']:.1f} ms (medians)")
    md = table(res, meta)
    print(md)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "runs": res}, fh, indent=1)


if __name__ == "__main__":
    main()
