"""Where bslcodec's bits go, and what closes the gap to an ideal coder *within format v1*.

* :func:`breakdown` takes the bytes of a ``.bsl`` file and splits its size (bits/weight) into
  exp-Golomb code bits, the order-0 empirical entropy H0 of the very same symbols (what an ideal
  static arithmetic coder would spend per tensor, without its model side info), lane tables and group
  orders, 64-bit word padding, the JSON header + preamble, 64-byte alignment and the lossless tensors.
* :func:`layout_sweep` re-codes the same symbols with other lane sizes S and order search ranges
  (both are encoder choices of format v1) and reports exact payload sizes.
* :func:`rdoq` is an encoder-only change that keeps the file format and the decoder untouched:
  rate-distortion optimized choice of each symbol, J = (x - x̂)² + λ·step²·len_EG(u). It is applied by
  patching ``bslcodec.codec.LossyTensor.code`` for the duration of a ``with rdoq_patch(lam):`` block.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
from numba import prange

from bslcodec import api, codec, golomb
from bslcodec.limits import LANES


def _symbols(src, e):
    """(q as int64, zigzag u as uint32) of an ``eg`` entry, decoded by bslcodec in its "Q" mode."""
    step, center, s = codec._check_eg_params(e, e.name)
    q = np.empty(e.numel, np.int64)
    golomb.decode_into(src.payload(e), e.numel, s, center, step, q, "Q")
    d = q - center
    u = ((d << 1) ^ (d >> 63)).astype(np.uint32)
    return q, u


def entropy_bits(q: np.ndarray) -> float:
    """Order-0 empirical entropy of the symbols, in bits (total, not per symbol)."""
    if q.size == 0:
        return 0.0
    c = np.bincount((q - q.min()).astype(np.int64))
    c = c[c > 0].astype(np.float64)
    return float(-(c * np.log2(c / q.size)).sum())


def breakdown(blob: bytes, n_weights: int, keep_symbols: bool = False) -> dict:
    """Size accounting of a ``.bsl`` file, in bits per weight of the whole checkpoint."""
    src = api._Source(data=blob)
    try:
        total = 8 * len(blob)
        header = 8 * src.index.data_start
        eg_code = eg_tables = eg_wordpad = h0 = lossless = payload_sum = 0
        n_eg = n_lossless = n_eg_weights = 0
        ks = []
        syms = {}
        for e in src.index.entries:
            payload_sum += 8 * e.length
            if e.codec != "eg":
                lossless += 8 * e.length
                n_lossless += 1
                continue
            n_eg += 1
            n_eg_weights += e.numel
            s = e.params["lane_symbols"]
            lens, kk, _, _ = golomb.parse_tables(src.payload(e), e.numel, s)
            code = int(lens.sum(dtype=np.int64))
            tables = 8 * golomb.table_bytes(kk.size)
            eg_code += code
            eg_tables += tables
            eg_wordpad += 8 * e.length - tables - code
            q, u = _symbols(src, e)
            h0 += entropy_bits(q)
            ks.append(int(e.params["k"]))
            if keep_symbols:
                syms[e.name] = (u, int(e.params["k"]))
        align = total - header - payload_sum
        n = float(n_weights)
        out = {
            "file_bpw": total / n,
            "eg_code_bpw": eg_code / n,
            "h0_bpw": h0 / n,
            "eg_minus_h0_bpw": (eg_code - h0) / n,
            "eg_over_h0": eg_code / h0 if h0 else None,
            "lane_tables_bpw": eg_tables / n,
            "word_padding_bpw": eg_wordpad / n,
            "header_bpw": header / n,
            "alignment_bpw": align / n,
            "lossless_tensors_bpw": lossless / n,
            "overhead_bpw": (eg_tables + eg_wordpad + header + align) / n,
            "n_eg_tensors": n_eg,
            "n_lossless_tensors": n_lossless,
            "eg_weight_fraction": n_eg_weights / n,
            "header_bytes": header // 8,
            "tables_bytes_per_eg_tensor": eg_tables / 8 / max(n_eg, 1),
            "overhead_bytes_per_tensor": (eg_tables + eg_wordpad + header + align) / 8 / max(n_eg + n_lossless, 1),
            "k_median": float(np.median(ks)) if ks else None,
        }
        if keep_symbols:
            out["_symbols"] = syms
        return out
    finally:
        src.close()


def layout_sweep(symbols: dict, n_weights: int, lane_symbols=(64, 128, 256, 512, 1024), spread=(2, 4)) -> list:
    """Exact ``eg`` payload bits/weight of the same symbols for other S and order search ranges k0±spread.

    Also the single best order per tensor (no per-group adaptation) at S=512 for reference.
    """
    rows = []
    for s in lane_symbols:
        for sp in spread:
            bits = 0
            for u, k0 in symbols.values():
                _, lens = golomb.choose_orders(u, s, max(0, k0 - sp), min(24, k0 + sp))
                bits += 8 * golomb.payload_size(s, lens)
            rows.append({"lane_symbols": s, "k_range": f"k0±{sp}", "payload_bpw": bits / n_weights})
    # one order for the whole tensor: a group as large as the tensor (tables excluded, code bits only)
    bits = 0
    for u, k0 in symbols.values():
        best = None
        for k in range(max(0, k0 - 4), min(24, k0 + 4) + 1):
            b = int(_code_bits(u, k))
            best = b if best is None or b < best else best
        bits += best
    rows.append({"lane_symbols": "whole tensor", "k_range": "k0±4", "payload_bpw": bits / n_weights,
                 "note": "code bits only, no tables"})
    return rows


@numba.njit(parallel=True, cache=True)
def _code_bits(u, k):
    t = np.int64(0)
    for i in prange(u.size):
        t += golomb.code_length(u[i], k)
    return t


# ---------------------------------------------------------------- RDOQ (encoder-only, same format)

@numba.njit(inline="always")
def _zz(d):
    return np.uint32((d << 1) ^ (d >> 63))


@numba.njit(inline="always")
def _recon(q, step32):
    return np.float64(np.float32(np.float32(q) * step32))


@numba.njit(parallel=True, cache=True)
def _rdoq(x, u, step, center, ks, lane_symbols, lam):
    """In place: for each element try moving its level 1 or 2 steps toward the center; keep the
    candidate of smallest (x - x̂)² + lam·step²·len. Returns the largest |x - x̂| afterwards."""
    n = u.size
    gsize = LANES * lane_symbols
    step32 = np.float32(step)
    w = lam * step * step
    ng = ks.size
    maxerr = np.zeros(ng)
    for g in prange(ng):
        k = np.int64(ks[g])
        me = 0.0
        for e in range(g * gsize, min(n, (g + 1) * gsize)):
            uu = np.int64(u[e])
            d = (uu >> 1) ^ -(uu & 1)
            xv = np.float64(x[e])
            err = xv - _recon(center + d, step32)
            best_j = err * err + w * golomb.code_length(np.uint32(uu), k)
            best_u = np.uint32(uu)
            best_e = abs(err)
            for m in range(1, 3):
                if d == 0:
                    break
                d2 = d - m if d > 0 else d + m
                if (d > 0 and d2 < 0) or (d < 0 and d2 > 0):
                    break
                u2 = _zz(d2)
                e2 = xv - _recon(center + d2, step32)
                j2 = e2 * e2 + w * golomb.code_length(u2, k)
                if j2 < best_j:
                    best_j, best_u, best_e = j2, u2, abs(e2)
            u[e] = best_u
            if best_e > me:
                me = best_e
        maxerr[g] = me
    return maxerr.max() if ng else 0.0


@contextlib.contextmanager
def rdoq_patch(lam: float):
    """Within the block, bslcodec's encoder picks symbols by RDOQ with weight ``lam`` (files stay v1)."""
    orig = codec.LossyTensor.code

    def code(self, step, max_error=None):
        out = orig(self, step, max_error)
        if out is None or lam <= 0:
            return out
        params, ks, lens, u = out
        u = u.copy()
        s = params["lane_symbols"]
        me = _rdoq(self.x, u, float(params["step"]), np.int64(params["center"]), ks, s, float(lam))
        k0 = int(params["k"])
        ks, lens = golomb.choose_orders(u, s, max(0, k0 - 2), min(24, k0 + 2))
        params = dict(params, max_abs_error=float(me), k=int(np.bincount(ks).argmax()) if ks.size else k0)
        return params, ks, lens, u

    codec.LossyTensor.code = code
    try:
        yield
    finally:
        codec.LossyTensor.code = orig


# ---------------------------------------------------------------- format-change candidate (estimate only)

RICE_ESCAPE = 32  # quotient cap: past it, an escape then the EG code of u (bounds outlier code words)


@numba.njit(parallel=True, cache=True)
def _rice_bits(u, lane_symbols, k_lo, k_hi):
    n = u.size
    gsize = LANES * lane_symbols
    ng = (n + gsize - 1) // gsize
    best = np.zeros(ng, np.int64)
    for g in prange(ng):
        bb = np.int64(1) << 62
        for r in range(k_lo, k_hi + 1):
            t = np.int64(0)
            for e in range(g * gsize, min(n, (g + 1) * gsize)):
                qq = np.int64(u[e]) >> r
                if qq < RICE_ESCAPE:
                    t += qq + 1 + r
                else:
                    t += RICE_ESCAPE + golomb.code_length(u[e], r)
            if t < bb:
                bb = t
        best[g] = bb
    return best.sum()


def rice_estimate(symbols: dict, n_weights: int, lane_symbols: int = 512) -> float:
    """Code bits/weight if the same lanes/groups used Golomb-Rice codes (parameter per group) instead
    of exp-Golomb: NOT format v1, an estimate of what a one-line code change in a v2 would give."""
    bits = 0
    for u, k0 in symbols.values():
        bits += int(_rice_bits(u, lane_symbols, max(0, k0 - 3), min(24, k0 + 3)))
    return bits / n_weights
