"""One model through every setting family: encode, decode, run the model, record size against output quality.

A *family* is one way of setting a codec, with one knob ``k`` that grows with the rate (finer = larger k):

| family | knob | setting |
|---|---|---|
| ``nosetting`` | - | ``bslcodec.save(w)``: one point, what a user gets without choosing anything |
| ``bits`` | B | ``bslcodec.save(w, bits=B)``: the equal-slope allocation that the default and ``bits=`` use |
| ``default`` | log2(1/c) | ``bslcodec.save(w, expert={"rel_step": c})``: one relative step for every tensor (the allocation |
|  |  | before 1.1; the name is kept for earlier runs' JSON) |
| ``max_error`` | -qp | ``bslcodec.save(w, max_error=2**(qp/4)/2)``: one absolute step ``2**(qp/4)`` for every tensor |
| ``sens`` | log2(1/c) | ``bslcodec.save(w, expert={"rel_step": c}, sensitivity=s)``, ``s`` calibrated on other inputs |
| ``nncodec`` | -qp | NNCodec 2.1.3 ``compress(w, qp=qp)``, defaults (DQ on): one global step ``2**(qp/4)`` |

The qp grid is NNCodec's (``qp_density`` 2: step ``2**(qp/4)``), so ``max_error`` and ``nncodec`` use the same steps.
:func:`sweep` walks a family's knob until the curve brackets both target cosines (0.999 and 0.9995), then adds
the midpoints of the bracketing intervals; :func:`interp` reads bits/weight at a target cosine off a curve
(linear in log(1 - cos)). Sizes are whole files: 8 x bytes / number of float weights encoded.
"""

from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np

TARGETS = (0.999, 0.9995)
FAMILIES = ("nosetting", "bits", "default", "max_error", "sens", "nncodec")
LABELS = {"nosetting": "bslcodec, no setting (save_file(w))", "bits": "bslcodec bits= (the allocation)",
          "default": "bslcodec rel_step= (one relative step)",
          "max_error": "bslcodec max_error= (one global step)",
          "sens": "bslcodec rel_step= + sensitivity=", "nncodec": "NNCodec 2.1.3 (defaults, DQ on)"}


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def fixed_bpw(blob: bytes, n: int) -> float:
    """Bits/weight of a .bsl file that are not quantized payload: preamble, header, padding, exactly stored tensors."""
    from bslcodec.files import api

    src = api._Source(data=blob)
    try:
        coded = sum(e.length for e in src.index.entries if e.codec in ("eg", "ans", "ans-dq"))
    finally:
        src.close()
    return 8 * (len(blob) - coded) / n


class Codecs:
    """Encode/decode of each family; NNCodec through tools/bench/peers.py (run in this process)."""

    def __init__(self, sens: dict | None = None):
        self.sens = sens
        self._nnc = None
        self.tmp = tempfile.mkdtemp(prefix="bsl-suite-")

    def nnc(self):
        if self._nnc is None:
            import peers

            p = peers.import_peers()
            self._nnc = p["nnc"] or False
            self.nnc_error = p["errors"].get("nncodec")
        return self._nnc or None

    def setting(self, fam: str, k: float) -> dict:
        if fam == "nosetting":
            return {}
        if fam == "bits":
            return {"bits": k}
        if fam in ("default", "sens"):
            return {"rel_step": 2.0 ** -k, "log2_inv": k}
        qp = -int(k)
        if fam == "max_error":
            return {"max_error": 2.0 ** (qp / 4) / 2, "qp": qp}
        return {"qp": qp}

    def run(self, fam: str, k: float, w: dict) -> tuple:
        """(bytes, decoded dict, encode s, decode s)."""
        import bslcodec

        s = self.setting(fam, k)
        t0 = time.perf_counter()
        if fam == "nncodec":
            nnc = self.nnc()
            path = os.path.join(self.tmp, "bitstream.nnc")
            # copies: the codec must not see (or touch) the arrays the other families read
            blob = bytes(nnc.compress({n: v.copy() for n, v in w.items()}, bitstream_path=path, qp=s["qp"],
                                      use_dq=True, return_bitstream=True))
            t1 = time.perf_counter()
            back = nnc.decompress(bytearray(blob))
        else:
            kw = {"nosetting": {}, "bits": {"bits": s.get("bits")}, "default": {"expert": {"rel_step": s.get("rel_step")}},
                  "sens": {"expert": {"rel_step": s.get("rel_step")}, "sensitivity": self.sens},
                  "max_error": {"max_error": s.get("max_error")}}[fam]
            blob = bslcodec.save(w, **kw)
            t1 = time.perf_counter()
            back = bslcodec.load(blob)
        t2 = time.perf_counter()
        back = {n: np.asarray(back[n], np.float32).reshape(w[n].shape) for n in w}
        return blob, back, t1 - t0, t2 - t1


def point(model, codecs: Codecs, fam: str, k: float, log=print) -> dict | None:
    """One operating point: encode, decode, evaluate. None (logged) when the setting is out of reach."""
    from bslcodec import BslError

    la = loadavg()
    try:
        blob, back, t_enc, t_dec = codecs.run(fam, k, model.weights)
    except BslError as exc:
        log(f"  {model.name:7s} {fam:9s} k={k:g}: {type(exc).__name__}: {exc}")
        return None
    t = time.perf_counter()
    metrics = model.evaluate(back)
    t_eval = time.perf_counter() - t
    n = model.n_weights
    num = den = mx = 0.0
    for name, v in model.weights.items():
        d = back[name].astype(np.float64) - v
        num += float((d * d).sum())
        den += float((v.astype(np.float64) ** 2).sum())
        mx = max(mx, float(np.abs(d).max())) if d.size else mx
    row = {"model": model.name, "family": fam, "k": k, "setting": codecs.setting(fam, k), "bytes": len(blob),
           "bpw": 8 * len(blob) / n, "rel_l2": math.sqrt(num / den) if den else 0.0, "max_abs_err": mx,
           "metrics": metrics, "enc_s": round(t_enc, 2), "dec_s": round(t_dec, 2), "eval_s": round(t_eval, 2),
           "loadavg_before": la}
    if fam != "nncodec":
        row["fixed_bpw"] = fixed_bpw(blob, n)
    extra = "".join(f" {key} {v:.4f}" for key, v in metrics.items() if key != "cos")
    log(f"  {model.name:7s} {fam:9s} {str(row['setting']):38s} {row['bpw']:6.3f} b/w  cos {metrics['cos']:.6f}"
        f"{extra}  rel {row['rel_l2']:.2e}  enc {t_enc:.1f}s eval {t_eval:.1f}s (load {la})")
    return row


def sweep(get, k0: float, coarse: float, fine: float, lo: float, hi: float, max_points: int,
          targets=TARGETS, refine: bool = True) -> dict:
    """{k: row} along one family: from k0 up (coarse steps) until cos >= max(targets), down until
    cos < min(targets), then (``refine``) the point ``fine`` above the lower end of every interval that
    brackets a target. ``get(k)`` returns a row or None; at most ``max_points`` calls."""
    done: dict = {}

    def cos(k):
        r = done.get(k)
        return None if r is None else r["metrics"]["cos"]

    def take(k):
        if k in done or not lo <= k <= hi or len(done) >= max_points:
            return False
        done[k] = get(k)
        return done[k] is not None

    take(k0)
    while not any((cos(k) or -2) >= max(targets) for k in done):
        if not take(max(done) + coarse):
            break
    while not any(cos(k) is not None and cos(k) < min(targets) for k in done):
        if not take(min(done) - coarse):
            break
    if refine:
        for t in sorted(targets):
            ks = sorted(k for k in done if cos(k) is not None)
            for a, b in zip(ks, ks[1:]):
                if (cos(a) < t) != (cos(b) < t) and b - a > fine:
                    take(a + fine)
    return {k: r for k, r in done.items() if r is not None}


def interp(rows, target: float, key: str = "bpw"):
    """``key`` (bits/weight) of a curve at mean cosine ``target``, linear in log(1 - cos); None outside it."""
    pts = sorted((math.log(max(1 - r["metrics"]["cos"], 1e-12)), r[key]) for r in rows)
    pts = [p for p in pts if p[1] is not None]
    if len(pts) < 2:
        return None
    xs, ys = zip(*pts)
    t = math.log(1 - target)
    if not xs[0] <= t <= xs[-1]:
        return None
    return float(np.interp(t, xs, ys))


def robust_log2_std(w: dict) -> float:
    """log2 of the typical spread of the weights (median |w| / 0.6745 over tensors of >= 2 dims)."""
    big = [v.ravel() for v in w.values() if v.ndim >= 2 and v.size]
    a = np.abs(np.concatenate(big) if big else np.concatenate([v.ravel() for v in w.values()]))
    return math.log2(max(float(np.median(a)) / 0.6745, 1e-30))


def run_model(model, families=FAMILIES, quick: bool = False, sens: dict | None = None, log=print,
              max_points: int | None = None) -> list:
    """Every family's curve on ``model``; returns the rows (sorted by family, then knob)."""
    codecs = Codecs(sens)
    if "nncodec" in families and codecs.nnc() is None:
        log(f"  NNCodec unavailable ({codecs.nnc_error}); run tools/bench/setup_peers.sh")
        families = [f for f in families if f != "nncodec"]
    if "sens" in families and sens is None:
        families = [f for f in families if f != "sens"]
    mp = max_points or (3 if quick else 7)
    curves: dict = {}

    def at(fam, t, key):
        return interp(list(curves.get(fam, {}).values()), t, key) if curves.get(fam) else None

    for fam in FAMILIES:
        if fam not in families:
            continue

        def get(k, fam=fam):
            return point(model, codecs, fam, k, log)

        if fam == "nosetting":
            r = get(0.0)
            curves[fam] = {0.0: r} if r else {}
        elif fam == "bits":
            curves[fam] = sweep(get, 6.0, 1.0, 0.5, 1.0, 16.0, mp, refine=not quick)
        elif fam in ("default", "sens"):
            b = at("default", 0.999, "k")  # sens: starts where the default reached 0.999
            k0 = 5.0 if b is None else round(2 * b) / 2
            curves[fam] = sweep(get, k0, 1.0, 0.5, 0.0, 14.0, mp, refine=not quick)
        else:
            # the step of a global-step codec at the rate the default needs for 0.999 (Gaussian estimate:
            # bits ~ log2(std / step) + 2.05), or the max_error family's own qp there
            kq = at("max_error", 0.999, "k")
            if kq is None:
                b = at("default", 0.999, "bpw") or 7.0
                kq = -4 * (robust_log2_std(model.weights) + 2.05 - b)
            curves[fam] = sweep(get, float(round(kq)), 4.0, 2.0, -100.0, 200.0, mp, refine=not quick)
    return [r for fam in curves for _, r in sorted(curves[fam].items())]
